"""Safetensors checkpoints: the trained parts of a RefragModel, and the state a resumed run needs.

Only safetensors and JSON are read back (no pickle): weights and optimizer tensors in .safetensors,
everything else (step, scheduler, optimizer hyper-parameters) in a .json file. Every weights file
carries metadata (preset, k, stage, step, encoder and decoder names) that is checked on load, so a
checkpoint of another preset or k is refused with a clear message instead of being half-loaded.
Tensors go through torch.distributed.checkpoint's state-dict API, so one code path saves and loads a
plain model and one sharded by FSDP2: shards are gathered into whole tensors, written once by the main
process, and every process takes its own shard back on resume.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from torch import nn

from .errors import CourseError

WEIGHTS = "weights.safetensors"  # the trained parts after a finished stage (what later notebooks load)
STATE_DIR = "checkpoint"  # the resumable state of an unfinished (or finished) run
IDENTITY_KEYS = ("preset", "k", "encoder", "decoder")  # what must match to load or resume
# Settings that say when state is written, not what is learnt: left out when a run's settings are stored or compared,
# so a run saved on another schedule (or before SFT stopped writing resumable state) still loads and resumes.
SCHEDULE_ONLY = ("save_every",)


def recipe(settings: dict) -> dict:
    """A run's stored settings without those of its save schedule (SCHEDULE_ONLY)."""
    return {key: value for key, value in settings.items() if key not in SCHEDULE_ONLY}


def model_identity(preset, stage: str) -> dict[str, str]:
    """The metadata that ties weights to a preset: its models and k."""
    return {"preset": preset.name, "k": str(preset.k), "encoder": preset.encoder, "decoder": preset.decoder,
            "stage": stage}


def _parts_module(model: nn.Module, parts: list[str]) -> nn.ModuleDict:
    """A view of the trained parts under their names (no copy), so tied weights are saved once."""
    return nn.ModuleDict({part: getattr(model, part) for part in parts})


def _full_state_options(**options):
    """torch.distributed.checkpoint options for whole (gathered) tensors rather than per-process shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **options)


def _aliases(view: nn.Module) -> set[str]:
    """Names of tied parameters beyond their first name (a tied embedding is written once)."""
    every = {name for name, _ in view.named_parameters(remove_duplicate=False)}
    return every - {name for name, _ in view.named_parameters()}


def part_tensors(model: nn.Module, parts: list[str]) -> dict[str, torch.Tensor]:
    """Whole CPU copies of the named parts' tensors, under the names a weights file uses.

    Works on a plain model and on one accelerate sharded with FSDP2 (the shards are gathered). Under
    several processes every process must call it (it is a collective) and only the first receives tensors.
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    view = _parts_module(model, parts)
    state = get_model_state_dict(view, options=_full_state_options(cpu_offload=True))
    aliases = _aliases(view)
    return {name: tensor.contiguous() for name, tensor in state.items() if name not in aliases}


def write_weights(path: Path, tensors: dict[str, torch.Tensor], parts: list[str], metadata: dict[str, str]) -> Path:
    """Write tensors named `<part>.<name>` to one safetensors file, atomically."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={**metadata, "parts": ",".join(parts)})
    tmp.replace(path)
    return path


def save_weights(path: Path, model: nn.Module, parts: list[str], metadata: dict[str, str]) -> Path:
    """Write the named parts of a (single-process) model, e.g. encoder and projector, to one file."""
    return write_weights(path, part_tensors(model, parts), parts, metadata)


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata of a safetensors file, or a CourseError saying the file is corrupt."""
    return _read_header(path, lambda f: dict(f.metadata() or {}))


def saved_names(path: Path) -> set[str]:
    """The tensor names a safetensors file holds (read from its header), or a CourseError if it is corrupt."""
    return _read_header(path, lambda f: set(f.keys()))


def _read_header(path: Path, read):
    from safetensors import safe_open

    if not path.is_file():
        raise CourseError(f"{path} does not exist.")
    try:
        with safe_open(str(path), framework="pt") as f:
            return read(f)
    except Exception as err:  # safetensors raises several error types for a damaged header
        raise CourseError(
            f"{path} is not a readable safetensors file ({err}). It is probably a half-written or corrupt "
            "checkpoint: delete it and re-run the training cell."
        ) from err


def check_identity(metadata: dict[str, str], expected: dict[str, str], path: Path) -> None:
    """Refuse a file written for another preset, k or model pair (and say what to do)."""
    wrong = [f"{key}={metadata.get(key)!r} (expected {expected[key]!r})"
             for key in IDENTITY_KEYS if metadata.get(key) != expected[key]]
    if wrong:
        raise CourseError(
            f"{path} was written for another configuration: {', '.join(wrong)}. Use the preset and k it was "
            "trained with, or pick another RUN_DIR (or delete that folder) to train this configuration."
        )


def load_weights(path: Path, model: nn.Module, expected: dict[str, str], stage: str | None = None) -> dict[str, str]:
    """Load the parts a weights file holds into a model after checking its metadata (preset, k, models,
    stage) and that its names are exactly those of the parts. The model may be sharded by FSDP2: every
    process reads the file and keeps its own shard."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    metadata = read_metadata(path)
    check_identity(metadata, expected, path)
    if stage is not None and metadata.get("stage") != stage:
        raise CourseError(f"{path} holds weights of stage {metadata.get('stage')!r}, not {stage!r}.")
    parts = [p for p in metadata.get("parts", "").split(",") if p]
    view = _parts_module(model, parts) if parts and all(hasattr(model, p) for p in parts) else nn.ModuleDict()
    expected_names = set(view.state_dict()) - _aliases(view)
    try:
        tensors = load_file(str(path))
        if not parts or set(tensors) != expected_names:
            raise ValueError(f"parts {parts}, differing names {sorted(set(tensors) ^ expected_names)[:3]}")
        set_model_state_dict(view, tensors, options=_full_state_options(strict=False))
    except Exception as err:
        raise CourseError(
            f"{path} could not be loaded into the model ({err}): it is corrupt or from another model. "
            "Delete it and re-run the training cell."
        ) from err
    return metadata


def guard_folder(folder: Path, expected: dict[str, str]) -> None:
    """Never train over a folder that holds weights of another preset/k: stop and say why."""
    for path in (folder / WEIGHTS, folder / STATE_DIR / "model.safetensors"):
        if path.exists():
            check_identity(read_metadata(path), expected, path)


# ---- resumable state ------------------------------------------------------------------------------
STATE_FORMAT = 2  # optimizer moments keyed by parameter name (format 1 keyed them by position)


def save_state(folder: Path, model: nn.Module, parts: list[str], optimizer, scheduler, step: int,
               metadata: dict[str, str], config: dict, scaler=None, write: bool = True) -> None:
    """Everything a resumed run needs, written to a temporary folder and swapped in (a crash mid-save
    leaves the previous checkpoint intact). Under several processes all of them call it (sharded weights
    and optimizer moments are gathered) and only the main one writes (write=True). `scaler`: fp16's loss
    scaler (accelerator.scaler), whose scale a resumed run continues from instead of relearning it through
    skipped steps."""
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    weights = part_tensors(model, parts)
    optimizer_state = get_optimizer_state_dict(_parts_module(model, parts), optimizer,
                                               options=_full_state_options(cpu_offload=True))
    if not write:
        return
    target = folder / STATE_DIR
    tmp = folder / (STATE_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_weights(tmp / "model.safetensors", weights, parts, {**metadata, "step": str(step)})
    tensors = {f"state.{name}.{key}": value.detach().cpu().contiguous()
               for name, state in optimizer_state["state"].items() for key, value in state.items()}
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    save_file(tensors, str(tmp / "optimizer.safetensors"), metadata={**metadata, "step": str(step)})
    scheduler_state = {key: value for key, value in scheduler.state_dict().items() if key != "lr_lambdas"}
    (tmp / "state.json").write_text(json.dumps({
        "format": STATE_FORMAT, "step": step, "metadata": metadata, "config": config,
        "param_groups": optimizer_state["param_groups"], "scheduler": scheduler_state,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
    }, indent=1))
    old = folder / (STATE_DIR + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def load_state(folder: Path, model: nn.Module, parts: list[str], optimizer, scheduler, metadata: dict[str, str],
               config: dict, scaler=None) -> int:
    """Restore a run saved by save_state into a plain or sharded model; returns the step to continue from."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    target = folder / STATE_DIR
    try:
        state = json.loads((target / "state.json").read_text())
    except (OSError, ValueError) as err:
        raise CourseError(f"{target}/state.json is missing or corrupt ({err}): delete {target} and re-run.") from err
    if state.get("format") != STATE_FORMAT:
        raise CourseError(
            f"The checkpoint in {target} was written by an earlier version of the course, which stored the "
            "optimizer differently. Finish that run with the version that wrote it, or delete that folder to "
            "start the stage over."
        )
    saved, config = recipe(state["config"]), recipe(config)
    if saved != config:
        changed = sorted(k for k in {**config, **saved} if config.get(k) != saved.get(k))
        raise CourseError(
            f"The checkpoint in {target} was written with other training settings ({', '.join(changed)}). "
            "Re-run with the same settings to resume, or delete that folder to start over."
        )
    load_weights(target / "model.safetensors", model, metadata)
    read_metadata(target / "optimizer.safetensors")
    tensors = load_file(str(target / "optimizer.safetensors"))
    per_param: dict[str, dict] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            name, moment = key.removeprefix("state.").rsplit(".", 1)
            per_param.setdefault(name, {})[moment] = value
    set_optimizer_state_dict(_parts_module(model, parts), optimizer,
                             {"state": per_param, "param_groups": state["param_groups"]},
                             options=_full_state_options(strict=False))  # parameters never reached have none
    scheduler.load_state_dict({**state["scheduler"], "lr_lambdas": [None] * len(state["param_groups"])})
    if scaler is not None and state.get("scaler"):  # states saved before the scaler was: it starts anew
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(tensors["rng.torch"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return int(state["step"])
