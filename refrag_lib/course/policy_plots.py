"""Plots and views of stage 3: GRPO reward curves, the paper's Figure 3, where selectors expand, and the
question-aware policy's held-out answers."""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

from ..policy import effective_compression
from ..selectors import ScoredExample, Selector

STYLE = {  # selector -> (label, colour, marker)
    "rl": ("RL policy (GRPO)", "tab:red", "o"),
    "ppl_desc": ("perplexity-descending", "tab:blue", "s"),
    "ppl_asc": ("perplexity-ascending", "tab:green", "^"),
    "random": ("random (mean of seeds)", "tab:gray", "D"),
    "question_rl": ("question-aware RL policy", "tab:purple", "P"),
    "question": ("question cosine (heuristic)", "tab:orange", "v"),
}


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over `window` steps (shorter at the start), so early points are not dropped."""
    values = np.asarray(values, dtype=float)
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    index = np.arange(1, len(values) + 1)
    start = np.maximum(0, index - window)
    return (cumulative[index] - cumulative[start]) / (index - start)


def plot_reward_curves(history: list[dict], window: int = 10, axes=None,
                       target: str = "the true continuation"):
    """Left: mean reward of the G rollouts (band: mean within-group std), coloured by the step's p.
    Right: reward minus that of a random selection of the same example (the learning signal)."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    steps = np.array([row["step"] for row in history])
    mean = np.array([row["reward_mean"] for row in history])
    std = np.array([row["reward_std"] for row in history])
    fractions = np.array([row["p"] for row in history])
    left, right = axes
    for p in sorted(set(fractions)):
        at = fractions == p
        left.errorbar(steps[at], mean[at], yerr=std[at], fmt="o", ms=3, alpha=0.6, label=f"p = {p:g}")
    left.plot(steps, moving_average(mean, window), color="black", label=f"moving mean ({window} steps)")
    left.set_xlabel("GRPO step")
    left.set_ylabel(f"reward = - mean NLL of {target}")
    left.set_title("Rollout reward (bars: std within a group)")
    left.legend(fontsize=8)
    gain = np.array([row["reward_gain_vs_random"] for row in history])
    right.axhline(0.0, color="gray", lw=1)
    right.plot(steps, gain, ".", alpha=0.4, color="tab:red")
    right.plot(steps, moving_average(gain, window), color="tab:red", label=f"moving mean ({window} steps)")
    right.set_xlabel("GRPO step")
    right.set_ylabel("policy reward - random reward")
    right.set_title("Gain over a random selection of the same example")
    right.legend(fontsize=8)
    return axes


def plot_figure3(table: dict, k: int, ax=None):
    """Held-out log-ppl against the expansion fraction p per selector, effective compression on top."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.5))
    by_p = table["log_ppl_by_p"]
    for name, values in by_p.items():
        label, colour, marker = STYLE.get(name, (name, None, "x"))
        ps = sorted(values, key=float)
        x, y = [float(p) for p in ps], [values[p] for p in ps]
        if name == "random":
            spread = [table["random_std"][p] for p in ps]
            ax.errorbar(x, y, yerr=spread, color=colour, marker=marker, capsize=3, label=label + " ± std")
        else:
            ax.plot(x, y, color=colour, marker=marker, label=label)
    ax.axhline(table["none"], color="black", ls=":", lw=1, label="none expanded (REFRAG only)")
    ax.axhline(table["all"], color="black", ls="--", lw=1, label="all expanded (ordinary RAG)")
    ax.set_xlabel("expansion fraction p")
    ax.set_ylabel("held-out log-perplexity (lower is better)")
    ps = sorted({float(p) for values in by_p.values() for p in values})
    top = ax.twiny()
    top.set_xlim(ax.get_xlim())
    top.set_xticks(ps)
    top.set_xticklabels([f"{effective_compression(k, p):.1f}" for p in ps], fontsize=8)
    top.set_xlabel(f"effective compression k / (1 - p + k p), k = {k}")
    ax.legend(fontsize=8, loc="upper right")
    return ax


def selection_frequency(selector: Selector, examples: Sequence[ScoredExample], p: float) -> np.ndarray:
    """How often each chunk position is expanded (share of examples), positions counted from the start."""
    masks = selector(examples, p)
    longest = max(len(m) for m in masks)
    counts = np.zeros(longest)
    for mask in masks:
        counts[: len(mask)] += np.asarray(mask, dtype=float)
    return counts / len(masks)


def plot_selection_frequency(frequencies: dict[str, np.ndarray], p: float, ax=None):
    """Bars per chunk position: where each selector spends its expansions."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.2))
    width = 0.8 / max(1, len(frequencies))
    for i, (name, freq) in enumerate(frequencies.items()):
        label, colour, _ = STYLE.get(name, (name, None, "x"))
        ax.bar(np.arange(len(freq)) + i * width, freq, width=width, color=colour, label=label)
    ax.set_xlabel("chunk position in the context (0 = first; the continuation follows the last)")
    ax.set_ylabel("share of examples expanded")
    ax.set_title(f"Where the selectors expand at p = {p:g}")
    ax.legend(fontsize=8)
    return ax


def highlight_html(model, example: ScoredExample, masks: dict[str, Sequence[bool]]) -> str:
    """The context with each selector's expanded chunks highlighted, then the continuation to predict."""
    from matplotlib.colors import to_hex

    tok = model.decoder_tokenizer
    parts = []
    for name, mask in masks.items():
        label, colour, _ = STYLE.get(name, (name, "tab:orange", ""))
        background = to_hex(colour)  # CSS knows no matplotlib names ("tab:red"): a browser would drop them
        spans = []
        for chunk, expanded, score in zip(example.segments.chunks, mask, example.chunk_nll.tolist()):
            text = html.escape(tok.decode(chunk))
            title = f"chunk NLL {score:.2f}"
            # text colour set wherever the background is, and none forced elsewhere: readable in light and dark themes
            style = f"background:{background};color:#fff" if expanded else "opacity:0.65"
            spans.append(f'<span title="{title}" style="{style};border-right:1px solid #bbb">{text}</span>')
        parts.append(f"<p><b>{html.escape(label)}</b> ({sum(mask)} of {len(mask)} chunks expanded):<br>"
                     + "".join(spans) + "</p>")
    continuation = html.escape(tok.decode(example.segments.suffix))
    parts.append(f"<p><b>continuation to predict:</b> <i>{continuation}</i></p>")
    return "<div style='font-family:monospace;font-size:12px;line-height:1.6'>" + "".join(parts) + "</div>"


def plot_answer_table(table: dict, axes=None):
    """Held-out questions (refrag_lib.question_grpo.held_out_table): left, the share whose answer chunk is
    expanded; right, the mean NLL of the gold answer; both against p, bars = 95% bootstrap intervals."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    left, right = axes
    for name, rows in table["by_p"].items():
        label, colour, marker = STYLE.get(name, (name, None, "o"))
        ps = [float(p) for p in rows]
        for ax, key in ((left, "answer_expanded"), (right, "answer_nll")):
            values = np.array([rows[p][key] for p in rows])
            bounds = [rows[p][f"{key}_ci"] or [rows[p][key]] * 2 for p in rows]
            err = np.abs(np.array(bounds).T - values)
            ax.errorbar(ps, values, yerr=err, marker=marker, color=colour, label=label, capsize=3)
    right.axhline(table["none"]["answer_nll"], color="black", ls=":", label="nothing expanded")
    left.set_ylabel("answer chunk expanded (share of questions)")
    right.set_ylabel("mean NLL of the gold answer")
    for ax in axes:
        ax.set_xlabel("fraction p of chunks expanded")
        ax.legend(fontsize=8)
    left.set_title(f"Does the expansion land on the answer? ({table['with_answer_chunk']} questions)")
    right.set_title(f"Gold-answer NLL ({table['n_questions']} held-out questions)")
    return axes
