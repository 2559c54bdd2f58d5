"""The REFRAG model on tiny random configs: chunking, assembly under expansion masks, decoding."""

import pytest
import torch
from conftest import TINY_TEXT, Spy, tiny_refrag
from torch import nn

from refrag_lib.checkpoint import load_weights, save_weights
from refrag_lib.errors import CourseError
from refrag_lib.model import (
    Parts,
    Projector,
    Segments,
    cache_keyword,
    chunk_ids,
    expand_all,
    mean_pool,
    pool,
    projector_net,
    splice_vectors,
)


def rag_batch(model, n=2):
    """Question-first RAG-style examples with passages chunked per passage."""
    batch = []
    for i in range(n):
        chunks = [c for text in TINY_TEXT[i:] for c in model.chunk_text(text + "\n")]
        batch.append(Segments(prefix=model.tokenize(f"Q{i}: which river?"), chunks=chunks,
                              suffix=model.tokenize(" Answer:")))
    return batch


@pytest.mark.parametrize("k", [1, 3, 4, 16])
def test_chunking_round_trips_token_ids(tiny, k):
    ids = tiny.tokenize(TINY_TEXT[0])
    chunks = chunk_ids(ids, k)
    assert [t for c in chunks for t in c] == ids
    assert all(len(c) == k for c in chunks[:-1]) and 1 <= len(chunks[-1]) <= k
    assert len(chunks) == -(-len(ids) // k)


@pytest.mark.parametrize("k", [0, -2, 2.5])
def test_bad_k_is_refused(k):
    with pytest.raises(CourseError, match="k must be a positive integer"):
        chunk_ids([1, 2, 3], k)


def test_all_expanded_equals_plain_token_embeddings(tiny):
    batch = rag_batch(tiny)
    inputs = tiny.build_inputs(batch, expand_all(batch, True), padding_side="right")
    for row, ex in enumerate(batch):
        ids = ex.prefix + [t for c in ex.chunks for t in c] + ex.suffix
        plain = tiny.decoder.get_input_embeddings()(torch.tensor(ids))
        assert torch.equal(inputs.inputs_embeds[row, : len(ids)], plain)
        assert inputs.attention_mask[row].sum() == len(ids)
    assert not inputs.is_vector.any()


def test_compressed_input_shapes_masks_and_vector_positions(tiny):
    batch = rag_batch(tiny)
    expand = [[j % 3 == 0 for j in range(len(ex.chunks))] for ex in batch]
    inputs = tiny.build_inputs(batch, expand, padding_side="left")
    for row, (ex, mask) in enumerate(zip(batch, expand)):
        n_vec = mask.count(False)
        n_tok = sum(len(c) for c, e in zip(ex.chunks, mask) if e)
        length = len(ex.prefix) + n_vec + n_tok + len(ex.suffix)
        assert int(inputs.lengths[row]) == length
        assert int(inputs.is_vector[row].sum()) == n_vec
        assert int(inputs.is_suffix[row].sum()) == len(ex.suffix)
        width = inputs.attention_mask.shape[1]
        assert inputs.attention_mask[row, width - length :].all()
        assert not inputs.attention_mask[row, : width - length].any()
        assert inputs.position_ids[row, -1] == length - 1  # one ordinary position per slot
    # The vectors sit where the compressed chunks are, in chunk order.
    c = tiny.encode_chunks(tiny.compressed_chunks(batch, expand))
    e = tiny.projector(c)
    torch.testing.assert_close(inputs.inputs_embeds[inputs.is_vector], e)


def test_projected_vectors_have_the_length_of_a_typical_token_embedding(tiny):
    token_norm = tiny.decoder.get_input_embeddings().weight.norm(dim=1).mean()
    c = tiny.encode_chunks(chunk_ids(list(range(3, 40)), tiny.k)) * 100  # however long the encoder's vectors
    torch.testing.assert_close(tiny.projector(c).norm(dim=1), token_norm.expand(len(c)), rtol=1e-4, atol=1e-4)
    plain = Projector(8, 6)  # token_norm 0: the paper's plain MLP, output length free
    x = torch.randn(4, 8)
    torch.testing.assert_close(plain(x), plain.net(x))


def test_pooling_takes_the_mean_of_real_tokens_or_the_first_state(tiny):
    hidden = torch.arange(12.0).reshape(1, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0]])
    torch.testing.assert_close(pool(hidden, mask, "mean"), torch.tensor([[1.5, 2.5, 3.5]]))
    torch.testing.assert_close(pool(hidden, mask, "first"), torch.tensor([[0.0, 1.0, 2.0]]))
    with pytest.raises(CourseError, match="Unknown pooling"):
        pool(hidden, mask, "max")
    chunks = chunk_ids(list(range(3, 20)), tiny.k)
    tiny.pooling = "first"
    first = tiny.encode_chunks(chunks)
    tiny.pooling = "mean"
    assert first.shape == tiny.encode_chunks(chunks).shape and not torch.allclose(first, tiny.encode_chunks(chunks))


def test_a_learners_parts_are_what_the_model_runs(tiny):
    pool_fn, net, splice = Spy(mean_pool), Spy(projector_net), Spy(splice_vectors)
    mine = tiny_refrag(parts=Parts(pool=pool_fn, projector_net=net, splice=splice))
    mine.pooling = "first"  # a learner's pool replaces the named pooling
    batch = rag_batch(mine)
    inputs = mine.build_inputs(batch)
    assert (len(net.grad_modes), len(pool_fn.grad_modes), len(splice.grad_modes)) == (1, 1, 1)
    # the same seed and layers: the package's model, weight for weight, and the same decoder input
    assert all(torch.equal(tensor, mine.state_dict()[name]) for name, tensor in tiny.state_dict().items())
    torch.testing.assert_close(inputs.inputs_embeds, tiny.build_inputs(batch).inputs_embeds)


def test_a_learners_projector_keeps_the_checkpoint_names(tmp_path, tiny):
    identity = {"preset": "tiny", "k": "4", "encoder": "tiny-bert", "decoder": "tiny-llama"}
    relu = tiny_refrag(seed=1, parts=Parts(projector_net=lambda e, d: nn.Sequential(nn.Linear(e, d), nn.ReLU(),
                                                                                        nn.Linear(d, d))))
    save_weights(tmp_path / "w.safetensors", relu, ["projector"], identity)
    load_weights(tmp_path / "w.safetensors", tiny, identity)  # what notebook 03 does with 02's weights
    assert list(tiny.projector.state_dict()) == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]
    assert all(torch.equal(tensor, tiny.projector.state_dict()[name])
               for name, tensor in relu.projector.state_dict().items())


def test_a_compressed_input_starts_with_the_start_token_unless_it_has_a_prefix(tiny):
    compressed = Segments(chunks=chunk_ids(list(range(3, 20)), tiny.k), suffix=[5])
    inputs = tiny.build_inputs([compressed])
    assert inputs.token_ids[0, 0] == tiny.start_id and inputs.is_vector[0, 1:3].all()
    prompted = tiny.build_inputs([Segments(prefix=[7, 8], chunks=compressed.chunks)])
    assert prompted.token_ids[0, :2].tolist() == [7, 8] and prompted.is_vector[0, 2:].all()


def test_precomputed_vectors_give_the_same_inputs(tiny):
    batch = rag_batch(tiny)
    cached = tiny.encode_chunks(tiny.compressed_chunks(batch, expand_all(batch, False)))
    a = tiny.build_inputs(batch)
    b = tiny.build_inputs(batch, chunk_vectors=cached)
    torch.testing.assert_close(a.inputs_embeds, b.inputs_embeds)


def test_one_encoder_call_per_batch(tiny, monkeypatch):
    calls = []
    forward = tiny.encoder.forward
    monkeypatch.setattr(tiny.encoder, "forward", lambda *a, **kw: calls.append(1) or forward(*a, **kw))
    batch = rag_batch(tiny, n=3)
    tiny.build_inputs(batch)
    assert len(calls) == 1


def test_mask_and_window_errors(tiny):
    batch = rag_batch(tiny)
    with pytest.raises(CourseError, match="expansion mask has"):
        tiny.build_inputs(batch, [[True]] * len(batch))
    long = [Segments(prefix=[5] * (tiny.window + 1))]
    with pytest.raises(CourseError, match="window is 256"):
        tiny.build_inputs(long, [[]])


def test_token_path_greedy_matches_transformers_generate(tiny):
    ex = rag_batch(tiny, n=1)[0]
    ids = ex.prefix + [t for c in ex.chunks for t in c] + ex.suffix
    inputs = tiny.build_inputs([ex], expand_all([ex], True))
    ours = tiny.generate(inputs, max_new_tokens=12)[0]
    ref = tiny.decoder.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=tiny.pad_id)
    ref = ref[0, len(ids):].tolist()
    assert ours == (ref[: ref.index(tiny.eos_id)] if tiny.eos_id in ref else ref)
    assert len(ours) > 0


def test_left_padded_batch_decodes_like_each_row_alone(tiny):
    batch = rag_batch(tiny, n=2)
    expand = [[j % 2 == 0 for j in range(len(ex.chunks))] for ex in batch]
    together = tiny.generate(tiny.build_inputs(batch, expand), max_new_tokens=8)
    alone = [tiny.generate(tiny.build_inputs([ex], [m]), max_new_tokens=8)[0] for ex, m in zip(batch, expand)]
    assert together == alone


def test_first_token_comes_from_prefill_logits(tiny):
    batch = rag_batch(tiny, n=2)
    inputs = tiny.build_inputs(batch)
    logits, _ = tiny.prefill(inputs)
    first = [row[0] if row else tiny.eos_id for row in tiny.generate(inputs, max_new_tokens=1)]
    assert first == logits.argmax(-1).tolist()


def test_generate_refuses_right_padding(tiny):
    batch = [Segments(prefix=[5, 6, 7]), Segments(prefix=[5])]
    with pytest.raises(CourseError, match="left-padded"):
        tiny.generate(tiny.build_inputs(batch, [[], []], padding_side="right"))


def test_sampling_is_reproducible_with_a_generator(tiny):
    inputs = tiny.build_inputs(rag_batch(tiny, n=1))
    a = tiny.generate(inputs, 6, do_sample=True, generator=torch.Generator().manual_seed(3))
    b = tiny.generate(inputs, 6, do_sample=True, generator=torch.Generator().manual_seed(3))
    assert a == b


def test_cache_keyword_follows_the_forward_signature():
    class Renamed:
        def forward(self, input_ids=None, cache=None, use_cache=None): ...

    class Older:
        def forward(self, input_ids=None, past_key_values=None, use_cache=None): ...

    assert cache_keyword(Renamed) == "cache"
    assert cache_keyword(Older) == "past_key_values"


def test_cached_steps_match_one_full_forward(tiny):
    ids = torch.tensor([tiny.tokenize(TINY_TEXT[0])[:12]], device=tiny.device)
    full = tiny.decoder(input_ids=ids, use_cache=False).logits[0]
    inputs = tiny.build_inputs([Segments(prefix=ids[0, :8].tolist(), chunks=[], suffix=[])], [[]])
    logits, cache = tiny.prefill(inputs)
    torch.testing.assert_close(logits[0], full[7])
    mask, position = inputs.attention_mask, inputs.position_ids[:, -1:]
    for i in range(8, 12):
        mask, position = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1), position + 1
        logits, cache = tiny.decode_step(ids[:, i], mask, position, cache)
        torch.testing.assert_close(logits[0], full[i], atol=1e-5, rtol=1e-4)
    assert cache.get_seq_length() == 12


def test_a_deprecated_keyword_fails_the_tests(tiny):
    """pyproject's filterwarnings turns a library's FutureWarning into an error, so it cannot pass unseen."""
    from transformers import DynamicCache

    if cache_keyword(type(tiny.decoder)) != "cache":
        pytest.skip("this transformers release has not renamed past_key_values")
    with pytest.raises(FutureWarning, match="past_key_values"):
        tiny.decoder(input_ids=torch.tensor([[1, 2]], device=tiny.device), past_key_values=DynamicCache(),
                     use_cache=True)
