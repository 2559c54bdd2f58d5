"""The two training objectives of stages 1-2, batched: one encoder call and one decoder forward per batch.

Reconstruction: the decoder sees [<start>, e_1..e_L, x_1..x_s] (RefragModel puts its start token
first) and must reproduce x_1..x_s with teacher forcing; the loss counts the x tokens only (the first
x token is predicted from the last chunk vector). Next-paragraph prediction (CPT): the first s tokens
are compressed into chunk vectors (a random fraction p of chunks may stay as tokens), the decoder
predicts the next o tokens.
Both are "loss on the suffix tokens of a right-padded batch", so one function computes both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .errors import CourseError
from .model import DecoderInputs, RefragModel, Segments, chunk_ids, expand_all
from .policy import n_expanded, random_mask
from .precision import in_training_precision

IGNORE = -100  # label of positions that are not scored (vectors, prefix, padding)


@dataclass
class TokenStats:
    """The loss of a batch (mean NLL per scored token, differentiable) and per-example counts."""

    loss: torch.Tensor
    nll: torch.Tensor  # [B] summed NLL of each example's scored tokens (detached)
    tokens: torch.Tensor  # [B] scored tokens per example
    correct: torch.Tensor  # [B] scored tokens whose argmax prediction is right

    @property
    def log_ppl(self) -> float:
        return float(self.nll.sum() / self.tokens.sum().clamp(min=1))

    @property
    def accuracy(self) -> float:
        return float(self.correct.sum() / self.tokens.sum().clamp(min=1))

    def per_example(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean NLL per token, token accuracy) of each example: what the held-out intervals resample."""
        tokens = self.tokens.clamp(min=1).double()
        return (self.nll.detach().double() / tokens).cpu().numpy(), (self.correct.double() / tokens).cpu().numpy()


def reconstruction_example(tokens: Sequence[int], k: int) -> Segments:
    """x_1..x_s as compressed chunks, then x_1..x_s again as the targets."""
    if len(tokens) == 0:
        raise CourseError("A reconstruction example needs at least one token.")
    return Segments(prefix=[], chunks=chunk_ids(tokens, k), suffix=list(tokens))


def next_paragraph_example(context: Sequence[int], continuation: Sequence[int], k: int) -> Segments:
    """The first s tokens as chunks, the next o tokens as the targets."""
    if len(context) == 0 or len(continuation) == 0:
        raise CourseError("A next-paragraph example needs a non-empty context and continuation.")
    return Segments(prefix=[], chunks=chunk_ids(context, k), suffix=list(continuation))


def random_expansion(batch: Sequence[Segments], fraction: float, rng: np.random.Generator) -> list[list[bool]]:
    """Expand round(fraction * L) chunks of each example, chosen at random (the paper's mixed input, p = 0.1)."""
    if not 0.0 <= fraction <= 1.0:
        raise CourseError(f"The expansion fraction p must lie in [0, 1], got {fraction}.")
    if fraction == 0.0:
        return expand_all(batch, False)
    return [random_mask(len(ex.chunks), n_expanded(fraction, len(ex.chunks)), rng) for ex in batch]


def shifted_labels(inputs: DecoderInputs) -> torch.Tensor:
    """labels[b, t] = the token at t+1 where that is a suffix token, else IGNORE (next-token targets)."""
    labels = torch.full_like(inputs.token_ids, IGNORE)
    labels[:, :-1] = torch.where(inputs.is_suffix[:, 1:], inputs.token_ids[:, 1:], IGNORE)
    return labels


def decoder_hidden(model: RefragModel, inputs: DecoderInputs) -> torch.Tensor:
    """The decoder's last hidden states over assembled inputs. The output layer is left to the caller, to run
    only at the positions it scores: with a 49k vocabulary the logits of every position would cost as much as
    the rest of the decoder."""
    return model.decoder.base_model(
        inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask, position_ids=inputs.position_ids,
        use_cache=False,  # a scoring/training pass: a KV cache would only hold memory
    ).last_hidden_state


def suffix_token_stats(
    model: RefragModel, batch: Sequence[Segments], expand: Sequence[Sequence[bool]] | None = None,
    projected: torch.Tensor | None = None, chunk_vectors: torch.Tensor | None = None,
) -> TokenStats:
    """Teacher-forced NLL of every example's suffix tokens under the given expansion mask: the one loss of
    the course (reconstruction, next paragraph, answer tokens, GRPO's reward). The compressed chunks' vectors
    come from the encoder, or as cached c_i (chunk_vectors), or directly in the decoder's space (projected);
    see build_inputs.
    """
    inputs = model.build_inputs(batch, expand, chunk_vectors=chunk_vectors, padding_side="right", projected=projected)
    labels = shifted_labels(inputs)
    hidden = decoder_hidden(model, inputs)
    rows, cols = (labels != IGNORE).nonzero(as_tuple=True)
    if rows.numel() == 0:
        raise CourseError("No target tokens in this batch: every example needs a non-empty suffix.")
    logits = model.decoder.get_output_embeddings()(hidden[rows, cols]).float()
    targets = labels[rows, cols]
    nll = F.cross_entropy(logits, targets, reduction="none")
    n = len(batch)
    per_example = torch.zeros(n, device=nll.device).index_add(0, rows, nll.detach())
    tokens = torch.bincount(rows, minlength=n)
    correct = torch.bincount(rows, weights=(logits.argmax(-1) == targets).float(), minlength=n)
    return TokenStats(nll.mean(), per_example, tokens, correct)


@torch.no_grad()
@in_training_precision
def masked_nll(model: RefragModel, examples: Sequence,
               masks: Sequence[Sequence[bool]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed NLL and token count of each example's suffix under its expansion mask, the cached c_i of the
    examples (refrag_lib.selectors.ScoredExample) standing in for the compressed chunks: one decoder forward,
    no encoder call. GRPO's reward and every selector's held-out log-ppl; rows may repeat an example."""
    compressed = [ex.chunk_vectors[[i for i, e in enumerate(mask) if not e]] for ex, mask in zip(examples, masks)]
    vectors = torch.cat(compressed) if compressed else torch.zeros(0)
    stats = suffix_token_stats(model, [ex.segments for ex in examples], masks, chunk_vectors=vectors)
    return stats.nll.cpu(), stats.tokens.cpu()


def reconstruction_loss(model: RefragModel, token_lists: Sequence[Sequence[int]]) -> TokenStats:
    """Stage 1: reproduce each x from its chunk vectors alone (every chunk compressed)."""
    return suffix_token_stats(model, [reconstruction_example(x, model.k) for x in token_lists])


def next_paragraph_loss(
    model: RefragModel,
    contexts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    expand_fraction: float = 0.0,
    rng: np.random.Generator | None = None,
) -> TokenStats:
    """Stage 2: predict the continuation from the compressed context (a fraction p of chunks as tokens)."""
    if len(contexts) != len(continuations):
        raise CourseError(f"{len(contexts)} contexts for {len(continuations)} continuations.")
    batch = [next_paragraph_example(c, o, model.k) for c, o in zip(contexts, continuations)]
    expand = random_expansion(batch, expand_fraction, rng if rng is not None else np.random.default_rng(0))
    return suffix_token_stats(model, batch, expand)
