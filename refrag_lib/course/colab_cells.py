"""The badge and setup cell every notebook carries, built from the one repository setting.

The repository lives in ONE place, `[project.urls] Repository` in pyproject.toml. `make colab`
rewrites every notebook's "Open in Colab" badge, setup cell and GPU-runtime metadata from it, and
`make lint` fails when a notebook is out of date. Inside Colab the setup cell clones that repository
(the notebooks need its data/ folder, which a plain `pip install git+...` would not bring), puts it on
sys.path, and calls `refrag_lib.course.colab.prepare_colab`.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..runs import repo_root
from .colab import CLONE_DIR

# Colab's notebook metadata, in the jupytext header: open on a GPU runtime (a T4, the free tier's GPU) from the badge.
GPU_RUNTIME_HEADER = "#   accelerator: GPU\n#   colab:\n#     gpuType: T4\n#     provenance: []\n"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"


PYPROJECT = repo_root() / "pyproject.toml"


def repository_url(pyproject: Path = PYPROJECT) -> str:
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
# Setup. In Colab: fetch the course, add the packages Colab lacks (none of Colab's own is replaced), and keep
# runs on Google Drive, where the next notebook's runtime finds them (1-2 minutes; Colab asks once for Drive).
# Locally `make venv` did all of this already and this cell does nothing.
import sys

KEEP_ON_DRIVE = True  # Colab: each notebook runs in its own runtime; Drive carries this one's results to the next
if "google.colab" in sys.modules:
    import os
    import subprocess

    repository = "{repository}"
    if not os.path.isdir("{CLONE_DIR}"):
        subprocess.run(["git", "clone", "-q", "--depth", "1", repository, "{CLONE_DIR}"], check=True)
    sys.path.insert(0, "{CLONE_DIR}")
    from refrag_lib.course.colab import prepare_colab

    prepare_colab(keep_on_drive=KEEP_ON_DRIVE)
'''


_BADGE = re.compile(r"^# \[!\[Open In Colab\]\(.*\n", re.MULTILINE)
_SETUP = re.compile(r"^# %%\n# Setup\..*?(?=^# %%)", re.MULTILINE | re.DOTALL)


def with_colab_cells(source: str, notebook: str, repository: str) -> str:
    """A notebook's jupytext source with its GPU-runtime metadata, its badge (after the title line) and its
    setup cell made current."""
    if GPU_RUNTIME_HEADER not in source:
        if "# jupyter:\n" not in source:
            raise ValueError(f"{notebook}: a notebook source needs its jupytext header ('# jupyter:').")
        source = source.replace("# jupyter:\n", "# jupyter:\n" + GPU_RUNTIME_HEADER, 1)
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
