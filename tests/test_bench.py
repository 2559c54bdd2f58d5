"""The benchmark measures the right thing: prefill only, first token from the prefill logits, the same
inputs in both arms, the paper's analytic model, exact KV bytes, results on disk, refused bad input."""

import csv
import json

import pytest
import torch
from conftest import TINY_TEXT

from refrag_lib import analytic, bench, timing
from refrag_lib.errors import CourseError
from refrag_lib.runs import open_run

PASSAGES = TINY_TEXT * 8
QUESTION = "Which river flows through City_003?"


def count_decoder_calls(model, monkeypatch) -> list[int]:
    """Record the input length of every decoder forward call."""
    calls = []
    forward = model.decoder.forward

    def spy(*args, **kwargs):
        x = kwargs.get("inputs_embeds")
        calls.append((x if x is not None else kwargs["input_ids"]).shape[1])
        return forward(*args, **kwargs)

    monkeypatch.setattr(model.decoder, "forward", spy)
    return calls


def test_paper_formula_gives_25_6x():
    shape = analytic.DecoderShape.paper(d=4096)
    assert analytic.ttft_speedup(shape, 16384, 16384 / 16) == pytest.approx(25.6)
    assert analytic.ttft_ratio(shape, 16384, 16) == pytest.approx(25.6)
    assert analytic.paper_ttft_bound(4096, 16, 16384) == pytest.approx(25.6)
    assert analytic.paper_ttft_bound(4096, 16, 2048) == pytest.approx(17.2, abs=0.05)
    assert analytic.paper_ttft_bound(4096, 32, 16384) == pytest.approx(52.2, abs=0.05)


def test_analytic_speedup_lies_between_k_and_k_squared(tiny):
    shape = analytic.DecoderShape.from_config(tiny.decoder.config)
    curve = analytic.speedup_curve(shape, [64, 1024, 2**20], k=8)
    assert all(8 * 0.9 < x < 64 for x in curve) and curve == sorted(curve)
    # question tokens are paid in both arms, so they lower the speedup
    assert analytic.speedup_curve(shape, [1024], 8, question_tokens=50)[0] < curve[1]


def test_timed_region_is_one_prefill_and_first_token_is_its_argmax(tiny, monkeypatch):
    work = bench.build_workload(tiny, PASSAGES, QUESTION, s=60)
    segments = work.refrag_segments(4)
    expand = bench.expansion_mask(len(segments.chunks), 0.25)
    calls = count_decoder_calls(tiny, monkeypatch)
    with torch.inference_mode():
        run = timing.ttft_once(tiny, segments, expand, None, encode=True)
        assert calls == [int(run.inputs.attention_mask.sum())]  # one call, the whole input: prefill only
        logits, _ = tiny.prefill(tiny.build_inputs([segments], [expand]))
    assert int(run.token[0]) == int(logits.argmax(-1)[0])
    assert run.total_s >= run.encoder_s > 0
    assert run.cache.get_seq_length() == calls[0]


def test_measure_arm_times_prefills_and_decodes_outside(tiny, monkeypatch):
    work = bench.build_workload(tiny, PASSAGES, QUESTION, s=40)
    segments = work.rag_segments()
    calls = count_decoder_calls(tiny, monkeypatch)
    with torch.inference_mode():
        row = bench.measure_arm(tiny, segments, [True] * len(segments.chunks), "rag", repeats=3, warmup=1,
                                decode_tokens=5)
    prefills = [c for c in calls if c > 1]
    assert prefills == [work.s + work.question_tokens] * 4  # warm-up + 3 repeats, nothing else that long
    assert calls.count(1) == 2 + 5  # decode warm-up steps and the timed decode steps
    assert len(row["ttft_ms_all"]) == 3 and row["ttft_ms_iqr"] >= 0
    assert row["ttit_ms"] > 0 and row["tokens_per_s"] > 0 and row["peak_mem_bytes"] is None


def test_both_arms_see_identical_question_and_passages(tiny):
    work = bench.build_workload(tiny, PASSAGES, QUESTION, s=100)
    assert work.s == 100
    rag = work.rag_segments()
    for k in (1, 4, 16):
        refrag = work.refrag_segments(k)
        assert refrag.prefix == rag.prefix and refrag.suffix == rag.suffix
        assert [t for c in refrag.chunks for t in c] == [t for c in rag.chunks for t in c]
        assert all(len(c) <= k for c in refrag.chunks)
    assert tiny.decoder_tokenizer.decode(rag.prefix).startswith("Question: " + QUESTION)


def test_kv_bytes_formula_matches_the_cache_tensors(tiny):
    work = bench.build_workload(tiny, PASSAGES, QUESTION, s=50)
    segments = work.refrag_segments(4)
    with torch.inference_mode():
        run = timing.ttft_once(tiny, segments, [False] * len(segments.chunks), None, encode=True)
    positions = int(run.inputs.attention_mask.sum())
    shape = analytic.DecoderShape.from_config(tiny.decoder.config)
    assert bench.cache_bytes(run.cache) == analytic.kv_cache_bytes(shape, positions, 4)
    assert positions == work.question_tokens + len(segments.chunks)


def test_expansion_mask_expands_the_requested_fraction():
    assert bench.expansion_mask(10, 0.0) == [False] * 10
    assert sum(bench.expansion_mask(10, 0.3)) == 3
    assert bench.expansion_mask(10, 1.0) == [True] * 10


@pytest.mark.parametrize(
    "change, message",
    [({"k_values": [0]}, "k must be a positive integer"), ({"p_values": [1.5]}, r"must lie in \[0, 1\]"),
     ({"p_values": [-0.1]}, r"must lie in \[0, 1\]"), ({"s_values": [10_000]}, "exceeds the decoder's window"),
     ({"repeats": 0}, "repeats >= 1")],
)
def test_bad_arguments_are_refused(tiny, change, message):
    sweep = {"s_values": [32], "k_values": [4], "p_values": [0.0], "repeats": 1, "warmup": 0, "decode_tokens": 1}
    with pytest.raises(CourseError, match=message):
        bench.run_sweep(tiny, PASSAGES, QUESTION, progress=False, **{**sweep, **change})


def test_too_small_machine_gives_a_warning_not_a_crash(tiny, monkeypatch):
    question_tokens = bench.build_workload(tiny, PASSAGES, QUESTION, s=1).question_tokens
    free = bench.prefill_memory_estimate(tiny, 48 + question_tokens)
    monkeypatch.setattr(bench, "free_memory_bytes", lambda device: free)
    with pytest.warns(UserWarning, match="skipping s=") as caught:
        results = bench.run_sweep(tiny, PASSAGES, QUESTION, [32, 64, 96], [4], [0.0], repeats=1, warmup=0,
                                  decode_tokens=1, progress=False)
    skipped = [str(w.message).split(":")[0] for w in caught if str(w.message).startswith("skipping s=")]
    assert skipped == ["skipping s=64", "skipping s=96"]  # other libraries' warnings are not this test's
    assert results["skipped_s"] == [64, 96]
    assert {r["s"] for r in results["rows"]} == {32} and "s=32,k=4" in results["speedup_with_cache"]


def test_sweep_writes_the_metrics_contract_as_json_and_csv(tiny, tmp_path):
    sweep = {"s_values": [32, 64], "k_values": [4], "p_values": [0.0, 0.5], "repeats": 2, "warmup": 1,
             "decode_tokens": 2}
    results = bench.benchmark(tiny, PASSAGES, QUESTION, sweep, k_same_latency=4, rag_passages=(1, 2),
                              progress=False)
    run = open_run("cpu", tmp_path)
    metrics_path, csv_path = bench.write_results(run, results)
    metrics = json.loads(metrics_path.read_text())
    assert metrics["device"].startswith("CPU")
    rows = metrics["rows"]
    assert {(r["s"], r["k"], r["p"], r["arm"]) for r in rows} == (
        {(s, None, 1.0, "rag") for s in (32, 64)}
        | {(s, 4, p, arm) for s in (32, 64) for p in (0.0, 0.5) for arm in ("refrag_cache", "refrag_nocache")}
    )
    for name in ("ttft_ms_median", "ttft_ms_iqr", "ttit_ms", "tokens_per_s", "kv_bytes"):
        assert all(isinstance(r[name], (int, float)) for r in rows)
    for name in ("speedup_with_cache", "speedup_without_cache", "analytic_speedup"):
        assert set(metrics[name]) == {"s=32,k=4", "s=64,k=4"}
    rag64 = next(r for r in rows if r["arm"] == "rag" and r["s"] == 64)
    cache64 = next(r for r in rows if r["arm"] == "refrag_cache" and r["s"] == 64 and r["p"] == 0.0)
    assert rag64["positions"] == 64 + rag64["question_tokens"]
    chunks = bench.build_workload(tiny, PASSAGES, QUESTION, s=64).refrag_segments(4).chunks
    assert cache64["positions"] == cache64["question_tokens"] + len(chunks)
    assert rag64["kv_bytes"] / cache64["kv_bytes"] == pytest.approx(rag64["positions"] / cache64["positions"])
    same = metrics["same_latency"]
    assert same["rag_passages=1"]["rag_ttft_ms"] > 0 and same["grid"]
    with csv_path.open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and {"s", "k", "p", "arm", "ttft_ms_median"} <= set(table[0])
    assert "rag" in bench.format_table(rows)
