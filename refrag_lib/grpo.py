"""Stage 3: train the expansion policy with GRPO (its held-out evaluation: refrag_lib.figure3).

Reward of a selection = minus the mean NLL of the TRUE continuation x_{s+1..s+o} when the chosen
chunks are fed as tokens and the rest as vectors (never the model's own greedy output). GRPO draws G
selections of the same example and uses the group itself as the baseline: advantage
A_g = (r_g - mean r) / (std r + eps). No value network is needed because the G rewards of one example
already say which selections were better than usual for THAT example. The update is PPO's clipped
ratio against the log-probabilities at rollout time, averaged over the T' selection steps and the
group, several updates per batch of rollouts, no KL term.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import CourseError
from .losses import masked_nll
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
from .selectors import RandomSelector, ScoredExample, score_examples
from .stages import windows


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


@torch.no_grad()
def rewards_of(model: RefragModel, examples: Sequence[ScoredExample], masks: Sequence[Sequence[bool]]) -> torch.Tensor:
    """r = - mean NLL of each row's true continuation (one batched forward)."""
    summed, tokens = masked_nll(model, examples, masks)
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


# (new_logp, old_logp, advantages, clip_eps) -> (loss to minimise, clip fraction): clipped_objective, or a learner's
Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]


def policy_update(policy: Policy, optimizer, inputs: dict[str, torch.Tensor], orders: torch.Tensor,
                  old_logp: torch.Tensor, advantages: torch.Tensor, clip_eps: float,
                  objective: Objective = clipped_objective) -> tuple[float, float]:
    """One gradient step on the clipped objective. inputs: policy.inputs(examples); orders [B, G, T'],
    old_logp [B, G, T'], advantages [B, G]."""
    b, g, n = orders.shape
    logits = policy(**inputs)
    new_logp = step_log_probs(logits.repeat_interleave(g, dim=0), orders.reshape(b * g, n)).reshape(b, g, n)
    loss, clip_fraction = objective(new_logp, old_logp, advantages, clip_eps)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach()), float(clip_fraction)


Reward = Callable[[Sequence[ScoredExample], Sequence[Sequence[bool]]], torch.Tensor]


def grpo_step(model: RefragModel, policy: Policy, optimizer, examples: Sequence[ScoredExample], p: float,
              cfg: GRPOConfig, generator: torch.Generator, rng: np.random.Generator,
              reward: Reward | None = None, objective: Objective = clipped_objective) -> dict:
    """Roll out G selections per example, reward them in one forward, then cfg.updates PPO updates of `objective`.

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
                                        advantages, cfg.clip_eps, objective) for _ in range(cfg.updates)))
    policy.eval()
    return {"p": p, "expanded": n, "reward_mean": float(group.mean()), "reward_std": float(group.std(dim=1).mean()),
            "reward_gain_vs_random": float((group.mean(dim=1) - rewards[len(examples) * g:]).mean()),
            "loss": float(np.mean(losses)), "clip_fraction": float(np.mean(clips[1:] or clips))}


def train_policy(model: RefragModel, policy: ChunkPolicy, token_docs: list[list[int]], cfg: GRPOConfig,
                 progress: bool = True, objective: Objective = clipped_objective) -> PolicyTrainResult:
    """Train the policy in place with GRPO; the REFRAG model stays frozen (it only hands out rewards).
    objective: the clipped objective every update minimises (a learner's, in notebook 04)."""
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
        row = grpo_step(model, policy, optimizer, examples, p, cfg, generator, rng, objective=objective)
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


def policy_path(run) -> Path:
    return run.stage_dir("policy") / POLICY_WEIGHTS


