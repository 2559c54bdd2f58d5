"""The free-vector ceiling on a tiny random model: fitted vectors beat the floor, nothing else moves."""

import pytest
import torch
from conftest import TINY_TEXT, tiny_refrag

from refrag_lib.errors import CourseError
from refrag_lib.evaluate import floor_scores
from refrag_lib.losses import reconstruction_example, suffix_token_stats
from refrag_lib.studies.vector_ceiling import fit_free_vectors, free_vector_ceiling


def held_out(model):
    return [model.tokenize(" ".join(TINY_TEXT[i:] + TINY_TEXT[:i]) * 2) for i in range(3)]


@pytest.mark.parametrize("native_bf16", [False, True], ids=["fp32", "bf16 autocast"])
def test_fitted_vectors_lower_the_loss_and_leave_the_model_as_it_was(native_bf16, monkeypatch):
    monkeypatch.setattr("refrag_lib.precision.native_cpu_bf16", lambda: native_bf16)
    model = tiny_refrag(k=4)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    windows = [w[:4] for w in held_out(model)]
    vectors, curve = fit_free_vectors(model, windows, steps=30, lr=0.1)
    assert vectors.shape == (3, model.decoder.config.hidden_size) and vectors.dtype == torch.float32
    assert torch.allclose(vectors.norm(dim=-1), torch.full((3,), model.projector.token_norm), rtol=1e-4)
    assert [point["step"] for point in curve] == list(range(31))
    with torch.no_grad():
        batch = [reconstruction_example(w, model.k) for w in windows]
        start = torch.nn.functional.normalize(torch.randn(3, vectors.shape[1],
                                                          generator=torch.Generator().manual_seed(0)), dim=-1)
        first = suffix_token_stats(model, batch, projected=start * model.projector.token_norm).loss
        fitted = suffix_token_stats(model, batch, projected=vectors).loss
    assert fitted < first - 0.1  # the tiny decoder reads small vectors (token norm 0.11): a modest drop
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name
    assert {name for name, p in model.named_parameters() if p.requires_grad} == trainable


def test_the_ceiling_is_paired_with_the_floor_on_its_windows():
    model = tiny_refrag(k=4)
    held = held_out(model)
    floor = floor_scores(model, held, [1, 2], n_windows=6, batch_size=4, seed=3)
    report = free_vector_ceiling(model, held, floor, n_windows=4, steps=40, lr=0.2)
    assert report["n_windows"] == 4 and len(report["curve"]) == 41
    base = floor["scores"]["1"]["token_accuracy"][:4]
    gain = report["token_accuracy_gain"]
    assert gain["mean"] == pytest.approx(report["token_accuracy"]["mean"] - base.mean())
    assert report["curve"][-1]["token_accuracy"] > report["curve"][0]["token_accuracy"]
    assert report["log_ppl_gain"]["mean"] > 0


def test_bad_input_is_refused():
    model = tiny_refrag(k=4)
    held = held_out(model)
    with pytest.raises(CourseError, match="one chunk of k = 4"):
        fit_free_vectors(model, [held[0][:6]], steps=2)
    with pytest.raises(CourseError, match="at least 1"):
        fit_free_vectors(model, [held[0][:4]], steps=0)
    floor = floor_scores(model, held, [2], n_windows=2, batch_size=2)
    with pytest.raises(CourseError, match="no one-chunk windows"):
        free_vector_ceiling(model, held, floor)
