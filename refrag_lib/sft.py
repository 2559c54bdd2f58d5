"""Stage 4: supervised fine-tuning for RAG question answering, and the evaluation table of notebook 05.

Two arms, trained the same way so the comparison is fair: same start (the weights the policy was
trained with, RUN_DIR/policy/cpt_mixed), same questions, same retrieved passages, same steps, batch
and LR (the paper's 2e-5, linear warm-up, cosine decay):
- rag: ordinary RAG, every passage as tokens; only the decoder is used, so only it is trained;
- refrag: the passages as chunk vectors, a fraction p of chunks expanded by the trained policy;
  encoder, projector and decoder are trained end to end (the paper's SFT).
The loss counts the answer tokens only (see refrag_lib.qa). With a probability `gold_fraction` the
gold passage is put among the K retrieved ones (at a random place), so the model learns to read
rather than to guess when retrieval missed.

Evaluation generates greedy answers on held-out questions and reports SQuAD exact match and F1,
whether the answer was in the context at all, the decoder input length and the TTFT of each row.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .bench import quartiles_ms, ttft_once
from .checkpoint import WEIGHTS, load_weights, model_identity
from .errors import CourseError
from .index import ChunkStore, context_text, encoder_eval_mode
from .losses import TokenStats, suffix_token_stats
from .model import RefragModel, Segments
from .policy import ChunkPolicy, check_fraction, n_expanded
from .qa import (
    answer_in_context,
    build_prompt,
    clean_prediction,
    exact_match,
    input_positions,
    token_f1,
    training_example,
    with_gold,
)
from .train import TrainResult, train

ARMS = ("rag", "refrag")
TRAINED_PARTS = {"rag": ["decoder"], "refrag": ["encoder", "projector", "decoder"]}
PAPER_SFT_LR = 2e-5
START_FOLDER = "policy/cpt_mixed"  # the weights the policy was trained with (notebook 04)
ROWS = ("no_context", "rag", "refrag", "refrag_equal_latency")


@dataclass(frozen=True)
class SFTConfig:
    """One SFT run; both arms use the same config."""

    steps: int
    top_k: int = 3  # K: passages retrieved per question
    p: float = 0.1  # share of REFRAG chunks the policy expands
    batch_size: int = 2  # questions per step
    lr: float = PAPER_SFT_LR
    warmup_fraction: float = 0.04
    clip_norm: float = 1.0
    gold_fraction: float = 1.0  # share of training questions whose gold passage is forced into the top-K
    seed: int = 0
    grad_accum: int = 1
    weight_decay: float = 0.0
    save_every: int = 50  # steps between resumable checkpoints (a Colab disconnect loses at most these)

    @property
    def peak_lr(self) -> float:
        return self.lr

    def __post_init__(self):
        if self.steps < 1 or self.top_k < 1 or self.batch_size < 1:
            raise CourseError(f"steps, top_k and batch_size must be >= 1, got {self.steps}, {self.top_k}, "
                              f"{self.batch_size}.")
        check_fraction(self.p)
        if not 0.0 <= self.gold_fraction <= 1.0:
            raise CourseError(f"gold_fraction must lie in [0, 1], got {self.gold_fraction}.")


@dataclass
class QAItem:
    """A question with its retrieved passage rows (best first) and the row of its gold passage."""

    question: str
    answers: tuple[str, ...]
    rows: list[int]
    gold: int | None = None


def retrieve_items(retriever, index, questions, top_k: int, progress: bool = False) -> list[QAItem]:
    """Retrieve top_k passages for every question (one batched retriever pass)."""
    from .index import retrieve

    if not questions:
        raise CourseError("No questions to retrieve for.")
    rows, _ = retrieve(retriever, index, [q.question for q in questions], top_k, progress=progress)
    row_of = {p.id: i for i, p in enumerate(index.passages)}
    return [QAItem(q.question, tuple(q.answers), [int(r) for r in ranked], row_of.get(q.gold_passage_id))
            for q, ranked in zip(questions, rows)]


def answerable(questions, index, limit: int | None = None) -> list:
    """The first `limit` questions whose gold passage is in the index (a SMOKE index holds part of the corpus)."""
    ids = {p.id for p in index.passages}
    kept = [q for q in questions if q.gold_passage_id in ids]
    if not kept:
        raise CourseError("None of the questions has its gold passage in the index: index the corpus they were "
                          "written for (notebook 01).")
    return kept[:limit]


# ---- passages as chunks ----------------------------------------------------------------------------
class PassageChunks:
    """Each passage's k-token chunks (decoder token ids), tokenised once: what the prompts are built from
    while the encoder is still training (its vectors are then computed afresh at every step)."""

    def __init__(self, model: RefragModel, passages):
        self.model = model
        self.passages = passages
        self._cache: dict[int, list[list[int]]] = {}

    def __call__(self, rows: Sequence[int]) -> list[list[list[int]]]:
        for r in rows:
            if r not in self._cache:
                self._cache[r] = self.model.chunk_text(context_text(self.passages[r].text))
        return [self._cache[r] for r in rows]


def store_parts(store: ChunkStore, rows: Sequence[int]) -> tuple[list[list[list[int]]], list[torch.Tensor]]:
    """Per passage: its chunks and their cached vectors c_i, from a chunk store (inference "with cache")."""
    parts = [store.chunks_for([r]) for r in rows]
    return [chunks for chunks, _ in parts], [vectors for _, vectors in parts]


# ---- which chunks to expand ------------------------------------------------------------------------
@torch.no_grad()
def policy_expansion(policy: ChunkPolicy | None, passage_vectors: Sequence[torch.Tensor], p: float) -> list[bool]:
    """round(p * L) chunks to expand over all L chunks of the passages: the policy's greedy top-T'.

    The policy scores each passage on its own (chunk positions count from the passage start, the
    lengths it was trained on, and its scores depend on the passage alone, so they could be cached
    with the index too); the T' highest scores over all passages are expanded.
    """
    n = sum(len(v) for v in passage_vectors)
    t = n_expanded(p, n)
    if t == 0:
        return [False] * n
    if policy is None:
        raise CourseError(f"p = {p} expands chunks, which needs the trained policy (notebook 04); pass it, or p=0.")
    longest = max(len(v) for v in passage_vectors)
    c = torch.zeros(len(passage_vectors), longest, passage_vectors[0].shape[-1])
    valid = torch.zeros(len(passage_vectors), longest, dtype=torch.bool)
    for i, v in enumerate(passage_vectors):
        c[i, : len(v)] = v.float().cpu()
        valid[i, : len(v)] = True
    logits = policy.eval()(c, valid)[valid]
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.topk(logits, t).indices] = True
    return mask.tolist()


# ---- training ------------------------------------------------------------------------------------------
class AnswerObjective(nn.Module):
    """NLL of the answer tokens given question + passages, for one arm (a module so accelerate can wrap it)."""

    def __init__(self, model: RefragModel, arm: str, chunks: PassageChunks, policy: ChunkPolicy | None, p: float):
        super().__init__()
        if arm not in ARMS:
            raise CourseError(f"arm must be one of {ARMS}, got {arm!r}.")
        self.model, self.arm, self.chunks, self.policy, self.p = model, arm, chunks, policy, p

    def forward(self, items: Sequence[QAItem], rng: np.random.Generator | None = None) -> TokenStats:
        model = self.model
        batch, expand = [], []
        for it in items:
            per_passage = self.chunks(it.rows)
            prompt = build_prompt(model, it.question, per_passage)
            if self.arm == "rag":
                mask = [True] * len(prompt.chunks)
            else:
                with torch.no_grad(), encoder_eval_mode(model):
                    vectors = model.encode_chunks(prompt.chunks).float().cpu()
                mask = policy_expansion(self.policy, vectors.split([len(c) for c in per_passage]), self.p)
            batch.append(training_example(prompt, model.tokenize(" " + it.answers[0]), model.eos_id))
            expand.append([*mask, True])  # the answer cue is always tokens
        return suffix_token_stats(model, batch, expand)


def training_batch(items: Sequence[QAItem], cfg: SFTConfig, rng: np.random.Generator) -> list[QAItem]:
    """The questions of one step, from the loop's generator seeded by (seed, step, micro-batch): both arms
    see the same data, and the gold passage is put in at a random place when retrieval missed it."""
    batch = []
    for i in rng.choice(len(items), size=cfg.batch_size, replace=len(items) < cfg.batch_size):
        it = items[int(i)]
        rows = it.rows[: cfg.top_k]
        force = rng.random() < cfg.gold_fraction
        if force and it.gold is not None and it.gold not in rows:
            rows = list(rows[:-1])
            rows.insert(int(rng.integers(len(rows) + 1)), it.gold)
        batch.append(QAItem(it.question, it.answers, rows, it.gold))
    return batch


class SFTTask:
    """One arm's fine-tuning as a task of the shared loop (refrag_lib.train.train)."""

    def __init__(self, model: RefragModel, arm: str, cfg: SFTConfig, items: Sequence[QAItem], chunks: PassageChunks,
                 policy: ChunkPolicy | None):
        if not items:
            raise CourseError("No training questions (with a gold passage in the index) to fine-tune on.")
        self.name, self.parts = f"sft_{arm}", TRAINED_PARTS[arm]
        self.objective = AnswerObjective(model, arm, chunks, policy, cfg.p)
        self.cfg, self.items = cfg, items

    def batch(self, step: int, rng: np.random.Generator) -> tuple[list[QAItem], dict]:
        return training_batch(self.items, self.cfg, rng), {}


def train_arm(model: RefragModel, arm: str, cfg: SFTConfig, items: Sequence[QAItem], chunks: PassageChunks,
              policy: ChunkPolicy | None, out_dir: Path, identity: dict[str, str], resume: bool = True,
              progress: bool = True) -> TrainResult:
    """SFT one arm in place with the shared loop: AdamW, warm-up + cosine, clipping, accelerate, metrics.jsonl,
    resume after an interruption. Weights (the trained parts) go to out_dir/weights.safetensors; the resumable
    state is dropped once the arm has finished (it would triple the disk an arm needs)."""
    task = SFTTask(model, arm, cfg, items, chunks, policy)
    return train(model, cfg, task, Path(out_dir), identity, resume=resume, progress=progress, keep_state=False)


def load_start_model(run) -> RefragModel:
    """Both arms start here: the mixed-input CPT weights the policy was trained with (notebook 04)."""
    from .train import load_trained

    run.require("policy", f"cpt_mixed/{WEIGHTS}")  # a missing file names notebook 04
    return load_trained(run, "cpt", folder=START_FOLDER)


def load_sft_model(run, arm: str) -> RefragModel:
    """The model an SFT arm left in RUN_DIR/sft/<arm>/weights.safetensors (the start weights + SFT parts)."""
    path = run.require("sft", f"{arm}/{WEIGHTS}")
    model = load_start_model(run)
    load_weights(path, model, model_identity(run.preset, f"sft_{arm}"), stage=f"sft_{arm}")
    return model.eval()


# ---- evaluation ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """One row of the table: which model reads how many retrieved passages, compressed or not."""

    name: str
    arm: str  # rag: passages as tokens | refrag: chunk vectors + policy expansion
    n_passages: int  # 0: no retrieved context
    gold: bool = False  # force the gold passage in (no_context: the gold passage alone)


def setting_rows(it: QAItem, setting: Setting) -> list[int]:
    """The passage rows a setting gives the reader for one question."""
    rows = it.rows[: setting.n_passages]
    if len(rows) < setting.n_passages:
        raise CourseError(f"{setting.name} needs {setting.n_passages} retrieved passages per question, "
                          f"only {len(rows)} were retrieved: retrieve more (top_k).")
    if not setting.gold:
        return rows
    if it.gold is None:
        raise CourseError("Forcing the gold passage in needs questions with a gold passage in the index.")
    return with_gold(rows, it.gold) if rows else [it.gold]


@dataclass
class Prepared:
    """One question ready for the decoder: prompt, expansion mask, cached vectors of the compressed chunks."""

    prompt: Segments
    expand: list[bool]
    vectors: torch.Tensor
    rows: list[int]


def prepare(model: RefragModel, it: QAItem, setting: Setting, store: ChunkStore, policy, p: float,
            choose=None) -> Prepared:
    """A question's prompt and expansion mask: RAG expands every chunk; REFRAG expands the policy's picks, or
    those of `choose(prompt, per-passage vectors, p)` (the playground's other selectors)."""
    rows = setting_rows(it, setting)
    per_passage, vectors = store_parts(store, rows)
    prompt = build_prompt(model, it.question, per_passage)
    if setting.arm == "rag":
        expand = [True] * len(prompt.chunks)
    elif choose is not None:
        expand = choose(prompt, vectors, p)
    else:
        expand = policy_expansion(policy, vectors, p)
    flat = torch.cat(vectors) if vectors else store.vectors[:0]
    keep = ~torch.tensor(expand, dtype=torch.bool) if expand else torch.zeros(0, dtype=torch.bool)
    return Prepared(prompt, expand, flat[keep], rows)


@torch.inference_mode()
def answer_questions(model: RefragModel, prepared: Sequence[Prepared], max_new_tokens: int = 12,
                     batch_size: int = 8) -> list[str]:
    """Greedy answers, a left-padded batch at a time, chunk vectors from the cache."""
    answers = []
    for start in range(0, len(prepared), batch_size):
        part = prepared[start : start + batch_size]
        inputs = model.build_inputs([x.prompt for x in part], [x.expand for x in part],
                                    chunk_vectors=torch.cat([x.vectors for x in part]), padding_side="left")
        for ids in model.generate(inputs, max_new_tokens=max_new_tokens):
            answers.append(clean_prediction(model.decoder_tokenizer.decode(ids, skip_special_tokens=True)))
    return answers


@torch.inference_mode()
def ttft_ms(model: RefragModel, prepared: Sequence[Prepared], repeats: int = 5, warmup: int = 1) -> dict:
    """Median TTFT over questions (each the median of `repeats` timed prefills after `warmup` discarded ones),
    with cache: inputs ready -> assembly (+ projector) -> prefill -> first token (refrag_lib.bench rules)."""
    if repeats < 1 or warmup < 0 or not prepared:
        raise CourseError("TTFT needs repeats >= 1, warmup >= 0 and at least one question.")
    medians = []
    for x in prepared:
        runs = [ttft_once(model, x.prompt, x.expand, x.vectors, encode=False).total_s for _ in range(warmup + repeats)]
        medians.append(quartiles_ms(runs[warmup:])[0])
    return {"median": statistics.median(medians), "per_question": medians}


def evaluate_setting(model: RefragModel, setting: Setting, items: Sequence[QAItem], store: ChunkStore,
                     policy=None, p: float = 0.0, ttft_questions: int = 3, repeats: int = 5, warmup: int = 1,
                     max_new_tokens: int = 12, batch_size: int = 8) -> dict:
    """EM, F1, answer-in-context, mean decoder input length and TTFT of one row, plus its predictions."""
    prepared = [prepare(model, it, setting, store, policy, p) for it in items]
    predictions = answer_questions(model, prepared, max_new_tokens, batch_size)
    texts = [[store_text(store, model, r) for r in x.rows] for x in prepared]
    timing = ttft_ms(model, prepared[:ttft_questions], repeats, warmup)
    return {
        "exact_match": float(np.mean([exact_match(a, it.answers) for a, it in zip(predictions, items)])),
        "f1": float(np.mean([token_f1(a, it.answers) for a, it in zip(predictions, items)])),
        "answer_in_context": float(np.mean([answer_in_context(t, it.answers) for t, it in zip(texts, items)])),
        "input_tokens": float(np.mean([input_positions(x.prompt, x.expand) for x in prepared])),
        "ttft_ms": timing["median"], "ttft_ms_per_question": timing["per_question"],
        "expanded_fraction": float(np.mean([np.mean(x.expand) if x.expand else 0.0 for x in prepared])),
        "predictions": predictions, "expand": [x.expand for x in prepared], "rows": [x.rows for x in prepared],
    }


def store_text(store: ChunkStore, model: RefragModel, row: int) -> str:
    """A passage's text as the reader sees it (its chunks decoded)."""
    chunks, _ = store.chunks_for([row])
    return model.decoder_tokenizer.decode([t for c in chunks for t in c])


def equal_latency_passages(model: RefragModel, items: Sequence[QAItem], store: ChunkStore, policy, p: float,
                           budget_ms: float, candidates: Sequence[int], repeats: int = 5,
                           warmup: int = 1) -> tuple[int, dict[int, float]]:
    """The REFRAG passage count whose measured TTFT is closest to the budget (RAG-FT's at K)."""
    if not candidates:
        raise CourseError("No passage counts to try for the equal-latency row.")
    measured = {}
    for n in candidates:
        setting = Setting("probe", "refrag", n)
        prepared = [prepare(model, it, setting, store, policy, p) for it in items]
        measured[n] = ttft_ms(model, prepared, repeats, warmup)["median"]
    best = min(measured, key=lambda n: (abs(measured[n] - budget_ms), -n))
    return best, measured


def passage_candidates(top_k: int, most: int, model: RefragModel, n_index: int, count: int = 8) -> list[int]:
    """`count` passage counts from K up to `most` (8K) to try for equal latency, capped by the index size and the
    window (a passage costs at least one position per chunk, about 8 with k = 16)."""
    cap = min(most, n_index, max(top_k, (model.window - 64) // 9))
    return sorted({int(round(n)) for n in np.linspace(top_k, cap, max(1, count))})


def metrics_table(results: dict[str, dict]) -> dict:
    """The metrics contract: exact_match, f1, ttft_ms, input_tokens, answer_in_context as row -> value."""
    keys = ("exact_match", "f1", "ttft_ms", "input_tokens", "answer_in_context", "expanded_fraction")
    return {key: {row: results[row][key] for row in results} for key in keys}


def side_by_side(items: Sequence[QAItem], results: dict[str, dict], store: ChunkStore, model: RefragModel,
                 n: int = 5, rows: tuple[str, str] = ("rag", "refrag")) -> list[dict]:
    """A few questions with the gold answer, each arm's answer and the chunks REFRAG expanded."""
    out = []
    for i, it in enumerate(items[:n]):
        chunks = [c for r in results[rows[1]]["rows"][i] for c in store.chunks_for([r])[0]]
        expanded = [model.decoder_tokenizer.decode(c) for c, e in zip(chunks, results[rows[1]]["expand"][i]) if e]
        out.append({"question": it.question, "gold": " | ".join(it.answers),
                    rows[0]: results[rows[0]]["predictions"][i], rows[1]: results[rows[1]]["predictions"][i],
                    "expanded_chunks": expanded})
    return out


def evaluate_all(rag_model: RefragModel, refrag_model: RefragModel, items: Sequence[QAItem], store: ChunkStore,
                 policy, p: float, top_k: int, max_passages: int, ttft_questions: int = 3, repeats: int = 5,
                 warmup: int = 1, max_new_tokens: int = 12, batch_size: int = 8, latency_candidates: int = 8,
                 progress: bool = True) -> dict:
    """Every row of the table, each also with the gold passage forced in.

    no_context and rag read with the RAG-FT model, the refrag rows with the REFRAG model (chunk vectors
    from the ready index's store). The equal-latency row uses the passage count (K..max_passages) whose
    REFRAG TTFT is closest to RAG-FT's at K, measured on the same questions.
    """
    from tqdm.auto import tqdm

    models = {"rag": rag_model, "refrag": refrag_model}
    settings = [Setting("no_context", "rag", 0), Setting("rag", "rag", top_k), Setting("refrag", "refrag", top_k)]
    kwargs = {"ttft_questions": ttft_questions, "repeats": repeats, "warmup": warmup,
              "max_new_tokens": max_new_tokens, "batch_size": batch_size}
    results = {}
    bar = tqdm(total=2 * len(ROWS) + 1, desc="evaluating", disable=not progress)
    for base in settings:
        for gold in (False, True):
            setting = Setting(base.name + ("_gold" if gold else ""), base.arm, base.n_passages, gold)
            results[setting.name] = evaluate_setting(models[base.arm], setting, items, store, policy, p, **kwargs)
            bar.update()
    candidates = passage_candidates(top_k, max_passages, refrag_model, store.n_passages, latency_candidates)
    n_equal, grid = equal_latency_passages(refrag_model, items[:ttft_questions], store, policy, p,
                                           results["rag"]["ttft_ms"], candidates, repeats, warmup)
    bar.update()
    for gold in (False, True):
        name = "refrag_equal_latency" + ("_gold" if gold else "")
        results[name] = evaluate_setting(refrag_model, Setting(name, "refrag", n_equal, gold), items, store,
                                         policy, p, **kwargs)
        bar.update()
    bar.close()
    return {"results": results, "equal_latency_passages": n_equal,
            "equal_latency_grid_ms": {str(n): t for n, t in grid.items()}}
