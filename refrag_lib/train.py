"""One training loop for every stage, on accelerate: reconstruction (stage 1), CPT (stage 2) and the
RAG QA fine-tuning of both arms (refrag_lib.sft).

A stage is a *task*: which parts it trains, its loss (a module, so accelerate can wrap it) and the
examples of each step. For reconstruction and CPT each step draws its number of chunks from the
curriculum, then its examples from the training documents. Every step's examples come from a
generator seeded by (seed, step, micro-batch): a resumed run sees exactly the data an uninterrupted
one would, and the step counter is the whole data position. Mixed precision follows
the preset, with the trained parts kept in float32 (AdamW on fp16 weights loses small updates); on a
CPU whose cores do bf16 maths natively the fp32 presets train under bf16 autocast (refrag_lib.precision).
AdamW, linear warm-up over the first 4% of steps, cosine decay, gradient clipping and accumulation,
as in the paper (peak LR 2e-4 for reconstruction, 5e-5 for CPT). Under `accelerate launch` (DDP, or
FSDP2 for decoders that do not fit one GPU) each process trains on its own micro-batches of the same
global batch, and checkpoints and metrics are written once, by the main process.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import (
    STATE_DIR,
    WEIGHTS,
    guard_folder,
    load_state,
    load_weights,
    model_identity,
    part_tensors,
    read_metadata,
    recipe,
    save_state,
    write_weights,
)
from .config import PRESETS
from .curriculum import Curriculum
from .data import default_data_dir, load_documents
from .errors import CourseError, MissingArtifactError
from .losses import TokenStats, next_paragraph_loss, reconstruction_loss
from .model import POOLINGS, RefragModel, load_refrag
from .precision import CPU_BF16, back_to_preset, master_weights, mixed_precision
from .runs import open_run
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


@dataclass
class TrainResult:
    model: RefragModel
    history: list[dict] = field(default_factory=list)  # one row per step (also in metrics.jsonl)
    summary: dict = field(default_factory=dict)


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
    """Reconstruction or CPT as a task of the loop: curriculum-sized windows of the training documents."""

    def __init__(self, model: RefragModel, cfg: TrainConfig, token_docs: list[list[int]]):
        self.name, self.parts, self.k = cfg.stage, cfg.trained_parts(), model.k
        self.cfg, self.token_docs = cfg, token_docs
        self.objective = StageObjective(model, cfg)
        self.curriculum = Curriculum(cfg.context_tokens // model.k, cfg.steps, cfg.seed, cfg.curriculum,
                                     cfg.one_chunk_share)

    def batch(self, step: int, rng: np.random.Generator) -> tuple[object, dict]:
        """(examples, what the step's log row should say about them)."""
        n_chunks = self.curriculum.chunks_at(step)
        return step_examples(self.cfg, self.k, n_chunks, self.token_docs, rng), {"chunks": n_chunks}


def warmup_cosine(steps: int, warmup_fraction: float):
    """LR multiplier: linear warm-up, then cosine decay to zero."""
    warmup = max(1, round(steps * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _freeze_for(model: RefragModel, parts: list[str]) -> list[nn.Parameter]:
    """requires_grad only on the trained parts; frozen parts in eval mode (gradients still flow THROUGH
    the frozen decoder into the projector and encoder, they just do not update it)."""
    for name in ("encoder", "projector", "decoder"):
        module = getattr(model, name)
        trained = name in parts
        module.train(trained)
        for p in module.parameters():
            p.requires_grad_(trained)
    master_weights(model, parts)  # fp32 master weights; autocast runs the maths in the preset's precision
    return [p for name in parts for p in getattr(model, name).parameters()]


def _param_groups(model: RefragModel, parts: list[str], cfg) -> list[dict]:
    """The trained parameters as optimizer groups: the encoder at peak_lr x encoder_lr_scale, the decoder at
    peak_lr x decoder_lr_scale (SFTConfig has neither field: one LR), the projector at peak_lr."""
    params = _freeze_for(model, parts)
    scales = {"encoder": getattr(cfg, "encoder_lr_scale", 1.0), "decoder": getattr(cfg, "decoder_lr_scale", 1.0)}
    owner = {id(p): name for name in scales for p in getattr(model, name).parameters()}
    groups = [{"params": [p for p in params if owner.get(id(p)) == name], "lr": cfg.peak_lr * scales[name]}
              for name in scales]
    groups.append({"params": [p for p in params if id(p) not in owner], "lr": cfg.peak_lr})
    return [group for group in groups if group["params"]]


def _trackers(names: list[str]) -> list[str]:
    modules = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}
    for name in names:
        if name not in modules:
            raise CourseError(f"Unknown tracker {name!r}; choose from {', '.join(modules)}.")
        if importlib.util.find_spec(modules[name]) is None:
            raise CourseError(f"Tracker {name!r} is not installed: pip install {modules[name]}.")
    return names


# ---- the loop ------------------------------------------------------------------------------------------
def train(
    model: RefragModel,
    cfg,
    task,
    out_dir: Path,
    identity: dict[str, str],
    resume: bool = True,
    max_new_steps: int | None = None,
    progress: bool = True,
    trackers: list[str] | None = None,
    keep_state: bool = True,
    weights_in_preset_precision: bool = False,
) -> TrainResult:
    """Train `model` in place on `task` for cfg.steps steps, checkpointing to out_dir; resumes a checkpoint there.

    cfg holds the schedule (steps, peak_lr, warmup_fraction, weight_decay, clip_norm, grad_accum,
    save_every, seed: a TrainConfig or an sft.SFTConfig); task says what is trained on what (StageTask,
    sft.SFTTask). max_new_steps stops the run early (state saved), e.g. to spread training over Colab
    sessions. keep_state=False removes the resumable state once the run has finished and its weights are
    written (it holds the optimizer moments: three times the size of the weights). cfg.save_every = 0 writes
    no resumable state at all (the short SFT arms: an interrupted arm starts over). The trained parts train in
    fp32 and return to the preset's precision at the end (refrag_lib.precision). weights_in_preset_precision:
    write the finished weights in that precision too (half the bytes of fp32 for a GPU preset), for a stage whose
    weights are only read afterwards, never trained on: what is evaluated is the same either way.
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import DistributedType
    from tqdm.auto import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    guard_folder(out_dir, identity)
    settings = stored_settings(cfg)
    if max_new_steps is not None and not cfg.save_every:
        raise CourseError("max_new_steps stops a run to resume it later, which needs a resumable state: set "
                          "save_every > 0 (save_every = 0 writes none).")
    done_before = finished_history(out_dir, cfg.steps, settings) if resume else None
    if done_before is not None:  # a stage that finished here (an SFT arm, a teacher's pack): load, do not retrain
        load_weights(out_dir / WEIGHTS, model, identity, stage=task.name)
        print(f"loaded the finished {task.name} run from {out_dir / WEIGHTS} ({cfg.steps} steps); nothing to train")
        back_to_preset(model, task.parts)
        for module in (model.encoder, model.projector, model.decoder):
            module.eval()
        return TrainResult(model, done_before, {**summarise(done_before, cfg, task.parts, True), "loaded": True,
                                                "mixed_precision": mixed_precision(model, cfg)})
    tracker_names = _trackers(list(trackers or []))
    accelerator = Accelerator(
        mixed_precision=mixed_precision(model, cfg),
        cpu=model.device.type == "cpu", log_with=tracker_names or None, project_dir=str(out_dir),
        # the encoder's pooler (and, in recon, nothing else) gets no gradient: let DDP skip it
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    if accelerator.distributed_type == DistributedType.FSDP and not accelerator.is_fsdp2:
        raise CourseError("Sharded training needs FSDP2: set fsdp_version: 2 (see configs/accelerate/fsdp.yaml).")
    parts = task.parts
    # AdamW's fused kernel. On the CPU: the same update in 0.07 s a step for the 158M parameters SFT trains,
    # against 0.66 s for torch's default loop. On CUDA: no parameter-sized temporaries (torch's default, foreach,
    # allocates one per step: 6.8 GB for the a100 preset's decoder, which would not leave a 40 GB A100 room).
    optimizer = torch.optim.AdamW(_param_groups(model, parts, cfg), lr=cfg.peak_lr, weight_decay=cfg.weight_decay,
                                  fused=model.device.type in ("cpu", "cuda") or None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg.steps, cfg.warmup_fraction))
    objective, prepared_optimizer = accelerator.prepare(task.objective, optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]  # FSDP2 swaps in sharded ones
    config = {**settings, "processes": accelerator.num_processes}  # N x grad_accum: the global batch
    metadata = {**identity, "stage": task.name}

    start_step = 0
    log_path = out_dir / "metrics.jsonl"
    if resume and (out_dir / STATE_DIR).exists():
        start_step = load_state(out_dir, model, parts, optimizer, scheduler, metadata, config, accelerator.scaler)
        accelerator.print(f"resumed from {out_dir / STATE_DIR} at step {start_step}/{cfg.steps}")
    history = _read_history(log_path, start_step) if start_step else []
    if accelerator.is_main_process:
        _write_history(log_path, history)
    if tracker_names:
        accelerator.init_trackers(f"refrag-{task.name}", config=config)

    end_step = cfg.steps if max_new_steps is None else min(cfg.steps, start_step + max_new_steps)
    bar = tqdm(range(start_step, end_step), initial=start_step, total=cfg.steps, desc=task.name,
               disable=not progress or not accelerator.is_local_main_process)
    elapsed = history[-1]["seconds"] if history else 0.0
    for step in bar:
        tick = time.perf_counter()
        # dropout (the encoder trains in train mode) draws from torch's generator: seeded per step and
        # process, so a resumed run and an uninterrupted one draw the same masks
        torch.manual_seed(int(np.random.SeedSequence([cfg.seed, step, accelerator.process_index]).generate_state(1)[0]))
        stats = []
        for micro in range(cfg.grad_accum):
            # One stream per global micro-batch: N processes x A accumulation steps draw the same examples
            # as one process with N*A accumulation steps, so adding GPUs keeps the global batch.
            rng = np.random.default_rng([cfg.seed, step, micro * accelerator.num_processes + accelerator.process_index])
            examples, about = task.batch(step, rng)
            last = micro == cfg.grad_accum - 1
            with accelerator.autocast(), (accelerator.no_sync(objective) if not last else nullcontext()):
                out = objective(examples, rng)
                accelerator.backward(out.loss / cfg.grad_accum)
            stats.append(out)
        grad_norm = accelerator.clip_grad_norm_(params, cfg.clip_norm)
        prepared_optimizer.step()
        scheduler.step()
        prepared_optimizer.zero_grad(set_to_none=True)
        elapsed += time.perf_counter() - tick
        totals = accelerator.reduce(_totals(stats, accelerator.device), reduction="sum")  # all processes
        # fp16: the loss scaler skips a step whose gradients overflowed (and lowers its scale); its norm is inf
        row = _row(step, about, totals.tolist(), grad_norm, scheduler.get_last_lr()[-1], elapsed,
                   accelerator.optimizer_step_was_skipped)
        history.append(row)
        if accelerator.is_main_process:
            with log_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        if tracker_names:
            accelerator.log({k: v for k, v in row.items() if k != "step"}, step=step)
        bar.set_postfix(loss=f"{row['loss']:.3f}", **about)
        done = step + 1
        dropped_anyway = done == cfg.steps and not keep_state  # no resumable state to write for a finished run
        if cfg.save_every and (done % cfg.save_every == 0 or done == end_step) and not dropped_anyway:
            # every process takes part (FSDP gathers shards)
            save_state(out_dir, model, parts, optimizer, scheduler, done, metadata, config, accelerator.scaler,
                       write=accelerator.is_main_process)
            accelerator.wait_for_everyone()
    bar.close()
    if tracker_names:
        accelerator.end_training()
    finished = bool(history) and history[-1]["step"] == cfg.steps - 1
    if finished:
        if weights_in_preset_precision:
            back_to_preset(model, parts)
        weights = part_tensors(model, parts)  # every process: gathers the shards under FSDP
        if accelerator.is_main_process:
            write_weights(out_dir / WEIGHTS, weights, parts,
                          {**metadata, "step": str(cfg.steps), "config": json.dumps(settings, sort_keys=True)})
            if not keep_state:
                shutil.rmtree(out_dir / STATE_DIR, ignore_errors=True)
        accelerator.wait_for_everyone()
    back_to_preset(model, parts)
    for module in (model.encoder, model.projector, model.decoder):
        module.eval()
    return TrainResult(model, history, {**summarise(history, cfg, parts, finished),
                                        "mixed_precision": accelerator.mixed_precision})


# Fields added after runs and teachers' packs were written: stored only when they differ from their default,
# so a finished run or checkpoint of the same recipe still loads.
LATER_FIELDS = {"decoder_lr_scale": 1.0}


def stored_settings(cfg) -> dict:
    """A config as the weights' metadata and the checkpoint store it: the recipe (JSON types, LATER_FIELDS at
    their default and the save schedule left out)."""
    settings = recipe(json.loads(json.dumps(asdict(cfg))))
    return {key: value for key, value in settings.items() if LATER_FIELDS.get(key, object()) != value}


def finished_history(out_dir: Path, steps: int, settings: dict) -> list[dict] | None:
    """The logged steps of a run that finished in out_dir and left no resumable state behind (SFT arms drop
    it; a teacher's pack never holds it), or None when there is none to load. A finished run trained with
    other settings is refused, as a checkpoint is: loading it would pass it off as the learner's settings."""
    weights = out_dir / WEIGHTS
    if (out_dir / STATE_DIR).exists() or not weights.exists():
        return None
    metadata = read_metadata(weights)
    saved = json.loads(metadata.get("config", "null"))
    saved = None if saved is None else recipe(saved)
    if saved is not None and saved != settings:
        changed = sorted(k for k in {**saved, **settings} if saved.get(k) != settings.get(k))
        raise CourseError(
            f"{weights} holds a finished run trained with other settings ({', '.join(changed)}). Set them back "
            f"to load it, or give another RUN_DIR (or delete {out_dir}) to train with yours."
        )
    history = _read_history(out_dir / "metrics.jsonl", steps)
    if metadata.get("step") != str(steps) or len(history) != steps:
        return None  # weights written before the settings were stored, for another number of steps
    return history


def _totals(stats: list[TokenStats], device) -> torch.Tensor:
    """[scored tokens, summed NLL, correct tokens, examples] of this process's micro-batches."""
    return torch.tensor([sum(float(s.tokens.sum()) for s in stats), sum(float(s.nll.sum()) for s in stats),
                         sum(float(s.correct.sum()) for s in stats), sum(len(s.tokens) for s in stats)],
                        dtype=torch.float64, device=device)


def _row(step, about: dict, totals: list[float], grad_norm, lr, elapsed, skipped: bool) -> dict:
    tokens, nll, correct, examples = totals
    return {"step": step, "loss": nll / tokens, "token_accuracy": correct / tokens, **about,
            "examples": int(examples), "target_tokens": int(tokens),
            "grad_norm": float(grad_norm), "lr": lr, "seconds": round(elapsed, 3), "skipped": bool(skipped)}


def _read_history(path: Path, upto: int) -> list[dict]:
    """The logged rows of the steps before `upto` (rows after the checkpoint are re-done on resume)."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row for row in rows if row["step"] < upto]


def _write_history(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def summarise(history: list[dict], cfg, parts: list[str], finished: bool) -> dict:
    """Training numbers for metrics.json: time, throughput, and the mean loss of the first and the last
    fifth of the steps (single steps are noisy: each draws its own chunk count and examples)."""
    if not history:
        return {"steps_done": 0, "finished": finished}
    window = max(1, len(history) // 5)
    seconds = history[-1]["seconds"]
    examples = sum(row["examples"] for row in history)
    applied = [row["grad_norm"] for row in history if not row.get("skipped", False)]  # rows logged before: none
    return {
        "steps_done": len(history), "finished": finished, "train_seconds": seconds,
        "samples_per_second": examples / seconds if seconds else 0.0,
        # before clipping, of the steps applied: a spike here is the first sign of an unstable run
        "max_grad_norm": max(applied, default=float("nan")),
        "skipped_steps": len(history) - len(applied),  # fp16 steps the loss scaler skipped (gradients overflowed)
        "first_loss": float(np.mean([r["loss"] for r in history[:window]])),
        "last_loss": float(np.mean([r["loss"] for r in history[-window:]])),
        "trained_parts": parts, "config": asdict(cfg),
    }


# ---- runs: where documents come from and where weights go -------------------------------------------
def tokenized_documents(model: RefragModel, path: str | Path | None = None) -> tuple[list, list]:
    """(train, held-out) token lists of the course documents (or a user's .jsonl/.txt file)."""
    documents = load_documents(path or default_data_dir() / "documents.jsonl")
    train_docs, held_out = split_documents(documents)
    return [model.tokenize(d) for d in train_docs], [model.tokenize(d) for d in held_out]


def prepare_model(run, cfg: TrainConfig, init_from_recon: bool = True) -> RefragModel:
    """The preset's model, initialised from the reconstruction weights for CPT.

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
    model = load_refrag(run.preset)
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
) -> TrainResult:
    """Train one stage of a run; weights and metrics.jsonl go to RUN_DIR/<folder or stage>/. The resumable state
    goes once the stage has finished: the later notebooks read the weights, and on Drive a kept state would hold
    three times their size."""
    model = prepare_model(run, cfg, init_from_recon)
    train_docs, _ = tokenized_documents(model, documents)
    out_dir = run.stage_dir(folder or cfg.stage)
    result = train(model, cfg, StageTask(model, cfg, train_docs), out_dir, model_identity(run.preset, cfg.stage),
                   resume=resume, max_new_steps=max_new_steps, progress=progress, trackers=trackers, keep_state=False)
    result.summary["init_from_recon"] = init_from_recon if cfg.stage == "cpt" else None
    return result


def main(argv: list[str] | None = None) -> int:
    """`python -m refrag_lib train --stage recon|cpt ...` (also under `accelerate launch -m refrag_lib train`)."""
    parser = argparse.ArgumentParser(prog="python -m refrag_lib train", description=main.__doc__)
    parser.add_argument("--stage", required=True, choices=STAGES)
    parser.add_argument("--preset", default="cpu", choices=[*PRESETS, "auto"])
    parser.add_argument("--k", type=int, default=None, help="tokens per chunk (default: the preset's)")
    parser.add_argument("--run-dir", default="", help="artifacts folder (default runs/<preset>)")
    parser.add_argument("--folder", default="", help="sub-folder of the run (default: the stage name)")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--context", type=int, default=256, help="s: context tokens (s/k chunks)")
    parser.add_argument("--continuation", type=int, default=64, help="o: tokens CPT predicts")
    parser.add_argument("--positions", type=int, default=512, help="decoder positions per micro-batch")
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--warmup-fraction", type=float, default=0.04,
                        help="share of the steps warming up the LR (notebook 02 uses 0.15)")
    parser.add_argument("--lr", type=float, default=0.0, help="peak LR (default: the paper's for the stage)")
    parser.add_argument("--encoder-lr-scale", type=float, default=1.0,
                        help="the encoder's peak LR is --lr x this (the course's notebook 02 uses 0.1)")
    parser.add_argument("--expand-fraction", type=float, default=0.0, help="p: chunks left as tokens in CPT")
    parser.add_argument("--train-decoder", action="store_true", help="CPT: unfreeze the decoder too")
    parser.add_argument("--decoder-lr-scale", type=float, default=1.0,
                        help="with --train-decoder: the decoder's peak LR is --lr x this")
    parser.add_argument("--no-curriculum", action="store_true", help="every step uses s/k chunks")
    parser.add_argument("--one-chunk-share", type=float, default=0.0,
                        help="share of the steps on one chunk before the curriculum (notebook 02 uses 0.9)")
    parser.add_argument("--no-recon-init", action="store_true", help="CPT from scratch (Table 12 ablation)")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    parser.add_argument("--max-new-steps", type=int, default=None, help="stop after this many steps (resumable)")
    parser.add_argument("--save-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--documents", default=None, help=".jsonl ({'text'} or {'tokens'}) or .txt file")
    parser.add_argument("--trackers", nargs="*", default=[], help="tensorboard | mlflow | wandb")
    parser.add_argument("--fp32", action="store_true",
                        help="keep the maths in fp32 on a CPU with native bf16 (default there: bf16 autocast)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = TrainConfig(
        stage=args.stage, steps=args.steps, context_tokens=args.context, continuation_tokens=args.continuation,
        positions_per_step=args.positions, grad_accum=args.grad_accum, lr=args.lr,
        warmup_fraction=args.warmup_fraction, encoder_lr_scale=args.encoder_lr_scale,
        decoder_lr_scale=args.decoder_lr_scale, curriculum=not args.no_curriculum, one_chunk_share=args.one_chunk_share,
        expand_fraction=args.expand_fraction, train_decoder=args.train_decoder, seed=args.seed,
        save_every=args.save_every, cpu_bf16=not args.fp32,
    )
    run = open_run(args.preset, args.run_dir, k=args.k)
    result = train_stage(run, cfg, folder=args.folder, init_from_recon=not args.no_recon_init,
                         documents=args.documents, resume=not args.fresh, max_new_steps=args.max_new_steps,
                         progress=not args.no_progress, trackers=args.trackers)
    from accelerate import PartialState

    if PartialState().is_main_process:  # under `accelerate launch` every process gets here
        run.write_metrics(args.folder or cfg.stage, result.summary)
        print(json.dumps({k: v for k, v in result.summary.items() if k != "config"}, indent=1))
    return 0
