"""Time to first token, the one way the course measures it: the timed region of answering a question.

Serving (refrag_lib.answering: every TTFT of notebook 05 and the playground) and the benchmark
(refrag_lib.bench, notebook 06) both time with these functions, so the two report the same quantity.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .model import RefragModel, Segments


def clock(device: torch.device) -> float:
    """perf_counter after the device has finished all queued work (CUDA kernels run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


@dataclass
class Prefilled:
    """What one timed prefill leaves behind: the first token, the cache, and where the time went."""

    token: torch.Tensor
    cache: object
    inputs: object
    total_s: float
    encoder_s: float


def ttft_once(model: RefragModel, segments: Segments, expand: list[bool], vectors: torch.Tensor | None,
              encode: bool) -> Prefilled:
    """The timed region: (encoder when `encode`) -> assembly -> prefill -> argmax of the prefill logits."""
    device = model.device
    start = clock(device)
    if encode:
        vectors = model.encode_chunks(model.compressed_chunks([segments], [expand]))
    encoded = clock(device) if encode else start
    inputs = model.build_inputs([segments], [expand], chunk_vectors=vectors)
    logits, cache = model.prefill(inputs)
    token = logits.argmax(dim=-1)
    end = clock(device)
    return Prefilled(token, cache, inputs, end - start, encoded - start)


def quartiles_ms(seconds: Sequence[float]) -> tuple[float, float]:
    """Median and interquartile range, in milliseconds."""
    ms = sorted(1000 * t for t in seconds)
    if len(ms) == 1:
        return ms[0], 0.0
    q1, median, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    return median, q3 - q1
