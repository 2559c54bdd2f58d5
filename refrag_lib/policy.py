"""Which chunks to expand: a learned policy (stage 3) and the heuristics it is compared with.

Expanding T' = round(p * L) of L chunks is a choice among C(L, T') subsets (12870 for 8 of 16), too
many to try. The policy is a small two-layer transformer over the encoder's chunk vectors c_1..c_L
(plus a position signal: where a chunk sits matters for predicting what follows) that gives one
logit s_i per chunk. A selection is T' chunks drawn one after another without replacement from the
softmax over the chunks not yet chosen; the probability of the ordered selection (i_1, ..., i_T') is
the Plackett-Luce product

    P = prod_t exp(s_{i_t}) / sum_{j not in {i_1..i_{t-1}}} exp(s_j).

Adding Gumbel noise to the logits and taking the top T' draws exactly this distribution in one shot
(Gumbel-top-k). At inference the policy expands its greedy top-T' chunks.

The policy is one of the course's selectors; all of them share one interface in refrag_lib.selectors.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import CourseError

POLICY_WEIGHTS = "policy.safetensors"


def check_fraction(p: float) -> float:
    """p is the share of chunks expanded: a number in [0, 1]."""
    if not isinstance(p, numbers.Real) or isinstance(p, bool) or math.isnan(p) or not 0.0 <= float(p) <= 1.0:
        raise CourseError(f"The expansion fraction p must be a number in [0, 1], got {p!r} (0.25 expands a quarter).")
    return float(p)


def n_expanded(p: float, n_chunks: int) -> int:
    """T' = round(p * L), the number of chunks expanded at fraction p (as in losses.random_expansion)."""
    return round(check_fraction(p) * n_chunks)


def effective_compression(k: int, p: float) -> float:
    """Context tokens per decoder position with a fraction p expanded: k / (1 - p + k p)."""
    p = check_fraction(p)
    return k / (1.0 - p + k * p)


# ---- the policy network -----------------------------------------------------------------------
@dataclass(frozen=True)
class PolicyConfig:
    """The shape of a policy; saved with its weights so a checkpoint rebuilds itself."""

    input_dim: int  # encoder hidden size (the c_i come before the projector)
    width: int = 64
    layers: int = 2
    heads: int = 4
    max_chunks: int = 256  # longest context (in chunks) the position signal covers

    def __post_init__(self):
        if self.width % self.heads:
            raise CourseError(f"policy width {self.width} must be divisible by its {self.heads} heads.")


class ChunkPolicy(nn.Module):
    """c_1..c_L -> one logit per chunk: input projection + learned position embedding + transformer."""

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        self.cfg = cfg
        self.inp = nn.Sequential(nn.LayerNorm(cfg.input_dim), nn.Linear(cfg.input_dim, cfg.width))
        self.position = nn.Embedding(cfg.max_chunks, cfg.width)
        nn.init.normal_(self.position.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(
            cfg.width, cfg.heads, dim_feedforward=2 * cfg.width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(cfg.width), nn.Linear(cfg.width, 1))
        nn.init.zeros_(self.out[1].weight)  # start from the uniform policy (every chunk equally likely)
        nn.init.zeros_(self.out[1].bias)

    def forward(self, c: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """c [B, L, input_dim] (valid [B, L]: False at padding) -> logits [B, L], -inf at padding."""
        if c.dim() != 3 or c.shape[-1] != self.cfg.input_dim:
            raise CourseError(
                f"The policy expects chunk vectors [batch, chunks, {self.cfg.input_dim}], got {tuple(c.shape)}: "
                "was it trained with another encoder?"
            )
        n = c.shape[1]
        if n > self.cfg.max_chunks:
            raise CourseError(f"{n} chunks exceed the policy's max_chunks={self.cfg.max_chunks}.")
        valid = torch.ones(c.shape[:2], dtype=torch.bool, device=c.device) if valid is None else valid
        x = self.inp(c.float()) + self.position(torch.arange(n, device=c.device))
        x = self.blocks(x, src_key_padding_mask=~valid)
        return self.out(x).squeeze(-1).masked_fill(~valid, -math.inf)


# ---- Plackett-Luce sampling and log-probabilities ---------------------------------------------------
def sample_ordered(logits: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n chunk indices per row, drawn in order without replacement (Gumbel-top-k == Plackett-Luce)."""
    _check_n(logits, n)
    uniform = torch.rand(logits.shape, generator=generator, device=logits.device).clamp(1e-20, 1.0)
    gumbel = -torch.log(-torch.log(uniform))
    return torch.topk(logits.detach() + gumbel, n, dim=-1).indices


def greedy(logits: torch.Tensor, n: int) -> torch.Tensor:
    """The n highest-logit chunks of each row (the policy at inference)."""
    _check_n(logits, n)
    return torch.topk(logits, n, dim=-1).indices


def _check_n(logits: torch.Tensor, n: int) -> None:
    available = int(torch.isfinite(logits).sum(dim=-1).min()) if logits.numel() else 0
    if not 0 <= n <= available:
        raise CourseError(f"Cannot pick {n} chunks without replacement from rows with {available} chunks.")


def step_log_probs(logits: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """log P(i_t | i_1..i_{t-1}) for each step t of ordered selections: [B, L], [B, n] -> [B, n].

    Step t is a softmax over the chunks not chosen before t; the sum over t is the Plackett-Luce
    log-probability of the whole ordered selection.
    """
    b, n = order.shape
    chosen_before = torch.zeros(b, n, logits.shape[1], dtype=torch.bool, device=logits.device)
    if n > 1:
        onehot = torch.zeros(b, n, logits.shape[1], dtype=torch.bool, device=logits.device)
        onehot.scatter_(2, order.unsqueeze(-1), True)
        chosen_before[:, 1:] = onehot.cumsum(dim=1)[:, :-1].bool()
    masked = logits.unsqueeze(1).expand(b, n, -1).masked_fill(chosen_before, -math.inf)
    return logits.gather(1, order) - torch.logsumexp(masked, dim=-1)


def selection_log_prob(logits: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """The Plackett-Luce log-probability of each row's ordered selection: [B]."""
    return step_log_probs(logits, order).sum(dim=-1)


def to_mask(order: torch.Tensor | Sequence[Sequence[int]], n_chunks: Sequence[int]) -> list[list[bool]]:
    """Indices of expanded chunks -> one bool per chunk (the expansion mask build_inputs takes)."""
    rows = order.tolist() if isinstance(order, torch.Tensor) else order
    masks = []
    for picks, length in zip(rows, n_chunks):
        mask = [False] * length
        for i in picks:
            mask[i] = True
        masks.append(mask)
    return masks


# ---- saving and loading: tied to the preset, k and encoder it was trained for -------------------------
def save_policy(path: Path, policy: ChunkPolicy, identity: dict[str, str]) -> Path:
    """The policy's weights with its shape and the model identity (preset, k, encoder, decoder)."""
    from .checkpoint import save_weights

    shape = {f"policy_{key}": str(value) for key, value in vars(policy.cfg).items()}
    return save_weights(path, nn.ModuleDict({"policy": policy}), ["policy"], {**identity, **shape, "stage": "policy"})


def load_policy(path: Path, identity: dict[str, str]) -> ChunkPolicy:
    """A saved policy, refused with a clear message if it was trained for another k, encoder or preset."""
    from .checkpoint import check_identity, load_weights, read_metadata

    metadata = read_metadata(Path(path))
    check_identity(metadata, identity, Path(path))
    try:
        cfg = PolicyConfig(**{field: int(metadata[f"policy_{field}"]) for field in PolicyConfig.__dataclass_fields__})
    except KeyError as err:
        raise CourseError(f"{path} is not a policy checkpoint (no {err} in its metadata).") from err
    policy = ChunkPolicy(cfg)
    load_weights(Path(path), nn.ModuleDict({"policy": policy}), identity, stage="policy")
    return policy.eval()
