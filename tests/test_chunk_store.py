"""The chunk store (c_i of every chunk, cached) and the other chunk source, PassageChunks: what they hold,
save/load and its refusals, and that a selector sees the same question from either."""

import numpy as np
import pytest
import torch
from conftest import TINY_TEXT, tiny_qa, tiny_refrag

from refrag_lib.chunk_store import CHUNK_STORE_FILE, PassageChunks, build_chunk_store, load_chunk_store
from refrag_lib.data import Passage
from refrag_lib.errors import CourseError, MissingArtifactError
from refrag_lib.index import build_index
from refrag_lib.selectors import selector_input


def tiny_passages():
    return [Passage(f"p{i:05d}", text) for i, text in enumerate(TINY_TEXT)]


def test_chunk_store_holds_encode_chunks_of_every_passage(tiny):
    passages = tiny_passages()
    store = build_chunk_store(tiny, passages, batch_size=5, progress=False)
    per_passage = [tiny.chunk_text(p.text + "\n") for p in passages]
    assert store.passage_offsets.tolist() == np.cumsum([0] + [len(c) for c in per_passage]).tolist()
    assert [store.chunk(j) for j in range(store.n_chunks)] == [c for chunks in per_passage for c in chunks]
    with torch.no_grad():
        expected = tiny.encode_chunks([c for chunks in per_passage for c in chunks])
    torch.testing.assert_close(store.vectors, expected, atol=1e-5, rtol=1e-4)
    chunks, vectors = store.chunks_for([2, 0])
    assert chunks == per_passage[2] + per_passage[0]
    reordered = torch.cat([expected[store.passage_offsets[2] :], expected[: len(per_passage[0])]])
    torch.testing.assert_close(vectors, reordered, atol=1e-5, rtol=1e-4)
    assert store.meta["k"] == tiny.k and store.meta["encoder_weights"] == "pretrained"


def test_chunk_store_round_trip_and_refusals(tmp_path, tiny):
    store = build_chunk_store(tiny, tiny_passages(), progress=False)
    store.save(tmp_path / CHUNK_STORE_FILE)
    loaded = load_chunk_store(tmp_path, tiny)
    for name in ("vectors", "passage_offsets", "token_ids", "token_offsets"):
        assert torch.equal(getattr(loaded, name), getattr(store, name))
    assert loaded.meta == store.meta
    with pytest.raises(CourseError, match=r"built for k=4.*the loaded model has k=8.*Rebuild it"):
        load_chunk_store(tmp_path, tiny_refrag(k=8))
    with pytest.raises(CourseError, match="other encoder weights"):
        load_chunk_store(tmp_path, tiny_refrag(k=4, seed=1))
    another_index = build_index(np.eye(3, dtype=np.float32), [Passage(f"q{i}", "other") for i in range(3)],
                                "offline:all-MiniLM-L6-v2", use_gpu=False)
    with pytest.raises(CourseError, match="another passage list"):
        load_chunk_store(tmp_path, tiny, index=another_index)
    with pytest.raises(MissingArtifactError, match="01_indexing"):
        load_chunk_store(tmp_path / "elsewhere", tiny)
    with pytest.raises(CourseError, match="outside the chunk store"):
        store.chunks_for([3])


def test_chunk_store_refuses_empty_passages(tiny):
    with pytest.raises(CourseError, match="No passages to chunk"):
        build_chunk_store(tiny, [], progress=False)


def test_both_chunk_sources_give_a_selector_the_same_question():
    """The store (cached c_i) and PassageChunks (c_i encoded now) build the same selector input."""
    model, _, _, index, items = tiny_qa(k=4, top_k=2)
    store = build_chunk_store(model, index.passages, progress=False)
    store.keys = torch.nn.functional.normalize(torch.randn(store.n_chunks, 8), dim=-1)
    item = items[0]
    rows = list(item.rows[:2])
    cached = selector_input(model, item, rows, store, store.chunks_for(rows)[1])
    encoded = selector_input(model, item, rows, PassageChunks(model, index.passages, keys=store))
    assert cached.segments == encoded.segments
    assert list(cached.passage_lengths) == list(encoded.passage_lengths) == [len(c) for c in store.passage_chunks(rows)]
    torch.testing.assert_close(cached.chunk_vectors, encoded.chunk_vectors, atol=1e-5, rtol=1e-4)
    assert torch.equal(cached.chunk_keys, encoded.chunk_keys) and cached.chunk_keys.shape[0] == cached.n_chunks
    assert torch.equal(cached.word_overlap, encoded.word_overlap)
    assert PassageChunks(model, index.passages).keys_for(rows) is None  # no store: no keys, no word overlap
