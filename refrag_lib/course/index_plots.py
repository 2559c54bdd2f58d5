"""Notebook 01's plots: recall@k, and the attention of passage tokens across retrieved passages."""

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


def plot_block_attention(result: dict, title: str = "Where a passage's tokens look (this run)"):
    """Left: per decoder layer, the share of passage tokens' attention on the first token, the question, their
    own passage and the other passages, with the other passages' share under even attention (dashed). Right:
    passage x (first token, question, passage) attention, all layers: block-diagonal when the passages keep to
    themselves (the paper's Figure 7 draws it for its own model and data)."""
    import matplotlib.pyplot as plt

    fig, (lines, blocks) = plt.subplots(1, 2, figsize=(12, 4))
    labels = {"first_token": "first token (sink)", "question": "question", "own_passage": "own passage",
              "other_passages": "other passages"}
    for part, values in result["shares"].items():
        lines.plot(range(len(values)), values, marker=".", label=labels[part])
    lines.axhline(result["uniform"]["other_passages"], color="tab:red", linestyle="--",
                  label="other passages, attention spread evenly")
    lines.set_xlabel("decoder layer")
    lines.set_ylabel("share of attention")
    lines.set_ylim(0, 1)
    lines.set_title(f"{result['questions']} questions x {result['passages']} passages (passages 2-K)")
    lines.legend(fontsize=8)
    n = result["passages"]
    image = blocks.imshow(result["blocks"], cmap="viridis", aspect="auto")
    blocks.set_xticks(range(n + 2), ["first", "question", *[f"P{j + 1}" for j in range(n)]])
    blocks.set_yticks(range(n), [f"P{i + 1}" for i in range(n)])
    blocks.set_xlabel("attended (keys)")
    blocks.set_ylabel("attending passage (queries)")
    blocks.set_title("mean attention, all layers")
    fig.colorbar(image, ax=blocks)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
