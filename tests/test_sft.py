"""SFT and evaluation plumbing on tiny random models: both arms train the parts they should, the
evaluation table has every row, and the REFRAG-ready index refuses vectors of another encoder."""

import copy
import math

import numpy as np
import pytest
import torch
from conftest import tiny_qa, tiny_refrag

from refrag_lib.answering import answer_questions, generate_answer, prepare
from refrag_lib.arms import QA_ROWS
from refrag_lib.checkpoint import STATE_DIR, WEIGHTS, read_metadata
from refrag_lib.chunk_store import PassageChunks, build_chunk_store
from refrag_lib.errors import CourseError
from refrag_lib.policy import ChunkPolicy, PolicyConfig
from refrag_lib.qa_eval import evaluate_all, grid_table, metrics_table, paired_differences, sft_metrics, side_by_side
from refrag_lib.ready_index import build_ready_index, load_ready_index
from refrag_lib.selectors import PolicySelector, make_selector
from refrag_lib.sft import SFTConfig, SFTTask, train_arm, training_batch
from refrag_lib.studies.sft_curve import passages_store
from refrag_lib.train import train

IDENTITY = {"preset": "tiny", "k": "4", "encoder": "tiny-bert", "decoder": "tiny-llama"}


@pytest.fixture(scope="module")
def setup():
    model, _, retriever, index, items = tiny_qa(k=4, top_k=6)
    policy = ChunkPolicy(PolicyConfig(input_dim=model.encoder.config.hidden_size, width=16))
    return model, retriever, index, items, policy


def test_training_batches_are_repeatable_and_hold_the_gold(setup):
    _, _, _, items, _ = setup
    cfg = SFTConfig(steps=2, top_k=2, batch_size=3, gold_fraction=1.0)
    first, again = (training_batch(items, cfg, np.random.default_rng([0, 0, 0])) for _ in range(2))
    assert [b.rows for b in first] == [b.rows for b in again]
    assert all(b.gold in b.rows and len(b.rows) == 2 for b in first)


@pytest.mark.parametrize("arm", ["rag", "refrag"])
def test_each_arm_trains_its_parts_only(setup, arm, tmp_path):
    start, _, index, items, policy = setup
    model = copy.deepcopy(start)
    before = {name: copy.deepcopy(getattr(model, name).state_dict()) for name in ("encoder", "projector", "decoder")}
    cfg = SFTConfig(steps=2, top_k=2, batch_size=2, p=0.25, lr=1e-3)
    result = train_arm(model, arm, cfg, items, PassageChunks(model, index.passages), PolicySelector(policy),
                       tmp_path, {"preset": "tiny"}, progress=False)
    assert len(result.history) == 2 and all(math.isfinite(r["loss"]) for r in result.history)
    changed = {name: any(not torch.equal(v, getattr(model, name).state_dict()[key]) for key, v in state.items())
               for name, state in before.items()}
    assert changed == {"encoder": arm == "refrag", "projector": arm == "refrag", "decoder": True}
    assert read_metadata(tmp_path / WEIGHTS)["parts"] == ",".join(result.summary["trained_parts"])


def test_interrupted_arm_resumes_to_the_same_weights(setup, tmp_path):
    start, retriever, index, items, _ = setup
    cfg = SFTConfig(steps=3, top_k=2, batch_size=2, p=0.25, lr=1e-3, save_every=1)
    keys = build_chunk_store(start, index.passages, progress=False, retriever=retriever)
    chunks = PassageChunks(start, index.passages, keys=keys)  # the REFRAG arm expands the question's chunks
    policy = make_selector("question")
    whole = copy.deepcopy(start)
    torch.manual_seed(0)  # dropout in the trained encoder draws from torch's generator (saved with the state)
    train_arm(whole, "refrag", cfg, items, chunks, policy, tmp_path / "whole", IDENTITY, progress=False)
    assert not (tmp_path / "whole" / STATE_DIR).exists()  # a finished arm keeps its weights, not its state
    parted = copy.deepcopy(start)
    task = SFTTask(parted, "refrag", cfg, items, chunks, policy)
    torch.manual_seed(0)
    train(parted, cfg, task, tmp_path / "parted", IDENTITY, progress=False, max_new_steps=2)
    assert (tmp_path / "parted" / STATE_DIR).exists()
    resumed = copy.deepcopy(start)  # a fresh process: start weights, then the checkpoint
    result = train_arm(resumed, "refrag", cfg, items, chunks, policy, tmp_path / "parted", IDENTITY,
                       progress=False)
    assert [r["step"] for r in result.history] == [0, 1, 2]
    for name, value in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=0, atol=1e-6)


def test_evaluation_table_has_every_row(setup):
    model, retriever, index, items, policy = setup
    store = build_chunk_store(model, index.passages, progress=False, retriever=retriever)
    selectors = {name: make_selector(name, {"rl": policy}, model) for name in ("question", "rl", "perplexity", "none")}
    out = evaluate_all(model, model, items[:3], store, selectors, "question", p=0.25, top_k=2, max_passages=4,
                       fractions=(0.25, 0.5), ttft_questions=1, repeats=2, warmup=0, max_new_tokens=3,
                       progress=False)
    table = metrics_table(out["results"])
    for row, (low, high) in table["exact_match_ci"].items():
        assert low <= table["exact_match"][row] <= high
    assert set(paired_differences(out["results"])) == {"refrag", "refrag_gold", "refrag_equal_latency",
                                                        "refrag_equal_latency_gold"}
    grid = grid_table(out["grid"])
    assert {name: sorted(rows) for name, rows in grid.items()} == {
        "question": ["0.25", "0.5"], "rl": ["0.25", "0.5"], "perplexity": ["0.25", "0.5"], "none": ["0.0"]}
    assert out["results"]["refrag"] is out["grid"]["question"]["0.25"]  # the table's row, answered once
    assert grid["question"]["0.5"]["expanded_fraction"] > grid["question"]["0.25"]["expanded_fraction"] > 0
    names = {*QA_ROWS, *(row + "_gold" for row in QA_ROWS)}
    for key in ("exact_match", "f1", "ttft_ms", "input_tokens"):
        assert set(table[key]) == names
        assert all(math.isfinite(v) for v in table[key].values())
    assert all(v > 0 for v in table["ttft_ms"].values())
    assert 2 <= out["equal_latency_passages"] <= 4
    # the gold passage alone always holds the answer; compression shortens the decoder input
    assert table["answer_in_context"]["no_context_gold"] == 1.0
    assert table["input_tokens"]["refrag"] < table["input_tokens"]["rag"]
    assert table["input_tokens"]["no_context"] < table["input_tokens"]["rag"]
    assert len(side_by_side(items[:3], out["results"], store, model, n=2)) == 2
    metrics = sft_metrics(out, table, paired_differences(out["results"]), grid, {"refrag": {}},
                          {"rag": {}, "refrag": {}}, selector="question", p=0.25, top_k=2)
    assert metrics["exact_match"] == table["exact_match"] and metrics["selector_grid"] == grid
    assert metrics["paired_difference"]["refrag"] == paired_differences(out["results"])["refrag"]["mean"]
    assert metrics["ttft_speedup_at_k"] == table["ttft_ms"]["rag"] / table["ttft_ms"]["refrag"]
    assert metrics["equal_latency_passages"] == out["equal_latency_passages"] and metrics["selector"] == "question"


@pytest.mark.parametrize("native_bf16", [False, True], ids=["no native bf16", "native bf16"])
def test_answers_run_under_bf16_autocast_only_where_training_does(setup, native_bf16, monkeypatch):
    model, retriever, index, items, _ = setup
    store = build_chunk_store(model, index.passages, progress=False, retriever=retriever)
    prepared = [prepare(model, it, it.rows[:2], store, "rag") for it in items[:3]]
    monkeypatch.setattr("refrag_lib.precision.native_cpu_bf16", lambda: native_bf16)
    autocast_seen, generate = [], model.generate

    def spy(inputs, **kwargs):
        autocast_seen.append(torch.is_autocast_enabled("cpu"))
        return generate(inputs, **kwargs)

    monkeypatch.setattr(model, "generate", spy)
    answers = answer_questions(model, prepared, max_new_tokens=3, batch_size=2)
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    assert autocast_seen == [native_bf16, native_bf16]  # two batches of at most 2 questions
    autocast_seen.clear()
    answer_questions(model, prepared, max_new_tokens=3, batch_size=2, cpu_bf16=False)
    assert autocast_seen == [False, False]
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks out of the call


def test_ready_index_round_trip_and_refusals(setup, tmp_path):
    model, retriever, index, _, policy = setup
    first = tmp_path / "first"
    keys = build_chunk_store(model, index.passages, progress=False, retriever=retriever)
    keys.save(first / "chunk_store.safetensors")
    build_ready_index(tmp_path, model, index, "test", p=0.25, top_k=2, selector="question", keys_from=first,
                      progress=False)
    ready = load_ready_index(tmp_path, model, retriever, {"rl": policy})
    assert ready.selector == "question" and torch.equal(ready.store.keys, keys.keys)
    result = generate_answer(ready, "Which river at City_003?", max_new_tokens=3, repeats=1)
    assert len(result["passages"]) == 2 and result["ttft_ms"] > 0 and result["selector"] == "question"
    assert len(result["expanded_chunks"]) == round(0.25 * result["n_chunks"])
    assert generate_answer(ready, "Which river?", max_new_tokens=2, repeats=1, selector="rl")["selector"] == "rl"
    with pytest.raises(CourseError, match="Unknown selector"):
        generate_answer(ready, "Which river?", selector="greedy")
    build_ready_index(tmp_path / "old", model, index, "test", p=0.25, top_k=2, selector="question", progress=False)
    old = load_ready_index(tmp_path / "old", model, retriever, {"rl": policy})  # a store without question-side vectors
    with pytest.raises(CourseError, match="rerun notebooks/01_indexing"):
        generate_answer(old, "Which river?", max_new_tokens=2, repeats=1)
    with pytest.raises(CourseError, match="top-K must be between 1 and the"):
        generate_answer(ready, "Which river?", top_k=len(index) + 1)
    other = tiny_refrag(k=4, seed=1)  # same architecture, other encoder weights
    with pytest.raises(CourseError, match="encoder weights"):
        load_ready_index(tmp_path, other, retriever, {"rl": policy})
    with pytest.raises(CourseError, match="k="):
        load_ready_index(tmp_path, tiny_refrag(k=2), retriever, {"rl": policy})


def test_sft_config_refuses_nonsense():
    with pytest.raises(CourseError):
        SFTConfig(steps=0)
    with pytest.raises(CourseError):
        SFTConfig(steps=1, p=1.5)
    with pytest.raises(CourseError, match="Unknown selector 'greedy'"):
        SFTConfig(steps=1, selector="greedy")
    assert np.isclose(SFTConfig(steps=1).lr, 1e-4)  # the course's SFT LR, chosen by notebook 05's lever table


def test_the_learning_curve_reads_the_passages_of_its_questions_renumbered(setup):
    model, retriever, index, items, _ = setup
    index_store = build_chunk_store(model, index.passages, progress=False, retriever=retriever)
    store, renumbered = passages_store(model, index, index_store, items[:3], top_k=2)
    assert store.n_passages == len({r for it in items[:3] for r in it.rows[:2]})
    for before, after in zip(items[:3], renumbered):
        assert len(after.rows) == 2
        for old, new in zip(before.rows[:2], after.rows):
            assert store.chunks_for([new])[0] == index_store.chunks_for([old])[0]
            assert torch.equal(store.keys_for([new]), index_store.keys_for([old]))
