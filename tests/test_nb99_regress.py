"""The SMOKE run of the whole course against its committed baseline (the CI variant of `make regress`)."""

from pathlib import Path

import pytest

from refrag_lib.course.notebooks import notebook_paths
from refrag_lib.course.regress import compare, gather, load_baseline

pytestmark = pytest.mark.notebooks
BASELINE = Path(__file__).parent / "baselines" / "cpu-smoke.json"


def test_smoke_run_has_no_regression(notebooks):
    notebooks.run(notebook_paths()[-1].stem)  # every notebook, each run once per session
    assert compare(gather(notebooks.root), load_baseline(BASELINE)) == []
