"""Held-out evaluation of stages 1-2: reconstruction by number of chunks, and CPT log-perplexity.

All numbers are teacher-forced on documents the training never saw (the last 10%), with fixed
windows drawn from a seeded generator so every model is scored on the same tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from .errors import CourseError
from .losses import reconstruction_example, suffix_token_stats
from .model import RefragModel, Segments, chunk_ids, expand_all
from .train import windows


def chunk_counts(max_chunks: int) -> list[int]:
    """1, 4, 16, 64 ... up to what s/k allows (the analog of the paper's P16/P32/P128/P2048)."""
    counts, n = [], 1
    while n <= max_chunks:
        counts.append(n)
        n *= 4
    return counts


@torch.no_grad()
def _score(model: RefragModel, batch: list[Segments], batch_size: int, expand=None) -> tuple[float, float]:
    """(log-perplexity, token accuracy) of the suffix tokens of every example, in batches."""
    nll = tokens = correct = 0.0
    for i in range(0, len(batch), batch_size):
        part = batch[i : i + batch_size]
        stats = suffix_token_stats(model, part, None if expand is None else expand[i : i + batch_size])
        nll += float(stats.nll.sum())
        tokens += float(stats.tokens.sum())
        correct += float(stats.correct.sum())
    return nll / tokens, correct / tokens


def reconstruction_by_chunks(
    model: RefragModel, held_out: list[list[int]], counts: Sequence[int], n_examples: int = 16,
    batch_size: int = 4, seed: int = 1234, with_vectors: bool = True,
) -> dict:
    """Token accuracy and log-ppl of reconstructing n*k held-out tokens from n chunk vectors.

    with_vectors=False scores the same tokens with only a start token in front: what the decoder
    predicts from its own language model under teacher forcing, the floor the vectors must beat.
    """
    accuracy, log_ppl = {}, {}
    for n in counts:
        xs = windows(held_out, n * model.k, n_examples, np.random.default_rng([seed, n]))
        if with_vectors:
            batch = [reconstruction_example(x, model.k) for x in xs]
        else:
            batch = [Segments(prefix=[start_token(model)], suffix=x) for x in xs]
        log_ppl[str(n)], accuracy[str(n)] = _score(model, batch, batch_size)
    return {"token_accuracy_by_chunks": accuracy, "log_ppl_by_chunks": log_ppl}


def start_token(model: RefragModel) -> int:
    """The token a text without context starts from (BOS, or EOS where the tokenizer has no BOS)."""
    start = model.decoder_tokenizer.bos_token_id
    return model.eos_id if start is None else start


# ---- CPT: the paper's Table 1 arms on the same decoder --------------------------------------------------
def _no_context(model, context, continuation):
    """Only a start token before the continuation: what the decoder knows without the document."""
    return Segments(prefix=[start_token(model)], suffix=continuation)


def _full_context(model, context, continuation):
    return Segments(prefix=context, suffix=continuation)


def _last_tokens(model, context, continuation):
    """The last s/k context tokens: the same decoder length as REFRAG-k, spent on raw tokens."""
    return Segments(prefix=context[-(len(context) // model.k):], suffix=continuation)


def _compressed(model, context, continuation):
    return Segments(chunks=chunk_ids(context, model.k), suffix=continuation)


ARMS: dict[str, Callable] = {
    "no_context": _no_context, "full_context": _full_context, "last_tokens": _last_tokens, "refrag": _compressed,
}


def cpt_windows(held_out: list[list[int]], context_tokens: int, continuation_tokens: int, n_examples: int,
                seed: int = 4321) -> list[tuple[list[int], list[int]]]:
    """Fixed (context, continuation) pairs from held-out documents, shared by every arm."""
    rows = windows(held_out, context_tokens + continuation_tokens, n_examples, np.random.default_rng(seed))
    return [(row[:context_tokens], row[context_tokens:]) for row in rows]


def context_log_ppl(model: RefragModel, pairs, arm: str, batch_size: int = 4) -> float:
    """Log-perplexity of the continuations under one way of giving the decoder the context."""
    if arm not in ARMS:
        raise CourseError(f"Unknown arm {arm!r}; choose from {', '.join(ARMS)}.")
    batch = [ARMS[arm](model, list(c), list(o)) for c, o in pairs]
    return _score(model, batch, batch_size, expand_all(batch, False))[0]


@torch.no_grad()
def decoded_reconstructions(model: RefragModel, held_out: list[list[int]], counts: Sequence[int],
                            max_tokens: int | None = None, seed: int = 99) -> list[dict]:
    """Greedy reconstructions from n chunk vectors beside the original text (one held-out window).

    max_tokens: decode (and show) at most this many tokens of each text (None: all n*k)."""
    rng = np.random.default_rng(seed)
    window = windows(held_out, max(counts) * model.k, 1, rng)[0]
    rows = []
    for n in counts:
        original = window[: n * model.k][:max_tokens]
        inputs = model.build_inputs([Segments(chunks=chunk_ids(original, model.k))], padding_side="left")
        decoded = model.generate(inputs, max_new_tokens=len(original))[0]
        same = sum(a == b for a, b in zip(decoded, original))
        rows.append({"chunks": n, "original": model.decoder_tokenizer.decode(original),
                     "decoded": model.decoder_tokenizer.decode(decoded), "exact_token_share": same / len(original)})
    return rows
