"""What every lesson shows around its own work: the pipeline picture with its step marked, and the run's figures
beside the reference run's with the verdict the regression baseline's tolerance supports."""

import json
import re
from types import SimpleNamespace

import pytest

from refrag_lib.course.lesson import (
    HERE_BACKGROUND,
    HERE_TEXT,
    STEPS,
    beside_reference,
    pipeline_html,
    pipeline_text,
    reference_file,
    show_pipeline,
)
from refrag_lib.course.notebooks import notebook_paths


def test_the_pipeline_has_a_step_per_notebook_and_marks_the_current_one():
    assert [s.notebook for s in STEPS] == [p.name[:2] for p in notebook_paths()]
    text = pipeline_text("03")
    marked = [line for line in text.splitlines() if line.startswith("►")]
    assert marked == [line for line in text.splitlines() if line.startswith("► 03 read")]
    html = pipeline_html("03")
    assert html.count(f"background:{HERE_BACKGROUND};color:{HERE_TEXT}") == 1  # text colour set with the background
    assert len(re.findall(r"background:#[0-9a-f]{6};color:#[0-9a-f]{6}", html)) == len(STEPS)
    assert show_pipeline("03")._repr_html_() == html and repr(show_pipeline("03")) == text
    with pytest.raises(ValueError, match="No notebook '09'"):
        show_pipeline("09")


def fake_run(preset="cpu", smoke=False):
    return SimpleNamespace(preset=SimpleNamespace(name=preset), smoke=smoke)


def test_a_run_is_compared_with_its_presets_reference_or_the_cpu_one():
    assert reference_file("cpu", smoke=True).name == "cpu-smoke.json"
    assert reference_file("cpu", smoke=False).name == "cpu.json"
    assert reference_file("t4", smoke=False).name == "cpu.json"  # the course has no t4 reference run


def test_beside_reference_gives_each_verdict_within_the_baselines_tolerance(capsys):
    guarded = json.loads(reference_file("cpu", smoke=False).read_text())["metrics"]
    r1, r5, r10 = (guarded[f"index.recall_at_{k}"] for k in (1, 5, 10))
    metrics = {"recall_at_1": r1["reference"] + r1["tolerance"] / 2,  # within: as the reference
               "recall_at_5": r5["reference"] + 2 * r5["tolerance"],  # higher is better: better
               "recall_at_10": r10["reference"] - 2 * r10["tolerance"]}  # worse
    lines = beside_reference(fake_run(), "index", metrics, {"recall_at_1": "recall@1", "recall_at_5": "recall@5",
                                                            "recall_at_10": "recall@10", "not_measured": "absent"})
    assert lines[1].endswith("as the reference run") and lines[2].endswith("better than the reference run")
    assert lines[3].endswith("worse than the reference run")
    assert lines[4] == ("verdict over 3 figures: 1 as the reference run, 1 better than the reference run, "
                        "1 worse than the reference run")
    assert capsys.readouterr().out == "\n".join(lines) + "\n"
    other = beside_reference(fake_run("t4"), "index", metrics, {"recall_at_1": "recall@1"})
    assert "no reference run of the t4 preset" in other[-1]
