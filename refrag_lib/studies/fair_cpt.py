"""How much of the context REFRAG's vectors carry, under two protocols, on the same held-out windows.

Context recovered = (no context - REFRAG) / (no context - full context), in next-paragraph log-ppl (the
paper's Table 1 shape; its P512 Arxiv row gives (1.526 - 1.157) / (1.526 - 1.075) = 82%).

- frozen decoder: the course's CPT (encoder + projector trained, the decoder as it came) against the
  baselines read by that same untouched decoder. What notebook 03 reports.
- decoder trained (the paper's stage 2): CPT with every part trained at the paper's LR, and each baseline
  (no context, the last s/k tokens, the full context as tokens) given its own decoder fine-tuned the same way:
  the same documents, the same windows step by step, the same steps and LR, on the baseline's own input.
  Only then does a lower REFRAG log-ppl say the vectors carry more, not that the decoder learnt the reports'
  template (which every arm then learns too).

`python -m refrag_lib fair-cpt --run-dir runs/cpu` (after notebooks 02-03) trains what is missing under
RUN_DIR/cpt/fair/, scores every arm on notebook 03's held-out windows and writes RUN_DIR/cpt/fair/fair.json.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

import numpy as np
from torch import nn

from ..arms import FULL_CONTEXT, LAST_TOKENS, NO_CONTEXT, REFRAG
from ..checkpoint import model_identity
from ..config import PRESETS
from ..evaluate import ARM_INPUTS, context_nll, cpt_windows
from ..intervals import format_interval, paired_difference, recovered_interval
from ..losses import TokenStats, suffix_token_stats
from ..model import RefragModel, load_refrag
from ..runs import open_run
from ..stages import PAPER_LR, StageTask, TrainConfig, default_config, tokenized_documents, train_stage
from ..train import train
from ..trained import load_trained

BASELINES = (NO_CONTEXT, LAST_TOKENS, FULL_CONTEXT)


class ArmObjective(nn.Module):
    """Next-paragraph NLL of a baseline's input (no context, last s/k tokens or full context as tokens)."""

    def __init__(self, model: RefragModel, arm: str):
        super().__init__()
        self.model, self.arm = model, arm

    def forward(self, examples, rng: np.random.Generator) -> TokenStats:
        contexts, continuations = examples
        return suffix_token_stats(self.model, [ARM_INPUTS[self.arm](self.model, list(c), list(o))
                                               for c, o in zip(contexts, continuations)])


class BaselineTask(StageTask):
    """A baseline's decoder fine-tuning as a task of the shared loop: CPT's windows, step for step (the same
    curriculum and generator: StageTask's batches), read as the baseline reads them; only the decoder trains."""

    def __init__(self, model: RefragModel, cfg: TrainConfig, token_docs: list[list[int]], arm: str):
        super().__init__(model, cfg, token_docs)
        self.name, self.parts = f"cpt-{arm}", ["decoder"]
        self.objective = ArmObjective(model, arm)


def decoder_trained_config(steps: int, **changes) -> TrainConfig:
    """The course's CPT recipe with the decoder trained at the paper's LR (notebook 03's lever row)."""
    return default_config("cpt", steps, **{"train_decoder": True, "lr": PAPER_LR["cpt"], "save_every": steps,
                                            **changes})


def train_baseline(run, arm: str, cfg: TrainConfig, train_docs: list[list[int]], progress: bool = True,
                   folder: str = ""):
    """The decoder fine-tuned on a baseline's input (RUN_DIR/<folder>, default cpt/fair/<arm>); a finished run
    is loaded."""
    model = load_refrag(run.preset)
    return train(model, cfg, BaselineTask(model, cfg, train_docs, arm), run.stage_dir(folder or f"cpt/fair/{arm}"),
                 model_identity(run.preset, "cpt"), progress=progress).model


def protocol_row(per_pair: dict[str, list[float]]) -> dict:
    """Every arm's log-ppl, REFRAG's paired gain over the last s/k tokens, and the context it recovers."""
    recovered = recovered_interval(per_pair[NO_CONTEXT], per_pair[REFRAG], per_pair[FULL_CONTEXT])
    return {"log_ppl": {arm: float(np.mean(values)) for arm, values in per_pair.items()},
            "gain_over_last_tokens": paired_difference(per_pair[LAST_TOKENS], per_pair[REFRAG]),
            "context_recovered": recovered}


def held_out_pairs(run, model: RefragModel, eval_pairs: int) -> tuple[list, list, list, dict]:
    """(training documents, held-out documents, notebook 03's held-out pairs, the context_tokens and
    continuation_tokens they were cut at), every document tokenised once."""
    train_docs, held_out = tokenized_documents(model)
    config = run.read_metrics("cpt")["config"]
    lengths = {name: config[name] for name in ("context_tokens", "continuation_tokens")}
    return train_docs, held_out, cpt_windows(held_out, *lengths.values(), eval_pairs), lengths


def fair_table(run, steps: int, eval_pairs: int, progress: bool = True) -> dict:
    """Both protocols on notebook 03's held-out windows; trains the decoder-trained arms that are missing."""
    frozen_refrag = load_trained(run, "cpt")
    train_docs, _, pairs, lengths = held_out_pairs(run, frozen_refrag, eval_pairs)
    base = load_refrag(run.preset)
    frozen = {arm: context_nll(base, pairs, arm).tolist() for arm in BASELINES}
    frozen[REFRAG] = context_nll(frozen_refrag, pairs, REFRAG).tolist()
    del frozen_refrag
    cfg = decoder_trained_config(steps, **lengths)
    refrag = train_stage(run, cfg, folder="cpt/fair/refrag", progress=progress)
    trained = {REFRAG: context_nll(refrag.model, pairs, REFRAG).tolist()}
    seconds = {REFRAG: refrag.summary["train_seconds"]}
    del refrag
    for arm in BASELINES:
        model = train_baseline(run, arm, cfg, train_docs, progress)
        trained[arm] = context_nll(model, pairs, arm).tolist()
        del model
    return {"frozen_decoder": protocol_row(frozen), "decoder_trained": protocol_row(trained),
            "steps": steps, "eval_pairs": len(pairs), "config": asdict(cfg), "refrag_train_seconds": seconds,
            "paper_recovered": (1.526 - 1.157) / (1.526 - 1.075)}


FAIR_TABLE = "cpt/fair/fair.json"  # where the command leaves its table in a run


def format_table(table: dict) -> str:
    lines = [f"{table['eval_pairs']} held-out windows, {table['steps']} CPT steps; log-ppl of the continuation",
             f"{'protocol':>16} | {'no context':>10} | {'last s/k':>8} | {'REFRAG':>7} | {'full':>6} | "
             "REFRAG - last s/k [95%] | context recovered [95%]"]
    for name in ("frozen_decoder", "decoder_trained"):
        row = table[name]
        ppl = row["log_ppl"]
        lines.append(f"{name.replace('_', ' '):>16} | {ppl[NO_CONTEXT]:10.3f} | {ppl[LAST_TOKENS]:8.3f} | "
                     f"{ppl[REFRAG]:7.3f} | {ppl[FULL_CONTEXT]:6.3f} | {format_interval(row['gain_over_last_tokens'])}"
                     f" | {format_interval(row['context_recovered'], 2)}")
    lines.append(f"the paper (Table 1, Arxiv P512, REFRAG16): context recovered {table['paper_recovered']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m refrag_lib fair-cpt --run-dir runs/cpu`: context recovered, decoder frozen and trained."""
    parser = argparse.ArgumentParser(prog="python -m refrag_lib fair-cpt", description=main.__doc__)
    parser.add_argument("--preset", default="cpu", choices=[*PRESETS, "auto"])
    parser.add_argument("--run-dir", default="", help="a run whose notebooks 02-03 finished (default runs/<preset>)")
    parser.add_argument("--steps", type=int, default=0, help="CPT steps of every trained arm (default: the preset's)")
    parser.add_argument("--pairs", type=int, default=0, help="held-out windows (default: the preset's, as 03)")
    args = parser.parse_args(argv)
    run = open_run(args.preset, args.run_dir)
    budget = run.preset.budget
    table = fair_table(run, args.steps or budget.cpt_steps, args.pairs or budget.cpt_pairs)
    path = run.write_study(FAIR_TABLE, table)
    print(format_table(table))
    print("wrote", path)
    return 0
