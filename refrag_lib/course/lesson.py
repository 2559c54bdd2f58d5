"""What every lesson shows around its own work: where it stands in REFRAG's pipeline, and how its results
compare with the course's reference run.

The pipeline picture is drawn from one list (STEPS), so the eight notebooks cannot drift apart. The reference
run is the default `make course` run on the cpu preset whose guarded metrics the regression baseline keeps
(tests/baselines/cpu.json; cpu-smoke.json for SMOKE runs): a learner's run prints its figures beside those,
with the verdict the baseline's tolerance supports, instead of prose with typed numbers.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

from ..runs import repo_root
from .regress import Check, flatten, load_baseline


@dataclass(frozen=True)
class Step:
    notebook: str  # "02"
    name: str  # what the step is called in the pipeline
    does: str  # one line: what it adds to REFRAG


STEPS = (
    Step("00", "setup", "check the machine; time the payoff before any training"),
    Step("01", "retrieve", "question → top-K passages; each passage cut into chunks of k tokens"),
    Step("02", "compress", "encoder + projector φ learn to write a chunk into ONE vector the decoder reads back"),
    Step("03", "read", "continual pre-training: the model learns to use the vectors to predict what comes next"),
    Step("04", "select", "an RL policy picks the few chunks worth keeping as tokens"),
    Step("05", "answer", "fine-tune on questions: REFRAG against ordinary RAG, exact match and F1"),
    Step("06", "measure", "time to first token, memory and decoding speed, against the analytic ratio"),
    Step("07", "play", "ask your own questions and see which chunks were expanded"),
)
HERE_BACKGROUND, HERE_TEXT = "#1f6feb", "#ffffff"  # the current step: white on blue reads in light and dark themes
OTHER_BACKGROUND, OTHER_TEXT = "#eaeef2", "#1f2328"


def _step(notebook: str) -> Step:
    for step in STEPS:
        if step.notebook == notebook:
            return step
    raise ValueError(f"No notebook {notebook!r} in the course; the notebooks are {[s.notebook for s in STEPS]}.")


def pipeline_text(notebook: str) -> str:
    """The pipeline as text, the current step marked (what a terminal or a papermill log shows)."""
    here = _step(notebook)
    lines = [f"{'►' if step is here else ' '} {step.notebook} {step.name:<9} {step.does}" for step in STEPS]
    return "REFRAG, step by step (► you are here)\n" + "\n".join(lines)


def pipeline_html(notebook: str) -> str:
    """The pipeline as a row of boxes, the current one highlighted, each with its text colour set."""
    here = _step(notebook)
    boxes = []
    for step in STEPS:
        background, text = (HERE_BACKGROUND, HERE_TEXT) if step is here else (OTHER_BACKGROUND, OTHER_TEXT)
        boxes.append(f'<div style="flex:1;min-width:7em;padding:6px;border-radius:6px;background:{background};'
                     f'color:{text};font-size:12px" title="{html.escape(step.does)}"><b>{step.notebook} '
                     f'{step.name}</b><br>{html.escape(step.does)}</div>')
    return (f'<div style="display:flex;gap:4px;flex-wrap:wrap;margin:4px 0">{"".join(boxes)}</div>'
            f'<div style="font-size:12px">You are here: <b>{here.notebook} {here.name}</b>, {html.escape(here.does)}.'
            "</div>")


class _Pipeline:
    """Displays as HTML in a notebook and as text anywhere else."""

    def __init__(self, notebook: str):
        self.notebook = notebook

    def _repr_html_(self) -> str:
        return pipeline_html(self.notebook)

    def __repr__(self) -> str:
        return pipeline_text(self.notebook)


def show_pipeline(notebook: str) -> _Pipeline:
    """The picture a lesson opens with: REFRAG's steps, this notebook's marked."""
    _step(notebook)
    return _Pipeline(notebook)


# ---- this run beside the reference run --------------------------------------------------------------
REFERENCE_DIR = repo_root() / "tests" / "baselines"


def reference_file(preset: str, smoke: bool) -> Path:
    """The reference run of this preset if the course has one, else the cpu preset's (the course's own run)."""
    suffix = "-smoke" if smoke else ""
    own = REFERENCE_DIR / f"{preset}{suffix}.json"
    return own if own.exists() else REFERENCE_DIR / f"cpu{suffix}.json"


def verdict(check: Check, value: float) -> str:
    """Where this run's value falls against the reference, in the baseline's own tolerance."""
    better_by = (value - check.reference) if check.higher_is_better else (check.reference - value)
    if abs(better_by) <= check.tolerance:
        return "as the reference run"
    return "better than the reference run" if better_by > 0 else "worse than the reference run"


def beside_reference(run, stage: str, metrics: dict, labels: dict[str, str]) -> list[str]:
    """Rows "what | this run | reference run | verdict" for the metrics `labels` names (path within the stage ->
    words) that both runs have, then a one-line verdict; printed and returned."""
    path = reference_file(run.preset.name, run.smoke)
    checks = {c.metric: c for c in load_baseline(path)}
    found = flatten(metrics, f"{stage}.")
    rows, verdicts = [], []
    for key, words in labels.items():
        check, value = checks.get(f"{stage}.{key}"), found.get(f"{stage}.{key}")
        if check is None or value is None:  # the reference run (or this run, at its sizes) lacks the figure
            continue
        verdicts.append(verdict(check, value))
        rows.append(f"{words:<44} {value:>9.3f} {check.reference:>9.3f} ± {check.tolerance:<5g} {verdicts[-1]}")
    which = f"{path.stem} ({'SMOKE sizes' if run.smoke else 'default sizes'})"
    lines = [f"{'':<44} {'this run':>9} {'reference':>9}   (reference run: {which})", *rows]
    counts = {v: verdicts.count(v) for v in ("as the reference run", "better than the reference run",
                                            "worse than the reference run") if verdicts.count(v)}
    figures = f"{len(verdicts)} figure{'' if len(verdicts) == 1 else 's'}"
    lines.append(f"verdict over {figures}: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    if path.stem.removesuffix("-smoke") != run.preset.name:
        lines.append(f"(the course has no reference run of the {run.preset.name} preset: larger models should do "
                     "better than the cpu preset's)")
    print("\n".join(lines))
    return lines
