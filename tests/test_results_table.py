"""The README's results table: generated from a run's metrics, its verdicts chosen by the intervals, written
only between its markers."""

import json

import pytest

from refrag_lib.course.results_table import END, START, read_run, render, write_between_markers
from refrag_lib.errors import CourseError, MissingArtifactError


def interval(mean, low, high):
    return {"mean": mean, "low": low, "high": high}


RUN = {
    "index": {"block_attention": {"questions": 16, "passages": 5, "other_passages_beyond_sink": 0.12,
                                  "other_passages_if_even": 0.4, "most_cross_share": 0.3}},
    "recon": {"intervals": {"1": {"token_accuracy": interval(0.38, 0.35, 0.41),
                                  "token_accuracy_floor": interval(0.16, 0.14, 0.19),
                                  "token_accuracy_gain": interval(0.22, 0.2, 0.25)}},
              "free_vector_ceiling": {"token_accuracy": interval(0.75, 0.64, 0.84)}},
    "cpt": {"k": 16, "preset": "cpu", "eval_pairs": 64, "config": {"context_tokens": 256},
            "intervals": {"no_context": interval(4.36, 4.28, 4.43), "full_context": interval(2.27, 2.14, 2.4),
                          "last_tokens": interval(3.8, 3.71, 3.89), "refrag": interval(3.71, 3.64, 3.77)},
            "gain_over_last_tokens": {"refrag": interval(0.09, 0.02, 0.16)}},
    "sft": {"top_k": 3, "p": 0.1, "selector": "question_rl", "n_eval": 150, "equal_latency_passages": 48,
            "exact_match": {"rag": 0.47, "refrag": 0.45, "refrag_equal_latency": 0.54},
            "exact_match_ci": {"rag": [0.39, 0.55], "refrag": [0.37, 0.53], "refrag_equal_latency": [0.46, 0.62]},
            "ttft_ms": {"rag": 421.0, "refrag": 128.0, "refrag_equal_latency": 493.0},
            "paired_difference": {"refrag": -0.03, "refrag_equal_latency": 0.07},
            "paired_difference_ci": {"refrag": [-0.09, 0.03], "refrag_equal_latency": [0.01, 0.17]}},
    "bench": {"device": "CPU x86_64, 2 cores", "speedup_with_cache": {"s=1024,k=16": 9.5, "s=4096,k=16": 18.7},
              "analytic_speedup": {"s=1024,k=16": 15.6, "s=4096,k=16": 30.6}},
}


def test_the_table_reports_each_figure_with_its_interval_and_its_verdict():
    table = render(RUN, "abc1234", "2026-12-06")
    assert table.startswith(START) and table.endswith(END) and "commit abc1234, 2026-12-06" in table
    assert "TTFT at s = 4096" in table and "19x lower (analytic bound 31x)" in table
    assert "0.45 [0.37, 0.53], 128 ms" in table and "a tie: -0.03 [-0.09, +0.03]" in table
    assert "REFRAG ahead: +0.07 [+0.01, +0.17]" in table  # equal latency: the interval lies above 0
    assert "| 0.31 (the paper's REFRAG16: 0.82) |" in table  # a run before it was stored: (4.36 - 3.71) / (4.36 - 2.27)
    assert "12% (layer mean" in table
    stored = {**RUN, "cpt": {**RUN["cpt"], "context_recovered": interval(0.31, 0.29, 0.33)}}
    assert "| 0.31 [0.29, 0.33] (the paper's REFRAG16: 0.82) |" in render(stored, "abc1234", "2026-12-06")
    assert "decoder trained too" not in table  # fair-cpt's row only when it was run
    fair = {"steps": 120, "decoder_trained": {
        "log_ppl": {"no_context": 0.869, "full_context": 0.382, "last_tokens": 0.585, "refrag": 0.858},
        "context_recovered": interval(0.02, -0.01, 0.06)}}
    with_fair = render({**RUN, "fair": fair}, "abc1234", "2026-12-06")
    assert "full context 0.38, none 0.87, the last 16 tokens 0.58 | 0.02 [-0.01, 0.06] |" in with_fair


def test_written_only_between_the_markers_and_refused_without_them(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nold table\n{END}\noutro\n")
    write_between_markers(readme, f"{START}\nnew\n{END}")
    assert readme.read_text() == f"intro\n{START}\nnew\n{END}\noutro\n"
    readme.write_text("no markers")
    with pytest.raises(CourseError, match="markers"):
        write_between_markers(readme, "x")
    assert readme.read_text() == "no markers"


def test_a_run_without_every_stage_is_refused(tmp_path):
    for stage in ("index", "recon", "cpt", "sft"):
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "metrics.json").write_text(json.dumps(RUN[stage]))
    with pytest.raises(MissingArtifactError, match="bench"):
        read_run(tmp_path)
