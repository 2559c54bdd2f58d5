"""The question-aware policy: its inputs, a fresh one is uniform, checkpoints tied to the retriever, GRPO with
another reward learns to expand the chunk the question points at, and the held-out table on a tiny model."""

import math

import numpy as np
import pytest
import torch
from conftest import Spy, tiny_qa

from refrag_lib.chunk_store import PassageChunks, build_chunk_store
from refrag_lib.errors import CourseError
from refrag_lib.grpo import GRPOConfig, clipped_objective, grpo_step
from refrag_lib.losses import suffix_token_stats
from refrag_lib.model import Segments
from refrag_lib.policy import PolicyConfig, QuestionPolicy, load_policy, question_policy_identity, save_policy
from refrag_lib.qa import normalize_answer
from refrag_lib.question_grpo import (
    AnswerExample,
    answer_examples,
    answer_hits,
    answer_landing,
    answer_nll,
    held_out_table,
    locate_answers,
    train_question_policy,
)
from refrag_lib.selectors import QuestionPolicySelector, QuestionSelector, RandomSelector, ScoredExample

IDENTITY = {"preset": "tiny", "k": "8", "encoder": "tiny-bert", "decoder": "tiny-llama"}


def question_example(question, keys, lengths, overlap=None):
    n = len(keys)
    return ScoredExample(Segments(chunks=[[1, 2]] * n), torch.zeros(n, 4), passage_lengths=lengths,
                         question_key=question, chunk_keys=keys,
                         word_overlap=torch.zeros(n, 2) if overlap is None else overlap)


def test_inputs_count_places_from_each_passage_start_and_a_fresh_policy_is_uniform():
    policy = QuestionPolicy(PolicyConfig(input_dim=3, width=16, heads=2, question_aware=1))
    ex = question_example(torch.ones(3), torch.randn(5, 3), [3, 2])
    inputs = policy.inputs([ex, question_example(torch.ones(3), torch.randn(2, 3), [2])])
    assert inputs["places"][0].tolist() == [0, 1, 2, 0, 1] and inputs["ranks"][0].tolist() == [0, 0, 0, 1, 1]
    assert inputs["valid"][1].tolist() == [True, True, False, False, False]
    logits = policy(**inputs)
    assert torch.equal(logits[0], torch.zeros(5)) and torch.isinf(logits[1, 2:]).all()
    with pytest.raises(CourseError, match="retriever vectors"):
        policy.inputs([ScoredExample(Segments(chunks=[[1]]), torch.zeros(1, 4))])
    with pytest.raises(CourseError, match="word overlap"):
        policy.inputs([ScoredExample(Segments(chunks=[[1]]), torch.zeros(1, 4), question_key=torch.ones(3),
                                     chunk_keys=torch.ones(1, 3))])
    with pytest.raises(CourseError, match="another retriever"):
        policy(**policy.inputs([question_example(torch.ones(4), torch.randn(2, 4), [2])]))


def test_a_saved_question_policy_is_tied_to_its_retriever(tmp_path):
    policy = QuestionPolicy(PolicyConfig(input_dim=3, width=16, heads=2, question_aware=1))
    torch.nn.init.normal_(policy.out[1].weight)
    identity = {**IDENTITY, "stage": "policy", "retriever": "tiny-retriever"}
    save_policy(tmp_path / "q.safetensors", policy, identity)
    loaded = load_policy(tmp_path / "q.safetensors", identity)
    ex = question_example(torch.ones(3), torch.randn(4, 3), [4])
    assert isinstance(loaded, QuestionPolicy)
    torch.testing.assert_close(loaded(**loaded.inputs([ex])), policy.eval()(**policy.inputs([ex])))
    with pytest.raises(CourseError, match="rerun notebooks/04_policy_grpo.ipynb with this retriever"):
        load_policy(tmp_path / "q.safetensors", {**identity, "retriever": "another"})
    # a policy saved before the word-overlap input: refused with what to rerun, not "corrupt"
    from safetensors.torch import load_file, save_file

    from refrag_lib.checkpoint import read_metadata

    old = {name: t for name, t in load_file(tmp_path / "q.safetensors").items() if "word" not in name}
    save_file(old, tmp_path / "old.safetensors", metadata=read_metadata(tmp_path / "q.safetensors"))
    with pytest.raises(CourseError, match="from before it read the question's words"):
        load_policy(tmp_path / "old.safetensors", identity)


def test_grpo_with_another_reward_learns_to_expand_the_chunk_the_question_points_at():
    """Reward 1 when the chunk whose key matches the question is expanded: after training the greedy policy
    expands it far more often than chance (1 in 6) on fresh questions."""
    torch.manual_seed(0)
    policy = QuestionPolicy(PolicyConfig(input_dim=8, width=16, heads=2, question_aware=1))
    cfg = GRPOConfig(steps=1, batch_size=4, group_size=8, updates=4, lr=1e-2, fractions=(1 / 6,))
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr)

    def draw(rng):
        keys = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(6, 8)), dtype=torch.float32), dim=-1)
        target = int(rng.integers(6))
        return question_example(keys[target], keys, [3, 3]), target

    def reward(rows, masks):
        return torch.tensor([float(mask[targets[id(row)]]) for row, mask in zip(rows, masks)])

    rng = np.random.default_rng(0)
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        drawn = [draw(rng) for _ in range(cfg.batch_size)]
        targets = {id(ex): t for ex, t in drawn}
        grpo_step(None, policy, optimizer, [ex for ex, _ in drawn], 1 / 6, cfg, generator, rng, reward=reward)
    fresh = [draw(rng) for _ in range(100)]
    masks = QuestionPolicySelector(policy)([ex for ex, _ in fresh], 1 / 6)
    assert np.mean([mask[t] for mask, (_, t) in zip(masks, fresh)]) > 0.6


def test_the_warm_start_learns_where_answers_lie_from_the_word_overlap():
    """Supervised on answer places: the answer chunk is the one holding the question's words on the passage
    the question is about; after the warm start the policy's first pick is it on fresh questions (chance: 1 in 6)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    def draw():
        target, keys = int(rng.integers(6)), torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
        overlap = torch.rand(6, 2) * 0.5
        overlap[target] = 1.0
        ex = question_example(torch.nn.functional.normalize(torch.randn(4), dim=0), keys, [3, 3], overlap)
        return AnswerExample(**vars(ex), answer_span=(target,)), target

    policy = QuestionPolicy(PolicyConfig(input_dim=4, width=16, heads=2, question_aware=1))
    history = locate_answers(policy, [draw()[0] for _ in range(128)], epochs=6, lr=1e-2, progress=False)
    assert len(history) == 6 and history[-1]["loss"] < history[0]["loss"]
    fresh = [draw() for _ in range(100)]
    masks = QuestionPolicySelector(policy)([ex for ex, _ in fresh], 1 / 6)
    assert np.mean([mask[t] for mask, (_, t) in zip(masks, fresh)]) > 0.9
    with pytest.raises(CourseError, match="nothing to locate"):
        locate_answers(policy, [AnswerExample(**{**vars(fresh[0][0]), "answer_span": ()})], epochs=1, lr=1e-2,
                       progress=False)


@pytest.fixture(scope="module")
def qa_setup():
    model, passages, retriever, _, items = tiny_qa(k=8, top_k=3)  # k = 8: an ID of ~6 tokens often fits one chunk
    store = build_chunk_store(model, passages, progress=False, retriever=retriever)
    return model, items, PassageChunks(model, passages, keys=store), retriever


def test_answer_examples_find_the_answer_chunk_and_score_the_gold_answer(qa_setup):
    model, items, chunks, _ = qa_setup
    examples = answer_examples(model, items, chunks, top_k=2, rng=np.random.default_rng(0))
    decode = model.decoder_tokenizer.decode
    for ex, it in zip(examples, items):
        assert all(normalize_answer(it.answers[0]) in normalize_answer(decode(ex.segments.chunks[i]))
                   for i in ex.answer_chunks)
        assert ex.chunk_vectors.shape[0] == ex.n_chunks == ex.chunk_keys.shape[0] == sum(ex.passages())
        assert ex.word_overlap.shape == (ex.n_chunks, 2)
        span = "".join(decode([t for i in ex.answer_span for t in ex.segments.chunks[i]]))
        assert normalize_answer(it.answers[0]) in normalize_answer(span) or not ex.answer_span
        if ex.answer_chunks:
            assert ex.answer_span == ex.answer_chunks
    assert all(ex.answer_span for ex in examples)  # the gold passage is in: one chunk or two neighbours hold it
    unencoded = answer_examples(model, items, chunks, top_k=2, rng=np.random.default_rng(0), encode=False)
    assert [ex.answer_span for ex in unencoded] == [ex.answer_span for ex in examples]
    assert unencoded[0].chunk_vectors.shape == (unencoded[0].n_chunks, 0)
    assert sum(bool(ex.answer_chunks) for ex in examples) >= 4  # the gold passage is in: often one chunk holds it
    masks = [[i in ex.answer_chunks for i in range(ex.n_chunks)] for ex in examples[:2]]
    summed, tokens = answer_nll(model, examples[:2], masks)
    with torch.no_grad():
        reference = suffix_token_stats(model, [ex.target for ex in examples[:2]], [[*m, True] for m in masks])
    torch.testing.assert_close(summed, reference.nll.cpu(), rtol=1e-4, atol=1e-4)
    expected = [len(model.tokenize(" " + it.answers[0])) + 1 for it in items[:2]]  # answer + EOS
    assert tokens.tolist() == expected
    assert answer_hits(QuestionSelector(), examples, 1.0) == [1.0] * len(examples)  # p = 1 expands every chunk
    one_chunk = [ex for ex in examples if ex.answer_chunks]
    assert answer_landing(QuestionSelector(), one_chunk, (1.0,)) == {"1.0": 1.0}
    assert answer_landing(QuestionSelector(), [ex for ex in examples if not ex.answer_chunks], (1.0,)) == {"1.0": None}


def test_question_policy_trains_on_answers_and_the_held_out_table_has_every_selector(qa_setup):
    model, items, chunks, retriever = qa_setup
    policy = QuestionPolicy(PolicyConfig(input_dim=retriever.dim, width=16, heads=2, question_aware=1))
    cfg = GRPOConfig(steps=3, batch_size=1, group_size=3, updates=2, fractions=(0.25,))
    objective = Spy(clipped_objective)
    result = train_question_policy(model, policy, items, chunks, 2, cfg, progress=False, objective=objective)
    assert len(objective.grad_modes) == cfg.steps * cfg.updates
    assert len(result.history) == 3 and all(math.isfinite(r["reward_mean"]) for r in result.history)
    assert all(r["reward_mean"] < 0 for r in result.history)  # minus an NLL
    with pytest.raises(CourseError, match="one question per step"):
        train_question_policy(model, policy, items, chunks, 2, GRPOConfig(steps=1, batch_size=2), progress=False)
    examples = answer_examples(model, items, chunks, top_k=2)
    selectors = {"question_rl": QuestionPolicySelector(policy), "question": QuestionSelector(),
                 "random": RandomSelector(0)}
    table = held_out_table(model, examples, selectors, fractions=(0.25, 0.5))
    assert set(table["by_p"]) == set(selectors) and set(table["by_p"]["question"]) == {"0.25", "0.5"}
    row = table["by_p"]["question_rl"]["0.5"]
    assert row["answer_nll_ci"][0] <= row["answer_nll"] <= row["answer_nll_ci"][1]
    assert "vs_reference" in row and "vs_reference" not in table["by_p"]["question"]["0.5"]
    assert table["n_questions"] == len(items) and 0 <= table["with_answer_chunk"] <= len(items)
    assert question_policy_identity(type("P", (), {"name": "tiny", "k": 4, "encoder": "e", "decoder": "d"}),
                                    "r")["retriever"] == "r"
