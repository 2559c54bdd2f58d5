"""What one vector could carry: reconstruction from a chunk vector fitted to that chunk alone.

Notebook 02's trained encoder hands the frozen decoder vectors worth a few points of token accuracy
over the decoder alone. Is that the decoder's limit (it cannot read k tokens back from one input
position) or the encoder's (it has not learnt to write them)? Here no encoder takes part: for each
held-out one-chunk window, one free vector at the projector's output norm is fitted by gradient
descent to that window's tokens, through the frozen decoder, and then scored like any other vector.
What it reaches bounds what any encoder + projector could give this decoder; the gap down to the
trained encoder is what a longer stage 1 has to close (the paper trains on billions of tokens).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..errors import CourseError
from ..evaluate import probe_windows
from ..intervals import mean_interval, paired_difference
from ..losses import reconstruction_example, suffix_token_stats
from ..model import RefragModel
from ..precision import CPU_BF16, cpu_bf16_autocast, in_training_precision, loss_scaler


def fit_free_vectors(model: RefragModel, windows: Sequence[Sequence[int]], steps: int,
                     lr: float = 0.05, cpu_bf16: bool = CPU_BF16) -> tuple[torch.Tensor, list[dict]]:
    """One vector per one-chunk window, fitted with Adam so the frozen decoder reconstructs the window.

    The vectors keep the projector's output length (a direction is learnt, as by the projector) and
    start from the model's own vector for the chunk (what its encoder + projector write): random
    directions or the mean token embedding got half as far in 100 steps. Returns the vectors and the
    curve of mean token accuracy (teacher-forced) by step. Only the vectors get gradients; the model
    is not changed. The fit runs in training's precision (precision.cpu_bf16_autocast; fp32 vectors and Adam),
    and what it reaches is scored in it too, as every other vector is (precision.in_training_precision).
    """
    if steps < 1:
        raise CourseError(f"steps must be at least 1 to fit free vectors, got {steps}.")
    if any(len(w) != model.k for w in windows):
        raise CourseError(f"Each window must be one chunk of k = {model.k} tokens.")
    batch = [reconstruction_example(w, model.k) for w in windows]
    norm = model.projector.token_norm or float(model.decoder.get_input_embeddings().weight.norm(dim=1).mean())
    with torch.no_grad():
        raw = model.projector(model.encode_chunks(windows).to(model.projector.net[0].weight.dtype)).float()
    raw.requires_grad_(True)
    optimizer = torch.optim.Adam([raw], lr=lr)
    scaler = loss_scaler(model)  # through an fp16 decoder the vectors' small gradients would underflow unscaled
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    dtype = model.decoder.get_input_embeddings().weight.dtype
    curve = []
    try:
        for step in range(steps + 1):
            vectors = F.normalize(raw, dim=-1) * norm
            with cpu_bf16_autocast(model, cpu_bf16):
                stats = suffix_token_stats(model, batch, projected=vectors.to(dtype))
            curve.append({"step": step, "token_accuracy": float(stats.per_example()[1].mean())})
            if step == steps:
                break
            optimizer.zero_grad()
            scaler.scale(stats.loss).backward()
            scaler.step(optimizer)
            scaler.update()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return (F.normalize(raw, dim=-1) * norm).detach(), curve


@torch.no_grad()
@in_training_precision
def _score(model: RefragModel, windows, vectors: torch.Tensor) -> tuple:
    batch = [reconstruction_example(w, model.k) for w in windows]
    dtype = model.decoder.get_input_embeddings().weight.dtype
    return suffix_token_stats(model, batch, projected=vectors.to(dtype)).per_example()


def free_vector_ceiling(model: RefragModel, held_out: list[list[int]], floor: dict, carried: dict | None = None,
                        n_windows: int = 32, steps: int = 100, lr: float = 0.05) -> dict:
    """Fitted free vectors on the first n_windows of the floor's one-chunk windows, next to the floor.

    Token accuracy and log-ppl with 95% intervals, their paired gains over the decoder alone on the
    same windows, and the fitting curve. `floor` is evaluate.floor_scores(...) with 1 among its counts;
    `carried` (evaluate.vectors_against_floor of a trained model on that floor) adds the trained
    encoder's accuracy on the same windows and the gap up to the ceiling, paired.
    """
    if "1" not in floor["scores"]:
        raise CourseError("The floor has no one-chunk windows: compute floor_scores with 1 among the counts.")
    size = min(n_windows, floor["n_windows"]["1"])
    windows = probe_windows(model, held_out, 1, floor["n_windows"]["1"], floor["seed"])[:size]
    vectors, curve = fit_free_vectors(model, windows, steps, lr)
    nll, accuracy = _score(model, windows, vectors)
    base = floor["scores"]["1"]
    report = {
        "n_windows": size, "steps": steps, "lr": lr, "curve": curve,
        "token_accuracy": mean_interval(accuracy), "token_accuracy_floor": mean_interval(base["token_accuracy"][:size]),
        "token_accuracy_gain": paired_difference(accuracy, base["token_accuracy"][:size]),
        "log_ppl": mean_interval(nll), "log_ppl_gain": paired_difference(base["log_ppl"][:size], nll),
    }
    if carried is not None:
        trained = carried["per_window"]["1"]["token_accuracy"][:size]
        report["trained_token_accuracy"] = mean_interval(trained)
        report["gap_to_trained"] = paired_difference(accuracy, trained)  # what the encoder has yet to learn
    return report
