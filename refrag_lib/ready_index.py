"""A "REFRAG-ready index": the retrieval index and the chunk vectors of the trained encoder, saved together.

At query time REFRAG then runs no encoder at all ("with cache"): refrag_lib.answering retrieves passage
rows, reads their chunks' c_i from the store, lets the selector pick the chunks to expand, projects,
prefills. The folder (RUN_DIR/sft/ready_index/) holds the FAISS index, the passages, the chunk store
computed with the SFT encoder (with notebook 01's retriever keys of every chunk, for the question
selector), and ready.json (selector, p, top_k, which weights made the vectors). Loading it checks the store
against the loaded model's encoder: vectors of another encoder would be silently wrong, so they are
refused.

Command line: ``python -m refrag_lib generate --question "Which river flows through City_003?"``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from .answering import generate_answer
from .chunk_store import CHUNK_STORE_FILE, ChunkStore, build_chunk_store, load_chunk_store, read_chunk_keys
from .config import PRESETS
from .errors import CourseError, MissingArtifactError
from .index import META_FILE, PassageIndex, Retriever, load_index, load_retriever, save_index
from .model import RefragModel
from .policy import check_fraction, load_run_policies
from .runs import open_run
from .selectors import SELECTORS
from .trained import load_sft_model

READY_FOLDER = "ready_index"  # under RUN_DIR/sft/
READY_FILE = "ready.json"


def build_ready_index(folder: str | Path, model: RefragModel, index: PassageIndex, weights: str, p: float,
                      top_k: int, selector: str, keys_from: str | Path | None = None, batch_size: int = 256,
                      progress: bool = True, weights_run: str | Path | None = None) -> Path:
    """Save the index and every passage's chunk vectors computed with `model`'s (trained) encoder, with the
    chunks' retriever keys read from `keys_from` (notebook 01's chunk store: RUN_DIR/index).

    weights_run: the run folder whose notebook 05 fine-tuned the models, when it is not this one (a run on a
    learner's own corpus reads the course's trained models); `generate` and the playground load them from there.
    """
    folder = Path(folder)
    save_index(index, folder)
    store = build_chunk_store(model, index.passages, encoder_weights=weights, batch_size=batch_size,
                              progress=progress)
    if keys_from is not None:
        store.keys = read_chunk_keys(keys_from, store)
    store.save(folder / CHUNK_STORE_FILE)
    settings = {"selector": selector, "p": p, "top_k": top_k, "encoder_weights": weights,
                "n_chunks": store.n_chunks, "k": model.k}
    if weights_run is not None:
        settings["weights_run"] = str(Path(weights_run).resolve())
    (folder / READY_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    return folder


@dataclass
class ReadyIndex:
    """Everything inference needs, no encoder pass: index, cached chunk vectors, the reader and its policies."""

    index: PassageIndex
    store: ChunkStore
    model: RefragModel
    retriever: Retriever
    policies: dict  # selector name -> trained policy (rl, question_rl: notebook 04's)
    p: float
    top_k: int
    selector: str  # the selector notebook 05 fine-tuned and evaluated REFRAG with


def load_ready_index(folder: str | Path, model: RefragModel, retriever: Retriever, policies: dict) -> ReadyIndex:
    """The saved ready index, refused when its vectors were made by another encoder, k or passage list."""
    folder = Path(folder)
    if not (folder / READY_FILE).is_file():
        raise MissingArtifactError(f"{folder / READY_FILE} is missing: run notebooks/05_sft.ipynb first (it builds "
                                   "the REFRAG-ready index after fine-tuning).")
    settings = json.loads((folder / READY_FILE).read_text())
    index = load_index(folder, retriever.name)
    store = load_chunk_store(folder, model, index)
    return ReadyIndex(index, store, model, retriever, policies, float(settings["p"]), int(settings["top_k"]),
                      settings.get("selector", "rl"))  # ready.json from before it named one: built with rl


def format_answer(result: dict) -> str:
    """The answer, the passages, the expanded chunks and the TTFT, for a terminal."""
    lines = [f"question: {result['question']}", f"answer:   {result['answer']}",
             f"TTFT (with cache, median): {result['ttft_ms']:.1f} ms, {result['input_positions']} decoder positions",
             f"selector: {result['selector']}", "retrieved passages:"]
    lines += [f"  {i}. {p['score']:.3f} {p['id']}  {p['text'].strip()[:110]}"
              for i, p in enumerate(result["passages"], start=1)]
    lines.append(f"expanded chunks ({len(result['expanded_chunks'])} of {result['n_chunks']}):")
    lines += [f"  [{c.strip()}]" for c in result["expanded_chunks"]] or ["  (none)"]
    return "\n".join(lines)


def weights_run(run):
    """The run whose notebook 05 fine-tuned the models a run's ready index was made with: the run itself, or
    (a run on a learner's own corpus) the course run named in ready.json."""

    ready = run.require("sft", f"{READY_FOLDER}/{READY_FILE}")
    source = json.loads(ready.read_text()).get("weights_run")
    if source is None:
        return run
    if not Path(source).is_dir():
        raise MissingArtifactError(f"{ready} reads its models from {source}, which is gone: run `make course` "
                                   "again (it trains them), then `make own-data` (it indexes your files again).")
    return open_run(run.preset.name, source, k=run.preset.k)


def check_request(run, question: str, top_k: int | None = None, p: float | None = None) -> None:
    """Refuse a request before any model loads (seconds here, minutes for a hub preset in Colab): an empty question,
    p outside [0, 1], or a top-K the run's ready index cannot give (its size is read from its meta.json)."""
    if not question.strip():
        raise CourseError("The question is empty: type a question to answer.")
    if p is not None:
        check_fraction(p)
    if top_k is not None:
        meta = run.require("sft", f"{READY_FOLDER}/{META_FILE}")
        n_passages = int(json.loads(meta.read_text())["n_passages"])
        if not 1 <= top_k <= n_passages:
            raise CourseError(f"top-K must be between 1 and the {n_passages} passages of the ready index, "
                              f"got {top_k}.")


def load_run_ready(run) -> ReadyIndex:
    """The ready index of a run with the SFT REFRAG model, the retriever and the trained policies."""
    folder = run.root / "sft" / READY_FOLDER
    source = weights_run(run)
    model = load_sft_model(source, "refrag")
    retriever = load_retriever(run.preset)
    return load_ready_index(folder, model, retriever, load_run_policies(source, retriever.name))


def main(argv: list[str] | None = None) -> int:
    """`python -m refrag_lib generate --question ...`: answer from the REFRAG-ready index of a run."""
    parser = argparse.ArgumentParser(prog="python -m refrag_lib generate", description=main.__doc__)
    parser.add_argument("--question", required=True)
    parser.add_argument("--preset", default="cpu", choices=[*PRESETS, "auto"])
    parser.add_argument("--run-dir", default="", help="artifacts folder (default runs/<preset>)")
    parser.add_argument("--top-k", type=int, default=None, help="passages to retrieve (default: the SFT run's)")
    parser.add_argument("--p", type=float, default=None, help="share of chunks to expand (default: the SFT run's)")
    parser.add_argument("--selector", default=None, choices=sorted(SELECTORS),
                        help="which chunks to expand (default: the one the SFT run used)")
    parser.add_argument("--max-new-tokens", type=int, default=12)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    run = open_run(args.preset, args.run_dir)
    check_request(run, args.question, args.top_k, args.p)
    ready = load_run_ready(run)
    result = generate_answer(ready, args.question, args.top_k, args.p, args.max_new_tokens, selector=args.selector)
    print(json.dumps(result, indent=1) if args.json else format_answer(result))
    return 0
