"""The paper's Figure 3: held-out log-perplexity of the next paragraph against the fraction p of chunks
expanded, for every selector (the GRPO policy, the perplexity heuristics in both directions, random over
several seeds), with the verdict at one p: does RL beat random by more than random's own spread?
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from .errors import CourseError
from .model import RefragModel
from .policy import check_fraction
from .selectors import FixedSelector, MaskedNLL, PerplexitySelector, RandomSelector, ScoredExample, Selector

FIGURE3_FRACTIONS = (0.0, 0.05, 0.1, 0.25, 0.5)


def figure3(model: RefragModel, examples: Sequence[ScoredExample], selectors: dict[str, Selector],
            fractions: Sequence[float] = FIGURE3_FRACTIONS, random_seeds: Sequence[int] = (0, 1, 2),
            batch_size: int = 8, progress: bool = True) -> dict:
    """{"log_ppl_by_p": {selector: {p: log-ppl}}, "random_std": {p: std over seeds}, "none", "all"}.

    `random` is averaged over several seeds (its std says how much of a gap is noise); ppl_desc and
    ppl_asc are added here, the caller passes the learned policy (and anything else) in `selectors`.
    """
    if len(random_seeds) < 1:
        raise CourseError("figure3 needs at least one random seed (3 or more to measure the spread).")
    fractions = [check_fraction(p) for p in fractions]
    scorer = MaskedNLL(model, examples, batch_size)
    arms = {**selectors, "ppl_desc": PerplexitySelector(True), "ppl_asc": PerplexitySelector(False)}
    table: dict[str, dict[str, float]] = {name: {} for name in [*arms, "random"]}
    spread: dict[str, float] = {}
    for p in tqdm(fractions, desc="Figure 3", disable=not progress):
        for name, selector in arms.items():
            table[name][str(p)] = scorer.log_ppl(selector, p)
        seeds = [scorer.log_ppl(RandomSelector(seed), p) for seed in random_seeds]
        table["random"][str(p)] = float(np.mean(seeds))
        spread[str(p)] = float(np.std(seeds))
    return {
        "log_ppl_by_p": table, "random_std": spread, "random_seeds": len(random_seeds),
        "none": scorer.log_ppl(FixedSelector(False), 0.0),
        "all": scorer.log_ppl(FixedSelector(True), 1.0),
    }




def compare_at(table: dict, p: float = 0.25) -> dict:
    """The Figure 3 verdict at one p: RL against random (is the gap beyond random's seed spread?) and
    against perplexity-descending (negative = RL better)."""
    key = str(check_fraction(p))
    by_p = table["log_ppl_by_p"]
    if key not in by_p.get("rl", {}):
        raise CourseError(f"p = {p} is not in the table; evaluate it with figure3(..., fractions=[..., {p}]).")
    rl_minus_random = by_p["rl"][key] - by_p["random"][key]
    return {
        "p": float(key), "rl_minus_random": rl_minus_random, "random_std": table["random_std"][key],
        "rl_beats_random_beyond_spread": bool(-rl_minus_random > table["random_std"][key]),
        "rl_minus_ppl_desc": by_p["rl"][key] - by_p["ppl_desc"][key],
        "winner": min(("rl", "ppl_desc", "ppl_asc", "random"), key=lambda name: by_p[name][key]),
    }


def policy_metrics(table: dict, summary: dict, question_summary: dict, question_curve: Sequence[dict],
                   warm_start: dict, held_out: dict, **settings) -> dict:
    """Notebook 04's metrics.json: Figure 3's table and its verdict at p = 0.25, the GRPO policy's reward
    curve, and the question-aware policy's warm start, reward curve and held-out table (`held_out_table`),
    with the run's settings. `regress` compares these keys."""
    rewards = ("reward_curve_first", "reward_curve_last", "reward_gain_first", "reward_gain_last", "train_seconds")
    return {
        **{key: table[key] for key in ("log_ppl_by_p", "random_std", "random_seeds", "none", "all")},
        **{key: summary[key] for key in rewards}, **settings,
        "verdict_at_0.25": compare_at(table, 0.25), "grpo_config": summary["grpo_config"],
        "question_policy": {
            **{key: question_summary[key] for key in ("reward_gain_first", "reward_gain_last", "train_seconds",
                                                     "grpo_config")},
            "warm_start": warm_start,
            "curve": [{key: row[key] for key in ("step", "p", "reward_mean", "reward_gain_vs_random")}
                      for row in question_curve],
            "held_out": held_out,
        },
    }
