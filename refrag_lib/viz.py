"""Plots the notebooks show; each function takes plain numbers and returns a matplotlib Figure."""

from __future__ import annotations

from collections.abc import Mapping


def plot_recall(recall: Mapping[int, float], n_passages: int, title: str = "Retrieval recall@k"):
    """recall@k bars next to the chance level k / n_passages (a random ranking)."""
    import matplotlib.pyplot as plt

    ks = sorted(recall)
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    labels = [f"@{k}" for k in ks]
    bars = ax.bar(labels, [recall[k] for k in ks], color="tab:blue", label="retriever")
    ax.bar_label(bars, fmt="%.2f")
    ax.plot(labels, [min(1.0, k / n_passages) for k in ks], "o--", color="tab:gray", label="chance (k / passages)")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("gold passage in top k")
    ax.set_title(f"{title} ({n_passages} passages)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig
