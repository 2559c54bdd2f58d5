"""Notebook 06 end to end under SMOKE: no hidden errors, the metrics contract, and floors a broken
benchmark would miss (REFRAG not faster, KV cache not smaller, analytic model not used)."""

import pytest

from refrag_lib.course.notebooks import notebook_errors

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module")
def bench_run(notebooks):
    executed = notebooks.run("06_ttft_benchmark")
    return executed, notebooks.metrics("bench")


def test_notebook_runs_without_hidden_errors(bench_run):
    executed, _ = bench_run
    assert notebook_errors(executed) == []


def test_metrics_contract(bench_run):
    _, metrics = bench_run
    assert metrics["device"] and metrics["rows"]
    for row in metrics["rows"]:
        for name in ("s", "k", "p", "arm", "ttft_ms_median", "ttft_ms_iqr", "ttit_ms", "tokens_per_s", "kv_bytes"):
            assert name in row, name
        assert row["ttft_ms_median"] > 0 and row["ttft_ms_iqr"] >= 0 and row["kv_bytes"] > 0
        assert len(row["ttft_ms_all"]) == metrics["sweep"]["repeats"] >= 3
    keys = {f"s={s},k={k}" for s in metrics["sweep"]["s_values"] for k in metrics["sweep"]["k_values"]}
    for name in ("speedup_with_cache", "speedup_without_cache", "analytic_speedup"):
        assert set(metrics[name]) == keys, name


def test_refrag_is_faster_and_its_cache_smaller_at_the_largest_context(bench_run):
    _, metrics = bench_run
    s = max(metrics["sweep"]["s_values"])
    rows = [r for r in metrics["rows"] if r["s"] == s]
    rag = next(r for r in rows if r["arm"] == "rag")
    for row in (r for r in rows if r["arm"] == "refrag_cache" and r["p"] == 0.0):
        assert row["ttft_ms_median"] < rag["ttft_ms_median"]
        compression = rag["positions"] / row["positions"]  # question tokens are paid in both arms
        assert rag["kv_bytes"] / row["kv_bytes"] == pytest.approx(compression, rel=1e-6)
        assert compression > 0.5 * row["k"]
        assert 1 < row["analytic_speedup"] < row["k"] ** 2
    nocache = next(r for r in rows if r["arm"] == "refrag_nocache")
    assert 0 < nocache["encoder_ms_median"] < nocache["ttft_ms_median"]


def test_same_latency_answers_for_one_and_several_passages(bench_run):
    _, metrics = bench_run
    same = metrics["same_latency"]
    budgets = sorted(entry["rag_passages"] for key, entry in same.items() if key != "grid")
    assert budgets[0] == 1 and budgets[-1] >= 3
    for n in budgets:
        entry = same[f"rag_passages={n}"]
        assert entry["rag_ttft_ms"] > 0
        assert entry["refrag_passages"] is None or entry["refrag_ttft_ms"] <= entry["rag_ttft_ms"]
    most = budgets[-1]  # n passages compressed k-fold fit in the time RAG needs for n
    assert same[f"rag_passages={most}"]["refrag_passages"] >= most
