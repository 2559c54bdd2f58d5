"""The selectors behind one interface: what each expands, and the errors that say what to rebuild."""

import inspect
from pathlib import Path

import pytest
import torch
from conftest import TINY_TEXT, tiny_refrag

from refrag_lib.chunk_store import build_chunk_store, load_chunk_store, read_chunk_keys
from refrag_lib.course.notebooks import NOTEBOOK_DIR
from refrag_lib.course.playground import Playground
from refrag_lib.data import Passage
from refrag_lib.errors import CourseError
from refrag_lib.index import Retriever
from refrag_lib.model import Segments
from refrag_lib.policy import ChunkPolicy, PolicyConfig, QuestionPolicy
from refrag_lib.selectors import DEFAULT_SELECTOR, SELECTORS, PolicySelector, ScoredExample, make_selector
from refrag_lib.sft import SFTConfig


def example(n: int, dim: int = 8, **fields) -> ScoredExample:
    return ScoredExample(Segments(chunks=[[1, 2]] * n), torch.randn(n, dim, generator=torch.Generator().manual_seed(n)),
                         **fields)


def test_question_selector_expands_the_chunks_closest_to_the_question():
    keys = torch.eye(6)  # chunk i points along axis i
    question = torch.nn.functional.normalize(torch.tensor([0.0, 0.0, 1.0, 0.2, 0.0, 0.0]), dim=0)
    picked = make_selector("question")([example(6, question_key=question, chunk_keys=keys)], 2 / 6)[0]
    assert picked == [False, False, True, True, False, False]  # chunk 2 (cosine ~1), then chunk 3 (0.2)
    with pytest.raises(CourseError, match="rerun notebooks/01_indexing.ipynb"):
        make_selector("question")([example(6)], 0.5)


def test_every_selector_expands_round_p_of_the_chunks():
    tiny = tiny_refrag(k=4)
    policies = {"rl": ChunkPolicy(PolicyConfig(input_dim=tiny.encoder.config.hidden_size, width=16)),
                "question_rl": QuestionPolicy(PolicyConfig(input_dim=3, width=16, question_aware=1))}
    dim = tiny.encoder.config.hidden_size
    ids = tiny.tokenize(TINY_TEXT[0])[:24]
    ex = ScoredExample(Segments(chunks=[ids[i:i + 4] for i in range(0, 24, 4)]), torch.randn(6, dim),
                       passage_lengths=[4, 2], question_key=torch.ones(3), chunk_keys=torch.randn(6, 3),
                       word_overlap=torch.rand(6, 2))
    for name in SELECTORS:
        mask = make_selector(name, policies, tiny)([ex], 0.5)[0]
        assert len(mask) == 6 and sum(mask) == (0 if name == "none" else 3), name
    with pytest.raises(CourseError, match="Unknown selector 'greedy': choose one of question, rl"):
        make_selector("greedy")
    for name in ("rl", "question_rl"):
        with pytest.raises(CourseError, match="notebooks/04_policy_grpo"):
            make_selector(name)
    with pytest.raises(CourseError, match="needs the model"):
        make_selector("perplexity")


def test_the_policy_scores_each_passage_from_its_own_start():
    """Per passage: the scores of a passage do not depend on the passages around it."""
    policy = ChunkPolicy(PolicyConfig(input_dim=8, width=16))
    a, b = example(5), example(3)
    together = ScoredExample(Segments(chunks=[[1]] * 8), torch.cat([a.chunk_vectors, b.chunk_vectors]),
                             passage_lengths=[5, 3])
    with torch.no_grad():
        scores = torch.cat([policy(a.chunk_vectors[None])[0], policy(b.chunk_vectors[None])[0]])
    expected = torch.zeros(8, dtype=torch.bool)
    expected[torch.topk(scores, 2).indices] = True
    assert PolicySelector(policy)([together], 0.25)[0] == expected.tolist()


def test_chunk_keys_travel_with_the_store_and_are_refused_for_other_chunks(tmp_path):
    tiny = tiny_refrag(k=4)
    retriever = Retriever("tiny-retriever", tiny.encoder, tiny.encoder_tokenizer)
    passages = [Passage(f"p{i}", text) for i, text in enumerate(TINY_TEXT)]
    store = build_chunk_store(tiny, passages, progress=False, retriever=retriever)
    assert store.keys.shape == (store.n_chunks, retriever.dim)
    assert torch.allclose(store.keys.norm(dim=-1), torch.ones(store.n_chunks), atol=1e-5)
    store.save(tmp_path / "with" / "chunk_store.safetensors")
    loaded = load_chunk_store(tmp_path / "with", tiny)
    assert torch.equal(loaded.keys, store.keys)
    assert torch.equal(loaded.keys_for([1]), store.keys[int(store.passage_offsets[1]):int(store.passage_offsets[2])])
    assert torch.equal(read_chunk_keys(tmp_path / "with", build_chunk_store(tiny, passages, progress=False)),
                       store.keys)
    build_chunk_store(tiny, passages, progress=False).save(tmp_path / "without" / "chunk_store.safetensors")
    with pytest.raises(CourseError, match="no question-side vectors"):
        read_chunk_keys(tmp_path / "without", store)
    with pytest.raises(CourseError, match="other chunks"):
        read_chunk_keys(tmp_path / "with", build_chunk_store(tiny_refrag(k=2), passages, progress=False))


def test_one_default_selector_everywhere():
    """Notebook 05 trains and evaluates REFRAG with DEFAULT_SELECTOR, the playground (07) starts on it, and SFT
    and the playground's functions default to it: one name, not one per module."""
    for name in ("05_sft.py", "07_playground.py"):
        source = Path(NOTEBOOK_DIR, name).read_text()
        assert f'\nSELECTOR = "{DEFAULT_SELECTOR}"' in source, name
    assert SFTConfig(steps=1).selector == DEFAULT_SELECTOR
    assert inspect.signature(Playground.ask).parameters["selector"].default == DEFAULT_SELECTOR
