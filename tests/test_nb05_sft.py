"""Notebook 05 end to end under SMOKE: runs clean, writes the metrics contract, leaves a REFRAG-ready
index the `generate` command answers from, and the numbers pass floors a broken pipeline would miss."""

import math

import pytest

from refrag_lib.arms import QA_ROWS
from refrag_lib.course.notebooks import notebook_errors

pytestmark = pytest.mark.notebooks

NAMES = {*QA_ROWS, *(row + "_gold" for row in QA_ROWS)}


@pytest.fixture(scope="module")
def sft_run(notebooks):
    executed = notebooks.run("05_sft")
    return executed, notebooks.metrics("sft")


def test_notebook_runs_without_hidden_errors(sft_run):
    executed, _ = sft_run
    assert notebook_errors(executed) == []


def test_metrics_contract(sft_run):
    _, metrics = sft_run
    for key in ("exact_match", "f1", "ttft_ms", "input_tokens", "answer_in_context"):
        assert set(metrics[key]) == NAMES, key
        assert all(math.isfinite(v) for v in metrics[key].values()), key
    for key in ("exact_match", "f1", "answer_in_context"):
        assert all(0.0 <= v <= 1.0 for v in metrics[key].values()), key
    assert all(v > 0 for v in metrics["ttft_ms"].values())
    assert metrics["n_eval"] >= 1 and metrics["top_k"] >= 1 and metrics["k"] >= 1 and 0 <= metrics["p"] <= 1
    assert metrics["top_k"] <= metrics["equal_latency_passages"] <= 16 * metrics["top_k"]
    assert metrics["equal_latency_p"] == pytest.approx(
        metrics["p"] * metrics["top_k"] / max(metrics["equal_latency_passages"], metrics["top_k"]))
    assert set(metrics["em_by_answer_place"]) == {n for n in NAMES if n.startswith("refrag")}
    for places in metrics["em_by_answer_place"].values():
        assert sum(group["questions"] for group in places.values()) == metrics["n_eval"]
    for arm in ("rag", "refrag"):
        assert math.isfinite(metrics["train"][arm]["last_loss"])
    for key in ("exact_match_ci", "f1_ci"):
        assert set(metrics[key]) == NAMES, key
        for row, (low, high) in metrics[key].items():
            assert low <= metrics[key[:-3]][row] <= high, (key, row)
    assert set(metrics["paired_difference_ci"]) == {n for n in NAMES if n.startswith("refrag")}
    assert metrics["selector"] == "question_rl" and metrics["train"]["refrag"]["config"]["selector"] == "question_rl"
    grid = metrics["selector_grid"]
    assert set(grid) == {"question", "question_rl", "rl", "random", "none"} and set(grid["none"]) == {"0.0"}
    assert set(grid["question"]) == {"0.05", "0.1", "0.25"}
    for rows in grid.values():
        for cell in rows.values():
            assert cell["ci"][0] <= cell["exact_match"] <= cell["ci"][1] and cell["ttft_ms"] > 0
    # the table's REFRAG row is the grid's cell of the same selector and p
    assert metrics["exact_match"]["refrag"] == grid["question_rl"][str(metrics["p"])]["exact_match"]


def test_floors_a_broken_pipeline_would_miss(sft_run):
    _, m = sft_run
    ctx, inputs, em = m["answer_in_context"], m["input_tokens"], m["exact_match"]
    # the gold passage really is forced in, and "no context" really has none
    assert ctx["no_context"] == 0.0
    assert ctx["rag_gold"] == ctx["refrag_gold"] == ctx["no_context_gold"] == 1.0
    assert ctx["rag"] == ctx["refrag"]  # same retrieved passages for both arms
    # compression: one position per chunk vector instead of k tokens
    assert inputs["refrag"] < inputs["rag"] / 3
    assert inputs["no_context"] < inputs["no_context_gold"] < inputs["rag"]
    # reading the gold passage never does worse than guessing with no passage at all
    assert em["rag_gold"] >= em["no_context"] and m["f1"]["rag_gold"] >= m["f1"]["no_context"]


def test_generate_command_answers_from_the_ready_index(sft_run, notebooks, capsys):
    from refrag_lib.__main__ import main

    assert (notebooks.root / "sft" / "ready_index" / "chunk_store.safetensors").is_file()
    code = main(["generate", "--run-dir", str(notebooks.root), "--question", "Where was Person_039 born?"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "answer:" in out and "TTFT" in out and "expanded chunks" in out and "retrieved passages" in out
    assert "selector: question_rl" in out  # the one notebook 05 fine-tuned REFRAG with
    code = main(["generate", "--run-dir", str(notebooks.root), "--question", "Where?", "--selector", "question"])
    assert code == 0 and "selector: question\n" in capsys.readouterr().out


def test_sft_curve_command_scores_both_arms_at_each_step(sft_run, notebooks):
    import json

    from refrag_lib.__main__ import main

    code = main(["sft-curve", "--run-dir", str(notebooks.root), "--steps", "1", "2", "--eval-questions", "3"])
    assert code == 0
    curve = json.loads((notebooks.root / "sft" / "curve" / "curve.json").read_text())
    for arm in ("rag", "refrag"):
        assert [point["step"] for point in curve[arm]] == [0, 1, 2]
        for point in curve[arm]:
            low, high = point["exact_match_ci"]
            assert 0.0 <= low <= point["exact_match"] <= high <= 1.0
    assert curve["selector"] == "question_rl" and curve["n_eval"] == 3
    assert main(["sft-curve", "--run-dir", str(notebooks.root), "--steps", "1"]) == 1  # refuses to overwrite
    assert main(["sft-curve", "--run-dir", str(notebooks.root), "--steps", "1", "--name", "refrag"]) == 1  # 05's arm


def test_sft_curve_lever_row_keeps_its_own_folder_and_settings(sft_run, notebooks):
    import json

    from refrag_lib.__main__ import main

    code = main(["sft-curve", "--run-dir", str(notebooks.root), "--steps", "1", "--eval-questions", "2",
                 "--arms", "rag", "--lr", "1e-4", "--batch-size", "2", "--name", "lr-1e-4"])
    assert code == 0
    curve = json.loads((notebooks.root / "sft" / "lr-1e-4" / "curve.json").read_text())
    assert curve["lr"] == 1e-4 and curve["batch_size"] == 2 and "refrag" not in curve
    assert [point["step"] for point in curve["rag"]] == [0, 1]
