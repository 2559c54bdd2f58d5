"""Stage 4: supervised fine-tuning for RAG question answering (notebook 05; its evaluation is refrag_lib.qa_eval).

Two arms, trained the same way so the comparison is fair: same start (the weights the policy was
trained with, RUN_DIR/policy/cpt_mixed), same questions, same retrieved passages, same steps, batch
and LR (the course's 1e-4, chosen with `python -m refrag_lib sft-curve`; linear warm-up, cosine decay):
- rag: ordinary RAG, every passage as tokens; only the decoder is used, so only it is trained;
- refrag: the passages as chunk vectors, a fraction p of chunks expanded by the selector it will be
  evaluated with (refrag_lib.selectors); encoder, projector and decoder are trained end to end (the
  paper's SFT).
The loss counts the answer tokens only (see refrag_lib.qa). With a probability `gold_fraction` the
gold passage is put among the K retrieved ones (at a random place), so the model learns to read
rather than to guess when retrieval missed.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from torch import nn

from .arms import READERS
from .chunk_store import PassageChunks
from .errors import CourseError
from .losses import TokenStats, suffix_token_stats
from .model import RefragModel
from .policy import check_fraction
from .precision import CPU_BF16, back_to_preset
from .qa import QAItem, build_prompt, training_example, with_gold_at_random
from .selectors import DEFAULT_SELECTOR, SELECTORS, Selector, selector_input
from .train import TrainResult, train
from .trained import load_sft_model

TRAINED_PARTS = {"rag": ["decoder"], "refrag": ["encoder", "projector", "decoder"]}
# Peak LR of both arms. At 120 steps of one question each, 1e-4 lifts RAG-FT from 0.39 to 0.52 EM over the paper's
# 2e-5 (made for far longer runs) and leaves REFRAG at 0.29 (notebook 05's lever table).
COURSE_SFT_LR = 1e-4
@dataclass(frozen=True)
class SFTConfig:
    """One SFT run; both arms use the same config."""

    steps: int
    top_k: int = 3  # K: passages retrieved per question
    p: float = 0.1  # share of REFRAG chunks expanded
    selector: str = DEFAULT_SELECTOR  # the REFRAG arm expands what this selector picks (refrag_lib.selectors)
    batch_size: int = 2  # questions per step
    lr: float = COURSE_SFT_LR
    warmup_fraction: float = 0.04
    clip_norm: float = 1.0
    gold_fraction: float = 1.0  # share of training questions whose gold passage is forced into the top-K
    seed: int = 0
    grad_accum: int = 1
    weight_decay: float = 0.0
    cpu_bf16: bool = CPU_BF16  # bf16 autocast on a CPU with native bf16 maths (refrag_lib.precision.mixed_precision)
    # Steps between resumable states; 0: none, an arm's weights are written once it has finished. An arm is short
    # (minutes on a GPU) while its state is four times the decoder's size: on Drive, 14 states of the t4 preset
    # would write 61 GB. An interrupted arm starts over; a finished one is loaded.
    save_every: int = 0

    @property
    def peak_lr(self) -> float:
        return self.lr

    def __post_init__(self):
        if self.steps < 1 or self.top_k < 1 or self.batch_size < 1:
            raise CourseError(f"steps, top_k and batch_size must be >= 1, got {self.steps}, {self.top_k}, "
                              f"{self.batch_size}.")
        check_fraction(self.p)
        if self.selector not in SELECTORS:
            raise CourseError(f"Unknown selector {self.selector!r}: choose one of {', '.join(SELECTORS)}.")
        if not 0.0 <= self.gold_fraction <= 1.0:
            raise CourseError(f"gold_fraction must lie in [0, 1], got {self.gold_fraction}.")


# ---- training ------------------------------------------------------------------------------------------
class AnswerObjective(nn.Module):
    """NLL of the answer tokens given question + passages, for one arm (a module so accelerate can wrap it)."""

    def __init__(self, model: RefragModel, arm: str, chunks: PassageChunks, selector: Selector | None, p: float):
        super().__init__()
        if arm not in READERS:
            raise CourseError(f"arm must be one of {READERS}, got {arm!r}.")
        if arm == "refrag" and selector is None:
            raise CourseError("The REFRAG arm needs the selector it will be evaluated with (selectors.make_selector).")
        self.model, self.arm, self.chunks, self.selector, self.p = model, arm, chunks, selector, p

    def forward(self, items: Sequence[QAItem], rng: np.random.Generator | None = None) -> TokenStats:
        model = self.model
        batch, expand = [], []
        for it in items:
            if self.arm == "rag":
                prompt = build_prompt(model, it.question, self.chunks.passage_chunks(it.rows))
                mask = [True] * len(prompt.chunks)
            else:  # the selector sees the chunk vectors of the encoder as it is now
                example = selector_input(model, it, it.rows, self.chunks)
                prompt, mask = example.segments, self.selector([example], self.p)[0]
            batch.append(training_example(prompt, model.tokenize(" " + it.answers[0]), model.eos_id))
            expand.append([*mask, True])  # the answer cue is always tokens
        return suffix_token_stats(model, batch, expand)


def training_batch(items: Sequence[QAItem], cfg: SFTConfig, rng: np.random.Generator) -> list[QAItem]:
    """The questions of one step, from the loop's generator seeded by (seed, step, micro-batch): both arms
    see the same data, and the gold passage is put in at a random place when retrieval missed it."""
    batch = []
    for i in rng.choice(len(items), size=cfg.batch_size, replace=len(items) < cfg.batch_size):
        it = items[int(i)]
        rows = it.rows[: cfg.top_k]
        if rng.random() < cfg.gold_fraction and it.gold is not None:
            rows = with_gold_at_random(rows, it.gold, rng)
        batch.append(replace(it, rows=list(rows)))
    return batch


class SFTTask:
    """One arm's fine-tuning as a task of the shared loop (refrag_lib.train.train)."""

    def __init__(self, model: RefragModel, arm: str, cfg: SFTConfig, items: Sequence[QAItem], chunks: PassageChunks,
                 selector: Selector | None):
        if not items:
            raise CourseError("No training questions (with a gold passage in the index) to fine-tune on.")
        self.name, self.parts = f"sft_{arm}", TRAINED_PARTS[arm]
        self.objective = AnswerObjective(model, arm, chunks, selector, cfg.p)
        self.cfg, self.items = cfg, items

    def batch(self, step: int, rng: np.random.Generator) -> tuple[list[QAItem], dict]:
        return training_batch(self.items, self.cfg, rng), {}


def train_arm(model: RefragModel, arm: str, cfg: SFTConfig, items: Sequence[QAItem], chunks: PassageChunks,
              selector: Selector | None, out_dir: Path, identity: dict[str, str], resume: bool = True,
              progress: bool = True) -> TrainResult:
    """SFT one arm in place with the shared loop: AdamW, warm-up + cosine, clipping, accelerate, metrics.jsonl,
    resume after an interruption when cfg.save_every > 0. Weights (the trained parts, in the preset's precision: no
    later stage trains them) go to out_dir/weights.safetensors; a resumable state is dropped once the arm has
    finished (it would triple the disk an arm needs)."""
    task = SFTTask(model, arm, cfg, items, chunks, selector)
    return train(model, cfg, task, Path(out_dir), identity, resume=resume, progress=progress, keep_state=False,
                 weights_in_preset_precision=True)


def train_arms(start: RefragModel, cfg: SFTConfig, items: Sequence[QAItem], chunks: PassageChunks, selector: Selector,
               sft_dir: Path, identity: dict[str, str], progress: bool = True) -> dict[str, TrainResult]:
    """Both arms from one start, trained in place one after the other: {"rag": ..., "refrag": ...}. `start` becomes
    the REFRAG arm; the RAG arm is a copy. The arm not training waits on the CPU: beside AdamW's state, two copies
    of the a100 preset's 1.7B decoder do not fit a 40 GB A100. Afterwards both are on the device in the preset's
    precision, as when they are loaded from their weights (trained.load_sft_model)."""
    device = start.device
    start.to("cpu")
    models = {"rag": copy.deepcopy(start), "refrag": start}
    results = {}
    for arm, model in models.items():
        model.to(device)
        results[arm] = train_arm(model, arm, cfg, items, chunks, selector if arm == "refrag" else None,
                                 Path(sft_dir) / arm, identity, progress=progress)
        model.to("cpu")
    for model in models.values():
        back_to_preset(model)  # the parts an arm did not train as well (they were loaded in fp32 to be trained)
        model.to(device)
    return results


def finished_arm(run, arm: str) -> TrainResult:
    """An arm notebook 05 fine-tuned in `run`, loaded back with its per-step history and summary: what a run
    on a learner's own questions evaluates, instead of training again without their gold passages."""
    summary = json.loads(run.require("sft", "metrics.json").read_text())["train"][arm]
    history = [json.loads(line) for line in run.require("sft", f"{arm}/metrics.jsonl").read_text().splitlines()
               if line.strip()]
    return TrainResult(load_sft_model(run, arm), history, summary)


