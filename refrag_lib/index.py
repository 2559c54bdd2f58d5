"""Retrieval for the course: passage embeddings, a FAISS index, recall@k, and the run index of notebook 01.

RUN_DIR/index/ holds two kinds of embeddings, for two different jobs:
- embeddings to SEARCH (this module): one retriever vector per passage (mean-pooled, L2-normalised), in a
  FAISS inner-product index; on unit vectors the inner product is the cosine similarity. They never change.
- embeddings to DECODE: one REFRAG encoder vector c_i per chunk (refrag_lib.chunk_store).

Command line: ``python -m refrag_lib index --preset cpu --run-dir DIR``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .chunk_store import BUILD_HINT, CHUNK_STORE_FILE, build_chunk_store
from .config import PRESETS
from .data import Passage, QAExample, default_data_dir, load_passages, load_qa, passages_fingerprint
from .errors import CourseError, MissingArtifactError
from .hub import load_encoder
from .model import load_refrag, mean_pool
from .qa import answer_rows
from .runs import open_run

INDEX_FILE = "passages.faiss"
PASSAGES_FILE = "passages.jsonl"
META_FILE = "meta.json"
RECALL_KS = (1, 5, 10)


# --------------------------------------------------------------------------------------------------
# Embeddings to search: the retriever
# --------------------------------------------------------------------------------------------------


@dataclass
class Retriever:
    """A bi-encoder: questions and passages become unit vectors, and related texts point the same way."""

    name: str
    model: torch.nn.Module
    tokenizer: object
    max_length: int = 256  # all-MiniLM-L6-v2 was trained on inputs up to 256 word pieces

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], batch_size: int = 32, progress: bool = True,
              desc: str = "embedding") -> np.ndarray:
        """float32 [len(texts), dim], L2-normalised, so that inner product = cosine similarity."""
        if batch_size < 1:
            raise CourseError(f"batch_size must be >= 1, got {batch_size}.")
        self.model.eval()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in tqdm(range(0, len(texts), batch_size), desc=desc, disable=not progress):
            batch = list(texts[start : start + batch_size])
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt").to(self.model.device)
            pooled = mean_pool(self.model(**enc).last_hidden_state, enc["attention_mask"])
            unit = torch.nn.functional.normalize(pooled.float(), dim=-1)
            out[start : start + len(batch)] = unit.cpu().numpy()
        return out

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)


def load_retriever(preset) -> Retriever:
    """The preset's retriever model (preset.retriever_model) on the preset's device, in fp32 whatever the preset's
    precision: the course's passages differ by one or two codes, whose cosines fp16/bf16 rounding can reorder
    (and the model is 22M parameters: fp32 costs nothing)."""
    model, tokenizer = load_encoder(preset.retriever_model, "float32", preset.device)
    return Retriever(preset.retriever_model, model.eval(), tokenizer)


# --------------------------------------------------------------------------------------------------
# The FAISS index
# --------------------------------------------------------------------------------------------------


# faiss-gpu-cu12's wheels carry GPU kernels for sm_70 and sm_80 only, and a kernel built for X.y runs on X.z (z >= y):
# T4 (7.5), A100 (8.0), A10/L4 (8.6/8.9) have them; H100/H200 (9.0) and newer do not.
FAISS_GPU_MAJORS = (7, 8)


def faiss_gpu_unavailable() -> str:
    """Why faiss cannot search on GPU 0 here ('' when it can), decided without launching a kernel: on a GPU its
    wheels carry no kernels for, a faiss search does not raise, its CUDA check calls abort() and the Python
    process (a Colab kernel) dies, so no try/except can fall back."""
    import faiss

    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1 or not torch.cuda.is_available():
        return "faiss has no GPU support here or sees no GPU"
    major, minor = torch.cuda.get_device_capability(0)
    if major not in FAISS_GPU_MAJORS:
        return (f"faiss has no GPU kernels for {torch.cuda.get_device_name(0)} (sm_{major}{minor}; its wheels carry "
                f"sm_70 and sm_80)")
    return ""


def place_index(cpu_index, use_gpu: bool = False):
    """(index to search, device label, GPU resources or None).

    The course's index (a few thousand vectors) is searched on the CPU: exact, well under a millisecond a query,
    and no GPU memory (faiss's GPU resources reserve about 1.5 GB each). use_gpu=True, for a corpus of millions,
    copies it to GPU 0 where faiss has kernels for that GPU, and otherwise says why not and keeps the CPU index.
    """
    if not use_gpu:
        return cpu_index, "faiss-cpu", None
    reason = faiss_gpu_unavailable()
    if reason:
        print(f"{reason}: the CPU index is used (exact, the same results)")
        return cpu_index, "faiss-cpu", None
    import faiss

    resources = faiss.StandardGpuResources()
    gpu_index = faiss.index_cpu_to_gpu(resources, 0, cpu_index)
    return gpu_index, f"faiss-gpu ({torch.cuda.get_device_name(0)})", resources


@dataclass
class PassageIndex:
    """Passages, their retriever vectors in a FAISS inner-product index, and where the search runs.

    Rows (0..n-1) are the passages' positions in `passages`; search returns rows, and the chunk
    store is addressed by the same rows.
    """

    cpu_index: object  # faiss.IndexFlatIP: exact search, the copy that gets saved
    passages: list[Passage]
    retriever: str
    search_index: object = None  # the CPU index or a GPU copy of it
    device: str = "faiss-cpu"
    _gpu_resources: object = field(default=None, repr=False)  # must outlive the GPU index

    @property
    def dim(self) -> int:
        return int(self.cpu_index.d)

    def __len__(self) -> int:
        return int(self.cpu_index.ntotal)

    def search(self, query_vectors: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores), each [n_queries, top_k], best first; scores are cosine similarities."""
        if not 1 <= top_k <= len(self):
            raise CourseError(f"top_k must be between 1 and the number of indexed passages ({len(self)}), "
                              f"got top_k={top_k}.")
        queries = np.ascontiguousarray(np.atleast_2d(query_vectors), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise CourseError(f"query vectors have dimension {queries.shape[1]} but the index holds "
                              f"{self.dim}-dimensional vectors of {self.retriever}; embed with that one.")
        searcher = self.cpu_index if self.search_index is None else self.search_index
        scores, rows = searcher.search(queries, top_k)
        return rows, scores

    def ids(self, rows: np.ndarray) -> list[list[str]]:
        """The passage ids of search result rows."""
        return [[self.passages[r].id for r in row] for row in np.atleast_2d(rows)]


def build_index(vectors: np.ndarray, passages: Sequence[Passage], retriever: str,
                use_gpu: bool = False) -> PassageIndex:
    """An exact inner-product index (IndexFlatIP) over unit passage vectors."""
    import faiss

    if len(passages) == 0:
        raise CourseError("No passages to index: pass a non-empty passage list (refrag_lib.data.load_passages).")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(passages):
        raise CourseError(f"expected one vector per passage ({len(passages)}), got shape {vectors.shape}.")
    cpu_index = faiss.IndexFlatIP(vectors.shape[1])
    cpu_index.add(vectors)
    search_index, device, resources = place_index(cpu_index, use_gpu)
    return PassageIndex(cpu_index, list(passages), retriever, search_index, device, resources)


def retrieve(retriever: Retriever, index: PassageIndex, questions: Sequence[str], top_k: int,
             batch_size: int = 32, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Embed questions with the index's retriever and return the top_k (rows, scores) of each."""
    if retriever.name != index.retriever:
        raise CourseError(f"the index was built with retriever {index.retriever!r} but the questions are "
                          f"embedded with {retriever.name!r}; use the same retriever for both.")
    return index.search(retriever.embed(questions, batch_size, progress, desc="questions"), top_k)


def save_index(index: PassageIndex, folder: str | Path) -> Path:
    """Write the FAISS index, the passages (jsonl, row order) and meta.json into a folder."""
    import faiss

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index.cpu_index, str(folder / INDEX_FILE))
    with open(folder / PASSAGES_FILE, "w", encoding="utf-8") as f:
        for p in index.passages:
            row = {"id": p.id, "type": p.type, "title": p.title, "text": p.text}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    meta = {"retriever": index.retriever, "dim": index.dim, "n_passages": len(index),
            "metric": "inner_product", "normalised": True, "faiss_version": faiss.__version__,
            "passages_fingerprint": passages_fingerprint(index.passages)}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def load_index(folder: str | Path, retriever: str | None = None, use_gpu: bool = False) -> PassageIndex:
    """The index save_index wrote; `retriever` (the preset's) must be the one it was built with."""
    import faiss

    folder = Path(folder)
    for name in (INDEX_FILE, PASSAGES_FILE, META_FILE):
        if not (folder / name).is_file():
            raise MissingArtifactError(f"{folder / name} is missing. {BUILD_HINT}.")
    meta = json.loads((folder / META_FILE).read_text())
    if retriever is not None and meta["retriever"] != retriever:
        raise CourseError(f"The index in {folder} was built with retriever {meta['retriever']!r}, but this "
                          f"preset retrieves with {retriever!r}. {BUILD_HINT} with this PRESET.")
    cpu_index = faiss.read_index(str(folder / INDEX_FILE))
    passages = load_passages(folder / PASSAGES_FILE)
    if cpu_index.ntotal != len(passages) or meta["n_passages"] != len(passages):
        raise CourseError(f"{folder}: the index holds {cpu_index.ntotal} vectors for {len(passages)} "
                          f"passages (meta.json: {meta['n_passages']}); the folder is inconsistent. {BUILD_HINT}.")
    search_index, device, resources = place_index(cpu_index, use_gpu)
    return PassageIndex(cpu_index, passages, meta["retriever"], search_index, device, resources)


def load_run_index(run, use_gpu: bool = False) -> PassageIndex:
    """The index of a run folder (RUN_DIR/index), checked against the run's preset."""
    for name in (INDEX_FILE, PASSAGES_FILE, META_FILE):
        run.require("index", name)
    return load_index(run.root / "index", run.preset.retriever_model, use_gpu)


# --------------------------------------------------------------------------------------------------
# Evaluation: recall@k, of the gold passage or (questions without one) of a passage holding the answer
# --------------------------------------------------------------------------------------------------

GOLD_PASSAGE = "gold passage"  # what a hit means when every question names its gold passage
ANSWER_IN_PASSAGE = "answer in passage"  # ... when they do not (the public format): a passage holding an answer


def relevant_rows(passages: Sequence[Passage], questions: Sequence[QAExample]) -> tuple[list[set[int]], str]:
    """The rows that count as a hit for each question, and what a hit means (GOLD_PASSAGE or ANSWER_IN_PASSAGE).

    When every question names its gold passage, that passage; otherwise (a learner's file in the public
    format: question and answers only) every passage that contains an answer, for every question.
    """
    if all(q.gold_passage_id is not None for q in questions):
        row_of = {p.id: i for i, p in enumerate(passages)}
        missing = next((q for q in questions if q.gold_passage_id not in row_of), None)
        if missing is not None:
            raise CourseError(f"question {missing.id!r}: gold passage {missing.gold_passage_id!r} is not among the "
                              "passages; index a passage list that contains every gold passage.")
        return [{row_of[q.gold_passage_id]} for q in questions], GOLD_PASSAGE
    return answer_rows(passages, questions), ANSWER_IN_PASSAGE


def gold_ranks(ranked_rows: np.ndarray, gold: Sequence) -> np.ndarray:
    """0-based rank of the first relevant row in each ranked list, or -1 where none was retrieved.

    gold[i] is question i's gold row, or the set of its relevant rows (see relevant_rows).
    """
    ranked_rows = np.atleast_2d(ranked_rows)
    if len(ranked_rows) != len(gold):
        raise CourseError(f"{len(ranked_rows)} ranked lists for {len(gold)} gold passages.")
    ranks = []
    for ranked, wanted in zip(ranked_rows, gold):
        wanted = wanted if isinstance(wanted, (set, frozenset)) else {int(wanted)}
        ranks.append(next((rank for rank, row in enumerate(ranked) if int(row) in wanted), -1))
    return np.asarray(ranks, dtype=np.int64)


def recall_at_k(ranked_rows: np.ndarray, gold: Sequence, ks: Sequence[int] = RECALL_KS) -> dict[int, float]:
    """Fraction of questions with a relevant passage among the first k results, for each k."""
    ranked_rows = np.atleast_2d(ranked_rows)
    if len(gold) == 0:
        raise CourseError("recall needs at least one question.")
    if max(ks) > ranked_rows.shape[1]:
        raise CourseError(f"recall@{max(ks)} needs {max(ks)} results per question, got {ranked_rows.shape[1]}.")
    ranks = gold_ranks(ranked_rows, gold)
    return {k: float(np.mean((ranks >= 0) & (ranks < k))) for k in ks}


def format_hits(index: PassageIndex, rows: Sequence[int], scores: Sequence[float], gold: int | set | None = None,
                width: int = 120) -> str:
    """One line per hit: rank, cosine score, passage id and the start of its text; relevant ones starred."""
    lines = []
    wanted = gold if isinstance(gold, (set, frozenset)) else set() if gold is None else {int(gold)}
    for rank, (row, score) in enumerate(zip(rows, scores, strict=True), start=1):
        p = index.passages[int(row)]
        mark = "*" if int(row) in wanted else " "
        lines.append(f"{mark}{rank:2d}. {score:.3f}  {p.id}  {p.text[:width]}")
    return "\n".join(lines)


def subset_with_gold(passages: Sequence[Passage], questions: Sequence[QAExample], n_passages: int,
                     n_questions: int, seed: int = 0) -> tuple[list[Passage], list[QAExample]]:
    """A smaller corpus that still contains the gold passage of every kept question (corpus order kept);
    for questions without a gold id, the first passage that holds their answer."""
    if n_questions < 1 or n_passages < 1:
        raise CourseError(f"n_passages and n_questions must be >= 1, got {n_passages} and {n_questions}.")
    rng = random.Random(seed)
    questions = list(questions[:n_questions])
    relevant, _ = relevant_rows(passages, questions)
    keep = {passages[min(rows)].id for rows in relevant if rows}
    if len(keep) > n_passages:
        raise CourseError(f"{len(questions)} questions need {len(keep)} gold passages: more than "
                          f"n_passages={n_passages}.")
    others = [p.id for p in passages if p.id not in keep]
    keep |= set(rng.sample(others, min(len(others), n_passages - len(keep))))
    return [p for p in passages if p.id in keep], questions


# --------------------------------------------------------------------------------------------------
# A run's index: what notebook 01 and `python -m refrag_lib index` both call
# --------------------------------------------------------------------------------------------------


def build_run_index(run, passages: Sequence[Passage], questions: Sequence[QAExample],
                    retriever: Retriever | None = None, model=None, batch_size: int = 32,
                    chunk_batch_size: int = 256, progress: bool = True, use_gpu: bool = False) -> dict:
    """Embed, index, evaluate recall@1/5/10 and build the chunk store into RUN_DIR/index; returns the metrics.

    retriever/model default to the run preset's (pass them to reuse models already loaded).
    """

    if not questions:
        raise CourseError("No questions to measure recall on: give a QA file with at least one question.")
    relevant, recall_kind = relevant_rows(passages, questions)  # checked before a minute is spent embedding
    folder = run.stage_dir("index")
    retriever = retriever or load_retriever(run.preset)
    start = time.perf_counter()
    vectors = retriever.embed([p.text for p in passages], batch_size, progress, desc="passages")
    embed_seconds = time.perf_counter() - start
    index = build_index(vectors, passages, retriever.name, use_gpu)
    print(f"embedded {len(index)} passages ({index.dim}-dim) in {embed_seconds:.1f} s; "
          f"search runs on {index.device}")
    save_index(index, folder)

    top = min(max(RECALL_KS), len(index))
    ranked, _ = retrieve(retriever, index, [q.question for q in questions], top, batch_size, progress)
    recall = recall_at_k(ranked, relevant, [k for k in RECALL_KS if k <= top])
    if recall_kind == ANSWER_IN_PASSAGE:
        print(f"The questions name no gold passage: recall@k counts a question as found when one of its top-k "
              f"passages contains an answer ({sum(not rows for rows in relevant)} of {len(questions)} questions "
              "have an answer that no passage contains: always misses).")

    model = model or load_refrag(run.preset).eval()
    start = time.perf_counter()
    store = build_chunk_store(model, index.passages, "pretrained", chunk_batch_size, progress, retriever=retriever)
    chunk_store_seconds = time.perf_counter() - start
    store.save(folder / CHUNK_STORE_FILE)
    print(f"chunk store: {store.n_chunks} chunks of k={model.k}, with their retriever keys, in "
          f"{chunk_store_seconds:.1f} s")

    metrics = {"n_passages": len(index), "n_eval": len(questions), "retriever": retriever.name,
               "dim": index.dim, "index_device": index.device, "embed_seconds": round(embed_seconds, 2),
               "recall_kind": recall_kind, "n_unanswerable": sum(not rows for rows in relevant),
               **{f"recall_at_{k}": value for k, value in recall.items()},
               "chance_at_10": min(1.0, 10 / len(index)), "n_chunks": store.n_chunks,
               "chunks_per_passage": round(store.n_chunks / len(index), 2),
               "chunk_store_seconds": round(chunk_store_seconds, 2)}
    run.write_metrics("index", metrics)
    return metrics


def main(argv: list[str] | None = None) -> int:
    """`python -m refrag_lib index`: RUN_DIR/index (FAISS index, passages, chunk store, metrics.json)."""
    data = default_data_dir()
    parser = argparse.ArgumentParser(prog="python -m refrag_lib index", description=main.__doc__)
    parser.add_argument("--preset", default="cpu", choices=[*PRESETS, "auto"])
    parser.add_argument("--run-dir", default="", help="artifacts folder (default runs/<preset>)")
    parser.add_argument("--passages", default=str(data / "corpus.jsonl"), help="corpus (.jsonl or .txt)")
    parser.add_argument("--qa", default=str(data / "qa_eval.jsonl"),
                        help="questions (.jsonl); without gold_passage_id a hit is a passage holding an answer")
    parser.add_argument("--k", type=int, default=None, help="decoder tokens per chunk (default: preset's)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    run = open_run(args.preset, args.run_dir, k=args.k)
    metrics = build_run_index(run, load_passages(args.passages), load_qa(args.qa), batch_size=args.batch_size,
                              progress=not args.no_progress)
    print(json.dumps(metrics, indent=2))
    return 0
