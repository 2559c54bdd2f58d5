"""Why REFRAG may compress each retrieved passage on its own: the decoder's attention across passages.

The paper's argument (its section on attention sparsity, Figure 7): in RAG the retrieved passages are
mostly unrelated to one another (diverse retrieval, deduplication), so the decoder's attention over them is
block-diagonal: a passage's tokens attend to themselves and to the question, hardly to the other passages.
The cross-passage attention that full prefill pays for is then mostly wasted work, which is what licenses
encoding each k-token chunk independently and caching its vector.

`passage_attention` measures that pattern on real retrieved contexts: the RAG prompt (question, then K
passages as tokens, then the answer cue) through the decoder with every attention map returned, and for
each layer where the attention of a passage's tokens goes: the first token (the attention sink every causal
decoder keeps), the question, the passage itself, or the other (earlier) passages. Tokens of the first
passage have no earlier passage to look at, so only passages 2..K are counted. Beside each share stands what
attention spread evenly over the visible tokens would give, the yardstick of "block-diagonal".
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch

from .errors import CourseError
from .model import RefragModel
from .qa import build_prompt

PARTS = ("first_token", "question", "own_passage", "other_passages")


@contextmanager
def eager_attention(model: RefragModel) -> Iterator[None]:
    """The decoder's plain attention while inside (the fused kernels return no attention maps), then back."""
    decoder = model.decoder
    before = decoder.config._attn_implementation
    decoder.set_attn_implementation("eager")
    try:
        yield
    finally:
        decoder.set_attn_implementation(before)


def _owners(prefix: int, passage_tokens: Sequence[int], total: int) -> np.ndarray:
    """Per position: -2 first token, -1 question, i = passage i, len(passages) = the answer cue."""
    owner = np.full(total, len(passage_tokens))
    owner[0], owner[1:prefix] = -2, -1
    start = prefix
    for i, n in enumerate(passage_tokens):
        owner[start : start + n] = i
        start += n
    return owner


@torch.no_grad()
def passage_attention(model: RefragModel, questions: Sequence[str],
                      passage_chunks: Sequence[Sequence[Sequence[Sequence[int]]]]) -> dict:
    """Where the attention of passage tokens goes, per layer, averaged over heads, tokens and questions.

    questions[i] with passage_chunks[i]: its retrieved passages, each a list of k-token chunks (a chunk
    source's passage_chunks). Returns {"shares": {part: [per layer]}, "uniform": {part: [per layer]},
    "blocks": [K x (2 + K)] mean attention of passage i's tokens on first token, question, passage j (all
    layers), "passages": K, "questions": n, "layers": L}.
    """
    if not questions or len(questions) != len(passage_chunks):
        raise CourseError("passage_attention needs one list of passages per question, and at least one question.")
    k_passages = {len(p) for p in passage_chunks}
    if len(k_passages) != 1 or min(k_passages) < 2:
        raise CourseError("Every question needs the same number of retrieved passages, at least 2 (top-K >= 2).")
    n_passages = k_passages.pop()
    shares, uniform, blocks = [], [], []
    with eager_attention(model):
        for question, passages in zip(questions, passage_chunks):
            prompt = build_prompt(model, question, passages)
            inputs = model.build_inputs([prompt], [[True] * len(prompt.chunks)], padding_side="right")
            total = int(inputs.lengths[0])
            if total > model.window:
                raise CourseError(f"The prompt takes {total} positions, more than the decoder's window "
                                  f"({model.window}): use fewer or shorter passages.")
            owner = _owners(len(prompt.prefix), [sum(len(c) for c in p) for p in passages], total)
            maps = model.decoder(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                                 position_ids=inputs.position_ids, output_attentions=True, use_cache=False).attentions
            queries = np.flatnonzero((owner >= 1) & (owner < n_passages))  # tokens of passages 2..K
            query_owner = owner[queries][:, None]
            part_of_key = [np.broadcast_to(owner == -2, (len(queries), total)),
                           np.broadcast_to(owner == -1, (len(queries), total)),
                           owner[None, :] == query_owner,
                           (owner[None, :] >= 0) & (owner[None, :] < query_owner)]
            in_passage = (owner >= 0) & (owner < n_passages)
            columns = [owner == -2, owner == -1, *[owner == j for j in range(n_passages)]]
            layer_shares, layer_blocks = [], []
            for attention in maps:
                mean = attention[0].float().mean(dim=0).cpu().numpy()  # [T, T], heads averaged
                rows = mean[queries]
                layer_shares.append([(rows * part).sum(1).mean() for part in part_of_key])
                passage_rows, passage_of = mean[in_passage], owner[in_passage]
                layer_blocks.append([[passage_rows[passage_of == i][:, col].sum(1).mean() for col in columns]
                                     for i in range(n_passages)])
            shares.append(layer_shares)
            blocks.append(np.mean(layer_blocks, axis=0))
            causal = np.tril(np.ones((total, total), dtype=bool))[queries]  # what each query token can see
            visible = causal.sum(1)
            uniform.append([((causal & part).sum(1) / visible).mean() for part in part_of_key])
    shares_by_layer = np.mean(shares, axis=0)  # [L, 4]
    even = np.mean(uniform, axis=0)  # [4], the same for every layer
    return {
        "shares": {part: shares_by_layer[:, i].round(6).tolist() for i, part in enumerate(PARTS)},
        "uniform": {part: round(float(even[i]), 6) for i, part in enumerate(PARTS)},
        "blocks": np.mean(blocks, axis=0).round(6).tolist(),
        "passages": n_passages, "questions": len(questions), "layers": len(shares_by_layer),
    }


def cross_passage_summary(result: dict) -> dict:
    """The figures the notebook prints: over all layers, the share of passage tokens' attention that goes to
    other passages (with and without the first token's sink) and to their own passage, each beside the share
    of the visible tokens it holds (attention spread evenly), and the layer that looks across passages most."""
    shares = {part: np.asarray(values) for part, values in result["shares"].items()}
    beyond_sink = 1.0 - shares["first_token"]
    other_beyond_sink = shares["other_passages"] / np.clip(beyond_sink, 1e-9, None)
    even_beyond_sink = 1.0 - result["uniform"]["first_token"]
    return {
        "other_passages": float(shares["other_passages"].mean()),
        "other_passages_beyond_sink": float(other_beyond_sink.mean()),
        "other_passages_if_even": float(result["uniform"]["other_passages"] / even_beyond_sink),
        "own_passage_beyond_sink": float((shares["own_passage"] / np.clip(beyond_sink, 1e-9, None)).mean()),
        "own_passage_if_even": float(result["uniform"]["own_passage"] / even_beyond_sink),
        "most_cross_layer": int(other_beyond_sink.argmax()),
        "most_cross_share": float(other_beyond_sink.max()),
    }
