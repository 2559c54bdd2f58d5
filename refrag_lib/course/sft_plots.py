"""Plots and tables of notebook 05: exact match and TTFT per row, SFT loss curves, answers side by side."""

from __future__ import annotations

import html
from collections.abc import Sequence

from ..arms import QA_ROWS
from ..qa import exact_match

LABELS = {"no_context": "no context", "rag": "RAG-FT, K", "refrag": "REFRAG, K",
          "refrag_equal_latency": "REFRAG, equal latency"}


def plot_em_ttft(metrics: dict, top_k: int, equal_latency_passages: int):
    """Left: exact match per row, retrieved vs gold forced in. Right: median TTFT per row (with cache)."""
    import matplotlib.pyplot as plt
    import numpy as np

    x = np.arange(len(QA_ROWS))
    labels = [LABELS[r] for r in QA_ROWS]
    labels[-1] += f" ({equal_latency_passages} p.)"
    fig, (em_ax, ttft_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
    retrieved = em_ax.bar(x - 0.2, [metrics["exact_match"][r] for r in QA_ROWS], 0.4, label="retrieved")
    gold = em_ax.bar(x + 0.2, [metrics["exact_match"][r + "_gold"] for r in QA_ROWS], 0.4,
                     label="gold passage forced in", color="tab:green", alpha=0.7)
    em_ax.bar_label(retrieved, fmt="%.2f", fontsize=8)
    em_ax.bar_label(gold, fmt="%.2f", fontsize=8)
    em_ax.set_ylim(0, 1.25)
    em_ax.set_ylabel("exact match")
    em_ax.set_title(f"Answer quality (K = {top_k})")
    em_ax.legend(loc="upper right", fontsize=8, ncols=2)
    bars = ttft_ax.bar(x, [metrics["ttft_ms"][r] for r in QA_ROWS], color="tab:orange")
    ttft_ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ttft_ax.set_ylabel("TTFT, median ms (with cache)")
    ttft_ax.set_title("Time to first token")
    for ax in (em_ax, ttft_ax):
        ax.set_xticks(x, labels, rotation=15, fontsize=8)
    fig.tight_layout()
    return fig


def plot_selector_grid(grid: dict, rag_em: float, rag_ttft_ms: float):
    """EM (95% interval) against TTFT for every selector, one point per p; RAG-FT as a star."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, rows in grid.items():
        ps = sorted(rows, key=float)
        em = [rows[p]["exact_match"] for p in ps]
        errors = [[e - rows[p]["ci"][0] for e, p in zip(em, ps)], [rows[p]["ci"][1] - e for e, p in zip(em, ps)]]
        ax.errorbar([rows[p]["ttft_ms"] for p in ps], em, yerr=errors, marker="o", capsize=3, label=name)
        for p, e in zip(ps, em):
            ax.annotate(f"p={float(p):g}", (rows[p]["ttft_ms"], e), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.scatter([rag_ttft_ms], [rag_em], marker="*", s=160, color="black", label="RAG-FT (all tokens)", zorder=3)
    ax.set_xlabel("TTFT, median ms (with cache)")
    ax.set_ylabel("exact match")
    ax.set_title("REFRAG at K: which chunks stay tokens")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_sft_losses(histories: dict[str, Sequence[dict]], window: int = 1):
    """Answer-token NLL per SFT step of each arm (moving average over `window` steps)."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for arm, history in histories.items():
        loss = np.array([row["loss"] for row in history])
        w = max(1, min(window, len(loss)))
        smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
        ax.plot(np.arange(len(smooth)) + w - 1, smooth, label=arm)
    ax.set_xlabel("step")
    ax.set_ylabel("answer-token NLL")
    ax.set_title("SFT: loss on the answer tokens")
    ax.legend()
    fig.tight_layout()
    return fig


def examples_html(rows: Sequence[dict]) -> str:
    """Question, gold answer, both arms' answers (green when exact) and the chunks REFRAG expanded."""
    head = "".join(f"<th>{h}</th>" for h in ("question", "gold", "RAG-FT", "REFRAG", "expanded chunks"))
    body = []
    for row in rows:
        answers = row["gold"].split(" | ")
        cells = [html.escape(row["question"]), html.escape(row["gold"])]
        for arm in ("rag", "refrag"):
            color = "#d4f7d4" if exact_match(row[arm], answers) else "#f7d4d4"
            cells.append(f'<span style="background:{color};color:#111">{html.escape(row[arm]) or "&empty;"}</span>')
        cells.append("<br>".join(f"<code>{html.escape(c.strip())}</code>" for c in row["expanded_chunks"]) or "none")
        body.append("<tr>" + "".join(f'<td style="text-align:left">{c}</td>' for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"
