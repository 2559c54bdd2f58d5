"""Regression runs: gather every stage's metrics.json, report them, compare with committed baselines.

A baseline file (tests/baselines/<name>.json) lists the metrics worth guarding, each with its
reference value, which direction is better and how far it may move before it counts as a
regression. Timings depend on the machine and are reported, never compared, unless a baseline
names them on purpose.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path

from ..errors import CourseError, MissingArtifactError

STAGES = ("index", "recon", "cpt", "policy", "sft", "bench")


def flatten(metrics: dict, prefix: str = "") -> dict[str, float]:
    """{"log_ppl": {"refrag": 2.1}} -> {"log_ppl.refrag": 2.1}; numbers only (lists and strings are skipped)."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def gather(run_dir: Path) -> dict[str, float]:
    """Every numeric metric of every stage a run wrote, keyed "<stage>.<path>"."""
    found = {}
    for stage in STAGES:
        path = run_dir / stage / "metrics.json"
        if path.exists():
            found.update(flatten(json.loads(path.read_text()), f"{stage}."))
    if not found:
        raise MissingArtifactError(f"No metrics.json under {run_dir}: run the notebooks first (make course).")
    return found


def versions() -> dict[str, str]:
    """The versions a report should carry so runs on different machines can be compared."""
    import importlib.metadata as md

    import torch

    out = {"python": platform.python_version(), "machine": platform.machine()}
    for package in ("torch", "transformers", "accelerate", "faiss-gpu-cu12", "faiss-cpu", "refrag-course"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            continue
    out["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return out


@dataclass(frozen=True)
class Check:
    """One guarded metric: its reference value, the better direction and the allowed slack."""

    metric: str
    reference: float
    higher_is_better: bool
    tolerance: float  # absolute slack in the metric's own unit

    def regressed(self, value: float) -> bool:
        worse_by = (self.reference - value) if self.higher_is_better else (value - self.reference)
        return worse_by > self.tolerance

    def describe(self, value: float | None) -> str:
        arrow = "higher" if self.higher_is_better else "lower"
        shown = "missing" if value is None else f"{value:.4g}"
        rule = f"{arrow} is better, tolerance {self.tolerance:g}"
        return f"{self.metric}: new {shown}, reference {self.reference:.4g} ({rule})"


def load_baseline(path: Path) -> list[Check]:
    """Read tests/baselines/<name>.json: {"metrics": {name: {reference, higher_is_better, tolerance}}}."""
    if not path.exists():
        raise MissingArtifactError(
            f"No baseline at {path}: copy tests/baselines/cpu-smoke.json (the list of guarded metrics) to that "
            "path, then record this run's values with `make baseline PRESET=...`."
        )
    try:
        entries = json.loads(path.read_text())["metrics"]
        return [
            Check(name, float(e["reference"]), bool(e["higher_is_better"]), float(e["tolerance"]))
            for name, e in entries.items()
        ]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CourseError(f"{path} is not a baseline file ({err}); restore it from git or rebuild it.") from err


def compare(found: dict[str, float], checks: list[Check]) -> list[str]:
    """One line per regression (a guarded metric that got worse than its tolerance, or went missing)."""
    problems = []
    for check in checks:
        value = found.get(check.metric)
        if value is None or check.regressed(value):
            problems.append(check.describe(value))
    return problems


def refresh_baseline(path: Path, found: dict[str, float]) -> None:
    """Record the current values as references, keeping each metric's direction and tolerance."""
    data = json.loads(path.read_text())
    for name, entry in data["metrics"].items():
        if name not in found:
            raise CourseError(f"{name} is guarded by {path} but this run did not produce it.")
        entry["reference"] = round(found[name], 6)
    path.write_text(json.dumps(data, indent=2) + "\n")


def report(found: dict[str, float], checks: list[Check], problems: list[str]) -> str:
    """A markdown report: versions, guarded metrics with their references, every other metric."""
    lines = ["# REFRAG course regression report", ""]
    lines += [f"- {name}: {value}" for name, value in versions().items()]
    lines += ["", "| metric | value | reference | status |", "|---|---|---|---|"]
    guarded = {c.metric: c for c in checks}
    for name in sorted(found):
        check = guarded.get(name)
        ref = f"{check.reference:.4g}" if check else ""
        status = ("REGRESSED" if check.regressed(found[name]) else "ok") if check else ""
        lines.append(f"| {name} | {found[name]:.4g} | {ref} | {status} |")
    lines += ["", f"{len(problems)} regression(s)."] + [f"- {p}" for p in problems]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """`python -m refrag_lib regress --run-dir DIR --baseline FILE [--refresh]`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m refrag_lib regress", description=main.__doc__)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--baseline", required=True, help="tests/baselines/<preset>.json")
    parser.add_argument("--refresh", action="store_true", help="record this run's values as the new references")
    args = parser.parse_args(argv)
    run_dir, baseline = Path(args.run_dir), Path(args.baseline)
    found = gather(run_dir)
    if args.refresh:
        refresh_baseline(baseline, found)
        print(f"references in {baseline} refreshed from {run_dir}")
        return 0
    checks = load_baseline(baseline)
    problems = compare(found, checks)
    text = report(found, checks, problems)
    (run_dir / "regression_report.md").write_text(text)
    (run_dir / "regression_report.json").write_text(
        json.dumps({"versions": versions(), "metrics": found, "regressions": problems}, indent=2) + "\n"
    )
    print(text)
    return 1 if problems else 0
