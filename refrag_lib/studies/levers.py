"""Which settings make stages 1-2 learn most per CPU minute: one table of levers per stage.

Every row trains a fresh run of the stage with one setting changed, for the same budget of decoder
positions as the course default (a row with twice the positions per step gets half the steps: the
same compute), and is scored on the SAME held-out windows. Reconstruction rows are scored against the
decoder alone (`evaluate.vectors_against_floor`), CPT rows against the paper's baselines on the same
decoder (`evaluate.cpt_arms`). The table prints each row's measured training seconds next to its
gains. `python -m refrag_lib levers --stage recon|cpt` writes RUN_DIR/<stage>/levers/levers.json;
notebooks 02 and 03 show them.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, replace

from ..errors import CourseError
from ..evaluate import (
    between_models,
    chunk_counts,
    cpt_arms,
    cpt_windows,
    floor_scores,
    paired_cpt,
    vectors_against_floor,
)
from ..intervals import excludes_zero, format_interval
from ..model import load_refrag
from ..runs import open_run
from ..stages import TrainConfig, default_config, tokenized_documents, train_stage


@dataclass(frozen=True)
class Lever:
    name: str
    changes: dict  # TrainConfig fields that differ from the course default
    why: str
    init_from_recon: bool = True  # CPT only: False is the Table 12 ablation
    k: int | None = None  # tokens per chunk vector; None: the preset's (a row of another k has its own floor)
    budget: float = 1.0  # compute against the default row; a row above 1 shows what a longer budget buys


RECON_LEVERS = [
    Lever("course default", {}, "peak LR 1e-3 (the encoder at 1e-4) after a 15% warm-up, 512 decoder positions "
          "per step, 90% of the steps on one chunk then the paper's curriculum, a start token before the vectors, "
          "projector output at the token-embedding norm, bf16 autocast on a CPU with native bf16 maths, seed 0"),
    Lever("seed 1", {"seed": 1}, "the default from another seed: the spread a lever has to beat"),
    Lever("LR 3e-3", {"lr": 3e-3}, "the previous default's LR"),
    Lever("LR 3e-3, seed 1", {"lr": 3e-3, "seed": 1}, "the same from another seed"),
    Lever("encoder at 1e-3", {"encoder_lr_scale": 1.0}, "the pretrained encoder at the projector's LR (the "
          "previous default)"),
    Lever("encoder at 1e-3, seed 1", {"encoder_lr_scale": 1.0, "seed": 1}, "the same from another seed"),
    Lever("warm-up 25%", {"warmup_fraction": 0.25}, "a still longer warm-up than the default's 15%"),
    Lever("warm-up 25%, seed 1", {"warmup_fraction": 0.25, "seed": 1}, "the same from another seed"),
    Lever("LR 1e-2", {"lr": 1e-2}, "does a much larger step help?"),
    Lever("LR 3e-4", {"lr": 3e-4}, "close to the paper's 2e-4, made for a long run"),
    Lever("256 positions per step", {"positions_per_step": 256}, "examples per step vs steps: twice the updates"),
    Lever("no curriculum", {"curriculum": False}, "every step reconstructs s/k chunks (Table 11's question)"),
    Lever("previous recipe", {"start_token": False, "projector_norm": False, "lr": 3e-3, "encoder_lr_scale": 1.0},
          "LR 3e-3, no start token (the first vector sits on the attention-sink position 0), projector output "
          "unbounded"),
    Lever("previous recipe, seed 1",
          {"start_token": False, "projector_norm": False, "lr": 3e-3, "encoder_lr_scale": 1.0, "seed": 1},
          "the same from another seed"),
    Lever("LR 3e-3, projector output unbounded", {"projector_norm": False, "lr": 3e-3},
          "with the start token, the projector's output length free, as in the paper's plain MLP"),
    Lever("LR 3e-3, projector output unbounded, seed 1", {"projector_norm": False, "lr": 3e-3, "seed": 1},
          "the same from another seed"),
    Lever("first-token pooling", {"pooling": "first"}, "the chunk's [CLS] state instead of the mean of its states"),
    Lever("k = 8", {}, "half the tokens per vector (twice the vectors): scored against its own floor", k=8),
    Lever("one chunk only", {"context_tokens": 16}, "every step reconstructs one chunk (s = k): the curriculum "
          "moves on to 8-16 chunks after ~20 steps, while the one-chunk gain is the target"),
    Lever("one chunk only, 4x the budget", {"context_tokens": 16}, "the same for 4x the compute (outside the "
          "course's CPU budget): the slope of one-chunk accuracy against steps", budget=4.0),
    Lever("one chunk only, encoder at 1e-3", {"context_tokens": 16, "encoder_lr_scale": 1.0},
          "one-chunk training with the previous default's encoder LR"),
    Lever("paper's curriculum over the whole budget", {"one_chunk_share": 0.0},
          "no one-chunk phase: Table 8's 9 stages spread evenly over every step"),
    Lever("paper's curriculum, seed 1", {"one_chunk_share": 0.0, "seed": 1}, "the same from another seed"),
    Lever("warm-up 4%", {"warmup_fraction": 0.04}, "the previous default: gradient norms near 1000 in the first "
          "steps"),
    Lever("one chunk for 75% of the steps", {"one_chunk_share": 0.75}, "the previous default's share: a longer "
          "curriculum, for 4 and 16 chunks"),
    Lever("fp32 maths", {"cpu_bf16": False}, "the previous default: no bf16 autocast on a CPU with native bf16 "
          "maths (the same steps; the seconds column says what bf16 saves)"),
]

CPT_LEVERS = [
    Lever("course default", {}, "peak LR 3e-4, decoder frozen, p = 0.1, from the reconstruction weights, bf16 "
          "autocast on a CPU with native bf16 maths"),
    Lever("seed 1", {"seed": 1}, "the default from another seed: the spread a lever has to beat"),
    Lever("LR 1e-3", {"lr": 1e-3}, "stage 1's rate: better CPT log-ppl, but lower REFRAG EM downstream (notebook 03)"),
    Lever("LR 2.5e-4", {"lr": 2.5e-4}, "the previous default: loss spikes at steps 20-35"),
    Lever("LR 3e-5", {"lr": 3e-5}, "close to the paper's 5e-5"),
    Lever("decoder trained", {"train_decoder": True, "lr": 5e-5}, "the paper's recipe: every part, LR 5e-5"),
    Lever("no reconstruction init", {}, "CPT from a fresh encoder + projector (Table 12)", init_from_recon=False),
    Lever("LR 1e-4", {"lr": 1e-4}, "the previous default"),
    Lever("2x the budget", {}, "the default for twice the compute (outside the course's CPU budget): what "
          "more steps buy", budget=2.0),
    Lever("continuation 32 tokens", {"continuation_tokens": 32}, "shorter targets, more contexts per step: the "
          "first continuation tokens are where the context matters most"),
    Lever("fp32 maths", {"cpu_bf16": False}, "the previous default: no bf16 autocast on a CPU with native bf16 "
          "maths (the same steps; the seconds column says what bf16 saves)"),
]

LEVERS = {"recon": RECON_LEVERS, "cpt": CPT_LEVERS}


def equal_compute_steps(base: TrainConfig, cfg: TrainConfig) -> int:
    """The steps that give `cfg` the decoder positions `base` gets in base.steps steps."""
    return max(2, round(base.steps * base.positions_per_step / cfg.positions_per_step))


def run_levers(run, base: TrainConfig, levers: list[Lever], score, progress: bool = True) -> list[dict]:
    """Train every lever on the budget of `base` and score each with score(model) -> per-window dict."""
    rows = []
    for lever in levers:
        lever_run = replace(run, preset=run.preset.with_k(lever.k)) if lever.k else run
        cfg = replace(base, **lever.changes)
        steps = round(equal_compute_steps(base, cfg) * lever.budget)
        cfg = replace(cfg, steps=steps, save_every=steps)
        folder = f"{base.stage}/levers/" + re.sub(r"[^a-z0-9]+", "-", lever.name.lower()).strip("-")
        result = train_stage(lever_run, cfg, folder=folder, resume=False,
                             init_from_recon=lever.init_from_recon, progress=progress)
        rows.append({"lever": lever.name, "why": lever.why, "changes": lever.changes, "k": result.model.k,
                     "steps": cfg.steps,
                     "train_seconds": result.summary["train_seconds"],
                     "max_grad_norm": result.summary["max_grad_norm"], **score(result.model)})
        del result.model
    return rows


def format_levers(report: dict) -> str:
    """The lever table of either stage: * marks a paired change against the default whose 95% interval
    excludes 0."""
    rows, default = report["rows"], report["rows"][0]
    lines = [report["heading"]]
    for row in rows:
        cells = (_recon_cells(row, default) if report["stage"] == "recon" else _cpt_cells(row, default))
        lines.append(f"{row['lever']:>24} | {row['steps']:4d} steps, {row['train_seconds']:4.0f} s, "
                     f"max grad norm {row['max_grad_norm']:5.1f} | " + " | ".join(cells))
    return "\n".join(lines)


def _versus(change: dict) -> str:
    return f" (vs default {change['mean']:+.3f}{'*' if excludes_zero(change) else ''})"


def _recon_cells(row: dict, default: dict) -> list[str]:
    # rows of another k are scored on windows of their own length: no paired change against the default
    same_windows = row is not default and row.get("k") == default.get("k")
    versus = between_models(row, default) if same_windows else None
    cells = []
    for n, cell in row["by_chunks"].items():
        label = f"{n} ch" if row.get("k") == default.get("k") else f"{n} ch of k={row['k']}"
        text = f"{label} {format_interval(cell['log_ppl_gain'])}, acc {cell['token_accuracy_gain']['mean']:+.3f}"
        cells.append(text + (_versus(versus[n]["log_ppl_gain"]) if versus else ""))
    exact = row["by_chunks"][next(iter(row["by_chunks"]))]["first_chunk_exact"]
    return [*cells, f"1-chunk exact {format_interval(exact, 2)}"]


def _cpt_cells(row: dict, default: dict) -> list[str]:
    gain = format_interval(row["gain_over_last_tokens"])
    text = f"log-ppl {format_interval(row['refrag'])}, vs last s/k tokens {gain}"
    if row is not default:
        text += _versus(paired_cpt(row["per_pair"], default["per_pair"]))
    return [text]


def merge_rows(earlier: list[dict], fresh: list[dict], levers: list[Lever]) -> list[dict]:
    """A table's rows with rows just run: a lever run again replaces its row; the order is `levers`'s,
    so the reference row (the course default) stays first."""
    names = [lever.name for lever in levers]
    merged = {**{row["lever"]: row for row in earlier}, **{row["lever"]: row for row in fresh}}
    return sorted(merged.values(), key=lambda row: names.index(row["lever"]) if row["lever"] in names else len(names))


def levers_path(run, stage: str):
    """Where a run keeps a stage's lever table."""
    return run.stage_dir(f"{stage}/levers") / "levers.json"


def read_levers(run, stage: str) -> dict | None:
    """The lever table `python -m refrag_lib levers --stage <stage>` left in this run, or None."""
    path = levers_path(run, stage)
    return json.loads(path.read_text()) if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    """`python -m refrag_lib levers`: a stage's lever table, written to RUN_DIR/<stage>/levers/levers.json."""
    parser = argparse.ArgumentParser(prog="python -m refrag_lib levers", description=main.__doc__)
    parser.add_argument("--stage", default="recon", choices=sorted(LEVERS))
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--run-dir", default="", help="artifacts folder (default runs/<preset>)")
    parser.add_argument("--steps", type=int, default=0,
                        help="steps of the default row (every row gets its decoder positions); 0: the preset's "
                        "budget for the stage, as notebooks 02-03 train")
    parser.add_argument("--windows", type=int, default=64, help="held-out windows (recon: per chunk count)")
    parser.add_argument("--only", nargs="*", help="lever numbers to run (default: all; 0 is the reference)")
    args = parser.parse_args(argv)
    run = open_run(args.preset, args.run_dir)
    if args.stage == "cpt":
        run.require("recon", "weights.safetensors")  # before any work: names notebook 02 when missing
    model = load_refrag(run.preset)
    _, held_out = tokenized_documents(model)
    budget = run.preset.budget
    args.steps = args.steps or (budget.recon_steps if args.stage == "recon" else budget.cpt_steps)
    base = replace(default_config(args.stage), steps=args.steps)
    if args.stage == "recon":
        floors = {}  # per k: the decoder alone on windows of n*k tokens (it needs no encoder or projector)

        def score(trained):
            if trained.k not in floors:
                floors[trained.k] = floor_scores(trained, held_out, chunk_counts(base.context_tokens // trained.k),
                                                 args.windows, long_windows=args.windows // 2)
            probe = vectors_against_floor(trained, held_out, floors[trained.k])
            return {"by_chunks": probe["by_chunks"], "per_window": probe["per_window"]}

        heading = (f"{args.steps} steps of {base.positions_per_step} positions' compute per lever, {args.windows} "
                   "held-out windows per chunk count; log-ppl gain over the decoder alone [95% interval], "
                   "token-accuracy gain; 'vs default': paired change in log-ppl gain")
    else:
        pairs = cpt_windows(held_out, base.context_tokens, base.continuation_tokens, args.windows)
        baselines = cpt_arms(model, pairs, ("last_tokens",))["per_pair"]

        def score(trained):
            return cpt_arms(trained, pairs, ("refrag",), baselines=baselines)

        heading = (f"{args.steps} steps of {base.positions_per_step} positions' compute per lever, {args.windows} "
                   "held-out (context, continuation) pairs; REFRAG log-ppl [95% interval] and its gain over "
                   "the last s/k tokens on the frozen decoder; 'vs default': paired change (> 0 better)")
    del model
    chosen = [LEVERS[args.stage][int(i)] for i in args.only] if args.only else LEVERS[args.stage]
    out = levers_path(run, args.stage)
    report = {"stage": args.stage, "heading": heading, "steps": args.steps, "windows": args.windows, "rows": [],
              "commands": []}
    earlier = read_levers(run, args.stage)
    if earlier and (earlier.get("steps"), earlier.get("windows")) == (args.steps, args.windows):
        report = earlier  # rows run now join (or replace) the table's rows of the same budget and windows
    elif earlier:
        raise CourseError(f"{out} holds levers of {earlier.get('steps')} steps on {earlier.get('windows')} windows; "
                          f"move it away to start a table of {args.steps} steps on {args.windows}.")
    report["rows"] = merge_rows(report["rows"], run_levers(run, base, chosen, score), LEVERS[args.stage])
    report["commands"] = [*report.get("commands", []), "python -m refrag_lib levers " + " ".join(argv or [])]
    out.write_text(json.dumps(report))
    print(format_levers(report))
    print("wrote", out)
    return 0
