"""What moves context recovered: one table of recipes for stages 1-2, scored on notebook 03's held-out windows.

Context recovered (see fair_cpt) is the share of the full context's log-ppl gain that REFRAG's vectors give. Each
row changes one thing in the course's recipe and keeps the rest: the same documents, the same held-out windows and
the same number of training steps (stage 1 + stage 2; a row that moves steps between the stages keeps their sum).
Rows with the decoder frozen are scored against the untouched decoder's baselines; rows that train the decoder
against baselines whose decoder was fine-tuned the same way (fair_cpt's protocol). Rows that train their own
stage 1 also report its one-chunk token accuracy (teacher-forced) on notebook 02's held-out windows.

`python -m refrag_lib recovery-levers --run-dir runs/cpu` (after notebooks 02-03) trains what is missing under
RUN_DIR/cpt/recovery/ and writes RUN_DIR/cpt/recovery/recovery.json.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, replace

from ..arms import FULL_CONTEXT, LAST_TOKENS, NO_CONTEXT, REFRAG
from ..config import PRESETS
from ..evaluate import context_nll, floor_scores, vectors_against_floor
from ..intervals import excludes_zero, format_interval, mean_interval, paired_difference
from ..model import load_refrag
from ..runs import open_run
from ..stages import COURSE_LR, PAPER_LR, default_config, train_stage
from ..trained import load_trained
from .fair_cpt import BASELINES, decoder_trained_config, held_out_pairs, protocol_row, train_baseline


@dataclass(frozen=True)
class Recipe:
    name: str
    why: str
    k: int | None = None  # tokens per chunk vector; None: the preset's
    cpt_share: float | None = None  # share of the two stages' steps given to CPT; None: the preset's budget
    decoder_lr: float = 0.0  # > 0: CPT trains the decoder at this peak LR, against fair baselines
    rest_lr: float = 0.0  # with decoder_lr: the encoder and projector's peak LR (0: the course's CPT LR)
    seed: int = 0  # of both stages (the projector's initialisation, the windows, the mixed input)

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


RECIPES = [
    Recipe("course default", "notebooks 02-03: decoder frozen, k = 16, 320 + 120 steps on the cpu preset"),
    Recipe("seed 1", "the default from another seed: the spread a recipe has to beat", seed=1),
    Recipe("decoder trained, every part at 5e-5", "the paper's stage 2 (fair_cpt's row)",
           decoder_lr=PAPER_LR["cpt"], rest_lr=PAPER_LR["cpt"]),
    Recipe("decoder at 5e-5, encoder + projector at 3e-4", "the decoder at the paper's LR, the vectors at the "
           "course's: can they keep up while the decoder learns the template?", decoder_lr=PAPER_LR["cpt"]),
    Recipe("k = 8", "twice the vectors, half the tokens each (the paper's REFRAG8 recovers more)", k=8),
    Recipe("stage 2 gets 55% of the steps", "a shorter stage 1 (198 + 242 steps on the cpu preset)", cpt_share=0.55),
    Recipe("stage 2 gets 14% of the steps", "a longer stage 1 (378 + 62 steps on the cpu preset)", cpt_share=0.14),
]


def stage_steps(budget, recipe: Recipe) -> tuple[int, int]:
    """(stage 1, stage 2) steps of a recipe: the preset's budget, or its sum split by cpt_share."""
    if recipe.cpt_share is None:
        return budget.recon_steps, budget.cpt_steps
    total = budget.recon_steps + budget.cpt_steps
    cpt = max(1, round(total * recipe.cpt_share))
    return total - cpt, cpt


class Shared:
    """What the rows of one table share: notebook 03's held-out pairs, the untouched decoder's baselines on them,
    the decoder-alone floor of one-chunk windows per k and the fine-tuned baselines per decoder LR (each computed
    once, for the first row that needs it)."""

    def __init__(self, run, windows: int):
        base = load_refrag(run.preset)
        self.train_docs, self.held_out, self.pairs, self.lengths = held_out_pairs(run, base,
                                                                                 run.preset.budget.cpt_pairs)
        self.baselines = {arm: context_nll(base, self.pairs, arm).tolist() for arm in (NO_CONTEXT, FULL_CONTEXT)}
        self.windows, self.floors, self.trained_baselines = windows, {}, {}

    def one_chunk_accuracy(self, model) -> list[float]:
        """Stage 1's one-chunk token accuracy per held-out window (notebook 02's windows)."""
        if model.k not in self.floors:  # the decoder alone: the same for every encoder of this k
            self.floors[model.k] = floor_scores(model, self.held_out, [1], self.windows)
        return vectors_against_floor(model, self.held_out, self.floors[model.k])["per_window"]["1"]["token_accuracy"]


def frozen_row(run, recipe: Recipe, shared: Shared) -> tuple[dict, list, dict]:
    """A decoder-frozen recipe: its own stages 1-2 in RUN_DIR/cpt/recovery/<slug> (the default: the run's own)."""
    if recipe == RECIPES[0]:
        recon, cpt, seconds = load_trained(run, "recon"), load_trained(run, "cpt"), None
    else:
        sub = replace(run, root=run.stage_dir(f"cpt/recovery/{recipe.slug}"),
                      preset=run.preset.with_k(recipe.k or run.preset.k))
        recon_steps, cpt_steps = stage_steps(run.preset.budget, recipe)
        first = train_stage(sub, default_config("recon", recon_steps, save_every=recon_steps, seed=recipe.seed),
                            progress=False)
        second = train_stage(sub, default_config("cpt", cpt_steps, save_every=cpt_steps, seed=recipe.seed),
                             progress=False)
        recon, cpt = first.model, second.model
        seconds = first.summary["train_seconds"] + second.summary["train_seconds"]
    accuracy = shared.one_chunk_accuracy(recon)
    per_pair = {**shared.baselines, REFRAG: context_nll(cpt, shared.pairs, REFRAG).tolist(),
                LAST_TOKENS: context_nll(cpt, shared.pairs, LAST_TOKENS).tolist()}  # the last s/k tokens of its k
    return per_pair, accuracy, {"train_seconds": seconds, "k": cpt.k}


def trained_row(run, recipe: Recipe, shared: Shared) -> tuple[dict, None, dict]:
    """A decoder-trained recipe against baselines fine-tuned at the same decoder LR, step for step."""
    baseline_cfg = decoder_trained_config(run.preset.budget.cpt_steps, lr=recipe.decoder_lr, **shared.lengths)
    paper = recipe.decoder_lr == PAPER_LR["cpt"]
    if recipe.decoder_lr not in shared.trained_baselines:
        per_arm = {}
        for arm in BASELINES:
            folder = f"cpt/fair/{arm}" if paper else f"cpt/recovery/decoder-{recipe.decoder_lr:g}/{arm}"
            model = train_baseline(run, arm, baseline_cfg, shared.train_docs, progress=False, folder=folder)
            per_arm[arm] = context_nll(model, shared.pairs, arm).tolist()
        shared.trained_baselines[recipe.decoder_lr] = per_arm
    rest = recipe.rest_lr or COURSE_LR["cpt"]
    cfg = replace(baseline_cfg, lr=rest, decoder_lr_scale=recipe.decoder_lr / rest)
    folder = "cpt/fair/refrag" if paper and rest == recipe.decoder_lr else f"cpt/recovery/{recipe.slug}"
    result = train_stage(run, cfg, folder=folder, progress=False)
    per_pair = {**shared.trained_baselines[recipe.decoder_lr],
                REFRAG: context_nll(result.model, shared.pairs, REFRAG).tolist()}
    return per_pair, None, {"train_seconds": result.summary["train_seconds"], "k": result.model.k}


def recovery_table(run, recipes: list[Recipe], windows: int) -> dict:
    """Every recipe's context recovered, REFRAG's gain over the last s/k tokens and stage 1's one-chunk accuracy."""
    shared = Shared(run, windows)
    rows, default = [], None
    for recipe in recipes:
        per_pair, accuracy, about = (trained_row if recipe.decoder_lr else frozen_row)(run, recipe, shared)
        if recipe == RECIPES[0]:
            default = {"refrag": per_pair[REFRAG], "accuracy": accuracy}
        recon_steps, cpt_steps = stage_steps(run.preset.budget, recipe)
        row = {"recipe": recipe.name, "why": recipe.why, "steps": [recon_steps, cpt_steps],
               "protocol": "decoder trained, fair baselines" if recipe.decoder_lr else "decoder frozen",
               **about, **protocol_row(per_pair),
               "one_chunk_accuracy": mean_interval(accuracy) if accuracy is not None else None}
        if default is not None and recipe != RECIPES[0] and not recipe.decoder_lr:
            row["refrag_vs_default"] = paired_difference(default["refrag"], per_pair[REFRAG])  # > 0: better
            if about["k"] == run.preset.k:
                row["accuracy_vs_default"] = paired_difference(accuracy, default["accuracy"])
        rows.append(row)
    return {"rows": rows, "eval_pairs": len(shared.pairs), "one_chunk_windows": windows}


RECOVERY_TABLE = "cpt/recovery/recovery.json"  # where the command leaves its table in a run


def format_table(table: dict) -> str:
    """The table as the notebook and the command print it; * marks a paired change whose interval excludes 0."""
    lines = [f"{table['eval_pairs']} held-out windows (context recovered, REFRAG - last s/k tokens in log-ppl, > 0: "
             f"REFRAG better); one-chunk accuracy on {table['one_chunk_windows']} windows",
             f"{'recipe':>46} | {'k':>2} | steps    | protocol        | context recovered [95%] | "
             "REFRAG - last s/k [95%]  | one-chunk accuracy"]
    for row in table["rows"]:
        accuracy = format_interval(row["one_chunk_accuracy"], 2) if row["one_chunk_accuracy"] else "-"
        versus = row.get("refrag_vs_default")
        note = f" (REFRAG vs default {versus['mean']:+.3f}{'*' if excludes_zero(versus) else ''})" if versus else ""
        protocol = "trained, fair" if row["protocol"].startswith("decoder trained") else "frozen"
        lines.append(f"{row['recipe']:>46} | {row['k']:>2} | {row['steps'][0]:3d}+{row['steps'][1]:<3d}  | "
                     f"{protocol:<15} | {format_interval(row['context_recovered'], 2):>23} | "
                     f"{format_interval(row['gain_over_last_tokens']):>24} | {accuracy}{note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m refrag_lib recovery-levers --run-dir runs/cpu`: what moves context recovered."""
    parser = argparse.ArgumentParser(prog="python -m refrag_lib recovery-levers", description=main.__doc__)
    parser.add_argument("--preset", default="cpu", choices=[*PRESETS, "auto"])
    parser.add_argument("--run-dir", default="", help="a run whose notebooks 02-03 finished (default runs/<preset>)")
    parser.add_argument("--only", nargs="*", type=int, help="recipe numbers to run (default: all; 0 is the default)")
    args = parser.parse_args(argv)
    run = open_run(args.preset, args.run_dir)
    run.require("cpt", "weights.safetensors")
    recipes = [RECIPES[i] for i in args.only] if args.only else RECIPES
    if RECIPES[0] not in recipes:
        recipes = [RECIPES[0], *recipes]  # every row is compared with the default
    table = recovery_table(run, recipes, run.preset.budget.recon_windows)
    path = run.write_study(RECOVERY_TABLE, table)
    print(format_table(table))
    print("wrote", path)
    return 0

