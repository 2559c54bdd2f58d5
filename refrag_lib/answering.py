"""Answering one question with REFRAG: the one path that notebook 05's evaluation, the playground and
`python -m refrag_lib generate` all take.

retrieve (question -> passage rows, and the question's retriever vector) -> the passages' chunks and
their cached vectors c_i (the chunk store of the ready index) -> the selector picks the chunks to
expand (refrag_lib.selectors) -> decoder input (build_inputs: vectors through the projector, expanded
chunks as tokens) -> prefill -> first token -> greedy decode. TTFT is measured "with cache" from
inputs ready to first token, as in refrag_lib.bench. arm="rag" reads the same passages as tokens.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .arms import READERS
from .chunk_store import ChunkStore
from .errors import CourseError
from .model import RefragModel, Segments
from .precision import CPU_BF16, cpu_bf16_autocast
from .qa import QAItem, clean_prediction, input_positions
from .selectors import ScoredExample, Selector, make_selector, selector_input
from .timing import quartiles_ms, ttft_once


@dataclass
class Prepared:
    """One question ready for the decoder: prompt, expansion mask, cached vectors of the compressed chunks."""

    prompt: Segments
    expand: list[bool]
    vectors: torch.Tensor
    rows: list[int]


def read_passages(model: RefragModel, item: QAItem, rows: Sequence[int], store: ChunkStore) -> ScoredExample:
    """A question over passage `rows` as its selector sees it, the c_i from the store's cache (no encoder)."""
    return selector_input(model, item, rows, store, store.vectors_for(rows))


def with_expansion(example: ScoredExample, expand: Sequence[bool], rows: Sequence[int]) -> Prepared:
    """The decoder input of a read question under an expansion mask: the compressed chunks keep their vectors."""
    keep = ~torch.tensor(list(expand), dtype=torch.bool) if len(expand) else torch.zeros(0, dtype=torch.bool)
    return Prepared(example.segments, list(expand), example.chunk_vectors[keep], list(rows))


def prepare(model: RefragModel, item: QAItem, rows: Sequence[int], store: ChunkStore, arm: str = "refrag",
            selector: Selector | None = None, p: float = 0.0) -> Prepared:
    """A question ready for the decoder: RAG expands every chunk, REFRAG the selector's round(p * L) picks."""
    if arm not in READERS:
        raise CourseError(f"arm must be one of {READERS}, got {arm!r}.")
    example = read_passages(model, item, rows, store)
    if arm == "rag":
        return with_expansion(example, [True] * example.n_chunks, rows)
    if selector is None:
        raise CourseError("REFRAG needs a selector (refrag_lib.selectors.make_selector) to choose what to expand.")
    return with_expansion(example, selector([example], p)[0], rows)


@torch.inference_mode()
def answer_questions(model: RefragModel, prepared: Sequence[Prepared], max_new_tokens: int = 12,
                     batch_size: int = 8, cpu_bf16: bool = CPU_BF16) -> list[str]:
    """Greedy answers, a left-padded batch at a time, chunk vectors from the cache, in training's precision
    (precision.cpu_bf16_autocast). On a CPU with native bf16 they come 1.7-2.1x faster; of notebook 05's 150
    held-out questions 146-150 got their fp32 answers, and exact match moved by at most one question. TTFT
    is always timed in the model's own precision (ttft_ms), the rule of notebook 06."""
    answers = []
    with cpu_bf16_autocast(model, cpu_bf16):
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


def store_text(store: ChunkStore, model: RefragModel, row: int) -> str:
    """A passage's text as the reader sees it (its chunks decoded)."""
    chunks, _ = store.chunks_for([row])
    return model.decoder_tokenizer.decode([t for c in chunks for t in c])


def retrieve_question(ready, question: str, top_k: int) -> tuple[list[int], list[float], np.ndarray]:
    """The top-K passage rows and scores for a question, and its retriever vector (the question selector's);
    refused when the question is empty or K does not fit the index."""
    if not question.strip():
        raise CourseError("The question is empty: type a question.")
    if not 1 <= top_k <= len(ready.index.passages):
        raise CourseError(f"top-K must be between 1 and the {len(ready.index.passages)} passages of the index, "
                          f"got {top_k}.")
    key = ready.retriever.embed([question], progress=False)
    rows, scores = ready.index.search(key, top_k)
    return [int(r) for r in rows[0]], [float(s) for s in scores[0]], key[0]


def generate_answer(ready, question: str, top_k: int | None = None, p: float | None = None,
                    max_new_tokens: int = 12, repeats: int = 5, arm: str = "refrag", model: RefragModel | None = None,
                    selector: str | Selector | None = None, retrieved: tuple | None = None) -> dict:
    """Answer one question from a ready index (refrag_lib.ready_index) with its TTFT (with cache), and every
    retrieved chunk marked expanded or compressed. selector: a name of selectors.SELECTORS or a Selector
    (default: the one the ready index was evaluated with). arm="rag" with the RAG-FT model reads the same
    passages as tokens; pass `retrieved` (from retrieve_question) to answer both arms from one retrieval."""

    model = model or ready.model
    top_k = ready.top_k if top_k is None else top_k
    p = ready.p if p is None else p
    rows, scores, key = retrieved or retrieve_question(ready, question, top_k)
    chooser = selector if isinstance(selector, Selector) else None
    if arm == "refrag" and chooser is None:
        chooser = make_selector(selector or ready.selector, ready.policies, model)
    with torch.inference_mode():
        prepared = prepare(model, QAItem(question, ("",), rows, question_key=key), rows, ready.store, arm, chooser, p)
        answer = answer_questions(model, [prepared], max_new_tokens)[0]
        timing = ttft_ms(model, [prepared], repeats=repeats, warmup=1)
    decode = model.decoder_tokenizer.decode
    flags = iter(prepared.expand)
    passages = []
    for r, score in zip(prepared.rows, scores):
        chunks = [{"text": decode(c), "expanded": next(flags)} for c in ready.store.chunks_for([r])[0]]
        passages.append({"id": ready.index.passages[r].id, "score": float(score), "chunks": chunks,
                         "text": "".join(c["text"] for c in chunks)})
    return {
        "question": question, "answer": answer, "ttft_ms": timing["median"], "passages": passages,
        "expanded_chunks": [c["text"] for passage in passages for c in passage["chunks"] if c["expanded"]],
        "n_chunks": len(prepared.expand), "input_positions": input_positions(prepared.prompt, prepared.expand),
        "selector": getattr(chooser, "name", "all") if arm == "refrag" else "all",
    }
