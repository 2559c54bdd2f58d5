"""Regression reports: gathering metrics, guarded comparisons in the right direction, refresh."""

import json

import pytest

from refrag_lib.course.regress import Check, compare, flatten, gather, load_baseline, main, refresh_baseline
from refrag_lib.errors import CourseError, MissingArtifactError


def write_run(root, recall=0.6, ppl=2.0):
    (root / "index").mkdir(parents=True)
    (root / "index" / "metrics.json").write_text(json.dumps({"recall_at_5": recall, "index_device": "faiss-cpu"}))
    (root / "cpt").mkdir()
    (root / "cpt" / "metrics.json").write_text(json.dumps({"log_ppl": {"refrag": ppl, "no_context": 3.1}}))


def write_baseline(path):
    path.write_text(json.dumps({"metrics": {
        "index.recall_at_5": {"reference": 0.6, "higher_is_better": True, "tolerance": 0.05},
        "cpt.log_ppl.refrag": {"reference": 2.0, "higher_is_better": False, "tolerance": 0.1},
    }}))


def test_flatten_keeps_numbers_only():
    assert flatten({"a": 1, "b": {"c": 2.5, "d": "x"}, "e": [1], "f": True}) == {"a": 1.0, "b.c": 2.5}


def test_direction_and_tolerance():
    higher = Check("r", 0.6, True, 0.05)
    lower = Check("p", 2.0, False, 0.1)
    assert not higher.regressed(0.56) and higher.regressed(0.54) and not higher.regressed(0.9)
    assert not lower.regressed(2.09) and lower.regressed(2.2) and not lower.regressed(1.0)


def test_regression_is_named_with_reference_and_new_value(tmp_path):
    write_run(tmp_path / "run", recall=0.4)
    write_baseline(tmp_path / "base.json")
    problems = compare(gather(tmp_path / "run"), load_baseline(tmp_path / "base.json"))
    assert len(problems) == 1 and "index.recall_at_5" in problems[0] and "0.4" in problems[0] and "0.6" in problems[0]
    assert main(["--run-dir", str(tmp_path / "run"), "--baseline", str(tmp_path / "base.json")]) == 1
    assert "REGRESSED" in (tmp_path / "run" / "regression_report.md").read_text()


def test_clean_run_passes_and_missing_metric_fails(tmp_path):
    write_run(tmp_path / "run")
    write_baseline(tmp_path / "base.json")
    assert main(["--run-dir", str(tmp_path / "run"), "--baseline", str(tmp_path / "base.json")]) == 0
    checks = load_baseline(tmp_path / "base.json") + [Check("sft.exact_match.refrag", 0.5, True, 0.1)]
    assert compare(gather(tmp_path / "run"), checks) == [
        "sft.exact_match.refrag: new missing, reference 0.5 (higher is better, tolerance 0.1)"
    ]


def test_refresh_records_new_references_and_keeps_tolerances(tmp_path):
    write_run(tmp_path / "run", recall=0.7)
    write_baseline(tmp_path / "base.json")
    refresh_baseline(tmp_path / "base.json", gather(tmp_path / "run"))
    entry = json.loads((tmp_path / "base.json").read_text())["metrics"]["index.recall_at_5"]
    assert entry == {"reference": 0.7, "higher_is_better": True, "tolerance": 0.05}


def test_bad_inputs_are_explained(tmp_path):
    with pytest.raises(MissingArtifactError, match="make course"):
        gather(tmp_path)
    with pytest.raises(MissingArtifactError, match="make baseline"):
        load_baseline(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(CourseError, match="not a baseline file"):
        load_baseline(tmp_path / "bad.json")


@pytest.mark.parametrize("name", ["cpu.json", "cpu-smoke.json"])
def test_committed_baselines_are_complete(name):
    from pathlib import Path

    checks = load_baseline(Path(__file__).parent / "baselines" / name)
    assert len(checks) >= 10
    assert all(isinstance(c.reference, float) and c.tolerance > 0 for c in checks), checks
