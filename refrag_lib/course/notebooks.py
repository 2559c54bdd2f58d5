"""Run the course's notebooks headless (papermill) and keep them paired with their sources.

Each notebook is written as a jupytext py:percent file (notebooks/NN_name.py, easy to diff and
lint) and committed next to its .ipynb with outputs stripped. Executed copies are build outputs:
they go to RUN_DIR/executed/, never over the sources.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from ..runs import open_run, repo_root
from .pack import summary, unpack

NOTEBOOK_DIR = repo_root() / "notebooks"
MAX_MARKDOWN_WORDS = 2500  # a lesson: where it stands, build, measure, meaning, your turn, recap (most near 2,000)
# A decimal a run measured, typed into prose: outside `code` and $maths$, not a setting (p = 0.1), on a line
# that does not cite the paper. A run prints its own figures; the history of what was tried is docs/results.md.
_CODE_OR_MATHS = re.compile(r"`[^`]*`|\$[^$]*\$")
_SETTING = re.compile(r"\b[A-Za-z_]+\s*=\s*\d+\.\d+")
_DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")


def notebook_paths() -> list[Path]:
    """The course's notebooks in order (NN_name.ipynb)."""
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def run_notebook(path: Path, out_dir: Path, parameters: dict, timeout: int = 3600) -> Path:
    """Execute one notebook top to bottom with papermill; returns the executed copy's path."""
    import papermill

    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / path.name
    papermill.execute_notebook(
        str(path), str(out), parameters=parameters, cwd=str(path.parent),
        kernel_name="python3", progress_bar=False, execution_timeout=timeout,
    )
    return out


def run_course(preset: str, run_dir: str, smoke: bool = False, only: list[str] | None = None) -> dict:
    """Run every notebook (or those whose names start with one of `only`) and time each."""
    root = Path(run_dir or repo_root() / "runs" / preset).resolve()
    timings = {}
    for path in notebook_paths():
        if only and not any(path.stem.startswith(prefix) for prefix in only):
            continue
        start = time.perf_counter()
        print(f"running {path.name} (preset={preset}, smoke={smoke}) -> {root / 'executed'}", flush=True)
        run_notebook(path, root / "executed", {"PRESET": preset, "RUN_DIR": str(root), "SMOKE": smoke})
        timings[path.stem] = round(time.perf_counter() - start, 1)
        print(f"  done in {timings[path.stem]} s", flush=True)
    return timings


def notebook_errors(executed: dict) -> list[str]:
    """Error outputs and tracebacks hidden in cell outputs or widget state (widget callbacks swallow them)."""
    found = []
    for cell in executed.get("cells", []):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error" or "Traceback (most recent call last)" in json.dumps(output):
                found.append(json.dumps(output)[:400])
    state = executed.get("metadata", {}).get("widgets", {})
    if "Traceback" in json.dumps(state) or '"output_type": "error"' in json.dumps(state):
        found.append("an error inside the saved widget state")
    return found


def _paired(source: Path) -> dict:
    """The .ipynb JSON a jupytext source stands for: outputs empty, cell ids numbered as nbstripout does
    (jupytext draws random ones, which would make every sync a change)."""
    import jupytext

    notebook = jupytext.read(source)
    notebook.metadata.pop("jupytext", None)
    paired = json.loads(jupytext.writes(notebook, fmt="ipynb"))
    for number, cell in enumerate(paired["cells"]):
        cell["id"] = str(number)
    return paired


def sync_notebooks(check: bool = False) -> list[str]:
    """Write notebooks/NN.ipynb from notebooks/NN.py (check=True: only list those out of date)."""
    stale = []
    for source in sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py")):
        target = source.with_suffix(".ipynb")
        expected = _paired(source)
        if target.exists() and json.loads(target.read_text()) == expected:
            continue
        stale.append(target.name)
        if not check:
            target.write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")
    return stale


def start(preset: str = "cpu", run_dir: str = "", smoke: bool = False, k: int | None = None, seed: int = 0,
          pack: str = ""):
    """A notebook's first step after its parameters: open the run folder, add a teacher's pack to it if one
    is given (verified first; the training cells then load the stages it holds), seed, say where we are."""
    import platform

    import torch

    run = open_run(preset, run_dir, smoke=smoke, k=k)
    torch.manual_seed(seed)
    device = run.preset.device
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"Preset '{run.preset.name}' needs a CUDA GPU and none is visible. In Colab: Runtime > Change "
            "runtime type > GPU; on a laptop use PRESET='cpu'."
        )
    where = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({platform.processor() or platform.machine()})"
    print(f"preset {run.preset.name} (k={run.preset.k}, {run.preset.dtype}) on {where}; SMOKE={smoke}")
    print(f"artifacts in {run.root}")
    if pack:
        manifest = unpack(pack, run.root, run.preset.name, run.preset.k, smoke=smoke)
        print(f"{'pack already in the run folder' if manifest.get('already') else 'unpacked'}: {summary(manifest)}; "
              "the training cells load these stages instead of training them")
    return run


def markdown_lines(source: Path) -> list[str]:
    """The markdown of a jupytext percent source, line by line (its `# ` prefix removed)."""
    lines, in_markdown = [], False
    for line in Path(source).read_text().splitlines():
        if line.startswith("# %%"):
            in_markdown = "[markdown]" in line
        elif in_markdown:
            lines.append(line[2:] if line.startswith("# ") else line.lstrip("#"))
    return lines


def markdown_words(source: Path) -> int:
    return sum(len(line.split()) for line in markdown_lines(source))


def typed_run_figures(source: Path) -> list[str]:
    """Markdown lines that state a decimal figure of the course's own runs by hand (see _DECIMAL above)."""
    found = []
    for line in markdown_lines(source):
        prose = _SETTING.sub("", _CODE_OR_MATHS.sub("", line))
        if "paper" not in line.lower() and _DECIMAL.search(prose):
            found.append(line.strip())
    return found
