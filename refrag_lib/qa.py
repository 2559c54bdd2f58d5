"""RAG question answering: prompts from retrieved passages, and SQuAD-style scoring.

A prompt is Segments(prefix = "Question: ...\\nContext:\\n", chunks = the passages cut into k-token
chunks, suffix = "\\nAnswer:"), the same layout the TTFT benchmark uses. Each passage is chunked on
its own (as in the chunk store), so its chunk vectors can be read from the index instead of encoded.

For training, the answer cue "\\nAnswer:" is moved into one extra, always-expanded chunk and the
suffix holds the answer tokens (+ EOS). The decoder sees exactly the same positions as at inference
(an expanded chunk is ordinary tokens), and the loss, which counts suffix tokens, counts the
answer only.

Scoring follows the SQuAD evaluation script: lower-case, drop punctuation and the articles a/an/the,
collapse whitespace; exact match and token F1 take the best over the gold answers.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .data import Passage, QAExample
from .errors import CourseError
from .model import RefragModel, Segments

# The prompt every reader is asked with (RAG and REFRAG, in notebook 05, the playground and the benchmark).
QUESTION_PREFIX = "Question: {question}\nContext:\n"
ANSWER_SUFFIX = "\nAnswer:"


@dataclass(frozen=True)
class QAItem:
    """A question with its retrieved passage rows (best first), the row of its gold passage, and its
    retriever vector (what the question selector compares the chunks with)."""

    question: str
    answers: tuple[str, ...]
    rows: list[int]
    gold: int | None = None
    question_key: np.ndarray | None = None


def retrieve_items(retriever, index, questions, top_k: int, progress: bool = False) -> list[QAItem]:
    """Retrieve top_k passages for every question (one batched retriever pass), keeping each question's vector."""
    if not questions:
        raise CourseError("No questions to retrieve for.")
    if retriever.name != index.retriever:
        raise CourseError(f"the index was built with retriever {index.retriever!r} but the questions are "
                          f"embedded with {retriever.name!r}; use the same retriever for both.")
    keys = retriever.embed([q.question for q in questions], progress=progress, desc="questions")
    rows, _ = index.search(keys, top_k)
    row_of = {p.id: i for i, p in enumerate(index.passages)}
    return [QAItem(q.question, tuple(q.answers), [int(r) for r in ranked], row_of.get(q.gold_passage_id), key)
            for q, ranked, key in zip(questions, rows, keys)]


def answer_rows(passages: Sequence[Passage], questions: Sequence[QAExample]) -> list[set[int]]:
    """For each question, the rows of the passages whose text contains one of its answers (both sides
    SQuAD-normalised, whole words): the relevant passages when a QA file names no gold passage."""
    texts = [f" {normalize_answer(p.text)} " for p in passages]
    found = []
    for q in questions:
        answers = [f" {a} " for a in map(normalize_answer, q.answers) if a]
        found.append({row for row, text in enumerate(texts) if any(a in text for a in answers)})
    return found


def answerable(questions, index, limit: int | None = None) -> list:
    """The first `limit` questions that a passage of the index answers.

    A question with a gold passage id is kept when that passage is in the index (a SMOKE index holds part of
    the corpus). A question without one (the public format: question and answers only) is kept when a
    passage contains one of its answers; the first such passage then stands in as its gold passage (the
    gold-forced rows of notebook 05), and a question no passage answers is left out.
    """
    ids = {p.id for p in index.passages}
    blind = [q for q in questions if q.gold_passage_id is None]
    holders = iter(answer_rows(index.passages, blind))  # in the order of `blind`
    kept = []
    for q in questions:
        if q.gold_passage_id is None:
            rows = next(holders)
            if rows:
                kept.append(replace(q, gold_passage_id=index.passages[min(rows)].id))
        elif q.gold_passage_id in ids:
            kept.append(q)
    if not kept:
        raise CourseError("No question is answered by a passage of the index (none has its gold passage in it, and "
                          "no passage contains the answer of one without a gold id): index the corpus the questions "
                          "were written for (notebook 01).")
    return kept[:limit]


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


# ---- SQuAD-style scoring ------------------------------------------------------------------------
def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (the SQuAD v1.1 normalisation)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals one normalised gold answer."""
    _check_answers(answers)
    return float(any(normalize_answer(prediction) == normalize_answer(a) for a in answers))


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    """The best token-overlap F1 between the prediction and a gold answer (bag of normalised words)."""
    _check_answers(answers)
    return max(_f1(normalize_answer(prediction).split(), normalize_answer(a).split()) for a in answers)


def _f1(predicted: list[str], gold: list[str]) -> float:
    if not predicted or not gold:
        return float(predicted == gold)
    common = sum((collections.Counter(predicted) & collections.Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def answer_in_context(texts: Sequence[str], answers: Sequence[str]) -> bool:
    """Whether a gold answer occurs, as whole normalised words, in one of the texts (a reader can only
    copy what retrieval handed it)."""
    _check_answers(answers)
    targets = [f" {normalize_answer(a)} " for a in answers if normalize_answer(a)]
    return any(t in f" {normalize_answer(text)} " for text in texts for t in targets)


def answer_chunks(chunk_texts: Sequence[str], answer: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Where an answer lies among consecutive chunks (normalised text): the chunks that hold it whole, and,
    when none does, the first two neighbours whose joined text holds it (an ID cut by a chunk boundary)."""
    answer = normalize_answer(answer)
    if not answer:
        return (), ()
    inside = tuple(i for i, text in enumerate(chunk_texts) if answer in normalize_answer(text))
    if inside:
        return inside, ()
    across = next(((i, i + 1) for i in range(len(chunk_texts) - 1)
                   if answer in normalize_answer(chunk_texts[i] + chunk_texts[i + 1])), ())
    return (), across


def _check_answers(answers: Sequence[str]) -> None:
    if isinstance(answers, str) or len(answers) == 0:
        raise CourseError(f"answers must be a non-empty list of strings, got {answers!r}.")


def clean_prediction(text: str) -> str:
    """The answer part of a generation: its first line, stripped (the model may run on after it)."""
    return text.strip().split("\n", 1)[0].strip()


# ---- prompts ----------------------------------------------------------------------------------------
def question_prefix(model: RefragModel, question: str) -> list[int]:
    """The question tokens that precede the context; refused when they alone fill the decoder's window."""
    prefix = model.tokenize(QUESTION_PREFIX.format(question=question))
    room = model.window - len(model.tokenize(ANSWER_SUFFIX))
    if len(prefix) >= room:
        raise CourseError(
            f"The question takes {len(prefix)} decoder tokens, but the decoder's window is {model.window} "
            "positions (with the answer cue and at least one generated token): ask a shorter question."
        )
    return prefix


def build_prompt(model: RefragModel, question: str, passage_chunks: Sequence[Sequence[Sequence[int]]]) -> Segments:
    """Question, then each passage's chunks in the given order, then the answer cue (for generation)."""
    chunks = [list(c) for chunks in passage_chunks for c in chunks]
    return Segments(question_prefix(model, question), chunks, model.tokenize(ANSWER_SUFFIX))


def training_example(prompt: Segments, answer_ids: Sequence[int], eos_id: int) -> Segments:
    """The prompt with its answer cue as a final chunk (to be expanded) and answer + EOS as the scored suffix."""
    if len(answer_ids) == 0:
        raise CourseError("A training answer must have at least one token.")
    return Segments(list(prompt.prefix), [*prompt.chunks, list(prompt.suffix)], [*answer_ids, eos_id])


def input_positions(prompt: Segments, expand: Sequence[bool]) -> int:
    """Decoder positions of a prompt: tokens of the question, answer cue and expanded chunks, one per vector."""
    context = sum(len(c) if e else 1 for c, e in zip(prompt.chunks, expand, strict=True))
    return len(prompt.prefix) + context + len(prompt.suffix)


def with_gold(rows: Sequence[int], gold: int) -> list[int]:
    """The retrieved rows with the gold passage forced in: kept where retrieved, else in place of the last."""
    rows = [int(r) for r in rows]
    if gold in rows:
        return rows
    if not rows:
        raise CourseError("Cannot force the gold passage into an empty retrieval list (top_k >= 1).")
    return [*rows[:-1], int(gold)]


def with_gold_at_random(rows: Sequence[int], gold: int, rng: np.random.Generator) -> list[int]:
    """The retrieved rows with the gold passage put in at a random place when retrieval missed it (in place
    of the last): training then never learns that the answer sits at one position."""
    rows = [int(r) for r in rows]
    if gold in rows:
        return rows
    rows = rows[:-1]
    rows.insert(int(rng.integers(len(rows) + 1)), int(gold))
    return rows
