"""Plots of notebooks 02 and 03: loss curves, quality by number of chunks, the log-perplexity table."""

from __future__ import annotations

import numpy as np


def smoothed(values, window: int) -> np.ndarray:
    """A trailing moving average (the per-step loss jumps with the curriculum's chunk count)."""
    values = np.asarray(values, dtype=float)
    window = max(1, min(window, len(values)))
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    out = np.empty_like(values)
    for i in range(len(values)):
        lo = max(0, i + 1 - window)
        out[i] = (cumulative[i + 1] - cumulative[lo]) / (i + 1 - lo)
    return out


def plot_loss_curves(histories: dict[str, list[dict]], ax=None, window: int = 10, show_chunks: bool = True):
    """Training loss per step for each run (raw, faint; smoothed, solid), with the chunk count behind."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.5))
    for label, rows in histories.items():
        steps = [r["step"] for r in rows]
        losses = [r["loss"] for r in rows]
        (line,) = ax.plot(steps, smoothed(losses, window), label=f"{label} (smoothed)")
        ax.plot(steps, losses, alpha=0.25, color=line.get_color())
    first = next(iter(histories.values()), [])
    if show_chunks and first:
        twin = ax.twinx()
        twin.step([r["step"] for r in first], [r["chunks"] for r in first], where="post", color="grey",
                  alpha=0.4, linewidth=0.8)
        twin.set_ylabel("chunks this step", color="grey")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (NLL per target token)")
    ax.legend(fontsize=8)
    return ax


def plot_by_chunks(results: dict[str, dict], key: str = "log_ppl_by_chunks", ax=None):
    """One line per model: a metric against the number of chunks reconstructed (log x axis)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    for label, metrics in results.items():
        values = metrics[key]
        counts = sorted(values, key=int)
        ax.plot([int(c) for c in counts], [values[c] for c in counts], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("chunks reconstructed (n x k tokens)")
    ax.set_ylabel(key.replace("_by_chunks", "").replace("_", " "))
    ax.legend(fontsize=8)
    return ax


def plot_log_ppl_bars(log_ppl: dict[str, dict], ax=None):
    """The CPT table as bars (lower is better): arm -> {"mean", "low", "high"}, the 95% interval as a
    whisker."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    names = list(log_ppl)
    means = [log_ppl[n]["mean"] for n in names]
    whiskers = [[m - log_ppl[n]["low"] for n, m in zip(names, means)],
                [log_ppl[n]["high"] - m for n, m in zip(names, means)]]
    bars = ax.bar(names, means, yerr=whiskers, capsize=3, color="tab:blue")
    for bar, mean in zip(bars, means):
        ax.annotate(f"{mean:.3f}", (bar.get_x() + bar.get_width() / 2, 0.02), ha="center", va="bottom",
                    fontsize=8, color="white", xycoords=("data", "axes fraction"))
    ax.set_ylabel("log-perplexity of the continuation (lower is better)")
    ax.tick_params(axis="x", rotation=20)
    return ax


def plot_vector_gain(curve: list[dict], metric: str = "log_ppl_gain", ax=None):
    """What the vectors add over the decoder alone, against training steps: one line per chunk count,
    its 95% interval shaded; above 0 the vectors help (log_ppl_gain: nats saved per token)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    steps = [point["step"] for point in curve]
    for n in curve[0]["by_chunks"]:
        rows = [point["by_chunks"][n][metric] for point in curve]
        ax.plot(steps, [r["mean"] for r in rows], marker="o", label=f"{n} chunk(s)")
        ax.fill_between(steps, [r["low"] for r in rows], [r["high"] for r in rows], alpha=0.2)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("training step")
    ax.set_ylabel(metric.replace("_", " ") + " over the decoder alone")
    ax.legend(fontsize=8)
    return ax


def plot_ceiling(ceiling: dict, ax=None):
    """One-chunk token accuracy of free vectors against fitting steps, with the decoder alone and the
    trained encoder on the same windows as horizontal lines (vector_ceiling.free_vector_ceiling)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([p["step"] for p in ceiling["curve"]], [p["token_accuracy"] for p in ceiling["curve"]],
            label="one free vector per chunk, fitted")
    ax.axhline(ceiling["token_accuracy_floor"]["mean"], color="grey", ls="--", label="decoder alone")
    if "trained_token_accuracy" in ceiling:
        ax.axhline(ceiling["trained_token_accuracy"]["mean"], color="tab:orange", label="trained encoder + projector")
    ax.set_xlabel("fitting step (Adam on the vectors only; decoder frozen)")
    ax.set_ylabel("one-chunk token accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    return ax
