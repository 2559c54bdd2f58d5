"""The "your turn" exercises of notebooks 00-06: a checker for each, and the package's own code as the reference.

Each exercise asks for a function that the course really runs: the analytic TTFT ratio (00); the chunk pooling,
the projector's MLP, the splice of chunk vectors into the decoder input, the curriculum's mixtures and the
reconstruction labels (02); the mixed-input expansion (03); the GRPO advantage and clipped objective (04); token F1
(05); the TTFT timer (06). So the reference solution IS that function and cannot drift from what the notebooks use.
A checker runs the learner's answer on a few small, deterministic cases and stops at the first wrong one with an
ExerciseError that names the case, shows what was expected and what came back, and says what usually causes it.
In a notebook:

    my_advantage = None                                   # or your own def
    advantage = exercise("grpo_advantage", my_advantage)  # yours once it passes; the reference when None
    reveal("grpo_advantage")                              # the reference's code, folded

Where training runs a learner's function, the notebook hands it over explicitly: model.Parts(pool=...,
projector_net=..., splice=...) and mixtures=... to stages.train_stage / evaluate.train_and_probe, objective=... to
grpo.train_policy.
"""

from __future__ import annotations

import html
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import SimpleNamespace
from unittest import mock

import numpy as np
import torch
from torch import nn

from ..analytic import DecoderShape, prefill_flops, refrag_positions, ttft_ratio, ttft_speedup
from ..curriculum import N_STAGES, capped_table, stage_mixtures
from ..errors import CourseError
from ..grpo import clipped_objective, group_advantages
from ..losses import IGNORE, random_expansion, shifted_labels
from ..model import DecoderInputs, Projector, RefragModel, Segments, mean_pool, projector_net, splice_vectors
from ..qa import _f1, normalize_answer, token_f1
from ..timing import Prefilled, clock, ttft_once


class ExerciseError(CourseError):
    """A learner's answer is wrong: the message names the case, expected vs received, and the usual cause."""


@dataclass(frozen=True)
class Case:
    """One input to try: what it is in words, the arguments, and the mistake a wrong answer here usually is."""

    what: str
    args: tuple
    hint: str


def _plain(value):
    """Tensors and arrays as rounded nested lists, also inside a tuple."""
    if isinstance(value, torch.Tensor):
        return (value.double().round(decimals=3) if value.is_floating_point() else value).tolist()
    if isinstance(value, np.ndarray):
        return value.round(3).tolist()
    return tuple(map(_plain, value)) if isinstance(value, tuple) else value


def _show(value) -> str:
    """A short, readable rendering of an expected or received value."""
    text = repr(_plain(value))
    return text if len(text) <= 300 else text[:300] + " ..."


def _call(name: str, fn: Callable, case: Case):
    """The learner's function on one case; an exception becomes an ExerciseError that says where."""
    try:
        return fn(*case.args)
    except Exception as err:  # any error in the learner's code: report it with the case it failed on
        raise ExerciseError(f"{name}: your function raised {type(err).__name__}: {err}\n  on {case.what}\n"
                            f"  hint: {case.hint}") from err


def _compare_cases(name: str, fn: Callable, reference: Callable, cases: list[Case], same: Callable,
                   diagnose: Callable | None = None) -> None:
    """Compare fn with the reference case by case; raise on the first difference.

    diagnose(case, expected, received) may name the mistake a wrong value gives away (None: the case's hint)."""
    for case in cases:
        expected = reference(*case.args)
        received = _call(name, fn, case)
        if not same(expected, received):
            hint = (diagnose and diagnose(case, expected, received)) or case.hint
            raise ExerciseError(f"{name}: wrong answer on {case.what}.\n  expected: {_show(expected)}\n"
                                f"  received: {_show(received)}\n  hint: {hint}")


def _check_cases(name: str, fn: Callable, reference: Callable, cases: list[Case], same: Callable,
                 diagnose: Callable | None = None) -> None:
    """_compare_cases, then one line saying all passed."""
    _compare_cases(name, fn, reference, cases, same, diagnose)
    print(f"✓ {name}: right on all {len(cases)} cases.")


def _gradients(name: str, fn: Callable, case: Case, wrt: tuple[int, ...], readout: Callable) -> list[torch.Tensor]:
    """The gradient of readout(fn(*case.args)) with respect to the arguments numbered wrt (zeros where none reaches):
    what training gets back through the learner's function."""
    args = [a.detach().clone().requires_grad_() if i in wrt else a for i, a in enumerate(case.args)]
    out = readout(_call(name, fn, Case(case.what, tuple(args), case.hint)))
    leaves = [args[i] for i in wrt]
    if not (isinstance(out, torch.Tensor) and out.requires_grad):
        return [torch.zeros_like(x) for x in leaves]
    grads = torch.autograd.grad(out, leaves, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)]


def _as_tensor(value) -> torch.Tensor | None:
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        return None


def _same_tensor(expected: torch.Tensor, received) -> bool:
    """Same shape and values (NaN never matches)."""
    received = _as_tensor(received)
    return (received is not None and received.shape == expected.shape
            and torch.allclose(received.double(), expected.double(), rtol=1e-5, atol=1e-5))


# ---- 00: the analytic TTFT ratio ----------------------------------------------------------------------------
# SmolLM2-135M's shape (the cpu preset's decoder): a Llama-style decoder with grouped-query K/V and an LM head.
SMOLLM2_135M = DecoderShape.from_config(SimpleNamespace(hidden_size=576, num_attention_heads=9, num_key_value_heads=3,
                                                        intermediate_size=1536, num_hidden_layers=30,
                                                        vocab_size=49152))
RATIO_HINT = ("the ratio is prefill FLOPs over s positions / over s/k positions, with per layer "
              "2·linear_params·T + 4·attention_width·T² FLOPs, times the layers, plus 2·d·vocab for the LM head at "
              "the one position whose logits are kept (analytic.prefill_flops counts exactly that).")
RATIO_CASES = [
    Case("the paper's decoder (DecoderShape.paper(4096): d = 4096, 32 layers, no LM head), s = 16384, k = 16 "
         "(the paper's 25.6x)", (DecoderShape.paper(4096), 16384, 16), RATIO_HINT),
    Case("the paper's decoder, s = 2048, k = 16", (DecoderShape.paper(4096), 2048, 16), RATIO_HINT),
    Case("the paper's decoder, s = 4096, k = 32", (DecoderShape.paper(4096), 4096, 32), RATIO_HINT),
    Case("SmolLM2-135M's shape (d = 576, 30 layers, grouped-query K/V, an LM head of 49152 rows), s = 2048, k = 16",
         (SMOLLM2_135M, 2048, 16), RATIO_HINT),
]


def _ratio_slip(case: Case, expected, received) -> str | None:
    """The usual mistake the received ratio matches, if any."""
    shape, s, k = case.args
    slips = [
        (1 / expected, "the ratio is RAG's prefill over REFRAG's (how many times sooner REFRAG's first token "
                       "comes): more than 1, not its inverse."),
        (ttft_speedup(replace(shape, attention_width=0), s, s / k),
         "add attention's 4·attention_width·T² per layer: it grows with the square of the positions, which is why "
         "the ratio climbs from about k towards k² for long contexts."),
        (ttft_speedup(replace(shape, linear_params=0), s, s / k),
         "add the linear maps' 2·linear_params·T per layer: every weight works once per position."),
        (ttft_speedup(shape, s, s * k), "REFRAG's decoder reads one position per chunk of k tokens: s/k positions."),
        (ttft_speedup(replace(shape, vocab=0), s, s / k),
         "count the LM head in both arms: 2·d·vocab FLOPs at the one position whose logits are kept."),
    ]
    return next((hint for value, hint in slips if _same_ratio(value, received)), None)


def _same_ratio(expected: float, received) -> bool:
    try:
        return math.isclose(float(received), expected, rel_tol=1e-6)
    except (TypeError, ValueError, RuntimeError):
        return False


def check_ttft_ratio(fn: Callable[[DecoderShape, int, int], float]) -> None:
    """fn(shape, s, k) -> float, as analytic.ttft_ratio."""
    _check_cases("ttft_ratio", fn, ttft_ratio, RATIO_CASES, _same_ratio, _ratio_slip)


# ---- 02: reconstruction labels ------------------------------------------------------------------
SLOT_CODES = "v = chunk vector, q = prefix token, x = suffix token, . = padding; token id = 10 + slot"


def slots(*rows: str) -> DecoderInputs:
    """A right-padded batch written as slot codes (SLOT_CODES). Vectors and padding hold the pad id 0; the
    embeddings are zeros, since labels never read them."""
    width = max(map(len, rows))
    rows = tuple(row.ljust(width, ".") for row in rows)
    token_ids = torch.tensor([[10 + t if c in "qx" else 0 for t, c in enumerate(row)] for row in rows])
    is_vector = torch.tensor([[c == "v" for c in row] for row in rows])
    is_suffix = torch.tensor([[c == "x" for c in row] for row in rows])
    attention = torch.tensor([[int(c != ".") for c in row] for row in rows])
    positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
    return DecoderInputs(torch.zeros(len(rows), width, 1), attention, positions, token_ids, is_vector, is_suffix)


LABEL_CASES = [
    Case(f'one example "vvxxx" ({SLOT_CODES}): 2 chunk vectors, then x_1..x_3', (slots("vvxxx"),),
         f"labels[b, t] is what the decoder must predict AT slot t: the token at slot t+1 when that slot is a "
         f"suffix token, else {IGNORE} (the value cross-entropy skips). So the last chunk vector predicts x_1 "
         f"and the last x predicts nothing. Labels not shifted by one, or 0 / the pad id where {IGNORE} belongs, "
         "fail here."),
    Case(f'a RAG-style example "qqvvxx" ({SLOT_CODES}): 2 question tokens, 2 chunk vectors, 2 suffix tokens',
         (slots("qqvvxx"),),
         "only suffix tokens are targets: the question is given, not predicted. Take the mask from "
         "inputs.is_suffix (of the NEXT slot), not from token_ids != pad."),
    Case(f'a right-padded batch ["vxx..", "vvxxx"] ({SLOT_CODES})', (slots("vxx", "vvxxx"),),
         f"padding predicts nothing ({IGNORE}) and neither does a row's last real token; shift along the time "
         "axis of the [B, T] batch (dim 1), never across rows."),
]


def check_reconstruction_labels(fn: Callable[[DecoderInputs], torch.Tensor]) -> None:
    """fn(inputs) -> [B, T] long labels, as losses.shifted_labels."""
    def same(expected, received):
        received = _as_tensor(received)
        return received is not None and received.shape == expected.shape and torch.equal(received.long(), expected)

    _check_cases("reconstruction_labels", fn, shifted_labels, LABEL_CASES, same)


# ---- 02: a chunk's one vector from its encoder states ---------------------------------------------------------
PAD_STATE = 100.0  # what the encoder leaves at padded positions in these cases: junk a mean must not see


def _encoder_states(*masks: list[int], dtype=torch.bool) -> tuple[torch.Tensor, torch.Tensor]:
    """hidden [n, t, 2] (token j of chunk i holds [10 i + j, -(10 i + j)], padding PAD_STATE) and the mask."""
    mask = torch.tensor(masks)
    ids = (10 * torch.arange(len(masks))[:, None] + torch.arange(mask.shape[1])).float()
    hidden = torch.stack([ids, -ids], dim=-1).masked_fill(~mask.bool()[..., None], PAD_STATE)
    return hidden, mask.to(dtype)


def pooling_cases() -> list[Case]:
    """Built afresh for every check: an answer that writes into its inputs must not change the next check's."""
    return [
        Case("2 chunks of 3 real tokens, no padding: hidden [2, 3, 2], mask all True",
             _encoder_states([1, 1, 1], [1, 1, 1]),
             "average over the token axis (dim=1) of hidden [n, t, h]: one h-vector per chunk, [n, h]."),
        Case(f"a padded batch: masks [[1, 1, 0, 0], [1, 1, 1, 0]], padded states hold {PAD_STATE}",
             _encoder_states([1, 1, 0, 0], [1, 1, 1, 0]),
             "only real tokens count: sum hidden * mask over dim=1, divide by the real tokens, mask.sum(dim=1)."),
        Case("a mask of 0/1 integers (dtype long, as the encoder's tokenizer gives its attention_mask)",
             _encoder_states([1, 1, 0], [1, 1, 1], dtype=torch.long),
             "the mask is not always bool: encode_chunks passes the tokenizer's attention_mask, 0/1 integers. "
             "Turn it into hidden's dtype (mask.to(hidden.dtype)) to multiply, or into bool (mask.bool()) for ~, "
             "torch.where or masked_fill; indexing with an integer tensor picks rows, it does not mask."),
        Case("a chunk with no real token (mask [[1, 1, 1], [0, 0, 0]])", _encoder_states([1, 1, 1], [0, 0, 0]),
             "a chunk with no real token must give zeros, not NaN from 0 / 0: clamp the token count to at least 1."),
    ]


def _pooling_slip(case: Case, expected, received) -> str | None:
    hidden, mask = case.args
    mask = mask.to(hidden.dtype)[..., None]
    if _same_tensor(hidden.mean(dim=1), received):
        return (f"the padded positions were averaged in (here they hold {PAD_STATE}): hidden.mean(dim=1) sees them. "
                "Multiply by the mask and divide by mask.sum(dim=1).")
    if _same_tensor((hidden * mask).sum(dim=1) / hidden.shape[1], received):
        return "divide by each chunk's number of real tokens, mask.sum(dim=1), not by the padded length t."
    return None


def check_chunk_pooling(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """fn(hidden [n, t, h], mask [n, t]) -> [n, h], as model.mean_pool."""
    _check_cases("chunk_pooling", fn, mean_pool, pooling_cases(), _same_tensor, _pooling_slip)


# ---- 02: the projector's MLP --------------------------------------------------------------------------
def _weight_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def check_projector(fn: Callable[[int, int], nn.Module]) -> None:
    """fn(encoder_dim, decoder_dim) -> an MLP like model.projector_net: [n, encoder_dim] -> [n, decoder_dim], two
    Linear layers (hidden width = decoder_dim) with a non-linearity between them, its weights named as the
    reference's."""
    name, enc, dec = "projector", 6, 10
    shape_hint = ("a function (encoder_dim, decoder_dim) -> nn.Module whose forward maps [n, encoder_dim] to "
                  "[n, decoder_dim]: each chunk vector takes the place of a token embedding")
    generator = torch.Generator().manual_seed(0)
    c = torch.randn(3, enc, generator=generator)
    phi = _call(name, fn, Case(f"{getattr(fn, '__name__', fn)}({enc}, {dec})", (enc, dec), shape_hint))
    if not isinstance(phi, nn.Module):
        raise ExerciseError(f"{name}: got a {type(phi).__name__}, not an nn.Module.\n  hint: return an nn.Module "
                            "(nn.Sequential(...) or your own subclass) so that the optimizer finds its parameters.")
    with torch.no_grad():
        out = _call(name, phi, Case(f"your module on c of shape [3, {enc}]", (c,), shape_hint))
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (3, dec):
        raise ExerciseError(f"{name}: for c of shape [3, {enc}] (encoder_dim={enc}, decoder_dim={dec}) expected an "
                            f"output of shape [3, {dec}], received {_show(getattr(out, 'shape', out))}.\n"
                            f"  hint: {shape_hint}.")
    reference = projector_net(enc, dec)
    expected = sum(p.numel() for p in reference.parameters())
    received = sum(p.numel() for p in phi.parameters())
    if received != expected:
        raise ExerciseError(f"{name}: encoder_dim={enc}, decoder_dim={dec} should give {expected} parameters "
                            f"(Linear({enc}, {dec}) + Linear({dec}, {dec}), with biases), received {received}.\n"
                            "  hint: the paper's projector is a 2-layer MLP whose hidden width is the decoder's "
                            "hidden size; a single Linear layer is too small to learn the mapping well.")
    a, b = (torch.randn(4, enc, generator=generator) * 2 for _ in range(2))
    with torch.no_grad():
        gap = float((phi(a) + phi(b) - phi(a + b) - phi(torch.zeros(4, enc))).abs().max())
    if gap < 1e-4:
        raise ExerciseError(f"{name}: your projector is linear (phi(a) + phi(b) = phi(a + b) + phi(0) up to "
                            f"{gap:.1e}).\n  hint: put a non-linearity between the two layers (refrag_lib uses "
                            "GELU): two Linear layers in a row collapse into a single linear map.")
    if _weight_shapes(phi) != _weight_shapes(reference):
        raise ExerciseError(f"{name}: your module's weights are {_weight_shapes(phi)}, the reference's "
                            f"{_weight_shapes(reference)}.\n  hint: checkpoints store the projector's weights by "
                            "these names: notebook 03 loads the weights this notebook trains into the package's "
                            "projector, and a finished run's into yours. nn.Sequential(nn.Linear(encoder_dim, "
                            "decoder_dim), <activation>, nn.Linear(decoder_dim, decoder_dim)) has them.")
    print(f"✓ {name}: [n, {enc}] -> [n, {dec}], {received} parameters, non-linear, the checkpoints' weight names.")


# ---- 02: the chunk vectors into the decoder input ------------------------------------------------------------
def _splice_args(*rows: str, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch written as slot codes, "v" = a chunk vector's slot, "t" = a token: token embeddings [B, T, 2] (slot
    (b, t) holds [100 + 10 b + t, -(100 + 10 b + t)]), is_vector, and one float32 vector per "v" ([j, -j])."""
    is_vector = torch.tensor([[c == "v" for c in row] for row in rows])
    slot = (100 + 10 * torch.arange(len(rows))[:, None] + torch.arange(is_vector.shape[1])).float()
    n = torch.arange(float(is_vector.sum()))
    return torch.stack([slot, -slot], dim=-1).to(dtype), is_vector, torch.stack([n, -n], dim=-1)


def splice_cases() -> list[Case]:
    """Built afresh for every check: an answer that writes into its inputs must not change the next check's."""
    return [
        Case('2 rows "tvvt" and "vttv" (v: a chunk vector\'s slot, t: a token), 4 vectors',
             _splice_args("tvvt", "vttv"),
             "the vectors go in row-major order, the order compressed_chunks lists the chunks: row 0's vector slots "
             "left to right, then row 1's. embeds.masked_scatter(is_vector.unsqueeze(-1), projected) does that, "
             "and so does out[is_vector] = projected on a copy."),
        Case('3 rows "tvtv", "tttt" (no vector) and "vttt"', _splice_args("tvtv", "tttt", "vttt"),
             "rows hold different numbers of vectors, some none: fill the slots of the whole batch at once (the "
             "mask picks them) rather than splitting projected evenly over the rows."),
        Case('embeddings in bfloat16 (the decoder\'s precision), vectors in float32 (the projector\'s); rows "vt", '
             '"tv"', _splice_args("vt", "tv", dtype=torch.bfloat16),
             "return the embeddings' dtype: the decoder reads its input in the preset's precision (bf16, fp16) "
             "while the projector trains in float32; cast with projected.to(token_embeds.dtype)."),
    ]


def _splice_readout(out) -> torch.Tensor:
    """A loss that weighs every slot and coordinate differently, so a vector in the wrong slot changes its gradient."""
    return (out.float() * torch.arange(1.0, out.numel() + 1).reshape(out.shape)).sum()


def _same_splice(expected: torch.Tensor, received) -> bool:
    return isinstance(received, torch.Tensor) and received.dtype == expected.dtype and _same_tensor(expected, received)


def _splice_slip(case: Case, expected, received) -> str | None:
    if isinstance(received, torch.Tensor) and received.dtype != expected.dtype:
        return f"you returned {received.dtype}, the embeddings are {expected.dtype}: {case.hint}"
    return None


def check_splice(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """fn(token_embeds [B, T, d], is_vector [B, T], projected [n, d]) -> [B, T, d], as model.splice_vectors; the
    gradient of a loss on the output must reach projected as the reference's does."""
    name, cases = "splice", splice_cases()
    _compare_cases(name, fn, splice_vectors, cases, _same_splice, _splice_slip)
    case = Case('rows "tvvt" and "vttv", projected requiring grad, loss = a weighted sum of the output',
                _splice_args("tvvt", "vttv"),
                "the projector and the encoder learn only through the gradient that reaches projected: no "
                "torch.no_grad(), .detach(), .data or .tolist() on the way from projected to the output.")
    expected, = _gradients(name, splice_vectors, case, (2,), _splice_readout)
    received, = _gradients(name, fn, case, (2,), _splice_readout)
    if not torch.allclose(received, expected):
        raise ExerciseError(f"{name}: on {case.what} the gradient reaching projected is wrong.\n"
                            f"  expected: {_show(expected)}\n  received: {_show(received)}\n  hint: {case.hint}")
    print(f"✓ {name}: right on all {len(cases)} cases, and the gradient reaches projected.")


# ---- 02: the curriculum's stages ------------------------------------------------------------------------------
CURRICULUM_CASES = [
    Case("max_chunks = 256: every factor of Table 8 fits", (256,),
         f"factors ascending (Table 8's keys) and a [{N_STAGES}, n_factors] array: row j holds stage j's counts "
         "divided by their sum, so each stage's mixture sums to 1."),
    Case("max_chunks = 16 (s/k = 16): the factors 32-256 do not fit", (16,),
         "cap, don't drop: a factor above max_chunks becomes max_chunks and its counts add to that column (here "
         "the counts of 32, 64, 128 and 256 chunks join the 16 column), so the late stages still draw long inputs."),
    Case("max_chunks = 3, not a factor of Table 8", (3,),
         "the cap is min(factor, max_chunks) for any max_chunks: with s/k = 3 the factors are 1, 2 and 3."),
    Case("max_chunks = 1", (1,), f"with s/k = 1 every stage draws 1 chunk: factors [1], mixtures a [{N_STAGES}, 1] "
         "column of ones."),
]


def _mixtures_pair(received) -> tuple[list[int], np.ndarray] | None:
    try:
        factors, mixtures = received
        return [int(f) for f in factors], np.asarray(mixtures, dtype=float)
    except (TypeError, ValueError):
        return None


def _same_mixtures(expected, received) -> bool:
    pair = _mixtures_pair(received)
    return (pair is not None and pair[0] == list(expected[0]) and pair[1].shape == expected[1].shape
            and np.allclose(pair[1], expected[1], rtol=0, atol=1e-9))


def _curriculum_slip(case: Case, expected, received) -> str | None:
    pair = _mixtures_pair(received)
    if pair is None:
        return f"return a pair (factors, mixtures): the list of chunk counts and the [{N_STAGES}, n_factors] array."
    if pair[1].T.shape == expected[1].shape and np.allclose(pair[1].T, expected[1]):
        return f"mixtures are [{N_STAGES} stages, n_factors]: row j is stage j's mixture (transpose yours)."
    if pair[1].ndim == 2 and not np.allclose(pair[1].sum(axis=1), 1.0):
        return "each stage's row must sum to 1: divide the counts by their sum along axis=1 (per stage, not factor)."
    return None


def check_curriculum(fn: Callable[[int], tuple[list[int], np.ndarray]]) -> None:
    """fn(max_chunks) -> (factors, mixtures [9, n_factors]), as curriculum.stage_mixtures."""
    _check_cases("curriculum", fn, stage_mixtures, CURRICULUM_CASES, _same_mixtures, _curriculum_slip)


# ---- 03: which chunks stay tokens in CPT's mixed input -------------------------------------------
def _chunked(*n_chunks: int) -> list[Segments]:
    """Examples with the given numbers of chunks (the token ids do not matter here)."""
    return [Segments(prefix=[], chunks=[[i] for i in range(n)], suffix=[1]) for n in n_chunks]


def _masks(fn: Callable, batch: list[Segments], fraction: float, seed: int) -> list[list[bool]]:
    what = f"chunk counts {[len(ex.chunks) for ex in batch]}, fraction {fraction}, rng seeded with {seed}"
    case = Case(what, (batch, fraction, np.random.default_rng(seed)),
                "return one list of booleans per example, one entry per chunk (True = stays tokens).")
    received = _call("mixed_expansion", fn, case)
    ok = isinstance(received, (list, tuple)) and len(received) == len(batch) and all(
        hasattr(row, "__len__") and len(row) == len(ex.chunks) for row, ex in zip(received, batch))
    if not ok:
        raise ExerciseError(f"mixed_expansion: on {what} expected {len(batch)} masks of lengths "
                            f"{[len(ex.chunks) for ex in batch]}, received {_show(received)}.\n  hint: {case.hint}")
    return [[bool(e) for e in row] for row in received]


def check_mixed_expansion(fn: Callable) -> None:
    """fn(batch, fraction, rng) -> masks, as losses.random_expansion: exactly round(p * L) chunks per example,
    at random positions drawn from the given rng."""
    name = "mixed_expansion"
    batch = _chunked(16, 12, 1)
    for fraction in (0.0, 0.1, 0.25, 1.0):
        masks = _masks(fn, batch, fraction, seed=0)
        for ex, mask in zip(batch, masks):
            n, expected = len(ex.chunks), round(fraction * len(ex.chunks))
            if sum(mask) != expected:
                hint = (f"round(p·L), not int(p·L): with {n} chunks and p = {fraction} that is {expected}"
                        if sum(mask) == int(fraction * n) else
                        "expand exactly round(p·L) chunks of every example, drawn without replacement "
                        "(rng.choice(L, size=..., replace=False)), not each chunk with probability p")
                raise ExerciseError(f"{name}: with {n} chunks and p = {fraction} expected {expected} expanded "
                                    f"chunks, received {sum(mask)}: {mask}.\n  hint: {hint}.")
    if _masks(fn, batch, 0.25, seed=3) != _masks(fn, batch, 0.25, seed=3):
        raise ExerciseError(f"{name}: the same rng seed gave different masks.\n  hint: draw from the rng argument "
                            "(rng.choice, rng.permutation), not np.random or random: a run must be reproducible "
                            "from its seed, and a resumed run must draw what an uninterrupted one would.")
    rng = np.random.default_rng(7)
    draws = {tuple(map(bool, fn(_chunked(16), 0.25, rng)[0])) for _ in range(8)}
    if len(draws) == 1:
        raise ExerciseError(f"{name}: 8 draws for a 16-chunk example at p = 0.25 expanded the same chunks every "
                            f"time: {list(draws.pop())}.\n  hint: choose the chunks at random; a fixed choice (say, "
                            "always the first ones) teaches the decoder to read tokens only there.")
    print(f"✓ {name}: round(p·L) chunks per example, random and reproducible from the rng.")


# ---- 04: the GRPO advantage ---------------------------------------------------------------------
ADVANTAGE_CASES = [
    Case("one group of G = 4 rewards [[-1, 3, -1, 3]] (mean 1, std 2)", (torch.tensor([[-1.0, 3.0, -1.0, 3.0]]),),
         "A_g = (r_g - mean r) / (std r + eps) within the group. Forgetting to divide by the std fails here, and so "
         "does torch's default sample std (it divides by G - 1): use the population std, std(unbiased=False)."),
    Case("two examples of different difficulty [[-1, 3, -1, 3], [10, 12, 10, 12]]",
         (torch.tensor([[-1.0, 3.0, -1.0, 3.0], [10.0, 12.0, 10.0, 12.0]]),),
         "normalise within each example's group (mean and std over dim=1, keepdim=True), not over the whole batch: "
         "the point of the group baseline is that the example's difficulty cancels."),
    Case("a group whose G selections all scored the same [[2, 2, 2, 2], [0, 2, 0, 2]]",
         (torch.tensor([[2.0, 2.0, 2.0, 2.0], [0.0, 2.0, 0.0, 2.0]]),),
         "add eps to the std: a group with equal rewards has std 0 and must give advantages 0 (nothing to learn), "
         "not NaN."),
]


def check_grpo_advantage(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """fn(rewards [B, G]) -> advantages [B, G], as grpo.group_advantages."""
    def same(expected, received):
        received = _as_tensor(received)
        return (received is not None and received.shape == expected.shape
                and torch.allclose(received.float(), expected, rtol=1e-4, atol=1e-4))

    _check_cases("grpo_advantage", fn, group_advantages, ADVANTAGE_CASES, same)


# ---- 04: PPO's clipped objective ------------------------------------------------------------------------------
def _rollout(ratios: list[list[list[float]]], advantages: list[list[float]], clip_eps: float = 0.2) -> tuple:
    """(new_logp, old_logp, advantages, clip_eps) whose per-step ratios pi_new / pi_old are the given ones, with
    old log-probabilities that are not 0, so that a ratio taken as new_logp / old_logp shows."""
    ratios = torch.tensor(ratios)
    old = torch.log(torch.linspace(0.2, 0.6, ratios.numel()).reshape(ratios.shape))
    return old + torch.log(ratios), old, torch.tensor(advantages), clip_eps


def objective_cases() -> list[Case]:
    """Built afresh for every check: an answer that writes into its inputs must not change the next check's."""
    return [
        Case("B = 1 example, G = 2 selections of T = 3 steps, every ratio inside [0.8, 1.2], advantages [[1, -0.5]]",
             _rollout([[[1.1, 0.9, 1.0], [0.95, 1.05, 1.15]]], [[1.0, -0.5]]),
             "new_logp and old_logp are log-probabilities: the ratio is exp(new_logp - old_logp). Each step's term "
             "is ratio * A, where a selection's advantage A is shared by its T steps (advantages.unsqueeze(-1)); "
             "average over every step of every selection."),
        Case("ratios pushed past the clip range in the advantage's direction: A = +1 at ratios [1.5, 1.3], "
             "A = -1 at [0.5, 0.7], clip_eps = 0.2", _rollout([[[1.5, 1.3], [0.5, 0.7]]], [[1.0, -1.0]]),
             "each step's objective is min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A): a ratio pushed past 1 ± eps "
             "in the advantage's direction earns no more than the clipped term, so one batch cannot move the policy "
             "far. Take the min of the two terms, not the max, and clip."),
        Case("ratios pushed past the clip range against the advantage: A = +1 at ratios [0.5, 0.7], "
             "A = -1 at [1.5, 1.3]", _rollout([[[0.5, 0.7], [1.5, 1.3]]], [[1.0, -1.0]]),
             "keep the min of BOTH terms: when the ratio moved against the advantage the unclipped term is the "
             "smaller, pessimistic one, and it stays (with its gradient) so the step gets undone; clip(ratio) * A "
             "alone loses it."),
        Case("B = 2 examples, G = 3, T = 2, clip_eps = 0.1, ratios inside and outside [0.9, 1.1]",
             _rollout([[[1.05, 1.2], [0.8, 1.0], [1.15, 0.95]], [[0.85, 1.02], [1.3, 0.7], [1.0, 1.08]]],
                      [[0.5, -1.0, 1.5], [-0.3, 0.9, -1.2]], clip_eps=0.1),
             "use the clip_eps argument (here 0.1, not a fixed 0.2), and average over all B x G x T steps."),
    ]


def _loss_and_fraction(received) -> tuple[float, float] | None:
    try:
        loss, fraction = received
        return float(loss), float(fraction)
    except (TypeError, ValueError, RuntimeError):
        return None


def _same_objective(expected, received) -> bool:
    pair = _loss_and_fraction(received)
    return pair is not None and all(math.isclose(e, r, rel_tol=1e-5, abs_tol=1e-6)
                                    for e, r in zip(_loss_and_fraction(expected), pair))


def _objective_slip(case: Case, expected, received) -> str | None:
    if not (isinstance(received, (tuple, list)) and len(received) == 2):
        return "return a pair (loss, clip_fraction), the loss as a tensor: the update calls loss.backward()."
    pair, loss = _loss_and_fraction(received), float(expected[0])
    if pair is None:
        return "the loss and the clip fraction are single numbers (0-d tensors): means over all B x G x T steps."
    if math.isclose(pair[0], loss, rel_tol=1e-5, abs_tol=1e-6):
        return ("the loss is right, the clip fraction is not: it is the share of ALL steps whose ratio lies outside "
                "[1 - eps, 1 + eps], ((ratio - 1).abs() > eps).float().mean().")
    if abs(loss) > 1e-6 and math.isclose(pair[0], -loss, rel_tol=1e-5):
        return ("return a loss to MINIMISE: minus the objective. The optimizer descends the loss, and the policy "
                "must climb the objective.")
    return None


def check_clipped_objective(fn: Callable) -> None:
    """fn(new_logp [B, G, T], old_logp [B, G, T], advantages [B, G], clip_eps) -> (loss, clip_fraction), as
    grpo.clipped_objective; its gradients must be the reference's: all of them to new_logp, none to old_logp."""
    name = "clipped_objective"
    cases = objective_cases()
    _compare_cases(name, fn, clipped_objective, cases, _same_objective, _objective_slip)
    case = Case(f"{cases[-1].what}, new_logp and old_logp requiring grad", cases[-1].args,
                "compute the loss from new_logp with torch operations and return it as a tensor.")
    expected = _gradients(name, clipped_objective, case, (0, 1), lambda out: out[0])
    received = _gradients(name, fn, case, (0, 1), lambda out: out[0])
    if not torch.allclose(received[1], expected[1]):
        raise ExerciseError(f"{name}: on {case.what} a gradient reaches old_logp: {_show(received[1])}.\n  hint: "
                            "old_logp is the fixed policy the rollouts came from: detach it (old_logp.detach()) so "
                            "that only the policy being updated moves.")
    if not torch.allclose(received[0], expected[0], rtol=1e-4, atol=1e-6):
        raise ExerciseError(f"{name}: on {case.what} the gradient reaching new_logp is wrong.\n  expected: "
                            f"{_show(expected[0])}\n  received: {_show(received[0])}\n  hint: it is the update the "
                            "policy gets. Return the loss as a tensor built from new_logp (no .item(), float() or "
                            ".detach()); a clipped term gives no gradient and the min keeps the unclipped one's.")
    print(f"✓ {name}: right on all {len(cases)} cases, with the reference's gradients.")


# ---- 05: SQuAD token F1 -------------------------------------------------------------------------
F1_CASES = [
    Case('prediction "The Eiffel Tower!", gold ["eiffel tower"]', ("The Eiffel Tower!", ["eiffel tower"]),
         "normalise both sides first: lower case, no punctuation, no articles (a, an, the), single spaces "
         "(refrag_lib.qa.normalize_answer does exactly that)."),
    Case('prediction "river 033 north", gold ["river 033"]', ("river 033 north", ["river 033"]),
         "F1 = 2PR / (P + R), with P = shared words / words in the prediction and R = shared words / words in the "
         "gold answer."),
    Case('prediction "tower tower", gold ["tower tower bridge"]', ("tower tower", ["tower tower bridge"]),
         "count shared words as a multiset (collections.Counter(a) & Counter(b)): a repeated word is shared as "
         "often as it occurs on both sides; a set counts it once."),
    Case('prediction "lake 12", gold ["river 033", "Lake 12"]', ("lake 12", ["river 033", "Lake 12"]),
         "a question may have several gold answers: take the best F1 over them (max), not the first one."),
    Case('prediction "The", gold ["river 033"]', ("The", ["river 033"]),
         "a prediction that normalises to no words shares nothing: F1 is 0, without dividing by zero."),
]


def check_token_f1(fn: Callable[[str, list[str]], float]) -> None:
    """fn(prediction, answers) -> float, as qa.token_f1."""
    def same(expected, received):
        try:
            return math.isclose(float(received), expected, abs_tol=1e-6)
        except (TypeError, ValueError):
            return False

    _check_cases("token_f1", fn, token_f1, F1_CASES, same)


# ---- 06: the TTFT timer ---------------------------------------------------------------------------
# Seconds of simulated GPU work on a simulated clock: exact, so the check does not depend on the machine.
ENCODE_S, ASSEMBLY_S, PREFILL_S, DECODE_S = 0.16, 0.08, 0.1, 0.4
SLACK_S = 1e-6  # float rounding only
FIRST_TOKEN = 1


class SimulatedGPUModel:
    """Stands in for RefragModel in the timer check. Each call queues known work, as a CUDA kernel launch
    does, and the simulated clock (what time.perf_counter reads during the check) moves on by that work
    only when torch.cuda.synchronize runs: a clock read without synchronising misses it, as on a GPU."""

    device = torch.device("cuda")
    compressed_chunks = RefragModel.compressed_chunks

    def __init__(self):
        self.queued = 0.0
        self.now = 0.0
        self.cache = object()

    def clock(self) -> float:
        return self.now

    def synchronize(self, device=None) -> None:
        self.now += self.queued
        self.queued = 0.0

    def encode_chunks(self, chunks):
        self.queued += ENCODE_S
        return torch.zeros(len(chunks), 4)

    def build_inputs(self, batch, expand=None, chunk_vectors=None, padding_side="left"):
        if chunk_vectors is None:  # like RefragModel: no vectors given -> the encoder runs here
            chunk_vectors = self.encode_chunks(self.compressed_chunks(batch, expand))
        self.queued += ASSEMBLY_S
        return SimpleNamespace(attention_mask=torch.ones(1, 4, dtype=torch.long), position_ids=torch.arange(4)[None])

    def prefill(self, inputs):
        self.queued += PREFILL_S
        logits = torch.zeros(1, 3)
        logits[0, FIRST_TOKEN] = 1.0
        return logits, self.cache

    def generate(self, inputs, max_new_tokens=32, **kwargs):
        self.queued += PREFILL_S + DECODE_S
        return [[FIRST_TOKEN] * max_new_tokens]


def _timer_hint(total: float, expected: float, encode: bool) -> str | None:
    """None when total matches the work in the timed region, else the mistake that explains the gap."""
    extra = total - expected
    if abs(extra) <= SLACK_S:
        return None
    if extra >= DECODE_S - SLACK_S:
        return ("stop the clock at the first token, the argmax of the prefill logits: timing the whole generate "
                "adds every decoding step (that is TTIT's business, measured separately).")
    if extra > 0 and not encode and abs(extra - ENCODE_S) <= SLACK_S:
        return ("with cache the chunk vectors are precomputed at indexing time: pass them to build_inputs "
                "(chunk_vectors=vectors) and run no encoder inside the timed region.")
    if extra > 0:
        return "the timed region holds only (the encoder, without cache) -> build_inputs -> prefill -> argmax."
    if total < ASSEMBLY_S - SLACK_S:
        return ("GPU work runs asynchronously: synchronise (torch.cuda.synchronize, or refrag_lib.timing.clock) "
                "before every clock read, or the clock stops before the prefill has run.")
    if abs(extra + ASSEMBLY_S) <= SLACK_S:
        return ("start the clock before build_inputs: assembling the input (embedding lookup, projector) is part "
                "of TTFT, in both arms.")
    if encode and abs(extra + ENCODE_S) <= SLACK_S:
        return "without cache the encoder is part of TTFT: start the clock before encoding the chunks."
    return ("the measured time is shorter than the work in the timed region: synchronise before every clock read "
            "and start the clock when the inputs are ready.")


def check_ttft_timer(fn: Callable) -> None:
    """fn(model, segments, expand, vectors, encode) -> timing.Prefilled, as timing.ttft_once, checked on a
    simulated GPU whose prefill, assembly and encoder take known times."""
    name = "ttft_timer"
    segments = Segments(prefix=[1, 2], chunks=[[3, 4], [5, 6], [7, 8]], suffix=[9])
    expand = [False, True, False]
    for encode in (False, True):
        model = SimulatedGPUModel()
        vectors = None if encode else torch.zeros(2, 4)
        arm = "REFRAG without cache (encode=True, vectors=None)" if encode else \
            "REFRAG with cache (encode=False, chunk vectors precomputed)"
        case = Case(arm, (model, segments, expand, vectors, encode),
                    "the simulated model offers compressed_chunks, encode_chunks, build_inputs, prefill and generate.")
        with mock.patch.object(torch.cuda, "synchronize", model.synchronize), \
                mock.patch.object(torch.cuda, "is_available", lambda: True), \
                mock.patch.object(time, "perf_counter", model.clock), mock.patch.object(time, "monotonic", model.clock):
            run = _call(name, fn, case)
        missing = [a for a in ("token", "cache", "inputs", "total_s", "encoder_s") if not hasattr(run, a)]
        if missing:
            raise ExerciseError(f"{name}: on {arm} the result has no {', '.join(missing)}: {_show(run)}.\n"
                                "  hint: return refrag_lib.timing.Prefilled(token, cache, inputs, total_s, encoder_s).")
        expected = (ENCODE_S if encode else 0.0) + ASSEMBLY_S + PREFILL_S
        hint = _timer_hint(float(run.total_s), expected, encode)
        if hint:
            raise ExerciseError(f"{name}: on {arm} the work inside the timed region takes {expected:.3f} s, your "
                                f"total_s is {float(run.total_s):.3f} s.\n  hint: {hint}")
        expected_encoder = ENCODE_S if encode else 0.0
        if abs(float(run.encoder_s) - expected_encoder) > SLACK_S:
            raise ExerciseError(f"{name}: on {arm} expected encoder_s {expected_encoder:.3f} s, received "
                                f"{float(run.encoder_s):.3f} s.\n  hint: encoder_s is the clock from the start to the "
                                "end of encoding (synchronised); 0 with cache, where nothing is encoded.")
        token = _as_tensor(run.token)
        if token is None or token.numel() != 1 or int(token.reshape(-1)[0]) != FIRST_TOKEN:
            raise ExerciseError(f"{name}: on {arm} expected the first token {FIRST_TOKEN}, received "
                                f"{_show(run.token)}.\n  hint: the first token is logits.argmax(dim=-1) of the "
                                "prefill logits.")
        if run.cache is not model.cache:
            raise ExerciseError(f"{name}: on {arm} the result does not hold the prefill's KV cache.\n  hint: return "
                                "the cache that prefill gave you: decoding (TTIT) continues from it.")
    print(f"✓ {name}: synchronised, prefill + argmax only, encoder timed exactly when there is no cache.")


# ---- the registry, and what a notebook calls ------------------------------------------------------
@dataclass(frozen=True)
class Exercise:
    """An exercise: its notebook, the reference (the package's function), its checker, and the helpers the
    reference calls (shown with it by reveal)."""

    notebook: str
    reference: Callable
    check: Callable[[Callable], None]
    helpers: tuple[Callable, ...] = ()


EXERCISES: dict[str, Exercise] = {
    "ttft_ratio": Exercise("00_setup", ttft_ratio, check_ttft_ratio,
                           helpers=(ttft_speedup, prefill_flops, refrag_positions)),
    "chunk_pooling": Exercise("02_reconstruction", mean_pool, check_chunk_pooling),
    "projector": Exercise("02_reconstruction", projector_net, check_projector, helpers=(Projector,)),
    "splice": Exercise("02_reconstruction", splice_vectors, check_splice),
    "curriculum": Exercise("02_reconstruction", stage_mixtures, check_curriculum, helpers=(capped_table,)),
    "reconstruction_labels": Exercise("02_reconstruction", shifted_labels, check_reconstruction_labels),
    "mixed_expansion": Exercise("03_cpt", random_expansion, check_mixed_expansion),
    "grpo_advantage": Exercise("04_policy_grpo", group_advantages, check_grpo_advantage),
    "clipped_objective": Exercise("04_policy_grpo", clipped_objective, check_clipped_objective),
    "token_f1": Exercise("05_sft", token_f1, check_token_f1, helpers=(normalize_answer, _f1)),
    "ttft_timer": Exercise("06_ttft_benchmark", ttft_once, check_ttft_timer, helpers=(clock, Prefilled)),
}


def get_exercise(name: str) -> Exercise:
    if name not in EXERCISES:
        raise ExerciseError(f"There is no exercise named {name!r}; the exercises are {', '.join(EXERCISES)}.")
    return EXERCISES[name]


def _where(obj) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def exercise(name: str, fn: Callable | None = None) -> Callable:
    """The learner's fn once its checker accepts it, or the reference when fn is None (exercise left blank),
    so that a notebook runs the same unattended."""
    ex = get_exercise(name)
    if fn is None:
        print(f"{name}: left blank, so the notebook uses the reference {_where(ex.reference)}; "
              f"reveal({name!r}) shows its code.")
        return ex.reference
    if not callable(fn):
        raise ExerciseError(f"{name}: expected a function (or None for the reference), got {type(fn).__name__}.")
    with torch.random.fork_rng(devices=[]):  # checking must not move the notebook's random stream
        ex.check(fn)
    return fn


def reference_source(name: str) -> str:
    """The code of an exercise's reference, then of the helpers it calls."""
    ex = get_exercise(name)
    return "\n\n".join(inspect.getsource(obj) for obj in (ex.reference, *ex.helpers))


def reveal(name: str) -> None:
    """The reference solution inside a folded <details> block in a notebook (printed elsewhere)."""
    source = reference_source(name)
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display
    except ImportError:
        get_ipython = None
    if get_ipython is None or get_ipython() is None:
        print(source)
        return
    display(HTML(f"<details><summary>Reference solution: <code>{_where(get_exercise(name).reference)}</code>"
                 f"</summary><pre>{html.escape(source)}</pre></details>"))
