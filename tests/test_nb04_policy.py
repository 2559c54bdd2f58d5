"""Notebook 04 under SMOKE: runs clean, writes the policy metrics contract, and the numbers make sense."""

import math

import pytest

from refrag_lib.course.notebooks import notebook_errors

pytestmark = pytest.mark.notebooks

SELECTORS = ("rl", "ppl_desc", "ppl_asc", "random")
FRACTIONS = ("0.0", "0.05", "0.1", "0.25", "0.5")


def test_policy_notebook_runs_and_writes_its_metrics(notebooks):
    executed = notebooks.run("04_policy_grpo")
    assert notebook_errors(executed) == []
    metrics = notebooks.metrics("policy")
    by_p = metrics["log_ppl_by_p"]
    assert set(SELECTORS) <= set(by_p)
    for name in SELECTORS:
        assert set(by_p[name]) == set(FRACTIONS)
        assert all(math.isfinite(v) and v > 0 for v in by_p[name].values())
    assert metrics["random_seeds"] >= 3 and set(metrics["random_std"]) == set(FRACTIONS)
    for key in ("reward_curve_first", "reward_curve_last", "train_seconds", "none", "all"):
        assert math.isfinite(metrics[key])
    assert metrics["reward_curve_first"] < 0 and metrics["train_seconds"] > 0
    # p = 0 expands nothing whoever chooses: every selector equals "none"
    assert all(abs(by_p[name]["0.0"] - metrics["none"]) < 1e-4 for name in SELECTORS)
    # floors a broken pipeline would miss: the real tokens help, and expanding hard chunks helps
    assert metrics["all"] <= metrics["none"]
    assert by_p["ppl_desc"]["0.5"] <= by_p["ppl_desc"]["0.0"]
    assert (notebooks.root / "policy" / "policy.safetensors").is_file()
    assert (notebooks.root / "policy" / "cpt_mixed" / "weights.safetensors").is_file()
    # the question-aware policy: its curve, and every selector on held-out questions with intervals
    question = metrics["question_policy"]
    assert len(question["curve"]) == question["grpo_config"]["steps"] and question["train_seconds"] > 0
    held = question["held_out"]
    assert set(held["by_p"]) == {"question_rl", "question", "rl", "random"}
    for rows in held["by_p"].values():
        assert set(rows) == {"0.05", "0.1", "0.25"}
        for row in rows.values():
            low, high = row["answer_nll_ci"]
            assert low <= row["answer_nll"] <= high and row["answer_nll"] > 0
    assert held["n_questions"] >= 4
    assert (notebooks.root / "policy" / "question_policy.safetensors").is_file()
