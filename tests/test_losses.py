"""Reconstruction and next-paragraph losses on tiny random models: targets, padding, gradients."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_TEXT

from refrag_lib.errors import CourseError
from refrag_lib.losses import (
    IGNORE,
    next_paragraph_loss,
    random_expansion,
    reconstruction_example,
    reconstruction_loss,
    shifted_labels,
    suffix_token_stats,
)
from refrag_lib.model import Segments, chunk_ids


def token_lists(model, lengths):
    ids = model.tokenize(" ".join(TINY_TEXT))
    return [ids[i : i + n] for i, n in enumerate(lengths)]


def test_labels_are_the_x_tokens_shifted_by_one(tiny):
    x = token_lists(tiny, [10])[0]
    inputs = tiny.build_inputs([reconstruction_example(x, tiny.k)], padding_side="right")
    labels = shifted_labels(inputs)[0]
    n_vectors = -(-len(x) // tiny.k)
    assert inputs.token_ids[0, 0].item() == tiny.start_id and not inputs.is_vector[0, 0]  # no vector on the sink
    # the start token and the vectors before the last predict nothing; the last vector predicts x_1;
    # x_t predicts x_{t+1}; x_s predicts nothing
    assert labels[:n_vectors].tolist() == [IGNORE] * n_vectors
    assert labels[n_vectors : n_vectors + len(x)].tolist() == x
    assert labels[-1].item() == IGNORE


def test_loss_matches_a_reference_computed_from_full_logits(tiny):
    xs = token_lists(tiny, [9, 14])
    stats = reconstruction_loss(tiny, xs)
    inputs = tiny.build_inputs([reconstruction_example(x, tiny.k) for x in xs], padding_side="right")
    logits = tiny.decoder(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                          position_ids=inputs.position_ids).logits
    labels = shifted_labels(inputs)
    reference = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
    torch.testing.assert_close(stats.loss, reference, rtol=1e-4, atol=1e-5)
    assert stats.tokens.tolist() == [9, 14]  # loss on the x tokens only, never on vectors or pads
    assert 0.0 <= stats.accuracy <= 1.0 and np.isfinite(stats.log_ppl)


def test_padding_does_not_change_an_examples_loss(tiny):
    short, long = token_lists(tiny, [7, 21])
    alone = reconstruction_loss(tiny, [short])
    padded = reconstruction_loss(tiny, [short, long])  # `short` is right-padded to the long one
    torch.testing.assert_close(padded.nll[0], alone.nll[0], rtol=1e-4, atol=1e-5)
    assert padded.tokens[0] == alone.tokens[0] == 7


def test_gradients_reach_encoder_and_projector_but_not_the_frozen_decoder(tiny):
    for p in tiny.decoder.parameters():
        p.requires_grad_(False)
    reconstruction_loss(tiny, token_lists(tiny, [12, 8])).loss.backward()
    assert all(p.grad is None for p in tiny.decoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny.projector.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny.encoder.parameters())


def test_one_encoder_call_and_one_decoder_forward_per_batch(tiny):
    calls = {"encoder": 0, "decoder": 0}
    tiny.encoder.register_forward_hook(lambda *a: calls.__setitem__("encoder", calls["encoder"] + 1))
    tiny.decoder.base_model.register_forward_hook(lambda *a: calls.__setitem__("decoder", calls["decoder"] + 1))
    reconstruction_loss(tiny, token_lists(tiny, [12, 16, 5]))
    assert calls == {"encoder": 1, "decoder": 1}


def test_next_paragraph_scores_only_the_continuation(tiny):
    ctx, cont = token_lists(tiny, [16, 6])
    stats = next_paragraph_loss(tiny, [ctx], [cont])
    assert stats.tokens.tolist() == [6]
    inputs = tiny.build_inputs([Segments(chunks=chunk_ids(ctx, tiny.k), suffix=cont)], padding_side="right")
    # start token, 4 vectors: the last vector (position 4) predicts the continuation's first token
    assert inputs.is_vector.sum() == 4 and shifted_labels(inputs)[0, 4].item() == cont[0]


def test_random_expansion_leaves_a_fraction_of_chunks_as_tokens(tiny):
    batch = [Segments(chunks=[[1]] * 20) for _ in range(3)]
    masks = random_expansion(batch, 0.1, np.random.default_rng(0))
    assert [sum(m) for m in masks] == [2, 2, 2]
    assert masks != random_expansion(batch, 0.1, np.random.default_rng(1))
    assert random_expansion(batch, 0.0, np.random.default_rng(0)) == [[False] * 20] * 3
    with pytest.raises(CourseError):
        random_expansion(batch, 1.5, np.random.default_rng(0))


def test_mixed_input_changes_the_decoder_length(tiny):
    ctx, cont = token_lists(tiny, [16, 6])
    compressed = next_paragraph_loss(tiny, [ctx], [cont], expand_fraction=0.0)
    mixed = next_paragraph_loss(tiny, [ctx], [cont], expand_fraction=0.5, rng=np.random.default_rng(0))
    assert compressed.tokens.tolist() == mixed.tokens.tolist() == [6]
    assert not torch.allclose(compressed.nll, mixed.nll)


def test_bad_examples_are_refused(tiny):
    with pytest.raises(CourseError):
        reconstruction_example([], 4)
    with pytest.raises(CourseError):
        next_paragraph_loss(tiny, [[1, 2]], [])
    with pytest.raises(CourseError, match="No target tokens"):
        suffix_token_stats(tiny, [Segments(prefix=[3, 4])])
