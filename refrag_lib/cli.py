"""The course-level commands: run the notebooks, keep them paired, time model loads.

Each command imports what it needs inside its function: `python -m refrag_lib X` then starts without loading
the modules (and torch, papermill or jupytext) of every other command."""

from __future__ import annotations

import argparse
import time

from .config import PRESETS


def course(argv: list[str]) -> int:
    """`python -m refrag_lib course`: every notebook, in order, headless."""
    from .notebooks import run_course

    parser = argparse.ArgumentParser(prog="python -m refrag_lib course", description=course.__doc__)
    parser.add_argument("--preset", default="cpu", choices=[*PRESETS, "auto"])
    parser.add_argument("--run-dir", default="", help="artifacts folder (default runs/<preset>)")
    parser.add_argument("--smoke", action="store_true", help="the notebooks' SMOKE parameters (minutes)")
    parser.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 01 06")
    args = parser.parse_args(argv)
    timings = run_course(args.preset, args.run_dir, smoke=args.smoke, only=args.only)
    print("notebook timings (s):", timings)
    return 0


def notebooks(argv: list[str]) -> int:
    """`python -m refrag_lib notebooks --sync|--check|--colab`: the .ipynb files from their jupytext sources,
    and the Colab badge and setup cell of every notebook from pyproject.toml's repository."""
    from .colab import update_notebooks
    from .notebooks import NOTEBOOK_DIR, sync_notebooks

    parser = argparse.ArgumentParser(prog="python -m refrag_lib notebooks", description=notebooks.__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--sync", action="store_true", help="rewrite notebooks/*.ipynb from notebooks/*.py")
    mode.add_argument("--check", action="store_true", help="fail if an .ipynb differs from its source")
    mode.add_argument("--colab", action="store_true", help="rewrite badges and setup cells, then --sync")
    args = parser.parse_args(argv)
    if args.colab:
        print("Colab cells rewritten:", ", ".join(update_notebooks(NOTEBOOK_DIR)) or "none")
    stale_colab = update_notebooks(NOTEBOOK_DIR, check=True) if args.check else []
    if stale_colab:
        print("Colab badge or setup cell out of date (run `make colab`):", ", ".join(stale_colab))
    stale = sync_notebooks(check=args.check)
    if args.check and (stale or stale_colab):
        if stale:
            print("out of date with their .py sources (run `make notebooks`):", ", ".join(stale))
        return 1
    print("rewritten:" if stale else "all notebooks match their sources", ", ".join(stale))
    return 0


def load_time(argv: list[str]) -> int:
    """`python -m refrag_lib load-time`: seconds to load the preset's decoder, cache preparation apart."""
    from .config import get_preset
    from .hub import load_decoder, resolve

    parser = argparse.ArgumentParser(prog="python -m refrag_lib load-time", description=load_time.__doc__)
    parser.add_argument("--preset", default="cpu", choices=[*PRESETS, "auto"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    preset = get_preset(args.preset)
    start = time.perf_counter()
    resolve(preset.decoder)  # de-quantises and caches a GGUF decoder the first time only
    print(f"cache ready for {preset.decoder}: {time.perf_counter() - start:.2f} s (one-off when it had to be built)")
    for attempt in range(1, args.repeats + 1):
        start = time.perf_counter()
        load_decoder(preset.decoder, preset.dtype, preset.device)
        note = " (includes importing the model code)" if attempt == 1 else ""
        print(f"decoder load {attempt}: {time.perf_counter() - start:.2f} s{note}")
    return 0
