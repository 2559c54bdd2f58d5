"""Stages 1 and 2, reconstruction and continual pre-training (CPT): their recipe, their examples, and how a run
trains one through the shared loop (refrag_lib.train).

Reconstruction (stage 1) teaches the encoder and projector to put a chunk's k tokens into one vector the frozen
decoder can read back; CPT (stage 2) has the decoder predict the next paragraph from such vectors. Each step draws
its number of chunks from the curriculum, then its windows from the training documents; the last 10% of the
documents are never trained on. The paper's peak LRs are 2e-4 for reconstruction and 5e-5 for CPT, with a linear
warm-up over the first 4% of steps; the course's short budgets use the larger steps of COURSE_LR.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import WEIGHTS, load_weights, model_identity
from .curriculum import Curriculum, Mixtures, stage_mixtures
from .data import default_data_dir, load_documents
from .errors import CourseError, MissingArtifactError
from .losses import TokenStats, next_paragraph_loss, reconstruction_loss
from .model import POOLINGS, Parts, RefragModel, load_refrag
from .precision import CPU_BF16, master_weights
from .train import TrainResult, train
from .trained import STAGES

PAPER_LR = {"recon": 2e-4, "cpt": 5e-5}
# The course's peak LRs for its short budgets, chosen by the lever tables of notebooks 02 and 03
# (`python -m refrag_lib levers`): a few hundred steps need larger steps than the paper's long runs.
COURSE_LR = {"recon": 1e-3, "cpt": 3e-4}
# Reconstruction moves the pretrained encoder at a tenth of the projector's rate (1e-4): at 1e-3 its
# features are scrambled within a few steps, and two seeds ended 0.85 and 0.48 nats apart at one chunk;
# at 1e-4 they agree (0.87 and 0.85). CPT trains every part at its one rate.
COURSE_ENCODER_LR_SCALE = {"recon": 0.1, "cpt": 1.0}
# Reconstruction spends this share of its steps on one chunk before the curriculum's stages (Curriculum).
COURSE_ONE_CHUNK_SHARE = 0.9
# Reconstruction warms up over 15% of its steps: with the encoder at 1e-4 the first steps' gradients
# reach norms near 1000 (clipped); a longer warm-up halves the largest and adds one-chunk accuracy.
COURSE_WARMUP = {"recon": 0.15, "cpt": 0.04}
HELD_OUT_FRACTION = 0.1  # the last 10% of documents are never trained on


@dataclass(frozen=True)
class TrainConfig:
    """The settings of one training run; all of them must match to resume a checkpoint."""

    stage: str  # recon | cpt
    steps: int
    context_tokens: int = 256  # s: tokens compressed into s/k chunk vectors (the curriculum's largest factor)
    continuation_tokens: int = 64  # o: tokens CPT predicts after the context (unused in recon)
    positions_per_step: int = 512  # decoder positions per micro-batch; batch size = this // example length
    grad_accum: int = 1
    lr: float = 0.0  # 0: the paper's peak LR for the stage
    encoder_lr_scale: float = 1.0  # the encoder's peak LR is lr x this (a pretrained encoder may need smaller steps)
    decoder_lr_scale: float = 1.0  # CPT with train_decoder: the decoder's peak LR is lr x this
    warmup_fraction: float = 0.04
    weight_decay: float = 0.0
    clip_norm: float = 1.0
    curriculum: bool = True  # False: every step uses s/k chunks (the Table 11 ablation)
    one_chunk_share: float = 0.0  # share of the steps reconstructing one chunk before the curriculum's stages
    expand_fraction: float = 0.0  # p: share of context chunks left as tokens in CPT (paper: 0.1 before RL)
    train_decoder: bool = False  # CPT only: unfreeze the decoder too (the paper trains everything)
    start_token: bool = True  # inputs start with the decoder's start token; False: a chunk vector at position 0
    projector_norm: bool = True  # projector outputs scaled to the mean token-embedding norm; False: unbounded
    pooling: str = "mean"  # a chunk's vector: the mean of its encoder states, or the first ([CLS]) state
    cpu_bf16: bool = CPU_BF16  # fp32 preset on a CPU with native bf16 maths: bf16 autocast (see mixed_precision)
    seed: int = 0
    save_every: int = 50  # steps between resumable states (0: none, weights at the end only)

    def __post_init__(self):
        if self.stage not in STAGES:
            raise CourseError(f"stage must be one of {STAGES}, got {self.stage!r}.")
        if (self.steps < 1 or self.grad_accum < 1 or self.positions_per_step < 1 or self.encoder_lr_scale <= 0
                or self.decoder_lr_scale <= 0 or self.save_every < 0):
            raise CourseError("steps, grad_accum, positions_per_step, encoder_lr_scale and decoder_lr_scale must be "
                              "positive, save_every at least 0.")
        if not 0.0 <= self.one_chunk_share < 1.0:
            raise CourseError(f"one_chunk_share must lie in [0, 1), got {self.one_chunk_share}.")
        if self.pooling not in POOLINGS:
            raise CourseError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}.")
        if self.stage == "recon" and self.train_decoder:
            raise CourseError("Reconstruction keeps the decoder frozen (train_decoder=False); only CPT may train it.")

    @property
    def peak_lr(self) -> float:
        return self.lr or PAPER_LR[self.stage]

    def trained_parts(self) -> list[str]:
        """Reconstruction trains encoder + projector through the frozen decoder; CPT may add the decoder."""
        return ["encoder", "projector", *(["decoder"] if self.train_decoder else [])]


def default_config(stage: str, steps: int = 80, **changes) -> TrainConfig:
    """The course's recipe for a stage (the lever tables' reference row); `changes` override fields."""
    if stage not in STAGES:
        raise CourseError(f"stage must be one of {STAGES}, got {stage!r}.")
    cpt = {"expand_fraction": 0.1} if stage == "cpt" else {}
    recon = {"one_chunk_share": COURSE_ONE_CHUNK_SHARE} if stage == "recon" else {}
    course = {"lr": COURSE_LR[stage], "encoder_lr_scale": COURSE_ENCODER_LR_SCALE[stage],
              "warmup_fraction": COURSE_WARMUP[stage], **cpt, **recon}
    return TrainConfig(stage=stage, steps=steps, **{**course, **changes})


STATES_PER_LONG_RUN = 3  # resumable states a run of notebooks 02-03 writes: at each quarter; the last goes at the end


def long_run_save_every(steps: int, train_decoder: bool = False) -> int:
    """save_every of a run of notebooks 02-03: a resumable state at each quarter, so a dead kernel loses at most a
    quarter of the run; none when the decoder trains, whose state (12 bytes a decoder parameter: 4.3 GB for the t4
    preset) would not fit a learner's Drive four times over."""
    return 0 if train_decoder else max(1, steps // (STATES_PER_LONG_RUN + 1))


# ---- data -------------------------------------------------------------------------------------------
def split_documents(documents: list, held_out_fraction: float = HELD_OUT_FRACTION) -> tuple[list, list]:
    """(train, held-out): the last fraction of the documents is kept for evaluation."""
    n_held = max(1, round(len(documents) * held_out_fraction))
    if len(documents) <= n_held:
        raise CourseError(f"Need more than {n_held} documents to keep {n_held} for evaluation, got {len(documents)}.")
    return documents[:-n_held], documents[-n_held:]


def windows(token_docs: list[list[int]], length: int, count: int, rng: np.random.Generator) -> list[list[int]]:
    """`count` random windows of `length` consecutive tokens from documents long enough to hold one."""
    long_enough = [doc for doc in token_docs if len(doc) >= length]
    if not long_enough:
        longest = max(map(len, token_docs), default=0)
        raise CourseError(
            f"No document has {length} tokens (the longest has {longest}). Use a smaller context length s "
            "(or continuation o), or longer documents."
        )
    picks = rng.integers(len(long_enough), size=count)
    out = []
    for i in picks:
        doc = long_enough[i]
        start = int(rng.integers(len(doc) - length + 1))
        out.append(doc[start : start + length])
    return out


def step_examples(cfg: TrainConfig, k: int, n_chunks: int, token_docs, rng: np.random.Generator):
    """The micro-batch of one step: token windows sized so that a batch fills positions_per_step."""
    context = n_chunks * k
    if cfg.stage == "recon":
        batch_size = max(1, cfg.positions_per_step // (n_chunks + context))
        return windows(token_docs, context, batch_size, rng)
    batch_size = max(1, cfg.positions_per_step // (n_chunks + cfg.continuation_tokens))
    rows = windows(token_docs, context + cfg.continuation_tokens, batch_size, rng)
    return [row[:context] for row in rows], [row[context:] for row in rows]


class StageObjective(nn.Module):
    """The stage's loss as a module forward, so accelerate (DDP under `accelerate launch`) can wrap it."""

    def __init__(self, model: RefragModel, cfg: TrainConfig):
        super().__init__()
        self.model = model
        self.cfg = cfg

    def forward(self, examples, rng: np.random.Generator) -> TokenStats:
        if self.cfg.stage == "recon":
            return reconstruction_loss(self.model, examples)
        contexts, continuations = examples
        return next_paragraph_loss(self.model, contexts, continuations, self.cfg.expand_fraction, rng)


class StageTask:
    """Reconstruction or CPT as a task of the loop: curriculum-sized windows of the training documents; mixtures
    gives the curriculum's stages (curriculum.stage_mixtures, or a learner's own)."""

    def __init__(self, model: RefragModel, cfg: TrainConfig, token_docs: list[list[int]],
                 mixtures: Mixtures = stage_mixtures):
        self.name, self.parts, self.k = cfg.stage, cfg.trained_parts(), model.k
        self.cfg, self.token_docs = cfg, token_docs
        self.objective = StageObjective(model, cfg)
        self.curriculum = Curriculum(cfg.context_tokens // model.k, cfg.steps, cfg.seed, cfg.curriculum,
                                     cfg.one_chunk_share, mixtures)

    def batch(self, step: int, rng: np.random.Generator) -> tuple[object, dict]:
        """(examples, what the step's log row should say about them)."""
        n_chunks = self.curriculum.chunks_at(step)
        return step_examples(self.cfg, self.k, n_chunks, self.token_docs, rng), {"chunks": n_chunks}


# ---- runs: where documents come from and where weights go -------------------------------------------
def tokenized_documents(model: RefragModel, path: str | Path | None = None) -> tuple[list, list]:
    """(train, held-out) token lists of the course documents (or a user's .jsonl/.txt file)."""
    documents = load_documents(path or default_data_dir() / "documents.jsonl")
    train_docs, held_out = split_documents(documents)
    return [model.tokenize(d) for d in train_docs], [model.tokenize(d) for d in held_out]


def prepare_model(run, cfg: TrainConfig, init_from_recon: bool = True, parts: Parts | None = None) -> RefragModel:
    """The preset's model (with a learner's `parts`, see model.Parts), initialised from the reconstruction weights
    for CPT.

    CPT without them is the Table 12 ablation and must be asked for (init_from_recon=False).
    """

    recon_weights = None
    if cfg.stage == "cpt" and init_from_recon:
        try:
            recon_weights = run.require("recon", WEIGHTS)
        except MissingArtifactError as err:
            raise MissingArtifactError(
                f"{err} CPT starts from the reconstruction weights; to train CPT from scratch on purpose "
                "(the Table 12 ablation) pass init_from_recon=False (CLI: --no-recon-init)."
            ) from err
    torch.manual_seed(cfg.seed)  # the projector's random initialisation follows the run's seed
    model = load_refrag(run.preset, parts=parts)
    model.start_before_chunks = cfg.start_token
    model.pooling = cfg.pooling
    if not cfg.projector_norm:
        model.projector.token_norm = 0.0
    master_weights(model, cfg.trained_parts())  # stage 1's fp32 weights go on in fp32, not rounded on the way
    if recon_weights is not None:
        load_weights(recon_weights, model, model_identity(run.preset, "recon"), stage="recon")
    return model


def train_stage(
    run, cfg: TrainConfig, folder: str = "", init_from_recon: bool = True, documents: str | Path | None = None,
    resume: bool = True, max_new_steps: int | None = None, progress: bool = True, trackers: list[str] | None = None,
    parts: Parts | None = None, mixtures: Mixtures = stage_mixtures,
) -> TrainResult:
    """Train one stage of a run; weights and metrics.jsonl go to RUN_DIR/<folder or stage>/. The resumable state
    goes once the stage has finished: the later notebooks read the weights, and on Drive a kept state would hold
    three times their size. parts and mixtures: a learner's own model pieces and curriculum (notebook 02); neither
    is stored with the run, so a resumed or finished run is matched on its TrainConfig alone."""
    model = prepare_model(run, cfg, init_from_recon, parts)
    train_docs, _ = tokenized_documents(model, documents)
    out_dir = run.stage_dir(folder or cfg.stage)
    result = train(model, cfg, StageTask(model, cfg, train_docs, mixtures), out_dir,
                   model_identity(run.preset, cfg.stage), resume=resume, max_new_steps=max_new_steps,
                   progress=progress, trackers=trackers, keep_state=False)
    result.summary["init_from_recon"] = init_from_recon if cfg.stage == "cpt" else None
    return result
