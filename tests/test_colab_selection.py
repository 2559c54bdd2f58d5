"""The Colab selection of tests (the Makefile's UNIT_TESTS) collects with only what a learner's runtime has: Colab's
packages and what the setup cell adds. A test file that imports a tool of `make test` (papermill, selenium, ...) at
its top fails here, in seconds, instead of at the end of `make colab-rehearsal` or at a workshop.

By hand: PYTHONPATH=tests PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 .venv/bin/python -m pytest -p colab_lacks --collect-only
-q -m "not real_models and not notebooks" --ignore=tests/test_playground_browser.py
--ignore=tests/test_site_browser.py tests"""

import os
import subprocess
import sys

from refrag_lib.course.colab_rehearsal import colab_selection
from refrag_lib.runs import repo_root

TESTS = repo_root() / "tests"


def collect_as_in_colab(*args: str) -> subprocess.CompletedProcess:
    """pytest --collect-only in a subprocess where the modules Colab lacks cannot be imported (tests/colab_lacks.py)."""
    env = os.environ | {"PYTHONPATH": str(TESTS), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    command = [sys.executable, "-m", "pytest", "-p", "colab_lacks", "-p", "no:cacheprovider", "--collect-only", "-q"]
    return subprocess.run([*command, *args], cwd=repo_root(), env=env, capture_output=True, text=True)


def test_the_colab_selection_collects_without_what_colab_lacks():
    done = collect_as_in_colab(*colab_selection())
    assert done.returncode == 0, (
        f"{done.stdout[-4000:]}{done.stderr}\nThe Colab selection does not collect with only Colab's packages: "
        "import a tool Colab lacks with pytest.importorskip(name, reason=...), or leave its file out of UNIT_TESTS."
    )


def test_a_test_file_importing_what_colab_lacks_does_not_collect(tmp_path):
    (tmp_path / "test_has.py").write_text("import jupytext  # Colab ships it\n\n\ndef test_x():\n    pass\n")
    (tmp_path / "test_lacks.py").write_text("import papermill  # make test's tool\n\n\ndef test_x():\n    pass\n")
    done = collect_as_in_colab(str(tmp_path))
    errors = [line for line in done.stdout.splitlines() if line.startswith("ERROR ")]
    assert done.returncode != 0 and "test_has.py::test_x" in done.stdout, done.stdout + done.stderr
    assert len(errors) == 1 and errors[0].endswith("test_lacks.py") and "No module named 'papermill'" in done.stdout
