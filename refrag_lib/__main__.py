"""Command line: `python -m refrag_lib <command> ...`; each command lives in the module that owns it.

A mistake the course can explain (a CourseError: bad input, a missing artifact, a malformed file)
prints its message alone on stderr and exits with status 1; `--debug` anywhere on the line, or
REFRAG_DEBUG=1 in the environment, shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import CourseError

DEBUG_VARIABLE = "REFRAG_DEBUG"

# command -> ("module:function" under refrag_lib, taking the remaining arguments; one-line help)
COMMANDS = {
    "check": ("course.envcheck:main", "is this machine ready for the course? (versions, device, models, disk)"),
    "course": ("course.cli:course", "run the notebooks headless under papermill"),
    "notebooks": ("course.cli:notebooks", "rebuild or check notebooks/*.ipynb from their .py sources"),
    "load-time": ("course.cli:load_time", "time a cold and a warm load of the preset's decoder"),
    "data": ("course.synthetic_corpus:main", "regenerate the synthetic data set in data/"),
    "index": ("index:main", "build the retrieval index and chunk store for a run"),
    "train": ("course.cli:train", "train a stage (recon | cpt) with the shared accelerate loop"),
    "levers": ("studies.levers:main", "stages 1-2: training levers on the same compute and held-out windows"),
    "fair-cpt": ("studies.fair_cpt:main", "context recovered: decoder frozen, and trained with fair baselines"),
    "recovery-levers": ("studies.recovery_levers:main", "what moves context recovered: one table of recipes"),
    "loss-speed": ("studies.loss_speed:main", "samples/s of the batched reconstruction loss vs a per-chunk loop"),
    "bench": ("bench:main", "TTFT/TTIT/memory benchmark of REFRAG against ordinary RAG"),
    "regress": ("course.regress:main", "compare a run's metrics with a committed baseline"),
    "results-table": ("course.results_table:main", "the README's results table, from a finished run's metrics"),
    "generate": ("ready_index:main", "answer a question from a REFRAG-ready index"),
    "sft-curve": ("studies.sft_curve:main", "SFT learning curve: held-out EM against steps for both arms"),
    "own-data": ("course.own_data:main", "your own corpus and questions through notebooks 01, 05 and 07"),
    "pack": ("course.pack:main", "a teacher's pack: one verified archive of a finished run's results"),
    "unpack": ("course.pack:unpack_main", "verify a teacher's pack, then add it to a run folder"),
    "colab-rehearsal": ("course.colab_rehearsal:main", "every notebook as in Colab, each in a fresh runtime"),
    "playground": ("course.playground_page:main", "serve notebook 07 as a page on 127.0.0.1 (Voilà)"),
    "site": ("course.site:main", "a finished run's notebooks, README and docs as a static site"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0")
    argv = [arg for arg in argv if arg != "--debug"]
    if not argv or argv[0] not in COMMANDS:
        parser = argparse.ArgumentParser(prog="python -m refrag_lib")
        parser.add_argument("command", choices=sorted(COMMANDS))
        parser.print_help()
        print("\ncommands:\n" + "\n".join(f"  {name:10s} {text}" for name, (_, text) in COMMANDS.items()))
        print("\n--debug (or REFRAG_DEBUG=1): show the traceback of an error instead of its message alone")
        return 2
    module, function = COMMANDS[argv[0]][0].split(":")
    try:
        return getattr(importlib.import_module(f"refrag_lib.{module}"), function)(argv[1:]) or 0
    except CourseError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
