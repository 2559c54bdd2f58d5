"""The REFRAG chunk store: embeddings to DECODE, one encoder vector c_i per chunk of k decoder tokens of
every passage, with the chunk token ids, in index row order. The decoder reads them through the projector
instead of the k tokens; computing them once at indexing time is what makes REFRAG's "with cache"
time-to-first-token possible. They depend on the encoder's weights, so they are recomputed
(build_chunk_store) after the encoder is trained.

Two chunk sources give a question's passages as chunks (`ChunkSource`): the store (cached c_i, what serving
reads) and `PassageChunks` (the chunks only, while the encoder is still training and c_i are computed afresh).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .data import Passage, passages_fingerprint
from .errors import CourseError, MissingArtifactError
from .lexical import WordRarity
from .model import RefragModel

CHUNK_STORE_FILE = "chunk_store.safetensors"
REBUILD_KEYS = ("This chunk store has no question-side vectors (it was built before the 'question' selector "
                "existed): rerun notebooks/01_indexing.ipynb, then notebooks/05_sft.ipynb to rebuild the ready index.")
BUILD_HINT = "Run notebooks/01_indexing.ipynb (or `python -m refrag_lib index --run-dir RUN_DIR`) first"


class ChunkSource(Protocol):
    """Where a question's passages come from as chunks: the chunk store (cached c_i) or PassageChunks."""

    def passage_chunks(self, rows: Sequence[int]) -> list[list[list[int]]]:
        """Each passage's k-token chunks (decoder token ids), in the given order."""

    def keys_for(self, rows: Sequence[int]) -> torch.Tensor | None:
        """The retriever vectors of these passages' chunks, in order (None: no keys)."""

    def word_rarity(self, tokenizer) -> WordRarity | None:
        """The IDF of the passages' words (the question-aware policy's word overlap; None: not known)."""


def context_text(passage_text: str) -> str:
    """How a passage enters a prompt: its text and a newline, chunked on its own so its c_i can be cached."""
    return passage_text + "\n"


def model_signature(module) -> str:
    """Architecture of a model, used to refuse a chunk store made for another encoder/decoder."""
    cfg = module.config
    return f"{cfg.model_type}, hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, vocab {cfg.vocab_size}"


def model_label(module) -> str:
    """A readable model name: the hub id or the last two parts of the local folder."""
    return "/".join(Path(str(module.config.name_or_path)).parts[-2:]) or module.config.model_type


@dataclass
class ChunkStore:
    """c_i for every k-token chunk of every passage, with the chunk token ids, in index row order.

    passage_offsets[r]:passage_offsets[r+1] are the chunks of passage row r; token_offsets[j]:
    token_offsets[j+1] are the decoder token ids of chunk j inside token_ids.
    """

    vectors: torch.Tensor  # [n_chunks, enc_dim] float32
    passage_offsets: torch.Tensor  # [n_passages + 1] int64
    token_ids: torch.Tensor  # [n_tokens] int64
    token_offsets: torch.Tensor  # [n_chunks + 1] int64
    meta: dict
    keys: torch.Tensor | None = None  # [n_chunks, retriever dim] unit retriever vectors (the question selector)
    _rarity: WordRarity | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def n_passages(self) -> int:
        return len(self.passage_offsets) - 1

    @property
    def n_chunks(self) -> int:
        return int(self.vectors.shape[0])

    def chunk(self, j: int) -> list[int]:
        return self.token_ids[self.token_offsets[j] : self.token_offsets[j + 1]].tolist()

    def _span(self, row: int) -> tuple[int, int]:
        """The chunk indices [lo, hi) of passage `row`; refused outside the store."""
        if not 0 <= int(row) < self.n_passages:
            raise CourseError(f"passage row {row} is outside the chunk store (0..{self.n_passages - 1}).")
        return int(self.passage_offsets[row]), int(self.passage_offsets[row + 1])

    def chunks_for(self, passage_rows: Sequence[int]) -> tuple[list[list[int]], torch.Tensor]:
        """The chunks (decoder token ids) and their c_i for these passages, in the given order.

        Ready for Segments(chunks=...) and build_inputs(chunk_vectors=...) when nothing is expanded.
        """
        chunks = [c for per_passage in self.passage_chunks(passage_rows) for c in per_passage]
        return chunks, self.vectors_for(passage_rows)

    def vectors_for(self, passage_rows: Sequence[int]) -> torch.Tensor:
        """The c_i of these passages' chunks, in chunks_for's order (no token lists built)."""
        parts = [self.vectors[lo:hi] for lo, hi in map(self._span, passage_rows)]
        return torch.cat(parts) if parts else self.vectors[:0]

    def passage_chunks(self, rows: Sequence[int]) -> list[list[list[int]]]:
        return [[self.chunk(j) for j in range(*self._span(row))] for row in rows]

    def keys_for(self, passage_rows: Sequence[int]) -> torch.Tensor | None:
        """The retriever vectors of these passages' chunks, in chunks_for's order (None: a store without keys)."""
        if self.keys is None:
            return None
        parts = [self.keys[lo:hi] for lo, hi in map(self._span, passage_rows)]
        return torch.cat(parts) if parts else self.keys[:0]

    def word_rarity(self, tokenizer) -> WordRarity:
        """The IDF of every word of the store's passages (their chunks decoded), built once on first use."""
        if self._rarity is None:
            texts = tokenizer.batch_decode([self.token_ids[self.token_offsets[lo] : self.token_offsets[hi]].tolist()
                                            for lo, hi in zip(self.passage_offsets[:-1], self.passage_offsets[1:])])
            self._rarity = WordRarity(texts, tokenizer.batch_decode)
        return self._rarity

    def save(self, path: str | Path) -> Path:
        """One safetensors file; the metadata says which models, k and encoder weights made it."""

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"vectors": self.vectors.contiguous(), "passage_offsets": self.passage_offsets,
                   "token_ids": self.token_ids, "token_offsets": self.token_offsets}
        if self.keys is not None:
            tensors["keys"] = self.keys.contiguous()
        save_file(tensors, str(path), metadata={name: str(value) for name, value in self.meta.items()})
        return path


class PassageChunks:
    """Each passage's k-token chunks (decoder token ids), tokenised once: the chunk source while the encoder
    is still training (its vectors are then computed afresh at every step). `keys`: a chunk store with the
    chunks' retriever vectors (notebook 01's), for the question selector and the question policy."""

    def __init__(self, model: RefragModel, passages, keys: ChunkStore | None = None):
        self.model = model
        self.passages = passages
        self.keys = keys
        self._cache: dict[int, list[list[int]]] = {}

    def passage_chunks(self, rows: Sequence[int]) -> list[list[list[int]]]:
        for r in rows:
            if r not in self._cache:
                self._cache[r] = self.model.chunk_text(context_text(self.passages[r].text))
        return [self._cache[r] for r in rows]

    def keys_for(self, rows: Sequence[int]) -> torch.Tensor | None:
        return None if self.keys is None else self.keys.keys_for(rows)

    def word_rarity(self, tokenizer) -> WordRarity | None:
        return None if self.keys is None else self.keys.word_rarity(tokenizer)


@contextmanager
def encoder_eval_mode(model):
    """Dropout off while computing c_i (a model in the middle of training is in train mode), then restore
    every submodule's own mode."""
    modes = [(m, m.training) for m in model.encoder.modules()]
    model.encoder.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@torch.inference_mode()
def build_chunk_store(model, passages: Sequence[Passage | str], encoder_weights: str = "pretrained",
                      batch_size: int = 256, progress: bool = True, retriever=None,
                      keys: torch.Tensor | None = None) -> ChunkStore:
    """Chunk every passage into k decoder tokens and encode all chunks (one encoder call per batch).

    encoder_weights records which encoder weights made the vectors ("pretrained", or the checkpoint
    of a trained encoder): call this again after training the encoder, the old vectors are stale.
    With a retriever, each chunk's text is also embedded as a unit retriever vector (the keys the
    question selector compares with the question); `keys` reuses keys computed before for the same
    chunks (they do not depend on the encoder: see `read_chunk_keys`).
    """
    if len(passages) == 0:
        raise CourseError("No passages to chunk: pass a non-empty passage list.")
    if batch_size < 1:
        raise CourseError(f"batch_size must be >= 1, got {batch_size}.")
    texts = [p.text if isinstance(p, Passage) else p for p in passages]
    per_passage = [model.chunk_text(context_text(t)) for t in texts]
    chunks = [c for cs in per_passage for c in cs]
    with encoder_eval_mode(model):
        parts = [model.encode_chunks(chunks[i : i + batch_size]).float().cpu()
                 for i in tqdm(range(0, len(chunks), batch_size), desc="chunk vectors", disable=not progress)]
    if retriever is not None:
        texts_of_chunks = model.decoder_tokenizer.batch_decode(chunks)
        keys = torch.from_numpy(retriever.embed(texts_of_chunks, batch_size=64, progress=progress, desc="chunk keys"))
    if keys is not None and len(keys) != len(chunks):
        raise CourseError(f"{len(keys)} chunk keys for {len(chunks)} chunks: they were made for other passages or k.")
    meta = {"encoder": model_label(model.encoder), "decoder": model_label(model.decoder),
            "encoder_signature": model_signature(model.encoder),
            "decoder_signature": model_signature(model.decoder), "k": model.k,
            "encoder_weights": encoder_weights, "n_passages": len(texts), "n_chunks": len(chunks)}
    if all(isinstance(p, Passage) for p in passages):
        meta["passages_fingerprint"] = passages_fingerprint(passages)
    return ChunkStore(
        vectors=torch.cat(parts),
        passage_offsets=torch.tensor(np.cumsum([0] + [len(cs) for cs in per_passage]), dtype=torch.long),
        token_ids=torch.tensor([t for c in chunks for t in c], dtype=torch.long),
        token_offsets=torch.tensor(np.cumsum([0] + [len(c) for c in chunks]), dtype=torch.long),
        meta={**meta, **({"retriever": retriever.name} if retriever is not None else {})},
        keys=keys,
    )


def load_chunk_store(path: str | Path, model, index=None,
                     probe: int = 4) -> ChunkStore:
    """A saved chunk store, refused when it was made for another k, encoder, decoder or passage list.

    The first `probe` chunks are re-encoded with the model's encoder: if the vectors differ, the store
    was computed with other encoder weights (e.g. before the encoder was trained).
    """
    path = Path(path)
    path = path / CHUNK_STORE_FILE if path.is_dir() else path
    if not path.is_file():
        raise MissingArtifactError(f"{path} is missing. {BUILD_HINT}.")
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    for name in ("k", "n_passages", "n_chunks"):
        meta[name] = int(meta[name])
    store = ChunkStore(tensors["vectors"], tensors["passage_offsets"], tensors["token_ids"],
                       tensors["token_offsets"], meta, tensors.get("keys"))
    rebuild = "Rebuild it with build_chunk_store(model, index.passages) and save it (notebook 01 does this)."
    built = (meta["k"], meta["encoder_signature"], meta["decoder_signature"])
    if built != (model.k, model_signature(model.encoder), model_signature(model.decoder)):
        raise CourseError(
            f"The chunk store {path} was built for k={meta['k']}, encoder {meta['encoder']} "
            f"({meta['encoder_signature']}), decoder {meta['decoder']} ({meta['decoder_signature']}); the loaded "
            f"model has k={model.k}, encoder {model_label(model.encoder)} ({model_signature(model.encoder)}), "
            f"decoder {model_label(model.decoder)} ({model_signature(model.decoder)}). {rebuild}")
    if index is not None and meta.get("passages_fingerprint") != passages_fingerprint(index.passages):
        raise CourseError(f"The chunk store {path} was built for another passage list than the index "
                          f"({meta['n_passages']} vs {len(index)} passages). {rebuild}")
    _check_vectors(store, model, probe, f"The chunk store {path} was computed with other encoder weights "
                   f"(it says encoder_weights={meta['encoder_weights']!r}). {rebuild}")
    return store


def read_chunk_keys(path: str | Path, store: ChunkStore) -> torch.Tensor:
    """The chunk keys of the store saved at `path` (notebook 01's), for `store`'s chunks.

    Keys are retriever vectors of chunk texts, so a store computed later with a trained encoder (the
    ready index of notebook 05) reuses them; refused unless both stores hold the same chunks.
    """
    path = Path(path)
    path = path / CHUNK_STORE_FILE if path.is_dir() else path
    if not path.is_file():
        raise MissingArtifactError(f"{path} is missing. {BUILD_HINT}.")
    with safe_open(str(path), framework="pt") as f:
        if "keys" not in f.keys():
            raise CourseError(f"{path}: {REBUILD_KEYS}")
        same = torch.equal(f.get_tensor("token_ids"), store.token_ids) and torch.equal(
            f.get_tensor("token_offsets"), store.token_offsets)
        if not same:
            raise CourseError(f"{path} holds other chunks than this store (another k, tokenizer or passage list): "
                              "rerun notebooks/01_indexing.ipynb with this run's preset and k.")
        return f.get_tensor("keys")


@torch.inference_mode()
def _check_vectors(store: ChunkStore, model, probe: int, message: str) -> None:
    """Re-encode a few stored chunks and compare: cosine below 0.999 means other encoder weights."""
    n = min(probe, store.n_chunks)
    if n == 0:
        return
    with encoder_eval_mode(model):
        fresh = model.encode_chunks([store.chunk(j) for j in range(n)]).float().cpu()
    if torch.nn.functional.cosine_similarity(fresh, store.vectors[:n], dim=-1).min() < 0.999:
        raise CourseError(message)
