"""Stage 3: train the expansion policy with GRPO, and score every selector on held-out text.

Reward of a selection = minus the mean NLL of the TRUE continuation x_{s+1..s+o} when the chosen
chunks are fed as tokens and the rest as vectors (never the model's own greedy output). GRPO draws G
selections of the same example and uses the group itself as the baseline: advantage
A_g = (r_g - mean r) / (std r + eps). No value network is needed because the G rewards of one example
already say which selections were better than usual for THAT example. The update is PPO's clipped
ratio against the log-probabilities at rollout time, averaged over the T' selection steps and the
group, several updates per batch of rollouts, no KL term.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import WEIGHTS, model_identity, read_metadata
from .errors import CourseError
from .losses import IGNORE, next_paragraph_example, shifted_labels
from .model import RefragModel
from .policy import (
    POLICY_WEIGHTS,
    ChunkPolicy,
    Policy,
    check_fraction,
    n_expanded,
    sample_ordered,
    step_log_probs,
    to_mask,
)
from .precision import in_training_precision
from .selectors import FixedSelector, PerplexitySelector, RandomSelector, ScoredExample, Selector, chunk_nll
from .train import StageTask, TrainConfig, tokenized_documents, train, windows
from .trained import MIXED_CPT_FOLDER, load_trained

FIGURE3_FRACTIONS = (0.0, 0.05, 0.1, 0.25, 0.5)


# ---- GRPO maths --------------------------------------------------------------------------------------
def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """[B, G] rewards -> (r - group mean) / (group std + eps); std over the G members (population)."""
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise CourseError(f"GRPO needs rewards of shape [examples, G >= 2], got {tuple(rewards.shape)}.")
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=False)
    return (rewards - mean) / (std + eps)


def clipped_objective(new_logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                      clip_eps: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate as a loss to minimise, and the share of clipped steps.

    new_logp, old_logp: [B, G, T'] per-step log-probabilities; advantages [B, G] (shared by all steps
    of a selection). Per step rho = exp(new - old); objective min(rho A, clip(rho, 1-eps, 1+eps) A),
    averaged over steps and group.
    """
    if not 0.0 < clip_eps < 1.0:
        raise CourseError(f"clip_eps must lie in (0, 1), got {clip_eps} (PPO and TRL use 0.2).")
    ratio = torch.exp(new_logp - old_logp.detach())
    adv = advantages.detach().unsqueeze(-1)
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps) * adv
    objective = torch.minimum(unclipped, clipped)
    clip_fraction = ((ratio - 1.0).abs() > clip_eps).float().mean()
    return -objective.mean(), clip_fraction.detach()


# ---- scoring examples ----------------------------------------------------------------------------------
@torch.no_grad()
def score_examples(model: RefragModel, pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
                   with_chunk_nll: bool = True, batch_size: int = 8) -> list[ScoredExample]:
    """(context, continuation) token pairs -> examples with chunk vectors (ONE encoder call) and chunk NLL.

    Training the policy needs only the vectors: with_chunk_nll=False skips the full-context forward
    (the chunk NLL is then NaN, and the perplexity heuristics refuse such examples).
    """
    batch = [next_paragraph_example(c, o, model.k) for c, o in pairs]
    vectors = model.encode_chunks([chunk for ex in batch for chunk in ex.chunks]).float().cpu()
    per_example = vectors.split([len(ex.chunks) for ex in batch])
    if with_chunk_nll:  # full-vocabulary logits at every context position: batches keep memory bounded
        scores = [nll for i in range(0, len(batch), batch_size) for nll in chunk_nll(model, batch[i : i + batch_size])]
    else:
        scores = [torch.full((len(ex.chunks),), math.nan) for ex in batch]
    return [ScoredExample(ex, c, nll) for ex, c, nll in zip(batch, per_example, scores)]


@in_training_precision
def mixed_input_nll(model: RefragModel, examples: Sequence[ScoredExample],
                    masks: Sequence[Sequence[bool]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed NLL and token count of each row's TRUE continuation under its expansion mask.

    One decoder forward for all rows; the cached chunk vectors stand in for the compressed chunks
    (no encoder call). Rows may repeat an example (the G selections of a group).
    """
    batch = [ex.segments for ex in examples]
    compressed = [ex.chunk_vectors[[i for i, e in enumerate(mask) if not e]] for ex, mask in zip(examples, masks)]
    vectors = torch.cat(compressed) if compressed else torch.zeros(0)
    inputs = model.build_inputs(batch, masks, chunk_vectors=vectors, padding_side="right")
    labels = shifted_labels(inputs)
    hidden = model.decoder.base_model(
        inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask, position_ids=inputs.position_ids,
        use_cache=False,  # a scoring/training pass: a KV cache would only hold memory
    ).last_hidden_state
    rows, cols = (labels != IGNORE).nonzero(as_tuple=True)
    logits = model.decoder.get_output_embeddings()(hidden[rows, cols]).float()
    nll = F.cross_entropy(logits, labels[rows, cols], reduction="none")
    n = len(batch)
    summed = torch.zeros(n, device=nll.device).index_add(0, rows, nll).cpu()
    return summed, torch.bincount(rows, minlength=n).cpu()


@torch.no_grad()
def rewards_of(model: RefragModel, examples: Sequence[ScoredExample], masks: Sequence[Sequence[bool]]) -> torch.Tensor:
    """r = - mean NLL of each row's true continuation (one batched forward)."""
    summed, tokens = mixed_input_nll(model, examples, masks)
    return -(summed / tokens.clamp(min=1))


# ---- training --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GRPOConfig:
    """One GRPO run; every step draws new examples from the training documents."""

    steps: int = 120
    batch_size: int = 2  # examples per step
    group_size: int = 8  # G selections per example
    fractions: tuple[float, ...] = (0.1, 0.25, 0.5)  # p drawn per step: the ranking must serve every p
    clip_eps: float = 0.2
    updates: int = 4  # policy updates per batch of rollouts (why the ratio and its clipping matter)
    lr: float = 3e-3
    context_tokens: int = 256  # s
    continuation_tokens: int = 32  # o: tokens the reward scores (each costs a decoder position per rollout)
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.updates < 1:
            raise CourseError("steps, batch_size and updates must be positive.")
        if self.group_size < 2:
            raise CourseError(
                f"GRPO compares selections within a group: group_size must be >= 2, got {self.group_size}."
            )
        if not self.fractions:
            raise CourseError("fractions must name at least one expansion fraction p.")
        for p in self.fractions:
            check_fraction(p)


@dataclass
class PolicyTrainResult:
    policy: ChunkPolicy
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


def policy_update(policy: Policy, optimizer, inputs: dict[str, torch.Tensor], orders: torch.Tensor,
                  old_logp: torch.Tensor, advantages: torch.Tensor, clip_eps: float) -> tuple[float, float]:
    """One gradient step on the clipped objective. inputs: policy.inputs(examples); orders [B, G, T'],
    old_logp [B, G, T'], advantages [B, G]."""
    b, g, n = orders.shape
    logits = policy(**inputs)
    new_logp = step_log_probs(logits.repeat_interleave(g, dim=0), orders.reshape(b * g, n)).reshape(b, g, n)
    loss, clip_fraction = clipped_objective(new_logp, old_logp, advantages, clip_eps)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach()), float(clip_fraction)


Reward = Callable[[Sequence[ScoredExample], Sequence[Sequence[bool]]], torch.Tensor]


def grpo_step(model: RefragModel, policy: Policy, optimizer, examples: Sequence[ScoredExample], p: float,
              cfg: GRPOConfig, generator: torch.Generator, rng: np.random.Generator,
              reward: Reward | None = None) -> dict:
    """Roll out G selections per example, reward them in one forward, then cfg.updates PPO updates.

    reward(rows, masks): one reward per row (default: minus the NLL of the true continuation,
    rewards_of; the question-aware policy's is minus the NLL of the gold answer). Each example also gets
    one uniformly random selection, rewarded in the same forward but not trained on: the policy's reward
    minus it removes the example's difficulty from the learning curve.
    """
    g = cfg.group_size
    reward = reward or (lambda rows, masks: rewards_of(model, rows, masks))
    if len({ex.n_chunks for ex in examples}) != 1:
        raise CourseError("A GRPO batch needs examples with the same number of chunks (same context length s).")
    inputs = policy.inputs(examples)
    n = n_expanded(p, examples[0].n_chunks)
    with torch.no_grad():
        logits = policy.eval()(**inputs)
        orders = sample_ordered(logits.repeat_interleave(g, dim=0), n, generator)
        old_logp = step_log_probs(logits.repeat_interleave(g, dim=0), orders).reshape(len(examples), g, n)
    lengths = [ex.n_chunks for ex in examples]
    masks = to_mask(orders, [length for length in lengths for _ in range(g)])
    reference = RandomSelector(int(rng.integers(2**31)))(examples, p)
    rows = [ex for ex in examples for _ in range(g)] + list(examples)
    rewards = reward(rows, masks + reference)
    group = rewards[: len(examples) * g].reshape(len(examples), g)
    advantages = group_advantages(group)
    policy.train()
    losses, clips = zip(*(policy_update(policy, optimizer, inputs, orders.reshape(len(examples), g, n), old_logp,
                                        advantages, cfg.clip_eps) for _ in range(cfg.updates)))
    policy.eval()
    return {"p": p, "expanded": n, "reward_mean": float(group.mean()), "reward_std": float(group.std(dim=1).mean()),
            "reward_gain_vs_random": float((group.mean(dim=1) - rewards[len(examples) * g:]).mean()),
            "loss": float(np.mean(losses)), "clip_fraction": float(np.mean(clips[1:] or clips))}


def train_policy(model: RefragModel, policy: ChunkPolicy, token_docs: list[list[int]], cfg: GRPOConfig,
                 progress: bool = True) -> PolicyTrainResult:
    """Train the policy in place with GRPO; the REFRAG model stays frozen (it only hands out rewards)."""
    from tqdm.auto import tqdm

    model.eval()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    history, elapsed = [], 0.0
    span = cfg.context_tokens + cfg.continuation_tokens
    for step in tqdm(range(cfg.steps), desc="GRPO", disable=not progress):
        tick = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, step])
        p = float(rng.choice(cfg.fractions))
        rows = windows(token_docs, span, cfg.batch_size, rng)
        pairs = [(r[: cfg.context_tokens], r[cfg.context_tokens:]) for r in rows]
        examples = score_examples(model, pairs, with_chunk_nll=False)
        row = grpo_step(model, policy, optimizer, examples, p, cfg, generator, rng)
        elapsed += time.perf_counter() - tick
        history.append({"step": step, **row, "seconds": round(elapsed, 3)})
    return PolicyTrainResult(policy, history, summarise(history, cfg))


def summarise(history: list[dict], cfg: GRPOConfig) -> dict:
    """Reward at the start and at the end of training (means over the first and last 10% of steps)."""
    window = max(1, len(history) // 10)

    def mean(key, rows):
        return float(np.mean([r[key] for r in rows]))

    return {
        "reward_curve_first": mean("reward_mean", history[:window]),
        "reward_curve_last": mean("reward_mean", history[-window:]),
        "reward_gain_first": mean("reward_gain_vs_random", history[:window]),
        "reward_gain_last": mean("reward_gain_vs_random", history[-window:]),
        "train_seconds": history[-1]["seconds"], "steps": len(history), "grpo_config": asdict(cfg),
    }


# ---- the paper's Figure 3: log-ppl against p for every selector --------------------------------------------
class MaskedNLL:
    """Summed NLL and token count per (example, expansion mask), computed in batches and remembered.

    Selectors often agree (at p = 0 every one of them expands nothing; the heuristics and the policy
    may pick the same chunks), so each distinct input is scored once. nll(model, examples, masks) ->
    (summed, tokens): the true continuation's (mixed_input_nll) unless another target is given.
    """

    def __init__(self, model: RefragModel, examples: Sequence[ScoredExample], batch_size: int = 8, nll=None):
        self.model, self.examples, self.batch_size = model, list(examples), batch_size
        self.nll = nll or mixed_input_nll
        self.memo: dict[tuple[int, tuple[bool, ...]], tuple[float, int]] = {}

    @torch.no_grad()
    def scored(self, selector: Selector, p: float) -> list[tuple[float, int]]:
        """(summed NLL, tokens) of each example with the selector's chunks expanded at fraction p."""
        keys = [(i, tuple(mask)) for i, mask in enumerate(selector(self.examples, p))]
        todo = sorted({key for key in keys if key not in self.memo}, key=lambda key: (sum(key[1]), key[0]))
        for start in range(0, len(todo), self.batch_size):  # similar lengths share a batch (less padding)
            part = todo[start : start + self.batch_size]
            summed, count = self.nll(self.model, [self.examples[i] for i, _ in part], [m for _, m in part])
            self.memo.update({key: (float(s), int(c)) for key, s, c in zip(part, summed, count)})
        return [self.memo[key] for key in keys]

    def log_ppl(self, selector: Selector, p: float) -> float:
        """Held-out log-perplexity of the continuations with the selector's chunks expanded at fraction p."""
        scored = self.scored(selector, p)
        return sum(s for s, _ in scored) / sum(c for _, c in scored)


def figure3(model: RefragModel, examples: Sequence[ScoredExample], selectors: dict[str, Selector],
            fractions: Sequence[float] = FIGURE3_FRACTIONS, random_seeds: Sequence[int] = (0, 1, 2),
            batch_size: int = 8, progress: bool = True) -> dict:
    """{"log_ppl_by_p": {selector: {p: log-ppl}}, "random_std": {p: std over seeds}, "none", "all"}.

    `random` is averaged over several seeds (its std says how much of a gap is noise); ppl_desc and
    ppl_asc are added here, the caller passes the learned policy (and anything else) in `selectors`.
    """
    from tqdm.auto import tqdm

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


# ---- stage 2b: mixed-input CPT before RL ---------------------------------------------------------------------


def continue_cpt_mixed(run, steps: int, expand_fraction: float = 0.1, context_tokens: int = 256,
                       continuation_tokens: int = 64, positions_per_step: int = 256, progress: bool = True,
                       documents: str | Path | None = None):
    """Continue CPT from RUN_DIR/cpt with a random fraction p of chunks left as tokens (paper: p = 0.1),
    so the decoder has seen mixed sequences before the policy starts choosing them.

    Trains the same parts notebook 03 trained (the decoder too if it did) with the shared loop, every
    step on the full s/k chunks (no curriculum: the model already reads them), on the course's documents
    or a learner's own file (`documents`). Resumable; a finished run is loaded instead of retrained.
    Returns (model, TrainResult).
    """

    check_fraction(expand_fraction)
    parts = read_metadata(run.require("cpt", WEIGHTS)).get("parts", "").split(",")
    cfg = TrainConfig(stage="cpt", steps=steps, context_tokens=context_tokens,
                      continuation_tokens=continuation_tokens, positions_per_step=positions_per_step,
                      curriculum=False, expand_fraction=expand_fraction,
                      train_decoder="decoder" in parts, save_every=max(steps, 1))
    model = load_trained(run, "cpt")
    train_docs, _ = tokenized_documents(model, documents)
    out_dir = run.stage_dir(MIXED_CPT_FOLDER)
    result = train(model, cfg, StageTask(model, cfg, train_docs), out_dir, model_identity(run.preset, "cpt"),
                   progress=progress)
    return result.model.eval(), result


def policy_path(run) -> Path:
    return run.stage_dir("policy") / POLICY_WEIGHTS


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
