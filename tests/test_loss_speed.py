"""The per-chunk-loop yardstick of `python -m refrag_lib loss-speed` computes the course's loss, slowly."""

import torch
from test_losses import token_lists

from refrag_lib.losses import reconstruction_loss
from refrag_lib.studies.loss_speed import compare, per_chunk_loop_loss


def test_per_chunk_loop_matches_the_batched_loss(tiny):
    batch = token_lists(tiny, [9, 4, 13])  # a partial last chunk, one exact chunk, several chunks (k=4)
    batched = reconstruction_loss(tiny, batch)
    for row, tokens in enumerate(batch):
        nll, count = per_chunk_loop_loss(tiny, tokens)
        assert count == int(batched.tokens[row])
        torch.testing.assert_close(nll.detach(), batched.nll[row], rtol=1e-4, atol=1e-4)


def test_compare_times_both_on_the_same_batch(tiny):
    docs = token_lists(tiny, [40, 40])
    rows = compare(tiny, docs, [1, 2], target_tokens=16, repeats=1, warmup=0)
    assert [(r["chunks"], r["batch"]) for r in rows] == [(1, 4), (2, 2)]
    assert all(r["batched_samples_per_s"] > 0 and r["per_chunk_loop_samples_per_s"] > 0 for r in rows)
    assert all(r["batched_bf16_samples_per_s"] > 0 and r["bf16_speedup"] > 0 for r in rows)
    assert not any(p.requires_grad for p in tiny.decoder.parameters())  # frozen, as in stage 1
    assert all(p.requires_grad for p in tiny.projector.parameters())


def test_bf16_autocast_computes_about_the_same_loss(tiny):
    batch = token_lists(tiny, [9, 4, 13])
    fp32 = reconstruction_loss(tiny, batch).loss
    with torch.autocast(tiny.device.type, dtype=torch.bfloat16):
        bf16 = reconstruction_loss(tiny, batch).loss
    assert bf16.dtype == torch.float32  # the loss is taken on fp32 logits
    torch.testing.assert_close(bf16, fp32, rtol=2e-2, atol=2e-2)
