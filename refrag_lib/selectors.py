"""Which chunks stay tokens: every selector of the course behind one interface.

A selector gets one `ScoredExample` per decoder input (its chunks, their vectors c_i, and what else a
selector may look at) and a fraction p, and returns one bool per chunk: True for the round(p * L) of
the L chunks it expands. The course's selectors:
- rl: the GRPO policy of notebook 04, the paper's: it reads the chunk vectors alone, blind to the question;
- question_rl: notebook 04's GRPO policy that reads the question too (refrag_lib.question_grpo), trained
  on the NLL of gold answers;
- question: the chunks whose retriever vectors (stored next to the index, `ChunkStore.keys`) lie
  closest to the question's; no encoder pass at question time;
- perplexity: the chunks the decoder finds hardest to predict with the whole context as tokens (one
  extra full prefill: a yardstick, not a fast path);
- random; none (compress everything) and all (ordinary RAG).
`make_selector(name, ...)` builds one by its name, the way notebook 05, the playground and
`python -m refrag_lib generate` ask for them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .chunk_store import REBUILD_KEYS, ChunkSource, encoder_eval_mode
from .errors import CourseError
from .losses import decoder_hidden, masked_nll, next_paragraph_example
from .model import RefragModel, Segments
from .policy import check_fraction, greedy, n_expanded, pad_rows, random_mask, to_mask
from .precision import in_training_precision
from .qa import QAItem, build_prompt

SELECTORS = {
    "question": "the chunks closest to the question (retriever cosine, stored vectors)",
    "rl": "the question-blind GRPO policy of notebook 04 (the paper's)",
    "question_rl": "the GRPO policy of notebook 04 that reads the question and each chunk's place",
    "perplexity": "the chunks the decoder finds hardest to predict",
    "random": "chunks chosen at random",
    "none": "no chunk expanded (p is ignored)",
}
DEFAULT_SELECTOR = "question_rl"  # notebook 05's SELECTOR, the playground's and sft-curve's default


@dataclass
class ScoredExample:
    """One decoder input's chunks with what the selectors look at.

    chunk_nll: the decoder's mean NLL of each chunk with the full context as tokens (perplexity; NaN or
    None when not scored). passage_lengths: chunks per passage (the policy scores each passage on its own,
    positions counted from its start); None: one passage. question_key / chunk_keys: unit retriever
    vectors of the question and of each chunk (the question selector).
    """

    segments: Segments
    chunk_vectors: torch.Tensor  # [L, encoder dim]
    chunk_nll: torch.Tensor | None = None  # [L]
    passage_lengths: Sequence[int] | None = None
    question_key: torch.Tensor | None = None  # [retriever dim]
    chunk_keys: torch.Tensor | None = None  # [L, retriever dim]
    word_overlap: torch.Tensor | None = None  # [L, 2]

    @property
    def n_chunks(self) -> int:
        return len(self.segments.chunks)

    def passages(self) -> list[int]:
        return list(self.passage_lengths) if self.passage_lengths is not None else [self.n_chunks]


def selector_input(model: RefragModel, item: QAItem, rows: Sequence[int], source: ChunkSource,
                   vectors: torch.Tensor | None = None) -> ScoredExample:
    """What a selector sees of one question over passage `rows`: the prompt (question, then the passages'
    chunks from `source`), each chunk's vector c_i, the retriever vectors of the question and of each chunk,
    and each chunk's share of the question's words. The one place this is built: answering, SFT, the
    question policy and notebook 05 all call it.

    vectors: [L, encoder dim], the c_i of the prompt's chunks (the chunk store's cache, or a batch already
    encoded); None: encoded here, dropout off (a model in the middle of training).
    """
    per_passage = source.passage_chunks(rows)
    prompt = build_prompt(model, item.question, per_passage)
    if vectors is None:
        with torch.no_grad(), encoder_eval_mode(model):
            vectors = model.encode_chunks(prompt.chunks).float().cpu()
    lengths = [len(chunks) for chunks in per_passage]
    key = None if item.question_key is None else torch.as_tensor(np.asarray(item.question_key), dtype=torch.float32)
    rarity = source.word_rarity(model.decoder_tokenizer)
    overlap = None if rarity is None else rarity.chunk_features(item.question, prompt.chunks, lengths)
    return ScoredExample(prompt, vectors, passage_lengths=lengths, question_key=key,
                         chunk_keys=source.keys_for(rows), word_overlap=overlap)


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


def top_mask(scores: torch.Tensor, n: int) -> list[bool]:
    """The n highest-scoring chunks as an expansion mask (ties: the earlier chunk)."""
    order = torch.argsort(scores.float().cpu(), descending=True, stable=True)
    return to_mask([order[:n].tolist()], [len(scores)])[0]


class Selector:
    """Chooses round(p * L) chunks of each example to expand."""

    name = "selector"

    def __call__(self, examples: Sequence[ScoredExample], p: float) -> list[list[bool]]:
        check_fraction(p)
        return [self.pick(ex, n_expanded(p, ex.n_chunks)) for ex in examples]

    def pick(self, example: ScoredExample, n: int) -> list[bool]:
        raise NotImplementedError


class QuestionSelector(Selector):
    """Expand the chunks the retriever finds closest to the question: cosine of stored unit vectors."""

    name = "question"

    def pick(self, example: ScoredExample, n: int) -> list[bool]:
        if example.question_key is None or example.chunk_keys is None:
            raise CourseError(REBUILD_KEYS)
        return top_mask(example.chunk_keys.float() @ example.question_key.float(), n)


@torch.no_grad()
@in_training_precision
def chunk_nll(model: RefragModel, batch: Sequence[Segments]) -> list[torch.Tensor]:
    """Per chunk, the decoder's mean NLL of its tokens when the whole context is given as tokens.

    One batched forward over the uncompressed contexts, after the start token. Token j is scored given
    the start token and tokens < j (so a chunk's score depends on everything before it). High = the
    decoder finds the chunk hard to guess = (the heuristic's bet) worth expanding. Built-in bias: the
    first chunks are predicted from little context, so they score high whatever they contain.
    """
    contexts = [Segments(prefix=[model.start_id], chunks=ex.chunks, suffix=[]) for ex in batch]
    expand = [[True] * len(ex.chunks) for ex in contexts]
    dim = model.encoder.config.hidden_size
    inputs = model.build_inputs(contexts, expand, chunk_vectors=torch.zeros(0, dim), padding_side="right")
    hidden = decoder_hidden(model, inputs)
    logits = model.decoder.get_output_embeddings()(hidden[:, :-1]).float()
    token_nll = F.cross_entropy(logits.transpose(1, 2), inputs.token_ids[:, 1:], reduction="none").cpu()
    scores = []
    for row, ex in enumerate(batch):  # right-padded: position j + 1 holds chunk token j, predicted at j
        sizes = [len(c) for c in ex.chunks]
        scores.append(torch.stack([c.mean() for c in token_nll[row, : sum(sizes)].split(sizes)]))
    return scores


class PerplexitySelector(Selector):
    """Expand the chunks the decoder finds hardest (descending NLL) or easiest (ascending)."""

    def __init__(self, descending: bool = True, model=None):
        self.descending, self.model = descending, model  # model: scores examples that carry no chunk NLL
        self.name = "ppl_desc" if descending else "ppl_asc"

    def pick(self, example: ScoredExample, n: int) -> list[bool]:
        nll = example.chunk_nll
        if nll is None or torch.isnan(nll).any():
            if self.model is None:
                raise CourseError("These examples carry no chunk NLL: score them with score_examples(..., "
                                  "with_chunk_nll=True), or give the selector the model.")
            nll = chunk_nll(self.model, [example.segments])[0]
        return top_mask(nll if self.descending else -nll, n)


class RandomSelector(Selector):
    """Expand chunks chosen uniformly at random (its own seeded generator: repeatable)."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def pick(self, example: ScoredExample, n: int) -> list[bool]:
        return random_mask(example.n_chunks, n, self.rng)


class FixedSelector(Selector):
    """Ignore p: compress every chunk (none, the REFRAG floor) or expand every chunk (all, ordinary RAG)."""

    def __init__(self, expand: bool):
        self.expand = expand
        self.name = "all" if expand else "none"

    def __call__(self, examples: Sequence[ScoredExample], p: float) -> list[list[bool]]:
        check_fraction(p)
        return [[self.expand] * ex.n_chunks for ex in examples]


class LearnedSelector(Selector):
    """A trained policy's greedy top-T' chunks of each example (`scores` says how the policy reads them)."""

    missing = "This selector needs a policy trained by notebooks/04_policy_grpo.ipynb."

    def __init__(self, policy):
        if policy is None:
            raise CourseError(self.missing)
        self.policy = policy

    @torch.no_grad()
    def __call__(self, examples: Sequence[ScoredExample], p: float) -> list[list[bool]]:
        check_fraction(p)
        if not examples:
            return []
        return [to_mask(greedy(scores.unsqueeze(0), n_expanded(p, ex.n_chunks)), [ex.n_chunks])[0]
                for ex, scores in zip(examples, self.scores(examples))]

    def scores(self, examples: Sequence[ScoredExample]) -> list[torch.Tensor]:
        raise NotImplementedError


class PolicySelector(LearnedSelector):
    """The paper's policy (ChunkPolicy). Each passage is scored on its own (positions from the passage start,
    the lengths it was trained on; its scores depend on the passage alone); the T' highest scores over the
    example's passages win."""

    name = "rl"
    missing = "The 'rl' selector needs the trained policy of notebooks/04_policy_grpo.ipynb."

    def scores(self, examples: Sequence[ScoredExample]) -> list[torch.Tensor]:
        passages = [part for ex in examples for part in ex.chunk_vectors.split(ex.passages())]
        c, valid = pad_rows(passages)
        logits = self.policy.eval()(c, valid)
        out, row = [], 0
        for ex in examples:
            lengths = ex.passages()
            out.append(torch.cat([logits[row + i, :length] for i, length in enumerate(lengths)]))
            row += len(lengths)
        return out


class QuestionPolicySelector(LearnedSelector):
    """The question-aware policy (QuestionPolicy): all passages of a question scored together."""

    name = "question_rl"
    missing = ("The 'question_rl' selector needs the question-aware policy of notebooks/04_policy_grpo.ipynb "
               "(RUN_DIR/policy/question_policy.safetensors).")

    def scores(self, examples: Sequence[ScoredExample]) -> list[torch.Tensor]:
        logits = self.policy.eval()(**self.policy.inputs(examples))
        return [logits[row, : ex.n_chunks] for row, ex in enumerate(examples)]


def make_selector(name: str, policies: dict | None = None, model=None, seed: int = 0) -> Selector:
    """A selector by its name in SELECTORS. policies: the trained policies by selector name (rl,
    question_rl: notebook 04's); perplexity needs the model that scores the chunks."""
    if name not in SELECTORS:
        raise CourseError(f"Unknown selector {name!r}: choose one of {', '.join(SELECTORS)}.")
    policies = policies or {}
    if name == "rl":
        return PolicySelector(policies.get("rl"))
    if name == "question_rl":
        return QuestionPolicySelector(policies.get("question_rl"))
    if name == "perplexity":
        if model is None:
            raise CourseError("The 'perplexity' selector needs the model that scores each chunk.")
        return PerplexitySelector(True, model)
    return {"question": QuestionSelector, "random": lambda: RandomSelector(seed),
            "none": lambda: FixedSelector(False)}[name]()


# ---- scoring a selector: held-out NLL with its picks expanded ------------------------------------------
class MaskedNLL:
    """Summed NLL and token count per (example, expansion mask), computed in batches and remembered.

    Selectors often agree (at p = 0 every one of them expands nothing; the heuristics and the policy
    may pick the same chunks), so each distinct input is scored once. nll(model, examples, masks) ->
    (summed, tokens): the suffix's (losses.masked_nll) unless another target is given.
    """

    def __init__(self, model: RefragModel, examples: Sequence[ScoredExample], batch_size: int = 8, nll=None):
        self.model, self.examples, self.batch_size = model, list(examples), batch_size
        self.nll = nll or masked_nll
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
