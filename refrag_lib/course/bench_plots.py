"""Plots of the benchmark: the analytic bound, measured speedups next to it, TTFT and memory vs s."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt

from ..analytic import DecoderShape, speedup_curve


def _rows(rows, arm, k=None, p=None):
    picked = [r for r in rows if r["arm"] == arm and (k is None or r["k"] == k) and (p is None or r["p"] == p)]
    return sorted(picked, key=lambda r: r["s"])


def plot_analytic_bounds(shape: DecoderShape, k_values: Sequence[int], question_tokens: int = 0,
                         s_max: int = 2**17, ax=None):
    """The analytic TTFT speedup vs s: it starts near k (linear terms) and climbs towards k^2 (attention)."""
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    s_values = [2**i for i in range(6, s_max.bit_length())]
    for k in k_values:
        line = ax.plot(s_values, speedup_curve(shape, s_values, k, question_tokens=question_tokens),
                       label=f"k={k}")[0]
        ax.axhline(k, ls=":", color=line.get_color(), lw=0.8)
        ax.axhline(k * k, ls="--", color=line.get_color(), lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="context tokens s", ylabel="analytic TTFT speedup",
           title="Analytic bound: between k (dotted) and k² (dashed)")
    ax.legend()
    return ax


def plot_speedup(rows: Sequence[dict], shape: DecoderShape, p: float = 0.0, ax=None):
    """Measured TTFT speedup (with and without cache) vs s per k, with the analytic curves, log axes."""
    ax = ax or plt.subplots(figsize=(7, 4.5))[1]
    ks = sorted({r["k"] for r in rows if r["k"] is not None})
    for k in ks:
        cache, nocache = _rows(rows, "refrag_cache", k, p), _rows(rows, "refrag_nocache", k, p)
        if not cache:
            continue
        s_values = [r["s"] for r in cache]
        line = ax.plot(s_values, [r["speedup"] for r in cache], "o-", label=f"k={k} with cache")[0]
        ax.plot([r["s"] for r in nocache], [r["speedup"] for r in nocache], "x--", color=line.get_color(),
                label=f"k={k} without cache")
        q = cache[0]["question_tokens"]
        dense = sorted({*s_values, *[int(s_values[0] * 2 ** (i / 4)) for i in range(
            4 * (max(s_values) // s_values[0]).bit_length())]})
        dense = [s for s in dense if s <= max(s_values)]
        ax.plot(dense, speedup_curve(shape, dense, k, p, q), ":", color=line.get_color(), label=f"k={k} analytic")
    ax.set(xscale="log", yscale="log", xlabel="context tokens s", ylabel="TTFT speedup over RAG",
           title=f"Measured vs analytic TTFT speedup (p={p})")
    ax.legend(fontsize=7, ncol=2)
    return ax


def plot_ttft(rows: Sequence[dict], p: float = 0.0, ax=None):
    """TTFT (median, IQR as error bar) vs s for RAG and each REFRAG arm."""
    ax = ax or plt.subplots(figsize=(7, 4.5))[1]
    series = [("rag", None)] + [(arm, k) for k in sorted({r["k"] for r in rows if r["k"] is not None})
                                for arm in ("refrag_cache", "refrag_nocache")]
    for arm, k in series:
        picked = _rows(rows, arm, k, None if arm == "rag" else p)
        if picked:
            ax.errorbar([r["s"] for r in picked], [r["ttft_ms_median"] for r in picked],
                        yerr=[r["ttft_ms_iqr"] / 2 for r in picked], marker="o", capsize=3,
                        label=arm if k is None else f"{arm} k={k}")
    ax.set(xscale="log", yscale="log", xlabel="context tokens s", ylabel="TTFT ms (median, IQR)",
           title="Time to first token")
    ax.legend(fontsize=7)
    return ax


def plot_memory(rows: Sequence[dict], p: float = 0.0, ax=None):
    """KV-cache bytes vs s (exact), and the peak allocated memory where the device reports it (GPU)."""
    ax = ax or plt.subplots(figsize=(7, 4.5))[1]
    series = [("rag", None)] + [("refrag_cache", k) for k in sorted({r["k"] for r in rows if r["k"] is not None})]
    for arm, k in series:
        picked = _rows(rows, arm, k, None if arm == "rag" else p)
        label = "RAG" if k is None else f"REFRAG k={k}"
        line = ax.plot([r["s"] for r in picked], [r["kv_bytes"] / 2**20 for r in picked], "o-",
                       label=f"{label} KV cache")[0]
        peaks = [(r["s"], r["peak_mem_bytes"] / 2**20) for r in picked if r["peak_mem_bytes"] is not None]
        if peaks:
            ax.plot(*zip(*peaks), "s--", color=line.get_color(), label=f"{label} peak allocated")
    ax.set(xscale="log", yscale="log", xlabel="context tokens s", ylabel="MiB", title="Memory vs context length")
    ax.legend(fontsize=7)
    return ax


def plot_same_latency(same: dict, ax=None):
    """REFRAG's TTFT vs number of passages, with RAG's TTFT for 1 and 10 passages as budgets."""
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    grid = sorted(same["grid"])
    ax.plot([n for n, _ in grid], [t for _, t in grid], "o-", label="REFRAG with cache")
    for key, entry in same.items():
        if key == "grid":
            continue
        ax.axhline(entry["rag_ttft_ms"], ls="--", color="gray")
        ax.annotate(f"RAG, {entry['rag_passages']} passage(s) -> REFRAG {entry['refrag_passages']}",
                    (grid[0][0], entry["rag_ttft_ms"]), fontsize=8, va="bottom")
    ax.set(xscale="log", yscale="log", xlabel="passages", ylabel="TTFT ms", title="Same latency, more context")
    ax.legend()
    return ax
