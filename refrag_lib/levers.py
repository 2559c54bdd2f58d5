"""Which settings make stage 1 (reconstruction) learn most per CPU minute: one table of levers.

Every row trains a fresh encoder + projector for about the same wall-clock budget (its step count
comes from its own seconds per step, measured on its first steps) and is scored on the SAME held-out
windows against the decoder alone (`evaluate.vectors_against_floor`). The first steps are mostly
one-chunk steps, slower than the long ones that follow, so the budget a row really got can differ:
the table prints each row's measured training seconds next to its gains; read them together.
`python -m refrag_lib levers` writes RUN_DIR/recon/levers/levers.json; notebook 02 shows it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace

from .errors import CourseError
from .evaluate import between_models, chunk_counts, floor_scores, vectors_against_floor
from .intervals import excludes_zero, format_interval
from .train import TrainConfig, tokenized_documents, train_stage


@dataclass(frozen=True)
class Lever:
    name: str
    changes: dict  # TrainConfig fields that differ from the course default
    why: str


RECON_LEVERS = [
    Lever("course default", {}, "peak LR 1e-3, 512 decoder positions per step, the paper's curriculum"),
    Lever("LR 3e-3", {"lr": 3e-3}, "a short run may need bigger steps than the paper's long one"),
    Lever("LR 3e-4", {"lr": 3e-4}, "closer to the paper's 2e-4: does the default overshoot?"),
    Lever("256 positions per step", {"positions_per_step": 256}, "examples per step vs steps: twice the updates"),
    Lever("1024 positions per step", {"positions_per_step": 1024}, "half the updates, less noisy gradients"),
    Lever("no curriculum", {"curriculum": False}, "every step reconstructs s/k chunks (Table 11's question)"),
]


def seconds_per_step(run, cfg: TrainConfig, folder: str, probe_steps: int = 4) -> float:
    """Measured seconds of one step of `cfg` (the first step, which warms caches, is left out)."""
    probe = replace(cfg, steps=probe_steps, save_every=probe_steps)
    history = train_stage(run, probe, folder=folder, resume=False, progress=False).history
    return (history[-1]["seconds"] - history[0]["seconds"]) / (len(history) - 1)


def run_levers(run, base: TrainConfig, levers: list[Lever], budget_seconds: float, held_out, floor: dict,
               progress: bool = True, steps: int | None = None) -> list[dict]:
    """Train every lever for `budget_seconds` of measured step time; score each on the floor's windows.

    steps: the same step count for every row instead, for levers that leave a step's cost unchanged
    (learning rates): equal budgets by construction, no calibration.
    """
    if budget_seconds <= 0:
        raise CourseError(f"The wall-clock budget per lever must be > 0 seconds, got {budget_seconds}.")
    rows = []
    for number, lever in enumerate(levers):
        folder = f"recon/levers/{number:02d}"
        cfg = replace(base, **lever.changes)
        per_step = seconds_per_step(run, cfg, f"{folder}/calibrate") if steps is None else None
        steps_here = steps if steps is not None else max(2, int(budget_seconds / per_step))
        cfg = replace(cfg, steps=steps_here, save_every=steps_here)
        result = train_stage(run, cfg, folder=folder, resume=False, progress=progress)
        probe = vectors_against_floor(result.model, held_out, floor)
        rows.append({"lever": lever.name, "why": lever.why, "changes": lever.changes, "steps": steps_here,
                     "seconds_per_step": per_step, "train_seconds": result.summary["train_seconds"],
                     "by_chunks": probe["by_chunks"], "per_window": probe["per_window"]})
        del result.model
    return rows


def format_levers(report: dict) -> str:
    """The lever table: steps in the budget, the gain over the decoder alone, and the paired change
    against the course default on the same windows (* where its 95% interval excludes 0)."""
    rows, default = report["rows"], report["rows"][0]
    budget = (f"{report['budget_seconds']:.0f} s" if report.get("budget_seconds") else f"{rows[0]['steps']} steps")
    lines = [f"{budget} of training per lever, {report['windows']} held-out windows per "
             "chunk count; log-ppl gain over the decoder alone (nats/token) [95% interval]; "
             f"'vs default': paired change against '{default['lever']}'"]
    for row in rows:
        versus = between_models(row, default) if row is not default else None
        cells = []
        for n, cell in row["by_chunks"].items():
            text = f"{n} ch {format_interval(cell['log_ppl_gain'])}"
            if versus:
                change = versus[n]["log_ppl_gain"]
                text += f" (vs default {change['mean']:+.3f}{'*' if excludes_zero(change) else ''})"
            cells.append(text)
        exact = row["by_chunks"][next(iter(row["by_chunks"]))]["first_chunk_exact"]
        lines.append(f"{row['lever']:>24} | {row['steps']:4d} steps, {row['train_seconds']:4.0f} s trained | "
                     + " | ".join(cells) + f" | 1-chunk exact {format_interval(exact, 2)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m refrag_lib levers`: the stage-1 lever table, written to RUN_DIR/recon/levers/levers.json."""
    from .model import load_refrag
    from .runs import open_run

    parser = argparse.ArgumentParser(prog="python -m refrag_lib levers", description=main.__doc__)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--run-dir", default="", help="artifacts folder (default runs/<preset>)")
    parser.add_argument("--budget", type=float, default=240.0, help="wall-clock seconds of training per lever")
    parser.add_argument("--windows", type=int, default=64, help="held-out windows per number of chunks (half above 4)")
    parser.add_argument("--context", type=int, default=256, help="s: the longest text reconstructed")
    parser.add_argument("--only", nargs="*", help="lever numbers to run (default: all)")
    parser.add_argument("--steps", type=int, default=None,
                        help="the same steps for every lever (for levers that do not change a step's cost)")
    args = parser.parse_args(argv)
    run = open_run(args.preset, args.run_dir)
    model = load_refrag(run.preset)
    _, held_out = tokenized_documents(model)
    counts = chunk_counts(args.context // run.preset.k)
    floor = floor_scores(model, held_out, counts, args.windows, long_windows=args.windows // 2)
    del model
    base = TrainConfig(stage="recon", steps=1, context_tokens=args.context, positions_per_step=512, lr=1e-3)
    chosen = [RECON_LEVERS[int(i)] for i in args.only] if args.only else RECON_LEVERS
    rows = run_levers(run, base, chosen, args.budget, held_out, floor, steps=args.steps)
    name = "levers.json" if args.steps is None else f"levers-{args.steps}-steps.json"
    out = run.stage_dir("recon/levers") / name
    budget = args.budget if args.steps is None else None
    out.write_text(json.dumps({"budget_seconds": budget, "windows": args.windows, "counts": counts,
                               "command": "python -m refrag_lib levers " + " ".join(argv or []), "rows": rows}))
    print(format_levers(json.loads(out.read_text())))
    print("wrote", out)
    return 0
