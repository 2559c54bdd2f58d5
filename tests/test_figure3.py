"""The paper's Figure 3 (held-out log-ppl against p for every selector), its verdict, and notebook 04's metrics."""

import numpy as np
import pytest
from test_grpo import pairs

from refrag_lib.errors import CourseError
from refrag_lib.figure3 import compare_at, figure3, policy_metrics
from refrag_lib.policy import ChunkPolicy, PolicyConfig
from refrag_lib.selectors import PolicySelector, score_examples


def test_figure3_table_covers_every_selector_and_fraction(tiny):
    examples = score_examples(tiny, pairs(tiny, n=4))
    policy = ChunkPolicy(PolicyConfig(input_dim=tiny.encoder.config.hidden_size, width=16, heads=2))
    table = figure3(tiny, examples, {"rl": PolicySelector(policy)}, fractions=(0.0, 0.5), batch_size=3,
                    progress=False)
    by_p = table["log_ppl_by_p"]
    assert set(by_p) == {"rl", "ppl_desc", "ppl_asc", "random"} and set(table["random_std"]) == {"0.0", "0.5"}
    at_zero = {name: row["0.0"] for name, row in by_p.items()}
    assert max(at_zero.values()) - min(at_zero.values()) < 1e-5  # p = 0 expands nothing, whoever chooses
    assert at_zero["rl"] == pytest.approx(table["none"], abs=1e-5)
    assert all(np.isfinite(v) for row in by_p.values() for v in row.values())


def test_verdict_compares_rl_with_random_spread_and_perplexity_heuristic():
    table = {"log_ppl_by_p": {"rl": {"0.25": 2.0}, "random": {"0.25": 2.3}, "ppl_desc": {"0.25": 1.9},
                              "ppl_asc": {"0.25": 2.5}},
             "random_std": {"0.25": 0.1}}
    verdict = compare_at(table, 0.25)
    assert verdict["rl_beats_random_beyond_spread"] and verdict["winner"] == "ppl_desc"
    assert verdict["rl_minus_ppl_desc"] == pytest.approx(0.1)
    assert not compare_at({**table, "random_std": {"0.25": 0.5}}, 0.25)["rl_beats_random_beyond_spread"]
    with pytest.raises(CourseError):
        compare_at(table, 0.5)


def test_policy_metrics_hold_figure3_its_verdict_and_both_policies():
    table = {"log_ppl_by_p": {"rl": {"0.25": 2.0}, "random": {"0.25": 2.3}, "ppl_desc": {"0.25": 1.9},
                              "ppl_asc": {"0.25": 2.5}},
             "random_std": {"0.25": 0.1}, "random_seeds": 3, "none": 2.6, "all": 1.5}
    summary = {"reward_curve_first": -3.0, "reward_curve_last": -2.5, "reward_gain_first": 0.0,
               "reward_gain_last": 0.2, "train_seconds": 9.0, "grpo_config": {"steps": 2}}
    curve = [{"step": 0, "p": 0.1, "reward_mean": -2.0, "reward_gain_vs_random": 0.1, "loss": 0.3}]
    metrics = policy_metrics(table, summary, {**summary, "reward_gain_last": 0.4}, curve, {"epochs": 2}, {"rl": {}},
                             context_tokens=256)
    assert metrics["verdict_at_0.25"] == compare_at(table, 0.25)
    assert metrics["none"] == 2.6 and metrics["reward_gain_last"] == 0.2 and metrics["context_tokens"] == 256
    question = metrics["question_policy"]
    assert question["reward_gain_last"] == 0.4 and question["warm_start"] == {"epochs": 2}
    assert question["curve"] == [{"step": 0, "p": 0.1, "reward_mean": -2.0, "reward_gain_vs_random": 0.1}]
