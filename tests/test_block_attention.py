"""Attention across retrieved passages: every share accounted for, causality respected, the decoder's own
attention kernel given back afterwards, bad input refused."""

import numpy as np
import pytest
from conftest import TINY_TEXT, tiny_refrag

from refrag_lib.block_attention import PARTS, cross_passage_summary, passage_attention
from refrag_lib.errors import CourseError


def passages(model, n):
    return [model.chunk_text(TINY_TEXT[i % len(TINY_TEXT)] + "\n") for i in range(n)]


def test_shares_cover_all_attention_and_passages_see_only_what_came_before():
    model = tiny_refrag(k=4)
    kernel = model.decoder.config._attn_implementation
    result = passage_attention(model, ["which river?", "which city?"], [passages(model, 3), passages(model, 3)[::-1]])
    assert model.decoder.config._attn_implementation == kernel  # eager only while measuring
    assert result["layers"] == model.decoder.config.num_hidden_layers and result["passages"] == 3
    shares = np.array([result["shares"][part] for part in PARTS])  # [4, layers]
    np.testing.assert_allclose(shares.sum(0), 1.0, atol=1e-4)  # first token + question + own + earlier passages
    assert sum(result["uniform"].values()) == pytest.approx(1.0)
    blocks = np.array(result["blocks"])  # passage i -> first, question, P1..PK
    assert blocks.shape == (3, 5)
    np.testing.assert_allclose(blocks.sum(1), 1.0, atol=1e-4)
    assert np.all(blocks[np.triu_indices(3, 1)[0], 2 + np.triu_indices(3, 1)[1]] == 0)  # no look ahead
    summary = cross_passage_summary(result)
    assert 0 <= summary["other_passages"] <= summary["other_passages_beyond_sink"] <= 1
    assert 0 < summary["other_passages_if_even"] < 1 and 0 <= summary["most_cross_layer"] < result["layers"]
    assert summary["own_passage_if_even"] + summary["other_passages_if_even"] <= 1 + 1e-6


def test_fewer_than_two_passages_or_a_mismatch_is_refused():
    model = tiny_refrag(k=4)
    with pytest.raises(CourseError, match="at least 2"):
        passage_attention(model, ["q"], [passages(model, 1)])
    with pytest.raises(CourseError, match="one list of passages per question"):
        passage_attention(model, ["q", "r"], [passages(model, 2)])
