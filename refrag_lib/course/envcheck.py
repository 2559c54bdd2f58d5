"""The environment check a workshop attendee runs first (notebook 00, `python -m refrag_lib check`).

Every check says what it found and, when something is missing, the one command or click that fixes
it, so nobody is stuck half-way through notebook 02 on something that could be known in a minute.
Nothing here loads a model or downloads anything.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ..config import PRESETS, get_preset
from ..runs import runs_root
from .footprint import GB, GIB, largest_default_stage, model_cache_bytes, resident_bytes, run_bytes

# What the course imports, by distribution name (faiss ships as one of two).
PACKAGES = ("torch", "transformers", "accelerate", "safetensors", ("faiss-gpu-cu12", "faiss-cpu"), "matplotlib",
            "ipywidgets", "scipy", "gguf")
DRIVE_PREFIX = "/content/drive"  # Colab's mount of Google Drive, where deleted files stay in the trash
INSTALL_HINT = "run `make venv` (or `pip install -r requirements.txt`)"


@dataclass(frozen=True)
class Check:
    """One line of the report: what was looked at, whether it is fine, what was found, how to fix it."""

    name: str
    ok: bool
    found: str
    fix: str = ""


def python_check() -> Check:
    version = platform.python_version()
    return Check("python", sys.version_info >= (3, 10), version, "install Python 3.10 or newer")


def package_check(names: str | tuple[str, ...]) -> Check:
    """Installed version of a distribution (the first of alternatives that is installed)."""
    names = (names,) if isinstance(names, str) else names
    for name in names:
        try:
            return Check(name, True, importlib.metadata.version(name))
        except importlib.metadata.PackageNotFoundError:
            continue
    return Check(" or ".join(names), False, "not installed", INSTALL_HINT)


def device_check(preset) -> Check:
    """The device the preset computes on, and whether it is there."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        found = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    else:
        found = f"CPU only ({torch.get_num_threads()} torch threads)"
    ok = preset.device == "cpu" or torch.cuda.is_available()
    fix = "" if ok else (f"preset '{preset.name}' needs a GPU: in Colab Runtime > Change runtime type > GPU; "
                         "on a laptop use PRESET='cpu' (or 'auto')")
    return Check("device", ok, found, fix)


def gpu_memory_check(preset) -> Check:
    """Whether the GPU holds the preset's most memory-hungry training stage (footprint.stage_memory's estimate)."""
    import torch

    stage, needed = largest_default_stage(preset)
    if preset.device != "cuda" or not torch.cuda.is_available():
        return Check("GPU memory", True, "not used (CPU preset or no GPU)")
    total = torch.cuda.get_device_properties(0).total_memory
    ok = total >= needed
    found = f"{total / GIB:.0f} GiB; preset '{preset.name}' needs about {needed / GIB:.0f} GiB ({stage})"
    smaller = "'t4'" if preset.name != "t4" else "'cpu'"
    return Check("GPU memory", ok, found, "" if ok else f"this GPU is too small for preset '{preset.name}': use "
                 f"PRESET={smaller} (or a GPU with more memory)")


def faiss_gpu_check() -> Check:
    """Where the course's index is searched: the CPU (exact, well under a millisecond a query), whatever faiss
    could do on this GPU, which is said for information only."""
    from ..index import faiss_gpu_unavailable  # here, not at the top: index imports transformers

    reason = faiss_gpu_unavailable()
    found = f"CPU index ({reason}; nothing to do)" if reason else "CPU index (faiss could use this GPU; not needed)"
    return Check("faiss", True, found)


def model_checks(preset) -> list[Check]:
    """Offline models: is their package installed? Hub models: will they download (token for gated ones)?"""
    from ..hub import OFFLINE_MODELS, hub_token  # here, not at the top: hub imports transformers, which a check reports

    roles = [("encoder", preset.encoder), ("retriever", preset.retriever), ("decoder", preset.decoder)]
    checks = []
    for role, name in (pair for pair in roles if pair[1]):  # no retriever of its own: the encoder retrieves
        if name in OFFLINE_MODELS:
            entry = OFFLINE_MODELS[name]
            present = importlib.util.find_spec(entry.package) is not None
            checks.append(Check(f"{role} model", present, f"{name} ({'installed' if present else 'missing'})",
                                "" if present else entry.install))
        elif preset.gated and role == "decoder":
            token = bool(hub_token())
            checks.append(Check(f"{role} model", token, f"{name} (gated hub model)",
                                "" if token else "accept the licence on huggingface.co, then add the Colab "
                                "secret HF_TOKEN or set HF_TOKEN"))
        else:
            checks.append(Check(f"{role} model", True, f"{name} (downloaded from the hub on first use)"))
    return checks


def disk_needed(preset, where: Path) -> int:
    """Bytes a default run needs where it goes: on Google Drive every byte it writes (the trash keeps what is
    deleted for 30 days), on a local disk the most it holds at once plus the models' cache."""
    if str(where).startswith(DRIVE_PREFIX):
        return run_bytes(preset)
    return resident_bytes(preset) + model_cache_bytes(preset)


def disk_check(preset, where: Path) -> Check:
    """Free disk where the runs go, against what the preset's run writes there (refrag_lib.course.footprint)."""
    needed = disk_needed(preset, where)
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    ok = free >= needed
    found = f"{free / GB:.1f} GB free at {where} (preset '{preset.name}' needs about {needed / GB:.1f} GB)"
    fix = (f"free {(needed - free) / GB:.1f} GB there (on Google Drive: empty its trash too), or set RUN_DIR "
           "(and REFRAG_CACHE_DIR) to a larger disk")
    return Check("disk", ok, found, "" if ok else fix)


def environment_checks(preset_name: str = "auto", run_root: Path | None = None) -> list[Check]:
    """Every check, in the order a newcomer should fix them; stops before the model checks when a
    package the checks themselves need is missing."""
    checks = [python_check(), *(package_check(name) for name in PACKAGES)]
    if not all(c.ok for c in checks):
        return checks
    preset = get_preset(preset_name)
    return [*checks, device_check(preset), gpu_memory_check(preset), faiss_gpu_check(), *model_checks(preset),
            disk_check(preset, run_root or runs_root())]


def format_checks(checks: list[Check]) -> str:
    """A plain-text table, then one line per fix."""
    lines = [f"{'ok' if c.ok else 'FIX':4s} {c.name:16s} {c.found}" for c in checks]
    fixes = [f"- {c.name}: {c.fix}" for c in checks if not c.ok]
    lines += ["", "To fix:", *fixes] if fixes else ["", "All set: go on with notebooks/01_indexing.ipynb."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m refrag_lib check`: is this machine ready for the course? Exit status 1 when not."""
    parser = argparse.ArgumentParser(prog="python -m refrag_lib check", description=main.__doc__)
    parser.add_argument("--preset", default="auto", choices=[*PRESETS, "auto"])
    args = parser.parse_args(argv)
    checks = environment_checks(args.preset)
    print(format_checks(checks))
    return 0 if all(c.ok for c in checks) else 1
