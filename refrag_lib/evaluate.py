"""Held-out evaluation of stages 1-2: reconstruction by number of chunks, and CPT log-perplexity.

All numbers come from documents the training never saw (the last 10%), with fixed windows drawn
from a seeded generator so every model is scored on the same tokens. `vectors_against_floor` is the
measure to trust for what the chunk vectors carry: per window, with the vectors and without them
(the decoder's own language model), teacher-forced and free-running, with 95% intervals. Every score
is computed in the precision the model trains in (precision.in_training_precision).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from .arms import CONTEXT_ARMS
from .errors import CourseError
from .intervals import mean_interval, paired_difference
from .losses import reconstruction_example, suffix_token_stats
from .model import RefragModel, Segments, chunk_ids
from .precision import in_training_precision
from .stages import train_stage, windows
from .train import TrainResult


def chunk_counts(max_chunks: int) -> list[int]:
    """1, 4, 16, 64 ... up to what s/k allows (the analog of the paper's P16/P32/P128/P2048)."""
    counts, n = [], 1
    while n <= max_chunks:
        counts.append(n)
        n *= 4
    return counts


@torch.no_grad()
@in_training_precision
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
            batch = [Segments(prefix=[model.start_id], suffix=x) for x in xs]
        log_ppl[str(n)], accuracy[str(n)] = _score(model, batch, batch_size)
    return {"token_accuracy_by_chunks": accuracy, "log_ppl_by_chunks": log_ppl}


# ---- what the vectors carry beyond the decoder's own language model -------------------------------------
@torch.no_grad()
@in_training_precision
def _per_window(model: RefragModel, batch: list[Segments], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean NLL per token, token accuracy) of each example's suffix, teacher-forced."""
    parts = [suffix_token_stats(model, batch[i : i + batch_size]).per_example()
             for i in range(0, len(batch), batch_size)]
    return np.concatenate([nll for nll, _ in parts]), np.concatenate([accuracy for _, accuracy in parts])


@torch.no_grad()
@in_training_precision
def _greedy_chunk(model: RefragModel, batch: list[Segments], batch_size: int) -> list[list[int]]:
    """k tokens of greedy decoding per example (no teacher forcing): what the decoder writes on its own."""
    decoded = []
    for i in range(0, len(batch), batch_size):
        decoded += model.generate(model.build_inputs(batch[i : i + batch_size], padding_side="left"), model.k)
    return decoded


def _exact_share(decoded: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]) -> np.ndarray:
    """Per example, the share of target positions the decoded tokens match exactly."""
    return np.array([sum(a == b for a, b in zip(d, t)) / len(t) for d, t in zip(decoded, targets)])


def probe_windows(model: RefragModel, held_out: list[list[int]], n: int, size: int, seed: int) -> list[list[int]]:
    """The held-out windows of n chunks that the floor and every probed model share."""
    return windows(held_out, n * model.k, size, np.random.default_rng([seed, n]))


def floor_scores(model: RefragModel, held_out: list[list[int]], counts: Sequence[int], n_windows: int = 64,
                 long_windows: int | None = None, batch_size: int = 8, seed: int = 2024) -> dict:
    """The decoder alone (a start token, no vectors) on the windows `vectors_against_floor` uses.

    n_windows per chunk count; long_windows for counts above 4 (each of those windows averages over
    n*k tokens, so fewer give as tight a log-ppl interval; None: n_windows). The floor does not depend
    on the encoder or projector, so a notebook computes it once for every model it compares.
    """
    out, sizes = {}, {}
    alone = _greedy_chunk(model, [Segments(prefix=[model.start_id])], 1)[0]  # the same for every window
    for n in counts:
        sizes[str(n)] = n_windows if n <= 4 or long_windows is None else long_windows
        xs = probe_windows(model, held_out, n, sizes[str(n)], seed)
        nll, accuracy = _per_window(model, [Segments(prefix=[model.start_id], suffix=x) for x in xs], batch_size)
        exact = _exact_share([alone] * len(xs), [x[: model.k] for x in xs])
        out[str(n)] = {"log_ppl": nll, "token_accuracy": accuracy, "first_chunk_exact": exact}
    return {"counts": list(counts), "n_windows": sizes, "seed": seed, "scores": out}


def vectors_against_floor(model: RefragModel, held_out: list[list[int]], floor: dict, batch_size: int = 8) -> dict:
    """Reconstruction from n chunk vectors next to the decoder alone, on the same held-out windows.

    Per number of chunks: held-out log-ppl and token accuracy (teacher-forced), the share of the first
    chunk's k tokens that greedy decoding from the vectors gets exactly right (free-running), each with
    its 95% bootstrap interval over windows, and the gain over the floor with a paired interval.
    """
    table, scores = {}, {}
    for n in floor["counts"]:
        xs = probe_windows(model, held_out, n, floor["n_windows"][str(n)], floor["seed"])
        base = floor["scores"][str(n)]
        nll, accuracy = _per_window(model, [reconstruction_example(x, model.k) for x in xs], batch_size)
        decoded = _greedy_chunk(model, [Segments(chunks=chunk_ids(x, model.k)) for x in xs], batch_size)
        exact = _exact_share(decoded, [x[: model.k] for x in xs])
        table[str(n)] = {
            "log_ppl": mean_interval(nll), "log_ppl_floor": mean_interval(base["log_ppl"]),
            "log_ppl_gain": paired_difference(base["log_ppl"], nll),  # > 0: the vectors lower the perplexity
            "token_accuracy": mean_interval(accuracy), "token_accuracy_floor": mean_interval(base["token_accuracy"]),
            "token_accuracy_gain": paired_difference(accuracy, base["token_accuracy"]),
            "first_chunk_exact": mean_interval(exact),
            "first_chunk_exact_floor": mean_interval(base["first_chunk_exact"]),
            "first_chunk_exact_gain": paired_difference(exact, base["first_chunk_exact"]),
        }
        scores[str(n)] = {"log_ppl": nll.tolist(), "token_accuracy": accuracy.tolist(),
                          "first_chunk_exact": exact.tolist()}
    return {"by_chunks": table, "n_windows": floor["n_windows"], "per_window": scores}


def between_models(better: dict, other: dict) -> dict:
    """Paired gains of one trained model over another on the same windows (> 0: `better` is better)."""
    out = {}
    for n, a in better["per_window"].items():
        b = other["per_window"][n]
        out[n] = {"log_ppl_gain": paired_difference(b["log_ppl"], a["log_ppl"]),
                  "token_accuracy_gain": paired_difference(a["token_accuracy"], b["token_accuracy"]),
                  "first_chunk_exact_gain": paired_difference(a["first_chunk_exact"], b["first_chunk_exact"])}
    return out


def train_and_probe(run, cfg, held_out: list[list[int]], floor: dict, points: int = 4, resume: bool = True,
                    progress: bool = True, **stage_options) -> tuple[TrainResult, list[dict]]:
    """Train a stage in `points` equal segments and probe the vectors after each one.

    The loop resumes exactly (same weights as one uninterrupted run), so the curve costs only the
    probes: [{"step": steps done, "by_chunks": vectors_against_floor(...)["by_chunks"]}, ...].
    stage_options go to every segment's train_stage (documents, and a learner's parts= and mixtures=).
    """
    if points < 1:
        raise CourseError(f"points must be >= 1 (probes during training), got {points}.")
    segment = -(-cfg.steps // points)
    curve: list[dict] = []
    while True:
        result = train_stage(run, cfg, resume=resume or bool(curve), max_new_steps=segment, progress=progress,
                             **stage_options)
        probe = vectors_against_floor(result.model, held_out, floor)
        curve.append({"step": len(result.history), "by_chunks": probe["by_chunks"]})
        if result.summary["finished"]:
            return result, curve
        del result.model  # the next segment loads the checkpoint it left


# ---- CPT: the paper's Table 1 arms on the same decoder --------------------------------------------------
def _no_context(model, context, continuation):
    """Only a start token before the continuation: what the decoder knows without the document."""
    return Segments(prefix=[model.start_id], suffix=continuation)


# Every arm starts with the start token, as the compressed arm does (RefragModel puts it before the vectors).
def _full_context(model, context, continuation):
    return Segments(prefix=[model.start_id, *context], suffix=continuation)


def _last_tokens(model, context, continuation):
    """The last s/k context tokens: the same decoder length as REFRAG-k, spent on raw tokens."""
    return Segments(prefix=[model.start_id, *context[-(len(context) // model.k):]], suffix=continuation)


def _compressed(model, context, continuation):
    return Segments(chunks=chunk_ids(context, model.k), suffix=continuation)


ARM_INPUTS: dict[str, Callable] = dict(zip(CONTEXT_ARMS, (_no_context, _full_context, _last_tokens, _compressed)))


def cpt_windows(held_out: list[list[int]], context_tokens: int, continuation_tokens: int, n_examples: int,
                seed: int = 4321) -> list[tuple[list[int], list[int]]]:
    """Fixed (context, continuation) pairs from held-out documents, shared by every arm."""
    rows = windows(held_out, context_tokens + continuation_tokens, n_examples, np.random.default_rng(seed))
    return [(row[:context_tokens], row[context_tokens:]) for row in rows]


def context_nll(model: RefragModel, pairs, arm: str, batch_size: int = 4) -> np.ndarray:
    """Per (context, continuation) pair: the mean NLL of its continuation tokens under one arm."""
    if arm not in ARM_INPUTS:
        raise CourseError(f"Unknown arm {arm!r}; choose from {', '.join(ARM_INPUTS)}.")
    batch = [ARM_INPUTS[arm](model, list(c), list(o)) for c, o in pairs]
    return _per_window(model, batch, batch_size)[0]


def cpt_arms(model: RefragModel, pairs, arms: Sequence[str], baselines: dict | None = None) -> dict:
    """Each arm's log-ppl with its 95% interval over pairs, and the per-pair values ("per_pair").

    baselines: the "per_pair" of an earlier call on the frozen decoder; with its "last_tokens" the
    REFRAG arm also gets its paired gain over the last s/k tokens (> 0: REFRAG predicts better).
    """
    per_pair = {arm: context_nll(model, pairs, arm).tolist() for arm in arms}
    out = {arm: mean_interval(values) for arm, values in per_pair.items()}
    if "refrag" in per_pair and baselines and "last_tokens" in baselines:
        out["gain_over_last_tokens"] = paired_difference(baselines["last_tokens"], per_pair["refrag"])
    return {**out, "per_pair": per_pair}


def paired_cpt(better: dict, other: dict, arm: str = "refrag") -> dict:
    """The paired log-ppl gain of one model's arm over another's on the same pairs (> 0: `better` is)."""
    return paired_difference(other[arm], better[arm])


@torch.no_grad()
@in_training_precision
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
