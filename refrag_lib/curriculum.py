"""The paper's curriculum (Table 8): reconstruct 1 chunk first, then 2, 4, ... up to L = s/k.

Without it reconstruction fails (Table 11): a fresh projector cannot be asked to squeeze 16 chunks
into vectors the decoder understands before it can do one. Table 8 gives, for each of 9 stages, how
many samples use each "number of chunks" factor; each factor's row is a geometric sequence over the
stages (short factors fade out, long ones grow). We read the counts as mixture weights, spread the 9
stages evenly over any step budget, cap factors at what s/k allows, and draw one factor per step.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .errors import CourseError

# Table 8 of the paper (k = 8): number of chunks -> sample count in stages S1..S9.
TABLE8: dict[int, tuple[int, ...]] = {
    1: (1333, 445, 148, 49, 16, 6, 2, 1, 0),
    2: (333, 298, 267, 238, 213, 191, 171, 153, 137),
    4: (83, 102, 126, 156, 193, 238, 293, 362, 447),
    8: (20, 35, 61, 106, 185, 324, 565, 985, 1719),
    16: (5, 11, 23, 48, 103, 220, 468, 997, 2125),
    32: (1, 3, 7, 19, 50, 133, 353, 939, 2496),
    64: (1, 3, 9, 25, 73, 212, 618, 1802, 5259),
    128: (1, 3, 9, 25, 73, 212, 618, 1802, 5259),
    256: (1, 3, 9, 25, 73, 212, 618, 1802, 5259),
}
N_STAGES = 9
Mixtures = Callable[[int], tuple[list[int], np.ndarray]]  # max_chunks -> (factors, [N_STAGES, n_factors] mixtures)


def capped_table(max_chunks: int) -> dict[int, np.ndarray]:
    """Table 8 with every factor above max_chunks capped to max_chunks (their counts merge there)."""
    if max_chunks < 1:
        raise CourseError(
            f"The curriculum needs at least one chunk per example (s/k >= 1), got {max_chunks}: "
            "make the context length s at least k tokens."
        )
    table: dict[int, np.ndarray] = {}
    for factor, counts in TABLE8.items():
        capped = min(factor, max_chunks)
        table[capped] = table.get(capped, np.zeros(N_STAGES)) + np.asarray(counts, dtype=float)
    return dict(sorted(table.items()))


def stage_mixtures(max_chunks: int) -> tuple[list[int], np.ndarray]:
    """The factors and a [9, n_factors] matrix: row j is stage j's mixture (sums to 1)."""
    table = capped_table(max_chunks)
    factors = list(table)
    counts = np.stack([table[f] for f in factors], axis=1)
    return factors, counts / counts.sum(axis=1, keepdims=True)


class Curriculum:
    """Turns a training step into a number of chunks: the same answer for the same (seed, step).

    Drawing from a generator seeded by (seed, step) instead of one running stream means a resumed
    run draws exactly what an uninterrupted one would, with no sampler state to save.
    curriculum=False is the ablation: every step uses the largest factor (no warm-up on short inputs).
    one_chunk_share > 0 scales the curriculum to a short budget: that share of the steps reconstructs
    one chunk only, then the 9 stages share the rest. In the paper one-chunk examples fill most of a
    long first stage; spread evenly over a few hundred steps, that stage lasts a few dozen steps, too
    few for the encoder to learn to write a chunk into its vector (notebook 02's lever table).
    mixtures(max_chunks) -> (factors, [9, n_factors]) gives the stages: stage_mixtures, or a learner's own.
    """

    def __init__(self, max_chunks: int, total_steps: int, seed: int = 0, curriculum: bool = True,
                 one_chunk_share: float = 0.0, mixtures: Mixtures = stage_mixtures):
        if total_steps < 1:
            raise CourseError(f"total_steps must be at least 1, got {total_steps}.")
        if not 0.0 <= one_chunk_share < 1.0:
            raise CourseError(f"one_chunk_share must lie in [0, 1), got {one_chunk_share}: the stages need steps.")
        self.max_chunks = max_chunks
        self.total_steps = total_steps
        self.seed = seed
        self.curriculum = curriculum
        self.one_chunk_steps = round(one_chunk_share * total_steps) if curriculum else 0
        self.factors, self.mixtures = mixtures(max_chunks)

    def stage(self, step: int) -> int:
        """The curriculum stage (0..8) of a step after the one-chunk steps: the 9 stages share the rest of
        the budget evenly (a budget under 9 steps skips stages but still ends in the last one); -1 for a
        one-chunk step."""
        if not 0 <= step < self.total_steps:
            raise CourseError(f"step {step} is outside the schedule of {self.total_steps} steps.")
        if step < self.one_chunk_steps:
            return -1
        step, total = step - self.one_chunk_steps, self.total_steps - self.one_chunk_steps
        if total < N_STAGES:
            return round(step * (N_STAGES - 1) / max(1, total - 1))
        return step * N_STAGES // total

    def mixture(self, step: int) -> np.ndarray:
        """The probabilities of each factor at a step."""
        if not self.curriculum:
            return np.eye(len(self.factors))[-1]
        stage = self.stage(step)
        return np.eye(len(self.factors))[0] if stage < 0 else self.mixtures[stage]

    def chunks_at(self, step: int) -> int:
        """The number of chunks every example of this step reconstructs (or compresses, in CPT)."""
        rng = np.random.default_rng([self.seed, step, 8])
        return int(rng.choice(self.factors, p=self.mixture(step)))

    def schedule(self) -> list[int]:
        """chunks_at for every step of the budget (what the plot and the summary show)."""
        return [self.chunks_at(step) for step in range(self.total_steps)]


def plot_curriculum(curriculum: Curriculum, ax=None):
    """A stacked area of the mixture over training, with the factors actually drawn on top."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 3.5))
    steps = np.arange(curriculum.total_steps)
    weights = np.stack([curriculum.mixture(s) for s in steps], axis=1)
    ax.stackplot(steps, weights, labels=[f"{f} chunk{'s' if f > 1 else ''}" for f in curriculum.factors],
                 alpha=0.8)
    drawn = curriculum.schedule()
    rank = {f: i for i, f in enumerate(curriculum.factors)}
    cumulative = np.cumsum(weights, axis=0)
    y = [cumulative[rank[f], s] - weights[rank[f], s] / 2 for s, f in zip(steps, drawn)]
    ax.scatter(steps, y, s=6, c="black", label="drawn at this step")
    ax.set_xlabel("training step")
    ax.set_ylabel("share of the mixture")
    ax.set_xlim(0, max(curriculum.total_steps - 1, 1))
    ax.set_ylim(0, 1)
    first = f"{curriculum.one_chunk_steps} one-chunk steps, then " if curriculum.one_chunk_steps else ""
    ax.set_title(f"Curriculum: {first}Table 8 over {curriculum.total_steps - curriculum.one_chunk_steps} steps, "
                 f"capped at {curriculum.max_chunks} chunks")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    return ax
