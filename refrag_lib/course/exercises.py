"""The "your turn" exercises of notebooks 02-06: a checker for each, and the package's own code as the reference.

Each exercise asks for a function that the course really runs (the reconstruction labels, the projector,
the mixed-input expansion, the GRPO advantage, token F1, the TTFT timer), so the reference solution IS that
function and cannot drift from what the notebooks use. A checker runs the learner's answer on a few small,
deterministic cases and stops at the first wrong one with an ExerciseError that names the case, shows what
was expected and what came back, and says what usually causes it. In a notebook:

    my_advantage = None                                   # or your own def
    advantage = exercise("grpo_advantage", my_advantage)  # yours once it passes; the reference when None
    reveal("grpo_advantage")                              # the reference's code, folded
"""

from __future__ import annotations

import html
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from unittest import mock

import numpy as np
import torch
from torch import nn

from ..errors import CourseError
from ..grpo import group_advantages
from ..losses import IGNORE, random_expansion, shifted_labels
from ..model import DecoderInputs, Projector, RefragModel, Segments
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


def _show(value) -> str:
    """A short, readable rendering of an expected or received value (tensors as rounded nested lists)."""
    if isinstance(value, torch.Tensor):
        value = (value.double().round(decimals=3) if value.is_floating_point() else value).tolist()
    text = repr(value)
    return text if len(text) <= 300 else text[:300] + " ..."


def _call(name: str, fn: Callable, case: Case):
    """The learner's function on one case; an exception becomes an ExerciseError that says where."""
    try:
        return fn(*case.args)
    except Exception as err:  # any error in the learner's code: report it with the case it failed on
        raise ExerciseError(f"{name}: your function raised {type(err).__name__}: {err}\n  on {case.what}\n"
                            f"  hint: {case.hint}") from err


def _check_cases(name: str, fn: Callable, reference: Callable, cases: list[Case], same: Callable) -> None:
    """Compare fn with the reference case by case; raise on the first difference, print one line if none."""
    for case in cases:
        expected = reference(*case.args)
        received = _call(name, fn, case)
        if not same(expected, received):
            raise ExerciseError(f"{name}: wrong answer on {case.what}.\n  expected: {_show(expected)}\n"
                                f"  received: {_show(received)}\n  hint: {case.hint}")
    print(f"✓ {name}: right on all {len(cases)} cases.")


def _as_tensor(value) -> torch.Tensor | None:
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        return None


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


# ---- 02: the projector --------------------------------------------------------------------------
def check_projector(cls: Callable[[int, int], nn.Module]) -> None:
    """cls(encoder_dim, decoder_dim) -> an nn.Module like model.Projector: [n, encoder_dim] -> [n, decoder_dim],
    two Linear layers (hidden width = decoder_dim) with a non-linearity between them."""
    name, enc, dec = "projector", 6, 10
    shape_hint = ("an nn.Module whose __init__(encoder_dim, decoder_dim) builds the layers and whose forward(c) "
                  "maps [n, encoder_dim] to [n, decoder_dim]: each chunk vector takes the place of a token embedding")
    generator = torch.Generator().manual_seed(0)
    c = torch.randn(3, enc, generator=generator)
    try:
        phi = cls(enc, dec)
        with torch.no_grad():
            out = phi(c)
    except Exception as err:  # any error in the learner's class: report it with what was tried
        raise ExerciseError(f"{name}: {getattr(cls, '__name__', cls)}({enc}, {dec})(c) with c of shape [3, {enc}] "
                            f"raised {type(err).__name__}: {err}\n  hint: {shape_hint}") from err
    if not isinstance(phi, nn.Module):
        raise ExerciseError(f"{name}: got a {type(phi).__name__}, not an nn.Module.\n  hint: subclass torch.nn.Module "
                            "so that the optimizer finds its parameters.")
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (3, dec):
        raise ExerciseError(f"{name}: for c of shape [3, {enc}] (encoder_dim={enc}, decoder_dim={dec}) expected an "
                            f"output of shape [3, {dec}], received {_show(getattr(out, 'shape', out))}.\n"
                            f"  hint: {shape_hint}.")
    expected = sum(p.numel() for p in Projector(enc, dec).parameters())
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
    print(f"✓ {name}: [n, {enc}] -> [n, {dec}], {received} parameters, non-linear.")


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
    "reconstruction_labels": Exercise("02_reconstruction", shifted_labels, check_reconstruction_labels),
    "projector": Exercise("02_reconstruction", Projector, check_projector),
    "mixed_expansion": Exercise("03_cpt", random_expansion, check_mixed_expansion),
    "grpo_advantage": Exercise("04_policy_grpo", group_advantages, check_grpo_advantage),
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
