"""Artifacts of a run: RUN_DIR/<stage>/ with metrics.json and safetensors weights.

Each notebook reads what the previous ones wrote; a missing artifact names the notebook to run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .config import RUN_ROOT_VARIABLE, Preset, get_preset
from .errors import MissingArtifactError

DRIVE_MOUNT = "/content/drive"
# Where runs go in Colab (the setup cell's KEEP_ON_DRIVE): every notebook has a runtime of its own, and only Drive
# carries one notebook's results to the next.
DRIVE_RUNS = f"{DRIVE_MOUNT}/MyDrive/refrag-course/runs"

# Which notebook writes each stage's artifacts.
STAGE_NOTEBOOKS = {
    "index": "01_indexing",
    "recon": "02_reconstruction",
    "cpt": "03_cpt",
    "policy": "04_policy_grpo",
    "sft": "05_sft",
    "bench": "06_ttft_benchmark",
}


@dataclass(frozen=True)
class Run:
    """One run folder (default runs/<preset>) and the preset it was made with."""

    root: Path
    preset: Preset
    smoke: bool = False

    def stage_dir(self, stage: str) -> Path:
        """The folder of a stage's artifacts, created on first use."""
        path = self.root / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_metrics(self, stage: str, metrics: dict) -> Path:
        """Write RUN_DIR/<stage>/metrics.json (the contract later notebooks and tests read)."""
        path = self.stage_dir(stage) / "metrics.json"
        payload = {"preset": self.preset.name, "k": self.preset.k, "smoke": self.smoke, **metrics}
        path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        return path

    def require(self, stage: str, name: str = "metrics.json") -> Path:
        """The path of an artifact an earlier notebook wrote, or an error naming that notebook."""
        path = self.root / stage / name
        if not path.exists():
            notebook = STAGE_NOTEBOOKS.get(stage, stage)
            advice = colab_missing_artifact_advice(self.root, notebook, self.preset.name) or (
                f"Run notebooks/{notebook}.ipynb first with the same RUN_DIR ({self.root}) and PRESET "
                f"({self.preset.name}).")
            raise MissingArtifactError(f"{path} is missing. {advice}")
        return path

    def read_metrics(self, stage: str) -> dict:
        return json.loads(self.require(stage).read_text())

    def write_study(self, relative: str, table: dict) -> Path:
        """Write a study's table (a command's output, e.g. cpt/fair/fair.json) inside the run."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(table, indent=1))
        return path

    def read_study(self, relative: str) -> dict | None:
        """A study's table if its command was run on this run, else None (studies are optional)."""
        path = self.root / relative
        return json.loads(path.read_text()) if path.is_file() else None


def open_run(preset: str = "cpu", run_dir: str | Path = "", smoke: bool = False, k: int | None = None) -> Run:
    """The run folder for a preset: RUN_DIR if given, else <runs root>/<preset> (see `runs_root`)."""
    resolved = get_preset(preset, k=k)
    root = Path(run_dir) if run_dir else runs_root() / resolved.name
    root.mkdir(parents=True, exist_ok=True)
    return Run(root=root.resolve(), preset=resolved, smoke=smoke)


def runs_root() -> Path:
    """Where runs go when no RUN_DIR is given: $REFRAG_RUN_ROOT if set, else runs/ in the course checkout."""
    return Path(os.environ.get(RUN_ROOT_VARIABLE) or repo_root() / "runs")


def repo_root() -> Path:
    """The course checkout (the folder that holds refrag_lib/)."""
    return Path(__file__).resolve().parent.parent


def course_commit(short: bool = False, checkout: Path | None = None) -> str:
    """The commit of the course checkout (`git rev-parse HEAD`), or '' outside git (a copy, no git installed):
    what a pack's manifest and the site's pages record of where they came from."""
    command = ["git", "-C", str(checkout or repo_root()), "rev-parse", *(["--short"] if short else []), "HEAD"]
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except FileNotFoundError:
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def in_colab() -> bool:
    """True inside a Colab runtime (its kernel imports google.colab before any cell runs)."""
    return "google.colab" in sys.modules


def colab_missing_artifact_advice(run_root: Path, notebook: str, preset: str) -> str:
    """What to do in Colab when an earlier notebook's artifact is missing ('' outside Colab)."""
    if not in_colab():
        return ""
    if not Path(run_root).resolve().is_relative_to(Path(DRIVE_MOUNT).resolve()):
        return (f"In Colab each notebook runs in its own runtime and only Google Drive carries results: set "
                f"KEEP_ON_DRIVE = True in the setup cell of {notebook} and of this notebook, and run {notebook} first.")
    return (f"This runtime reads runs from Google Drive: open notebooks/{notebook}.ipynb in Colab, run it with "
            f"KEEP_ON_DRIVE = True and PRESET '{preset}', then run this notebook again.")
