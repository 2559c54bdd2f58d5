"""Retrieval: FAISS search on random unit vectors, recall, save/load, errors."""

import json

import faiss
import numpy as np
import pytest
from test_chunk_store import tiny_passages

from refrag_lib import index as ix
from refrag_lib.chunk_store import load_chunk_store
from refrag_lib.data import Passage, QAExample
from refrag_lib.errors import CourseError, MissingArtifactError
from refrag_lib.runs import open_run

RETRIEVER = "offline:all-MiniLM-L6-v2"


def unit_vectors(n, dim=16, seed=0):
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def make_passages(n):
    return [Passage(f"p{i:05d}", f"passage number {i}", f"title {i}", "city") for i in range(n)]


@pytest.fixture
def random_index():
    vectors = unit_vectors(200)
    return ix.build_index(vectors, make_passages(200), RETRIEVER, use_gpu=False), vectors


def test_each_vector_retrieves_itself_first_with_cosine_one(random_index):
    index, vectors = random_index
    rows, scores = index.search(vectors, top_k=3)
    assert rows.shape == scores.shape == (200, 3)
    np.testing.assert_array_equal(rows[:, 0], np.arange(200))
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def test_scores_are_cosine_similarities(random_index):
    index, vectors = random_index
    query = unit_vectors(1, seed=7)
    rows, scores = index.search(query, top_k=200)
    np.testing.assert_allclose(scores[0], (vectors @ query[0])[rows[0]], atol=1e-5)
    assert index.ids(rows[:, :2]) == [[f"p{r:05d}" for r in rows[0, :2]]]


@pytest.mark.parametrize("top_k", [0, -1, 201])
def test_top_k_outside_the_index_is_refused(random_index, top_k):
    with pytest.raises(CourseError, match="top_k must be between 1 and the number of indexed passages"):
        random_index[0].search(unit_vectors(1), top_k)


def test_queries_of_another_dimension_are_refused(random_index):
    with pytest.raises(CourseError, match="dimension 8"):
        random_index[0].search(unit_vectors(1, dim=8), 1)


def test_empty_passage_list_is_refused():
    with pytest.raises(CourseError, match="No passages to index"):
        ix.build_index(np.zeros((0, 16), np.float32), [], RETRIEVER)


def test_recall_and_gold_ranks_on_a_hand_made_case():
    ranked = np.array([[3, 1, 2], [0, 4, 5], [7, 8, 9], [6, 2, 1]])
    gold = [3, 4, 1, 1]
    np.testing.assert_array_equal(ix.gold_ranks(ranked, gold), [0, 1, -1, 2])
    assert ix.recall_at_k(ranked, gold, ks=(1, 2, 3)) == {1: 0.25, 2: 0.5, 3: 0.75}
    with pytest.raises(CourseError, match="recall@5 needs 5 results"):
        ix.recall_at_k(ranked, gold, ks=(5,))


def test_recall_counts_any_relevant_row_when_a_question_has_several():
    ranked = np.array([[3, 1, 2], [0, 4, 5], [7, 8, 9]])
    relevant = [{1, 2}, {9, 5}, set()]  # the last question's answer is in no passage: always a miss
    np.testing.assert_array_equal(ix.gold_ranks(ranked, relevant), [1, 2, -1])
    assert ix.recall_at_k(ranked, relevant, ks=(1, 2, 3)) == {1: 0.0, 2: pytest.approx(1 / 3), 3: pytest.approx(2 / 3)}


def test_without_gold_ids_a_hit_is_a_passage_that_contains_an_answer():
    passages = [Passage("a", "The Kestrel was launched in 1893."), Passage("b", "Ilse Varn captained it."),
                Passage("c", "It sailed in 18930 days."), Passage("d", "Captain ILSE varn, again!")]
    questions = [QAExample("q0", "When?", ("1893",)), QAExample("q1", "Who?", ("Ilse Varn", "Varn")),
                 QAExample("q2", "What?", ("nothing here",))]
    relevant, kind = ix.relevant_rows(passages, questions)
    assert kind == ix.ANSWER_IN_PASSAGE
    assert relevant == [{0}, {1, 3}, set()]  # whole words after SQuAD normalisation: not 18930
    with_gold = [QAExample("q0", "When?", ("1893",), "c")]
    assert ix.relevant_rows(passages, with_gold) == ([{2}], ix.GOLD_PASSAGE)  # a gold id wins over the text
    with pytest.raises(CourseError, match="not among the passages"):
        ix.relevant_rows(passages, [QAExample("q0", "When?", ("1893",), "zz")])


def test_save_load_round_trip(tmp_path, random_index):
    index, vectors = random_index
    ix.save_index(index, tmp_path)
    meta = json.loads((tmp_path / ix.META_FILE).read_text())
    assert meta["retriever"] == RETRIEVER and meta["dim"] == 16 and meta["n_passages"] == 200
    assert meta["faiss_version"] == faiss.__version__
    loaded = ix.load_index(tmp_path, RETRIEVER, use_gpu=False)
    assert loaded.passages == index.passages
    queries = unit_vectors(5, seed=3)
    for a, b in zip(loaded.search(queries, 10), index.search(queries, 10), strict=True):
        np.testing.assert_array_equal(a, b)


def test_loading_an_index_of_another_retriever_names_both(tmp_path, random_index):
    ix.save_index(random_index[0], tmp_path)
    with pytest.raises(CourseError, match=r"built with retriever 'offline:all-MiniLM-L6-v2'.*'other/model'"):
        ix.load_index(tmp_path, "other/model")


def test_missing_index_names_the_notebook(tmp_path):
    with pytest.raises(MissingArtifactError, match="01_indexing"):
        ix.load_index(tmp_path / "nowhere")
    with pytest.raises(MissingArtifactError, match="01_indexing"):
        ix.load_run_index(open_run("cpu", tmp_path))


def test_subset_keeps_every_gold_passage():
    passages = make_passages(50)
    questions = [QAExample(f"q{i}", "?", ("a",), f"p{(7 * i) % 50:05d}") for i in range(20)]
    subset, kept = ix.subset_with_gold(passages, questions, n_passages=15, n_questions=10)
    assert len(subset) == 15 and kept == questions[:10]
    assert {q.gold_passage_id for q in kept} <= {p.id for p in subset}
    assert subset == sorted(subset, key=lambda p: p.id)  # corpus order kept
    with pytest.raises(CourseError, match="more than n_passages"):
        ix.subset_with_gold(passages, questions, n_passages=5, n_questions=10)


def test_subset_without_gold_ids_keeps_a_passage_holding_each_answer():
    passages = [Passage(f"p{i}", f"Entity {i} holds code X{i}.") for i in range(30)]
    questions = [QAExample(f"q{i}", "?", (f"X{3 * i}",)) for i in range(5)]
    subset, kept = ix.subset_with_gold(passages, questions, n_passages=8, n_questions=5)
    assert len(subset) == 8 and kept == questions
    assert {f"p{3 * i}" for i in range(5)} <= {p.id for p in subset}


# ---- the chunk store (tiny random REFRAG model) ---------------------------------------------------


def test_build_run_index_writes_index_store_and_metrics(tmp_path, tiny):
    """The whole pipeline notebook 01 and the CLI share, with the tiny encoder standing in as retriever."""
    run = open_run("cpu", tmp_path, k=tiny.k)
    retriever = ix.Retriever(RETRIEVER, tiny.encoder, tiny.encoder_tokenizer)
    passages = tiny_passages()
    questions = [QAExample(f"q{i}", p.text[:40], ("x",), p.id) for i, p in enumerate(passages)]
    metrics = ix.build_run_index(run, passages, questions, retriever, tiny, progress=False, use_gpu=False)
    assert metrics["n_passages"] == 3 and metrics["n_eval"] == 3 and metrics["index_device"] == "faiss-cpu"
    assert set(metrics) >= {"recall_at_1", "embed_seconds", "n_chunks", "chunk_store_seconds"}
    assert "recall_at_5" not in metrics  # only 3 passages: recall@5 would be meaningless
    assert json.loads((tmp_path / "index" / "metrics.json").read_text())["n_chunks"] == metrics["n_chunks"]
    index = ix.load_run_index(run, use_gpu=False)
    store = load_chunk_store(tmp_path / "index", tiny, index=index)
    assert store.n_passages == len(index) == 3


@pytest.mark.real_models
def test_real_retriever_finds_gold_passages_far_above_chance():
    from refrag_lib.config import get_preset
    from refrag_lib.data import default_data_dir, load_passages, load_qa

    data = default_data_dir()
    passages, questions = ix.subset_with_gold(load_passages(data / "corpus.jsonl"), load_qa(data / "qa_eval.jsonl"),
                                              n_passages=50, n_questions=40)
    retriever = ix.load_retriever(get_preset("cpu"))
    index = ix.build_index(retriever.embed([p.text for p in passages], progress=False), passages, retriever.name)
    rows, _ = ix.retrieve(retriever, index, [q.question for q in questions], top_k=10)
    recall = ix.recall_at_k(rows, ix.relevant_rows(index.passages, questions)[0])
    # chance is k/50: 0.02, 0.10, 0.20
    assert recall[1] >= 0.3 and recall[5] >= 0.6 and recall[10] >= 0.7, recall
