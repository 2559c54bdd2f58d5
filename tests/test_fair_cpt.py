"""The fair CPT protocol: a baseline's decoder is fine-tuned on CPT's own windows, read as the baseline reads
them, with only the decoder trained; the table's context recovered is the share of the full context's gain."""

import numpy as np
import pytest
import torch
from conftest import tiny_refrag

from refrag_lib.arms import FULL_CONTEXT, LAST_TOKENS, NO_CONTEXT, REFRAG
from refrag_lib.stages import StageTask
from refrag_lib.studies.fair_cpt import BaselineTask, decoder_trained_config, protocol_row
from refrag_lib.train import train


def test_a_baseline_trains_its_decoder_on_the_windows_cpt_sees(tmp_path):
    model = tiny_refrag(k=4)
    docs = [np.random.default_rng(i).integers(2, len(model.decoder_tokenizer), 200).tolist() for i in range(4)]
    cfg = decoder_trained_config(3, context_tokens=16, continuation_tokens=8, positions_per_step=48,
                                 lr=1e-3)
    task = BaselineTask(model, cfg, docs, FULL_CONTEXT)
    refrag_task = StageTask(model, cfg, docs)
    for step in range(3):  # the same windows as REFRAG's CPT, step for step
        same = [np.random.default_rng([0, step]) for _ in range(2)]
        assert task.batch(step, same[0]) == refrag_task.batch(step, same[1])
    encoder = [p.detach().clone() for p in model.encoder.parameters()]
    decoder = [p.detach().clone() for p in model.decoder.parameters()]
    result = train(model, cfg, task, tmp_path / "full", {"preset": "test"}, progress=False)
    assert len(result.history) == 3 and all(np.isfinite(row["loss"]) for row in result.history)
    assert all(torch.equal(a, b) for a, b in zip(encoder, result.model.encoder.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(decoder, result.model.decoder.parameters()))


def test_context_recovered_compares_like_with_like():
    rng = np.random.default_rng(0)
    none = 4 + rng.normal(0, 0.2, 32)
    per_pair = {NO_CONTEXT: none.tolist(), FULL_CONTEXT: (none - 2).tolist(), LAST_TOKENS: (none - 0.5).tolist(),
                REFRAG: (none - 1.5 + rng.normal(0, 0.05, 32)).tolist()}
    row = protocol_row(per_pair)
    assert row["context_recovered"]["mean"] == pytest.approx(0.75, abs=0.02)
    assert row["gain_over_last_tokens"]["low"] > 0  # REFRAG 1.5 below no context, the last tokens 0.5
    assert row["log_ppl"][FULL_CONTEXT] < row["log_ppl"][REFRAG] < row["log_ppl"][LAST_TOKENS]
