"""A "REFRAG-ready index": the retrieval index and the chunk vectors of the trained encoder, saved together.

At query time REFRAG then runs no encoder at all ("with cache"): retrieve passage rows, read their
chunks' c_i from the store, let the policy pick the chunks to expand, project, prefill. The folder
(RUN_DIR/sft/ready_index/) holds the FAISS index, the passages, the chunk store computed with the
SFT encoder, and ready.json (p, top_k, which weights made the vectors). Loading it checks the store
against the loaded model's encoder: vectors of another encoder would be silently wrong, so they are
refused.

Command line: ``python -m refrag_lib generate --question "Which river flows through City_003?"``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CourseError, MissingArtifactError
from .index import (
    CHUNK_STORE_FILE,
    ChunkStore,
    PassageIndex,
    Retriever,
    build_chunk_store,
    load_chunk_store,
    load_index,
    retrieve,
    save_index,
)
from .model import RefragModel

READY_FOLDER = "ready_index"  # under RUN_DIR/sft/
READY_FILE = "ready.json"


def build_ready_index(folder: str | Path, model: RefragModel, index: PassageIndex, weights: str, p: float,
                      top_k: int, batch_size: int = 256, progress: bool = True) -> Path:
    """Save the index and every passage's chunk vectors computed with `model`'s (trained) encoder."""
    folder = Path(folder)
    save_index(index, folder)
    store = build_chunk_store(model, index.passages, encoder_weights=weights, batch_size=batch_size,
                              progress=progress)
    store.save(folder / CHUNK_STORE_FILE)
    settings = {"p": p, "top_k": top_k, "encoder_weights": weights, "n_chunks": store.n_chunks, "k": model.k}
    (folder / READY_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    return folder


@dataclass
class ReadyIndex:
    """Everything inference needs, no encoder pass: index, cached chunk vectors, the reader and its policy."""

    index: PassageIndex
    store: ChunkStore
    model: RefragModel
    retriever: Retriever
    policy: object
    p: float
    top_k: int


def load_ready_index(folder: str | Path, model: RefragModel, retriever: Retriever, policy) -> ReadyIndex:
    """The saved ready index, refused when its vectors were made by another encoder, k or passage list."""
    folder = Path(folder)
    if not (folder / READY_FILE).is_file():
        raise MissingArtifactError(f"{folder / READY_FILE} is missing: run notebooks/05_sft.ipynb first (it builds "
                                   "the REFRAG-ready index after fine-tuning).")
    settings = json.loads((folder / READY_FILE).read_text())
    index = load_index(folder, retriever.name, use_gpu=model.device.type == "cuda")
    store = load_chunk_store(folder, model, index)
    return ReadyIndex(index, store, model, retriever, policy, float(settings["p"]), int(settings["top_k"]))


def retrieve_question(ready: ReadyIndex, question: str, top_k: int) -> tuple[list[int], list[float]]:
    """The top-K passage rows and scores for a question, refused when it is empty or K does not fit the index."""
    if not question.strip():
        raise CourseError("The question is empty: type a question.")
    if not 1 <= top_k <= len(ready.index.passages):
        raise CourseError(f"top-K must be between 1 and the {len(ready.index.passages)} passages of the index, "
                          f"got {top_k}.")
    rows, scores = retrieve(ready.retriever, ready.index, [question], top_k)
    return [int(r) for r in rows[0]], [float(s) for s in scores[0]]


def generate_answer(ready: ReadyIndex, question: str, top_k: int | None = None, p: float | None = None,
                    max_new_tokens: int = 12, repeats: int = 5, arm: str = "refrag", model: RefragModel | None = None,
                    choose=None, retrieved: tuple[list[int], list[float]] | None = None) -> dict:
    """Retrieve, read the cached chunk vectors, expand the policy's chunks (or `choose`'s), answer; with the TTFT
    (with cache). arm="rag" with the RAG-FT model reads the same passages as tokens, for comparison; pass
    `retrieved` (from retrieve_question) to answer both arms from one retrieval."""
    from .qa import input_positions
    from .sft import QAItem, Setting, answer_questions, prepare, ttft_ms

    model = model or ready.model
    top_k = ready.top_k if top_k is None else top_k
    p = ready.p if p is None else p
    rows, scores = retrieved or retrieve_question(ready, question, top_k)
    item = QAItem(question, ("",), rows)
    with torch.inference_mode():
        prepared = prepare(model, item, Setting("generate", arm, len(rows)), ready.store, ready.policy, p, choose)
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
    }


def format_answer(result: dict) -> str:
    """The answer, the passages, the expanded chunks and the TTFT, for a terminal."""
    lines = [f"question: {result['question']}", f"answer:   {result['answer']}",
             f"TTFT (with cache, median): {result['ttft_ms']:.1f} ms, {result['input_positions']} decoder positions",
             "retrieved passages:"]
    lines += [f"  {i}. {p['score']:.3f} {p['id']}  {p['text'].strip()[:110]}"
              for i, p in enumerate(result["passages"], start=1)]
    lines.append(f"expanded chunks ({len(result['expanded_chunks'])} of {result['n_chunks']}):")
    lines += [f"  [{c.strip()}]" for c in result["expanded_chunks"]] or ["  (none)"]
    return "\n".join(lines)


def load_run_ready(run) -> ReadyIndex:
    """The ready index of a run with the SFT REFRAG model, the retriever and the trained policy."""
    from .checkpoint import model_identity
    from .index import load_retriever
    from .policy import load_policy
    from .sft import load_sft_model

    folder = run.root / "sft" / READY_FOLDER
    model = load_sft_model(run, "refrag")
    policy = load_policy(run.require("policy", "policy.safetensors"), model_identity(run.preset, "policy"))
    return load_ready_index(folder, model, load_retriever(run.preset), policy)


def main(argv: list[str] | None = None) -> int:
    """`python -m refrag_lib generate --question ...`: answer from the REFRAG-ready index of a run."""
    from .config import PRESETS
    from .runs import open_run

    parser = argparse.ArgumentParser(prog="python -m refrag_lib generate", description=main.__doc__)
    parser.add_argument("--question", required=True)
    parser.add_argument("--preset", default="cpu", choices=[*PRESETS, "auto"])
    parser.add_argument("--run-dir", default="", help="artifacts folder (default runs/<preset>)")
    parser.add_argument("--top-k", type=int, default=None, help="passages to retrieve (default: the SFT run's)")
    parser.add_argument("--p", type=float, default=None, help="share of chunks to expand (default: the SFT run's)")
    parser.add_argument("--max-new-tokens", type=int, default=12)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    run = open_run(args.preset, args.run_dir)
    ready = load_run_ready(run)
    result = generate_answer(ready, args.question, args.top_k, args.p, args.max_new_tokens)
    print(json.dumps(result, indent=1) if args.json else format_answer(result))
    return 0
