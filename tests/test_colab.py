"""The Colab path: badges and setup cells come from the one repository setting; set-up inside Colab."""

import importlib
import json
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from refrag_lib import runs
from refrag_lib.course import colab, colab_cells
from refrag_lib.course.colab_rehearsal import read_manifest
from refrag_lib.course.notebooks import NOTEBOOK_DIR
from refrag_lib.errors import CourseError, MissingArtifactError
from refrag_lib.runs import RUN_ROOT_VARIABLE, open_run

REPO = Path(__file__).resolve().parents[1]

SOURCE = """# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
# ---

# %% [markdown]
# # 09 · A title
#
# Text.

# %%
import numpy

# %% tags=["parameters"]
SMOKE = False
"""


def test_repository_url_comes_from_pyproject(tmp_path):
    assert colab_cells.repository_url().startswith("https://github.com/")
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project.urls]\nRepository = "https://github.com/someone/fork/"\n')
    assert colab_cells.repository_url(pyproject) == "https://github.com/someone/fork"
    pyproject.write_text("[project]\nname = 'x'\n")
    with pytest.raises(ValueError, match=r"\[project.urls\]"):
        colab_cells.repository_url(pyproject)


def test_cells_are_added_once_and_follow_the_repository():
    first = colab_cells.with_colab_cells(SOURCE, "09_title", "https://github.com/a/b")
    assert "colab.research.google.com/github/a/b/blob/main/notebooks/09_title.ipynb" in first
    assert first.index("Open In Colab") < first.index("# Setup.") < first.index("import numpy")
    assert colab_cells.with_colab_cells(first, "09_title", "https://github.com/a/b") == first  # idempotent
    moved = colab_cells.with_colab_cells(first, "09_title", "https://github.com/c/d")
    assert "github/c/d/blob" in moved and '"https://github.com/c/d"' in moved
    assert "a/b" not in moved and moved.count("Open In Colab") == 1 and moved.count("# Setup.") == 1
    assert first.count(colab_cells.GPU_RUNTIME_HEADER) == 1
    assert first.index("#   accelerator: GPU") < first.index("# ---\n\n")


def test_committed_notebooks_are_current():
    assert colab_cells.update_notebooks(NOTEBOOK_DIR, check=True) == []


@pytest.mark.parametrize("gpu, preset, offline", [(None, "cpu", True), ("Tesla T4", "t4", False)])
def test_prepare_colab_installs_for_the_runtime(monkeypatch, capsys, gpu, preset, offline):
    installed = []
    monkeypatch.setattr(colab, "install_course", lambda clone: installed.append(clone) or ({}, ["faiss-gpu-cu12"]))
    monkeypatch.setattr(colab, "_pip", lambda *args: installed.append(args))
    monkeypatch.setattr(colab, "gpu_name", lambda: gpu)
    assert colab.prepare_colab(keep_on_drive=False, clone_dir="/somewhere") == preset
    assert installed[0] == "/somewhere"
    assert (("--no-deps", colab.OFFLINE_DECODER) in installed) is offline
    out = capsys.readouterr().out
    assert f"Installed {2 if offline else 1} packages Colab lacks" in out and "replaced 0 of Colab's own" in out
    assert "lost with this runtime" in out


def test_installed_versions_are_those_imports_see(monkeypatch):
    class Dist:
        def __init__(self, name, version):
            self.metadata, self.version = {"Name": name}, version

    found = [Dist("Jinja2", "3.1.6"), Dist("jinja2", "3.0.3"), Dist("", "1")]  # a second, shadowed copy
    monkeypatch.setattr("importlib.metadata.distributions", lambda: iter(found))
    assert colab.installed_versions() == {"jinja2": "3.1.6"}


def test_constraints_hold_every_installed_version():
    text = colab.runtime_constraints({"torch": "2.11.0+cu128", "ipykernel": "6.17.1", "odd": "not a version"})
    assert text.splitlines() == ["ipykernel==6.17.1", "torch==2.11.0+cu128"]


def test_floors_are_judged_against_the_runtime(tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\ntransformers>=5.0,<6\ntorch>=2.11\nnew-package>=1\n"
                            'faiss-cpu>=1.11 ; sys_platform == "no-such-platform"\n')
    versions = {"transformers": "4.57.1", "torch": "2.11.0+cu128", "faiss-cpu": "1.0"}
    assert colab.unmet_floors(requirements, versions) == ["transformers 4.57.1, needs <6,>=5.0"]


@pytest.mark.parametrize("manifest", ["pip-freeze.gpu.txt", "pip-freeze.gpu-2026.07.txt"])
def test_committed_colab_runtimes_meet_every_floor(manifest):
    """The floors of requirements.txt admit Colab's current runtime and its pinned past runtime 2026.07."""
    assert colab.unmet_floors(REPO / "requirements.txt", read_manifest(REPO / "colab" / manifest).pins) == []


def test_install_refuses_before_installing_when_colab_is_too_old(monkeypatch, tmp_path):
    (tmp_path / "requirements.txt").write_text("transformers>=5.0\n")
    monkeypatch.setattr(colab, "installed_versions", lambda: {"transformers": "4.57.1"})
    monkeypatch.setattr(colab, "_pip", lambda *args: pytest.fail("pip ran although a floor is unmet"))
    with pytest.raises(CourseError, match=r"runtime's transformers 4.57.1, needs >=5.0.*Runtime version: Latest"):
        colab.install_course(str(tmp_path))


def test_install_passes_the_runtime_as_constraints_and_reports_changes(monkeypatch, tmp_path):
    (tmp_path / "requirements.txt").write_text("torch>=2.11\n")
    states = iter([{"torch": "2.11.0+cu128"}, {"torch": "2.11.0+cu128", "gguf": "0.19.0"}])
    monkeypatch.setattr(colab, "installed_versions", lambda: next(states))
    seen = []
    monkeypatch.setattr(colab, "_pip", lambda *args: seen.append((args, Path(args[1]).read_text())))
    assert colab.install_course(str(tmp_path)) == ({}, ["gguf"])
    (args, constraints), = seen
    assert args[0] == "--constraint" and args[2:] == ("-e", str(tmp_path))
    assert constraints == "torch==2.11.0+cu128\n" and not Path(args[1]).exists()  # removed afterwards


def test_changed_packages_finds_replaced_removed_and_added():
    before = {"torch": "2.11.0", "ipykernel": "6.17.1", "tqdm": "4.67.3"}
    after = {"torch": "2.13.0", "tqdm": "4.67.3", "gguf": "0.19.0"}
    assert colab.changed_packages(before, after) == ({"torch": ("2.11.0", "2.13.0"), "ipykernel": ("6.17.1", "")},
                                                     ["gguf"])


@pytest.fixture
def in_colab(monkeypatch, tmp_path):
    """The rehearsal's google.colab stand-in imported, as Colab's kernel has it; its Drive is a tmp folder."""
    monkeypatch.syspath_prepend(str(REPO / "colab" / "standin"))
    for name in [n for n in sys.modules if n == "google.colab" or n.startswith("google.colab.")]:
        monkeypatch.delitem(sys.modules, name)
    module = importlib.import_module("google.colab")
    monkeypatch.setenv("COLAB_STANDIN_DRIVE", str(tmp_path / "drive"))
    monkeypatch.setenv("COLAB_STANDIN_SECRETS", str(tmp_path / "secrets.json"))
    for module in (colab, runs):  # runs knows where Drive is; colab mounts it
        monkeypatch.setattr(module, "DRIVE_MOUNT", str(tmp_path / "content" / "drive"))
        monkeypatch.setattr(module, "DRIVE_RUNS", str(tmp_path / "content" / "drive" / "MyDrive" / "runs"))
    monkeypatch.delenv(RUN_ROOT_VARIABLE, raising=False)
    yield module
    for name in [n for n in sys.modules if n == "google.colab" or n.startswith("google.colab.")]:
        del sys.modules[name]


def test_runs_go_to_drive_in_colab(in_colab, monkeypatch):
    assert runs.in_colab()
    assert colab.keep_runs_on_drive() == colab.DRIVE_RUNS
    assert open_run("cpu").root == (Path(colab.DRIVE_RUNS) / "cpu").resolve()
    assert colab.keep_runs_on_drive() == colab.DRIVE_RUNS  # mounting again is fine


def test_drive_refused_says_what_to_do(in_colab, monkeypatch):
    monkeypatch.setenv("COLAB_STANDIN_DRIVE_REFUSED", "1")
    with pytest.raises(CourseError) as err:
        colab.keep_runs_on_drive()
    message = str(err.value)
    assert "\n" not in message and "credential propagation" in message
    assert "allow access" in message and "KEEP_ON_DRIVE = False" in message
    assert RUN_ROOT_VARIABLE not in __import__("os").environ


def test_notebook_opened_out_of_order_in_colab_names_the_fix(in_colab, tmp_path):
    with pytest.raises(MissingArtifactError, match=r"KEEP_ON_DRIVE = True in the setup cell of 02_reconstruction"):
        open_run("cpu", tmp_path / "local").require("recon")  # runs in the runtime's own folder: lost
    colab.keep_runs_on_drive()
    drive_advice = r"missing. This runtime reads runs from Google Drive: open notebooks/02_reconstruction.ipynb"
    with pytest.raises(MissingArtifactError, match=drive_advice):
        open_run("cpu").require("recon")


def test_out_of_order_outside_colab_keeps_the_plain_message(tmp_path):
    with pytest.raises(MissingArtifactError) as err:
        open_run("cpu", tmp_path).require("recon")
    assert "Run notebooks/02_reconstruction.ipynb first" in str(err.value) and "Colab" not in str(err.value)


def test_hub_token_comes_from_colab_secrets(in_colab, monkeypatch, tmp_path):
    from refrag_lib import hub
    from refrag_lib.config import get_preset
    from refrag_lib.errors import ModelUnavailableError

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    with pytest.raises(ModelUnavailableError, match="add the Colab secret HF_TOKEN") as err:
        hub.check_access(get_preset("paper"))
    assert "\n" not in str(err.value)
    (tmp_path / "secrets.json").write_text('{"HF_TOKEN": "hf_secret"}')
    hub.check_access(get_preset("paper"))
    assert hub.hub_token() == "hf_secret" and __import__("os").environ["HF_TOKEN"] == "hf_secret"


def test_every_notebook_opens_on_a_gpu_runtime_in_colab():
    for path in sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")):
        metadata = json.loads(path.read_text())["metadata"]
        assert metadata["accelerator"] == "GPU" and metadata["colab"]["gpuType"] == "T4", path.name


def test_runtime_requirements_leave_out_the_tools_that_test_and_build():
    runtime = {Requirement(line).name for line in _lines(REPO / "requirements.txt")}
    tools = {Requirement(line).name for line in _lines(REPO / "requirements-dev.txt")}
    assert {"papermill", "nbval", "ipykernel", "pytest", "voila", "jupyterlab"} <= tools
    assert not runtime & tools
    # notebook 00 checks only what a notebook needs: every package it looks for is a runtime requirement
    from refrag_lib.course.envcheck import PACKAGES

    for entry in PACKAGES:
        assert set((entry,) if isinstance(entry, str) else entry) & runtime, entry


def test_makefile_installs_the_offline_decoder_colab_installs():
    assert f"SMOLLM2 ?= {colab.OFFLINE_DECODER}\n" in (REPO / "Makefile").read_text()


def _lines(path: Path) -> list[str]:
    return [line.split("#")[0].strip() for line in path.read_text().splitlines() if line.split("#")[0].strip()]


def test_run_root_variable_moves_default_runs(monkeypatch, tmp_path):
    monkeypatch.setenv(RUN_ROOT_VARIABLE, str(tmp_path / "drive"))
    assert open_run("cpu").root == (tmp_path / "drive" / "cpu").resolve()
    assert open_run("cpu", tmp_path / "mine").root == (tmp_path / "mine").resolve()
    assert Path(tmp_path / "drive" / "cpu").is_dir()
