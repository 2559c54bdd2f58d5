"""Notebook 07 as a page: `make playground` serves the playground with Voilà on 127.0.0.1.

Voilà runs a notebook in its own kernel and shows the outputs and widgets without the code cells:
the page a teacher puts on a projector and attendees click. What it serves is a copy of notebook 07
with this run's parameters injected by papermill (nothing executed), written to RUN_DIR/playground/,
so the committed notebook stays untouched and a page always reads the run it was started for.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..config import PRESETS
from ..errors import CourseError
from ..runs import Run, open_run
from .notebooks import NOTEBOOK_DIR
from .playground import trained_runs

PAGE_FOLDER = "playground"  # under RUN_DIR
PLAYGROUND_NOTEBOOK = "07_playground.ipynb"
DEFAULT_PORT = 8866
HOST = "127.0.0.1"  # the page is for this machine (and its projector); nothing listens on other interfaces


def prepare_page(run: Run) -> Path:
    """RUN_DIR/playground/07_playground.ipynb: notebook 07 with RUN_DIR and PRESET set, not executed."""
    if not trained_runs(run):
        raise CourseError(f"{run.root} has not finished notebooks/05_sft.ipynb, so the playground has no models "
                          "to load: run `make course` first (or `make smoke`, then `make playground "
                          "RUN_DIR=runs/cpu-smoke`).")
    import papermill  # a tool of the local page (requirements-dev.txt), not of the notebooks

    out = run.stage_dir(PAGE_FOLDER) / PLAYGROUND_NOTEBOOK
    papermill.execute_notebook(str(NOTEBOOK_DIR / PLAYGROUND_NOTEBOOK), str(out), prepare_only=True,
                               parameters={"PRESET": run.preset.name, "RUN_DIR": str(run.root)},
                               kernel_name="python3", progress_bar=False)
    return out


# The JupyterLab extensions the page needs: the widgets. Voilà loads every extension installed next to it otherwise, and
# one built for a newer JupyterLab than Voilà's own front end (jupytext's, here) fails in the browser.
PAGE_EXTENSIONS = ("@jupyter-widgets/jupyterlab-manager", "@voila-dashboards/widgets-manager8")


def voila_command(page: Path, port: int) -> list[str]:
    """Voilà serving one notebook on HOST:port, without opening a browser on the server."""
    return [sys.executable, "-m", "voila", str(page), "--no-browser", f"--Voila.ip={HOST}", f"--Voila.port={port}",
            "--Voila.port_retries=0",  # a busy port is an error, not a page on some other port
            *(f"--VoilaConfiguration.extension_allowlist={name}" for name in PAGE_EXTENSIONS)]


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((HOST, port)) != 0


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 60.0) -> None:
    """Return once something listens on HOST:port; fail if the server exits or takes longer than `timeout`."""
    deadline = time.monotonic() + timeout
    while port_is_free(port):
        if process.poll() is not None:
            raise CourseError(f"the server exited with status {process.returncode} before listening on port {port}.")
        if time.monotonic() > deadline:
            raise CourseError(f"nothing listened on {HOST}:{port} after {timeout:.0f} s.")
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    """`python -m refrag_lib playground`: serve notebook 07 as a page on 127.0.0.1 (Ctrl+C stops it)."""
    parser = argparse.ArgumentParser(prog="python -m refrag_lib playground", description=main.__doc__)
    parser.add_argument("--preset", default="cpu", choices=[*PRESETS, "auto"])
    parser.add_argument("--run-dir", default="", help="a run folder that finished notebook 05 (default runs/<preset>)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    if not port_is_free(args.port):
        raise CourseError(f"port {args.port} on {HOST} is in use (another playground?): stop it, or choose "
                          f"another with `make playground PORT={args.port + 1}`.")
    page = prepare_page(open_run(args.preset, args.run_dir))
    print(f"The playground: http://{HOST}:{args.port}/  (serving {page}; Ctrl+C stops it)", flush=True)
    try:
        return subprocess.call(voila_command(page, args.port))
    except KeyboardInterrupt:
        return 0
