"""TTFT, TTIT, throughput and memory of REFRAG against ordinary RAG, measured honestly.

Both arms use the same decoder object (same weights, dtype and attention implementation), the
same passages and the same question, and go through the same call: RefragModel.build_inputs (all
chunks expanded for RAG) then RefragModel.prefill, which keeps the logits of the last position only.

TTFT's timed region starts when the inputs are ready and ends when the first token id exists:
- RAG: token ids (already tokenised) -> assembly and embedding lookup -> prefill -> argmax;
- REFRAG "with cache": the chunk vectors c_i are precomputed (as they would sit next to the index);
  the projector, the assembly and the embedding lookup run inside the timed region;
- REFRAG "without cache": the encoder's tokenisation, the encoder and the projector are timed too.
CUDA is synchronised before every clock read; warm-up runs are discarded; median and IQR are kept.
Decoding (TTIT) is timed separately, after a prefill, one KV-cached step at a time.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .analytic import DecoderShape, kv_cache_bytes, ttft_speedup
from .arms import TIMED_ARMS
from .config import PRESETS
from .data import default_data_dir, load_passages, load_qa
from .errors import CourseError
from .model import RefragModel, Segments, chunk_ids, load_refrag
from .policy import n_expanded, random_mask
from .qa import ANSWER_SUFFIX, QUESTION_PREFIX
from .runs import open_run
from .timing import Prefilled, clock, quartiles_ms, ttft_once

CSV_FIELDS = (
    "s", "k", "p", "arm", "positions", "question_tokens", "passages", "ttft_ms_median", "ttft_ms_iqr",
    "encoder_ms_median", "ttit_ms", "tokens_per_s", "kv_bytes", "peak_mem_bytes", "speedup",
    "analytic_speedup", "measured_over_analytic",
)


# ---- the workload: one question and s tokens of real passages, shared by every arm -------------
@dataclass(frozen=True)
class Workload:
    """The decoder token ids both arms see: question prefix, passages (s tokens in all), answer cue."""

    prefix: list[int]
    passages: list[list[int]]
    suffix: list[int]

    @property
    def s(self) -> int:
        return sum(map(len, self.passages))

    @property
    def question_tokens(self) -> int:
        return len(self.prefix) + len(self.suffix)

    def rag_segments(self) -> Segments:
        """Ordinary RAG: every passage as plain tokens (one expanded 'chunk' per passage)."""
        return Segments(list(self.prefix), [list(p) for p in self.passages], list(self.suffix))

    def refrag_segments(self, k: int) -> Segments:
        """REFRAG: each passage cut on its own into chunks of k (so its vectors can be cached per passage)."""
        chunks = [c for p in self.passages for c in chunk_ids(p, k)]
        return Segments(list(self.prefix), chunks, list(self.suffix))


def build_workload(model: RefragModel, passages: Sequence[str], question: str, s: int | None = None,
                   n_passages: int | None = None) -> Workload:
    """The first passages of the corpus, tokenised, up to exactly s context tokens (or n whole passages)."""
    if (s is None) == (n_passages is None):
        raise CourseError("build_workload needs exactly one of s (context tokens) or n_passages.")
    prefix = model.tokenize(QUESTION_PREFIX.format(question=question))
    suffix = model.tokenize(ANSWER_SUFFIX)
    taken, total = [], 0
    for text in passages:
        if (s is not None and total >= s) or (n_passages is not None and len(taken) >= n_passages):
            break
        ids = model.tokenize(text + "\n")
        if s is not None:
            ids = ids[: s - total]
        taken.append(ids)
        total += len(ids)
    if (s is not None and total < s) or (n_passages is not None and len(taken) < n_passages):
        raise CourseError(f"The corpus has only {len(taken)} passages ({total} tokens): not enough for "
                          f"s={s}, n_passages={n_passages}. Use a larger corpus or smaller s.")
    return Workload(prefix, taken, suffix)


def expansion_mask(n_chunks: int, p: float, seed: int = 0) -> list[bool]:
    """round(p * L) chunks expanded, chosen at random with a fixed seed (timing does not depend on which)."""
    return random_mask(n_chunks, n_expanded(p, n_chunks), np.random.default_rng(seed))


def check_sweep(s_values, k_values, p_values, repeats: int, warmup: int, decode_tokens: int,
                window: int, question_tokens: int) -> None:
    """Refuse arguments that would give a meaningless or impossible benchmark, saying what to change."""
    for k in k_values:
        if not isinstance(k, int) or k < 1:
            raise CourseError(f"k must be a positive integer (tokens per chunk), got {k!r}.")
    for p in p_values:
        if not 0.0 <= p <= 1.0:
            raise CourseError(f"p is the fraction of chunks expanded: it must lie in [0, 1], got {p!r}.")
    for s in s_values:
        if not isinstance(s, int) or s < 1:
            raise CourseError(f"s must be a positive number of context tokens, got {s!r}.")
        if s + question_tokens > window:
            raise CourseError(
                f"s={s} plus {question_tokens} question tokens exceeds the decoder's window of {window} "
                f"positions, so ordinary RAG cannot run it. Use s <= {window - question_tokens}."
            )
    if repeats < 1 or warmup < 0 or decode_tokens < 1:
        raise CourseError(f"need repeats >= 1, warmup >= 0 and decode_tokens >= 1 "
                          f"(got {repeats}, {warmup}, {decode_tokens}); the issue asks for >= 5 repeats.")


# ---- clocks and memory ---------------------------------------------------------------------------
def cache_bytes(cache) -> int:
    """Bytes actually held by a KV cache's key and value tensors."""
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))


def free_memory_bytes(device: torch.device) -> int | None:
    """Memory still available on the device (CPU: the OS's available physical pages), or None."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def prefill_memory_estimate(model: RefragModel, positions: int) -> int:
    """A generous estimate of one prefill's extra memory: KV cache + one layer's activations + scores."""
    config, size = model.decoder.config, model.decoder.dtype.itemsize
    shape = DecoderShape.from_config(config)
    activations = positions * (4 * config.hidden_size + 3 * config.intermediate_size) * size
    scores = config.num_attention_heads * positions * positions * size  # a non-fused attention kernel
    return kv_cache_bytes(shape, positions, size) + activations + scores


# ---- one arm -------------------------------------------------------------------------------------
def decode_step_seconds(model: RefragModel, run: Prefilled, steps: int) -> list[float]:
    """Greedy KV-cached decoding after a prefill; the wall time of each step (one token each)."""
    device = model.device
    token, cache = run.token, run.cache
    mask, position = run.inputs.attention_mask, run.inputs.position_ids[:, -1:]
    times = []
    for _ in range(steps):
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        position = position + 1
        start = clock(device)
        logits, cache = model.decode_step(token, mask, position, cache)
        token = logits.argmax(dim=-1)
        times.append(clock(device) - start)
    return times


def measure_arm(model: RefragModel, segments: Segments, expand: list[bool], arm: str, repeats: int,
                warmup: int, decode_tokens: int) -> dict:
    """TTFT (median, IQR), encoder time, TTIT, throughput, KV bytes and peak memory of one arm."""
    if arm not in TIMED_ARMS:
        raise CourseError(f"arm must be one of {TIMED_ARMS}, got {arm!r}.")
    device = model.device
    vectors = None
    if arm == "refrag_cache":  # precomputed outside the timed region, as at indexing time
        vectors = model.encode_chunks(model.compressed_chunks([segments], [expand]))
    runs, peaks = [], []
    for attempt in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        run = ttft_once(model, segments, expand, vectors, encode=arm == "refrag_nocache")
        if attempt >= warmup:
            runs.append(run)
            peaks.append(torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None)
        if attempt == warmup - 1:
            decode_step_seconds(model, run, min(2, decode_tokens))  # warm the decode path too
    last = runs[-1]
    kv = cache_bytes(last.cache)
    step_s = decode_step_seconds(model, last, decode_tokens)
    ttft_ms, iqr_ms = quartiles_ms([r.total_s for r in runs])
    ttit_ms = 1000 * statistics.fmean(step_s)
    encoder_ms = quartiles_ms([r.encoder_s for r in runs])[0] if arm == "refrag_nocache" else None
    return {
        "arm": arm, "positions": int(last.inputs.attention_mask.sum()),
        "ttft_ms_median": ttft_ms, "ttft_ms_iqr": iqr_ms, "ttft_ms_all": [1000 * r.total_s for r in runs],
        "encoder_ms_median": encoder_ms, "ttit_ms": ttit_ms,
        # the first token (from the prefill) plus `decode_tokens` decoded ones, over their total time
        "tokens_per_s": (decode_tokens + 1) / ((ttft_ms + ttit_ms * decode_tokens) / 1000),
        "kv_bytes": kv, "peak_mem_bytes": max(peaks) if device.type == "cuda" else None,
        "first_token": int(last.token[0]),
    }


# ---- the sweep -----------------------------------------------------------------------------------
def _row(work: Workload, k, p, measured: dict) -> dict:
    return {"s": work.s, "k": k, "p": p, "question_tokens": work.question_tokens,
            "passages": len(work.passages), **measured}


def _add_comparisons(rows: list[dict], shape: DecoderShape) -> None:
    """Speedup over RAG at the same s, the analytic speedup for the same input lengths, and their ratio."""
    rag = {row["s"]: row for row in rows if row["arm"] == "rag"}
    for row in rows:
        base = rag[row["s"]]
        row["speedup"] = base["ttft_ms_median"] / row["ttft_ms_median"]
        row["analytic_speedup"] = ttft_speedup(shape, base["positions"], row["positions"])
        row["measured_over_analytic"] = row["speedup"] / row["analytic_speedup"]


def run_sweep(model: RefragModel, passages: Sequence[str], question: str, s_values: Sequence[int],
              k_values: Sequence[int], p_values: Sequence[float], repeats: int = 5, warmup: int = 1,
              decode_tokens: int = 16, progress: bool = True) -> dict:
    """Every arm at every (s, k, p); stops with a warning (not a crash) when memory runs out."""
    from tqdm.auto import tqdm

    probe = build_workload(model, passages, question, s=1)
    check_sweep(s_values, k_values, p_values, repeats, warmup, decode_tokens, model.window, probe.question_tokens)
    shape = DecoderShape.from_config(model.decoder.config)
    rows, skipped = [], []
    jobs = [(s, None, 1.0, "rag") for s in s_values] + [
        (s, k, p, arm) for s in s_values for k in k_values for p in p_values for arm in TIMED_ARMS[1:]
    ]
    jobs.sort(key=lambda job: job[0])  # short contexts first: a small machine fails late, not early
    with torch.inference_mode():
        for s, k, p, arm in tqdm(jobs, desc="bench", disable=not progress):
            if skipped and s > min(skipped) and s not in skipped:
                _skip(skipped, s, model.device, f"a shorter context (s={min(skipped)}) already did not fit")
            if s in skipped:
                continue
            work = build_workload(model, passages, question, s=s)
            need, free = prefill_memory_estimate(model, s + work.question_tokens), free_memory_bytes(model.device)
            if free is not None and need > free:
                _skip(skipped, s, model.device, f"needs about {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free")
                continue
            segments = work.rag_segments() if arm == "rag" else work.refrag_segments(k)
            expand = [True] * len(segments.chunks) if arm == "rag" else expansion_mask(len(segments.chunks), p)
            try:
                rows.append(_row(work, k, p, measure_arm(model, segments, expand, arm, repeats, warmup,
                                                         decode_tokens)))
            except (torch.OutOfMemoryError, MemoryError, RuntimeError) as err:
                if not _is_out_of_memory(err):
                    raise
                _skip(skipped, s, model.device, f"out of memory ({str(err).splitlines()[0]})")
    rows = [row for row in rows if row["s"] not in skipped]
    _add_comparisons(rows, shape)
    return {"rows": rows, "skipped_s": skipped, **summarise(rows, min(p_values))}


def _is_out_of_memory(err: BaseException) -> bool:
    """CUDA raises OutOfMemoryError; the CPU allocator raises a RuntimeError that says so."""
    return isinstance(err, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in str(err)


def _skip(skipped: list[int], s: int, device: torch.device, why: str) -> None:
    """Drop a context length (and say so) instead of crashing on a machine that is too small."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    skipped.append(s)
    warnings.warn(f"skipping s={s}: {why}. This machine is too small for that context; the results "
                  "for the shorter contexts stand.", stacklevel=2)


def summarise(rows: list[dict], p: float) -> dict:
    """The metrics contract's dicts keyed 's=<s>,k=<k>' (at expansion fraction p), and the encoder's share."""
    def key(row):
        return f"s={row['s']},k={row['k']}"

    at_p = [row for row in rows if row["arm"] != "rag" and row["p"] == p]
    cache = [row for row in at_p if row["arm"] == "refrag_cache"]
    nocache = [row for row in at_p if row["arm"] == "refrag_nocache"]
    rag = {row["s"]: row for row in rows if row["arm"] == "rag"}
    return {
        "summary_p": p,
        "speedup_with_cache": {key(r): r["speedup"] for r in cache},
        "speedup_without_cache": {key(r): r["speedup"] for r in nocache},
        "analytic_speedup": {key(r): r["analytic_speedup"] for r in cache},
        "measured_over_analytic": {key(r): r["measured_over_analytic"] for r in cache},
        "encoder_share_without_cache": {key(r): r["encoder_ms_median"] / r["ttft_ms_median"] for r in nocache},
        "kv_bytes_ratio": {key(r): rag[r["s"]]["kv_bytes"] / r["kv_bytes"] for r in cache},
        "ttit_speedup_with_cache": {key(r): rag[r["s"]]["ttit_ms"] / r["ttit_ms"] for r in cache},
        "throughput_speedup_with_cache": {key(r): r["tokens_per_s"] / rag[r["s"]]["tokens_per_s"] for r in cache},
    }


# ---- same latency, more context ----------------------------------------------------------------------
def same_latency(model: RefragModel, passages: Sequence[str], question: str, k: int,
                 rag_passages: Sequence[int] = (1, 10), repeats: int = 5, warmup: int = 1,
                 refine_steps: int = 2, progress: bool = True) -> dict:
    """How many whole passages REFRAG-k (with cache) reads within the TTFT RAG needs for n passages.

    REFRAG's TTFT is measured on a doubling grid of passage counts, then bisected a few steps
    between the two grid points around each budget; the answer is the largest MEASURED count whose
    median TTFT stays within the budget (a lower bound, no extrapolation).
    """
    from tqdm.auto import tqdm

    measured: dict[int, float] = {}

    def ttft(n: int, arm: str) -> float:
        work = build_workload(model, passages, question, n_passages=n)
        segments = work.rag_segments() if arm == "rag" else work.refrag_segments(k)
        expand = [arm == "rag"] * len(segments.chunks)
        return measure_arm(model, segments, expand, arm, repeats, warmup, decode_tokens=1)["ttft_ms_median"]

    def fits(n: int) -> bool:
        if n > len(passages):
            return False
        work = build_workload(model, passages, question, n_passages=n)
        return work.question_tokens + len(work.refrag_segments(k).chunks) <= model.window

    with torch.inference_mode():
        budgets = {n: ttft(n, "rag") for n in tqdm(rag_passages, desc="RAG budgets", disable=not progress)}
        n, top = 1, max(budgets.values())
        while True:
            measured[n] = ttft(n, "refrag_cache")
            if measured[n] > top or not fits(2 * n):
                break
            n *= 2
        result = {}
        for rag_n, budget in budgets.items():
            best = _refine(measured, budget, lambda m: ttft(m, "refrag_cache"), refine_steps)
            result[f"rag_passages={rag_n}"] = {
                "rag_passages": rag_n, "rag_ttft_ms": budget, "refrag_passages": best,
                "refrag_ttft_ms": measured.get(best), "k": k,
            }
    result["grid"] = sorted(measured.items())
    return result


def _refine(measured: dict[int, float], budget: float, ttft: Callable[[int], float], steps: int) -> int | None:
    """The largest measured count within budget, after bisecting towards the first one above it."""
    for _ in range(steps + 1):
        inside = [n for n, t in measured.items() if t <= budget]
        if not inside:
            return None
        low = max(inside)
        above = [n for n, t in measured.items() if t > budget and n > low]
        if not above or min(above) - low <= 1 or _ == steps:
            return low
        middle = (low + min(above)) // 2
        measured[middle] = ttft(middle)
    return low


# ---- results on disk -----------------------------------------------------------------------------------
def device_description(device: torch.device) -> str:
    """The machine the numbers come from, in words (they only compare within one machine)."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    return f"CPU {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"


def environment(model: RefragModel) -> dict:
    """What must be equal for two runs' numbers to be comparable."""
    return {
        "device": device_description(model.device),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "dtype": str(model.decoder.dtype).replace("torch.", ""),
        "attention": model.decoder.config._attn_implementation,
        "decoder_layers": model.decoder.config.num_hidden_layers,
        "decoder_hidden": model.decoder.config.hidden_size,
        "window": model.window,
        "peak_memory_source": (
            "torch.cuda.max_memory_allocated during one TTFT call (weights included)"
            if model.device.type == "cuda" else
            "none: PyTorch keeps no allocator peak on CPU, so peak_mem_bytes is null; kv_bytes is exact"
        ),
        "timed_region": ("inputs ready (token ids; REFRAG with cache: + precomputed chunk vectors) -> "
                         "assembly + embedding lookup (+ projector; + encoder without cache) -> prefill "
                         "(logits of the last position only) -> argmax"),
    }


def write_results(run, results: dict) -> tuple[Path, Path]:
    """RUN_DIR/bench/metrics.json (the contract) and bench.csv (one line per row, for spreadsheets)."""
    metrics_path = run.write_metrics("bench", results)
    csv_path = run.stage_dir("bench") / "bench.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results["rows"])
    return metrics_path, csv_path


def format_table(rows: Sequence[dict]) -> str:
    """The rows as a fixed-width text table (TTFT median +- IQR, speedups, KV bytes)."""
    head = f"{'s':>5} {'k':>3} {'p':>4} {'arm':<15} {'pos':>5} {'TTFT ms':>16} {'TTIT ms':>8} " \
           f"{'tok/s':>7} {'KV MiB':>7} {'speedup':>8} {'analytic':>8} {'meas/an':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        ttft = f"{r['ttft_ms_median']:.1f} +- {r['ttft_ms_iqr']:.1f}"
        lines.append(
            f"{r['s']:>5} {r['k'] or '-':>3} {r['p']:>4} {r['arm']:<15} {r['positions']:>5} {ttft:>16} "
            f"{r['ttit_ms']:>8.1f} {r['tokens_per_s']:>7.1f} {r['kv_bytes'] / 2**20:>7.2f} "
            f"{r['speedup']:>8.2f} {r['analytic_speedup']:>8.2f} {r['measured_over_analytic']:>7.2f}"
        )
    return "\n".join(lines)


# ---- defaults and the command line ---------------------------------------------------------------------
def default_sweep(device: torch.device, window: int, question_tokens: int, smoke: bool) -> dict:
    """CPU: s from 512 to 4096; GPU: doubling up to the decoder's window; SMOKE: two short contexts."""
    if smoke:
        return {"s_values": [512, 1024], "k_values": [16], "p_values": [0.0], "repeats": 3, "warmup": 1,
                "decode_tokens": 4}
    largest = window - question_tokens
    s_values = [512, 1024, 2048, 4096] if device.type == "cpu" else [s for s in (512, 1024, 2048, 4096, 8192,
                                                                                 16384, 32768) if s <= largest]
    return {"s_values": [s for s in s_values if s <= largest], "k_values": [8, 16, 32], "p_values": [0.0, 0.1],
            "repeats": 5, "warmup": 1, "decode_tokens": 16}


def benchmark(model: RefragModel, passages: Sequence[str], question: str, sweep: dict, k_same_latency: int,
              rag_passages: Sequence[int] = (1, 10), refine_steps: int = 2, same_latency_repeats: int | None = None,
              progress: bool = True) -> dict:
    """The whole benchmark: the sweep, same latency / more context, and the environment it ran in."""
    results = run_sweep(model, passages, question, progress=progress, **sweep)
    repeats = same_latency_repeats or sweep["repeats"]
    results["same_latency"] = same_latency(model, passages, question, k_same_latency, rag_passages,
                                           repeats, sweep["warmup"], refine_steps, progress)
    return {**environment(model), "sweep": sweep, "question": question, **results}


def main(argv: list[str] | None = None) -> int:
    """`python -m refrag_lib bench`: the benchmark, written as JSON and CSV under RUN_DIR/bench/."""
    parser = argparse.ArgumentParser(prog="python -m refrag_lib bench", description=main.__doc__)
    parser.add_argument("--preset", default="cpu", choices=[*PRESETS, "auto"])
    parser.add_argument("--run-dir", default="", help="artifacts folder (default runs/<preset>)")
    parser.add_argument("--smoke", action="store_true", help="two short contexts, k=16, 3 repeats")
    parser.add_argument("--s", type=int, nargs="+", help="context lengths in tokens")
    parser.add_argument("--k", type=int, nargs="+", help="compression rates")
    parser.add_argument("--p", type=float, nargs="+", help="expansion fractions")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--decode-tokens", type=int, help="o: tokens decoded for TTIT")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default; 1 avoids oversubscription on a busy machine)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    run = open_run(args.preset, args.run_dir, smoke=args.smoke)
    model = load_refrag(run.preset).eval()
    data = default_data_dir()
    passages = [p.text for p in load_passages(data / "corpus.jsonl")]
    question = load_qa(data / "qa_eval.jsonl")[0].question
    probe = build_workload(model, passages, question, s=1)
    sweep = default_sweep(model.device, model.window, probe.question_tokens, args.smoke)
    for name in ("s", "k", "p"):
        if getattr(args, name):
            sweep[f"{name}_values"] = getattr(args, name)
    for name in ("repeats", "warmup", "decode_tokens"):
        if getattr(args, name) is not None:
            sweep[name] = getattr(args, name)
    print(f"{device_description(model.device)}; decoder {run.preset.decoder} ({run.preset.dtype})", flush=True)
    results = benchmark(model, passages, question, sweep, run.preset.k, refine_steps=0 if args.smoke else 2,
                        same_latency_repeats=2 if args.smoke else None, progress=not args.quiet)
    print(format_table(results["rows"]))
    print("same latency, more context:", json.dumps(
        {key: value for key, value in results["same_latency"].items() if key != "grid"}, indent=1))
    for path in write_results(run, results):
        print("wrote", path)
    return 0
