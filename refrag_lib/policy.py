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

Two policies share that machinery: ChunkPolicy, the paper's, reads the chunk vectors alone (blind to
the question); QuestionPolicy reads the retriever's vector of each chunk's text next to the question's,
with the chunk's place in its passage and the passage's retrieval rank (trained on answers in
refrag_lib.question_grpo). Both are selectors in refrag_lib.selectors.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checkpoint import check_identity, load_weights, model_identity, read_metadata, save_weights, saved_names
from .errors import CourseError
from .lexical import FEATURES as WORD_FEATURES

POLICY_WEIGHTS = "policy.safetensors"
QUESTION_POLICY_WEIGHTS = "question_policy.safetensors"


def check_fraction(p: float) -> float:
    """p is the share of chunks expanded: a number in [0, 1]."""
    if not isinstance(p, numbers.Real) or isinstance(p, bool) or math.isnan(p) or not 0.0 <= float(p) <= 1.0:
        raise CourseError(f"The expansion fraction p must be a number in [0, 1], got {p!r} (0.25 expands a quarter).")
    return float(p)


def n_expanded(p: float, n_chunks: int) -> int:
    """T' = round(p * L), the number of chunks expanded at fraction p (the selectors' and the mixed input's count)."""
    return round(check_fraction(p) * n_chunks)


def random_mask(n_chunks: int, n: int, rng: np.random.Generator) -> list[bool]:
    """n of n_chunks chunks expanded, chosen uniformly at random by `rng`: the one random mask of the course
    (the mixed input of CPT, the random selector, the timed inputs of the benchmark)."""
    mask = np.zeros(n_chunks, dtype=bool)
    mask[rng.choice(n_chunks, size=n, replace=False)] = True
    return mask.tolist()


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
    question_aware: int = 0  # 1: a QuestionPolicy (input_dim is then the retriever's vector size)
    max_passages: int = 32  # QuestionPolicy: retrieval ranks the rank signal covers

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

    @staticmethod
    def inputs(examples) -> dict[str, torch.Tensor]:
        """What forward() reads of examples (refrag_lib.selectors.ScoredExample): their chunk vectors, padded."""
        c, valid = pad_rows([ex.chunk_vectors for ex in examples])
        return {"c": c, "valid": valid}


def pad_rows(rows: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-chunk vectors of several inputs padded to [B, L_max, dim], with the valid mask [B, L_max]."""
    longest = max(len(v) for v in rows)
    c = torch.zeros(len(rows), longest, rows[0].shape[-1])
    valid = torch.zeros(len(rows), longest, dtype=torch.bool)
    for row, vectors in enumerate(rows):
        c[row, : len(vectors)] = vectors.float().cpu()
        valid[row, : len(vectors)] = True
    return c, valid


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


# ---- the course's own policy, beyond the paper: it reads the question too ---------------------------
class QuestionPolicy(nn.Module):
    """(question, chunks) -> one logit per chunk, from the retriever's vectors (stored next to the index).

    A chunk's input is the elementwise product of its retriever vector with the question's (the terms of
    their cosine, which a linear layer can weigh), its share of the question's words on its passage and on
    itself (refrag_lib.lexical: what tells the passage about Institute_331 from those about Institute_131),
    plus embeddings of its place in its passage and of the passage's retrieval rank; a transformer lets the
    chunks of one question see each other. The cosine and the word overlaps also enter the logit through
    learned gains (zero at the start, like the output layer: a fresh policy is uniform). Neither retriever
    vectors nor words change when SFT retrains the encoder, so what the policy learned still holds after
    notebook 05.
    """

    def __init__(self, cfg: PolicyConfig):
        super().__init__()
        if not cfg.question_aware:
            raise CourseError("A QuestionPolicy needs PolicyConfig(question_aware=1, input_dim=<retriever size>).")
        self.cfg = cfg
        self.match = nn.Sequential(nn.Linear(cfg.input_dim, cfg.width), nn.LayerNorm(cfg.width))
        self.place = nn.Embedding(cfg.max_chunks, cfg.width)
        self.rank = nn.Embedding(cfg.max_passages, cfg.width)
        for table in (self.place, self.rank):
            nn.init.normal_(table.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(
            cfg.width, cfg.heads, dim_feedforward=2 * cfg.width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(cfg.width), nn.Linear(cfg.width, 1))
        nn.init.zeros_(self.out[1].weight)
        nn.init.zeros_(self.out[1].bias)
        self.cosine_gain = nn.Parameter(torch.zeros(()))
        self.words = nn.Linear(len(WORD_FEATURES), cfg.width)
        self.word_gain = nn.Parameter(torch.zeros(len(WORD_FEATURES)))

    def forward(self, keys: torch.Tensor, question: torch.Tensor, places: torch.Tensor, ranks: torch.Tensor,
                valid: torch.Tensor, overlap: torch.Tensor) -> torch.Tensor:
        """keys [B, L, R] (chunks), question [B, R], places and ranks [B, L], overlap [B, L, 2] (the chunk's share
        of the question's words on its passage and on itself) -> logits [B, L], -inf at padding."""
        if keys.dim() != 3 or keys.shape[-1] != self.cfg.input_dim or question.shape[-1] != self.cfg.input_dim:
            raise CourseError(
                f"The question-aware policy expects retriever vectors of size {self.cfg.input_dim}, got chunk keys "
                f"{tuple(keys.shape)} and a question of {tuple(question.shape)}: was it trained with another retriever?"
            )
        if places.numel() and int(places.max()) >= self.cfg.max_chunks:
            raise CourseError(f"A passage of more than {self.cfg.max_chunks} chunks exceeds the policy's max_chunks.")
        terms = keys.float() * question.float().unsqueeze(1)
        overlap = overlap.float()
        x = (self.match(terms) + self.words(overlap) + self.place(places)
             + self.rank(ranks.clamp(max=self.cfg.max_passages - 1)))
        x = self.blocks(x, src_key_padding_mask=~valid)
        logits = self.out(x).squeeze(-1) + self.cosine_gain * terms.sum(-1) + overlap @ self.word_gain
        return logits.masked_fill(~valid, -math.inf)

    @staticmethod
    def inputs(examples) -> dict[str, torch.Tensor]:
        """What forward() reads of examples: chunk and question retriever vectors, word overlaps, places and ranks,
        padded."""
        for ex in examples:
            if ex.question_key is None or ex.chunk_keys is None:
                raise CourseError("The question-aware policy needs the question's and the chunks' retriever vectors "
                                  "(ChunkStore.keys, built by notebooks/01_indexing.ipynb).")
            if ex.word_overlap is None:
                raise CourseError("The question-aware policy needs each chunk's word overlap with the question: build "
                                  "its inputs with selectors.selector_input (from a chunk source with keys).")
        keys, valid = pad_rows([ex.chunk_keys for ex in examples])
        overlap, _ = pad_rows([ex.word_overlap for ex in examples])
        question = torch.stack([torch.as_tensor(ex.question_key).float().cpu() for ex in examples])
        places = torch.zeros(valid.shape, dtype=torch.long)
        ranks = torch.zeros(valid.shape, dtype=torch.long)
        for row, ex in enumerate(examples):
            lengths = ex.passages()
            places[row, : ex.n_chunks] = torch.cat([torch.arange(n) for n in lengths]) if lengths else places[row, :0]
            ranks[row, : ex.n_chunks] = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
        return {"keys": keys, "question": question, "places": places, "ranks": ranks, "valid": valid,
                "overlap": overlap}


# ---- saving and loading: tied to the preset, k and encoder (and retriever) it was trained for -------------
Policy = ChunkPolicy | QuestionPolicy


def save_policy(path: Path, policy: Policy, identity: dict[str, str]) -> Path:
    """The policy's weights with its shape and the model identity (preset, k, encoder, decoder; a question-aware
    policy also its retriever)."""

    shape = {f"policy_{key}": str(value) for key, value in vars(policy.cfg).items()}
    return save_weights(path, nn.ModuleDict({"policy": policy}), ["policy"], {**identity, **shape, "stage": "policy"})


def load_policy(path: Path, identity: dict[str, str]) -> Policy:
    """A saved policy, refused with a clear message if it was trained for another k, encoder, preset or retriever."""
    metadata = read_metadata(Path(path))
    check_identity(metadata, identity, Path(path))
    if "retriever" in identity and metadata.get("retriever") != identity["retriever"]:
        raise CourseError(f"{path} was trained on the vectors of retriever {metadata.get('retriever')!r}, not "
                          f"{identity['retriever']!r}: rerun notebooks/04_policy_grpo.ipynb with this retriever.")
    fields = PolicyConfig.__dataclass_fields__
    try:
        cfg = PolicyConfig(**{name: int(metadata[f"policy_{name}"]) for name, f in fields.items()
                              if f"policy_{name}" in metadata or f.default is dataclasses.MISSING})
    except KeyError as err:
        raise CourseError(f"{path} is not a policy checkpoint (no {err} in its metadata).") from err
    policy = QuestionPolicy(cfg) if cfg.question_aware else ChunkPolicy(cfg)
    if cfg.question_aware and "policy.word_gain" not in saved_names(Path(path)):
        raise CourseError(f"{path} is a question-aware policy from before it read the question's words (refrag_lib."
                          "lexical): rerun notebooks/04_policy_grpo.ipynb, then notebooks/05_sft.ipynb.")
    load_weights(Path(path), nn.ModuleDict({"policy": policy}), identity, stage="policy")
    return policy.eval()


def question_policy_identity(preset, retriever: str) -> dict[str, str]:
    """What a question-aware policy is tied to: the preset's models and k, and the retriever whose vectors it reads."""
    return {**model_identity(preset, "policy"), "retriever": retriever}


def load_run_policies(run, retriever: str) -> dict[str, Policy]:
    """The policies notebook 04 trained, by selector name: rl, and question_rl where the run has it (a run
    from before the question-aware policy has only rl; selectors.make_selector then says what to rerun)."""

    policies = {"rl": load_policy(run.require("policy", POLICY_WEIGHTS), model_identity(run.preset, "policy"))}
    question = run.stage_dir("policy") / QUESTION_POLICY_WEIGHTS
    if question.is_file():
        policies["question_rl"] = load_policy(question, question_policy_identity(run.preset, retriever))
    return policies
