"""The one training loop every stage shares, on accelerate: reconstruction and CPT (refrag_lib.stages), mixed
CPT (refrag_lib.mixed_cpt) and the RAG QA fine-tuning of both arms (refrag_lib.sft).

A stage is a *task*: which parts it trains, its loss (a module, so accelerate can wrap it) and the
examples of each step. Every step's examples come from a generator seeded by (seed, step, micro-batch): a resumed
run sees exactly the data an uninterrupted one would, and the step counter is the whole data position. Mixed
precision follows the preset, with the trained parts kept in float32 (AdamW on fp16 weights loses small updates);
on a CPU whose cores do bf16 maths natively the fp32 presets train under bf16 autocast (refrag_lib.precision).
AdamW, linear warm-up, cosine decay, gradient clipping and accumulation, as in the paper. Under
`accelerate launch` (DDP, or FSDP2 for decoders that do not fit one GPU) each process trains on its own
micro-batches of the same global batch, and checkpoints and metrics are written once, by the main process.
"""

from __future__ import annotations

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
    part_tensors,
    read_metadata,
    recipe,
    save_state,
    write_weights,
)
from .errors import CourseError
from .losses import TokenStats
from .model import RefragModel
from .precision import back_to_preset, master_weights, mixed_precision


@dataclass
class TrainResult:
    model: RefragModel
    history: list[dict] = field(default_factory=list)  # one row per step (also in metrics.jsonl)
    summary: dict = field(default_factory=dict)


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
    save_every, seed: a stages.TrainConfig or an sft.SFTConfig); task says what is trained on what
    (stages.StageTask, sft.SFTTask). max_new_steps stops the run early (state saved), e.g. to spread training over
    Colab sessions. keep_state=False removes the resumable state once the run has finished and its weights are
    written (it holds the optimizer moments: three times the size of the weights). cfg.save_every = 0 writes
    no resumable state at all (the short SFT arms: an interrupted arm starts over). The trained parts train in
    fp32 and return to the preset's precision at the end (refrag_lib.precision). weights_in_preset_precision:
    write the finished weights in that precision too (half the bytes of fp32 for a GPU preset), for a stage whose
    weights are only read afterwards, never trained on: what is evaluated is the same either way.
    """
    from tqdm.auto import tqdm

    out_dir.mkdir(parents=True, exist_ok=True)
    guard_folder(out_dir, identity)
    settings = stored_settings(cfg)
    if max_new_steps is not None and not cfg.save_every:
        raise CourseError("max_new_steps stops a run to resume it later, which needs a resumable state: set "
                          "save_every > 0 (save_every = 0 writes none).")
    done_before = finished_history(out_dir, cfg.steps, settings) if resume else None
    if done_before is not None:  # a stage that finished here (an SFT arm, a teacher's pack): load, do not retrain
        return _load_finished(model, cfg, task, out_dir, identity, done_before)
    tracker_names = _trackers(list(trackers or []))
    accelerator = _accelerator(model, cfg, out_dir, tracker_names)
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
        stats, about = _accumulate(accelerator, objective, task, cfg, step)
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
        _write_finished(accelerator, model, parts, out_dir, metadata, cfg, settings, keep_state,
                        weights_in_preset_precision)
    _back_to_evaluation(model, parts)
    return TrainResult(model, history, {**summarise(history, cfg, parts, finished),
                                        "mixed_precision": accelerator.mixed_precision})


def _load_finished(model: RefragModel, cfg, task, out_dir: Path, identity: dict[str, str],
                   history: list[dict]) -> TrainResult:
    """A run that finished in out_dir: its weights loaded and its logged steps returned, nothing trained."""
    load_weights(out_dir / WEIGHTS, model, identity, stage=task.name)
    print(f"loaded the finished {task.name} run from {out_dir / WEIGHTS} ({cfg.steps} steps); nothing to train")
    _back_to_evaluation(model, task.parts)
    return TrainResult(model, history, {**summarise(history, cfg, task.parts, True), "loaded": True,
                                        "mixed_precision": mixed_precision(model, cfg)})


def _accelerator(model: RefragModel, cfg, out_dir: Path, tracker_names: list[str]):
    """accelerate's Accelerator for this run: the preset's mixed precision, DDP or FSDP2 under `accelerate launch`."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import DistributedType

    accelerator = Accelerator(
        mixed_precision=mixed_precision(model, cfg),
        cpu=model.device.type == "cpu", log_with=tracker_names or None, project_dir=str(out_dir),
        # the encoder's pooler (and, in recon, nothing else) gets no gradient: let DDP skip it
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    if accelerator.distributed_type == DistributedType.FSDP and not accelerator.is_fsdp2:
        raise CourseError("Sharded training needs FSDP2: set fsdp_version: 2 (see configs/accelerate/fsdp.yaml).")
    return accelerator


def _accumulate(accelerator, objective, task, cfg, step: int) -> tuple[list[TokenStats], dict]:
    """One step's forward and backward passes over its cfg.grad_accum micro-batches: (their stats, what the last
    one's log row says about its examples)."""
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
    return stats, about


def _write_finished(accelerator, model: RefragModel, parts: list[str], out_dir: Path, metadata: dict, cfg,
                    settings: dict, keep_state: bool, in_preset_precision: bool) -> None:
    """The finished run's weights, with its recipe in their metadata; the resumable state goes unless kept."""
    if in_preset_precision:
        back_to_preset(model, parts)
    weights = part_tensors(model, parts)  # every process: gathers the shards under FSDP
    if accelerator.is_main_process:
        write_weights(out_dir / WEIGHTS, weights, parts,
                      {**metadata, "step": str(cfg.steps), "config": json.dumps(settings, sort_keys=True)})
        if not keep_state:
            shutil.rmtree(out_dir / STATE_DIR, ignore_errors=True)
    accelerator.wait_for_everyone()


def _back_to_evaluation(model: RefragModel, parts: list[str]) -> None:
    """After training: the trained parts in the preset's precision, every part in eval mode."""
    back_to_preset(model, parts)
    for module in (model.encoder, model.projector, model.decoder):
        module.eval()


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
