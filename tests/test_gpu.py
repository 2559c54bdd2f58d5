"""Paths only a CUDA GPU takes: synchronised clocks, fp16/bf16 prefill and training, faiss's GPU index, peak memory.

Skipped without CUDA; `make gpu-check` runs them (with every other unit test on the GPU) where there is one.
"""

import faiss
import numpy as np
import pytest
import torch
from conftest import TINY_TEXT, tiny_refrag

from refrag_lib import bench
from refrag_lib import index as ix
from refrag_lib.train import StageTask, TrainConfig, train

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU: run `make gpu-check` on a machine with one"
)
HALF = [torch.float16, torch.bfloat16]
PASSAGES = TINY_TEXT * 8
QUESTION = "Which river flows through City_003?"


def test_clock_waits_for_queued_kernels(monkeypatch):
    calls = []
    synchronize = torch.cuda.synchronize
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: (calls.append(device), synchronize(device)))
    bench.clock(torch.device("cuda"))
    assert len(calls) == 1


@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_prefill_agrees_with_float32(dtype):
    full, half = tiny_refrag(device="cuda"), tiny_refrag(device="cuda", dtype=dtype)
    work = bench.build_workload(full, PASSAGES, QUESTION, s=60)
    segments = work.refrag_segments(4)
    expand = bench.expansion_mask(len(segments.chunks), 0.25)
    with torch.inference_mode():
        ref, _ = full.prefill(full.build_inputs([segments], [expand]))
        run = bench.ttft_once(half, segments, expand, None, encode=True)
        logits, _ = half.prefill(half.build_inputs([segments], [expand]))
    assert logits.dtype == dtype and torch.isfinite(logits).all()
    torch.testing.assert_close(logits.float(), ref, atol=0.05, rtol=0.05)
    assert int(run.token[0]) == int(logits.argmax(-1)[0]) and run.total_s >= run.encoder_s > 0


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state whose mixed precision cannot change once set: start anew."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.parametrize("dtype", HALF)
def test_mixed_precision_training_keeps_fp32_master_weights(tmp_path, dtype, fresh_accelerate_state):
    model = tiny_refrag(device="cuda", dtype=dtype)
    docs = [model.tokenize(" ".join(TINY_TEXT[i:] + TINY_TEXT[:i]) * 2) for i in range(3)]
    cfg = TrainConfig(stage="recon", steps=4, context_tokens=16, continuation_tokens=8, positions_per_step=48,
                      lr=3e-3, save_every=2, curriculum=False)
    before = model.projector.net[0].weight.detach().float().clone()
    identity = {"preset": "tiny", "k": "4", "encoder": "tiny-bert", "decoder": f"tiny-llama-{dtype}"}
    result = train(model, cfg, StageTask(model, cfg, docs), tmp_path, identity, progress=False)
    assert np.isfinite(result.summary["last_loss"])
    assert model.projector.net[0].weight.dtype == torch.float32 and model.decoder.dtype == dtype
    assert not torch.equal(before, model.projector.net[0].weight.detach())


def test_faiss_gpu_attempt_returns_the_cpu_results_or_falls_back():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((64, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cpu_index = faiss.IndexFlatIP(16)
    cpu_index.add(vectors)
    index, label, _ = ix.place_index(cpu_index, vectors[:1], use_gpu=True)
    assert label.startswith("faiss-gpu") or label == "faiss-cpu"  # the faiss-gpu-cu12 wheel lacks sm_90 kernels
    expected = cpu_index.search(vectors[:8], 5)[1]
    np.testing.assert_array_equal(index.search(vectors[:8], 5)[1], expected)


def test_peak_memory_is_measured_on_cuda():
    model = tiny_refrag(device="cuda")
    work = bench.build_workload(model, PASSAGES, QUESTION, s=60)
    segments = work.refrag_segments(4)
    with torch.inference_mode():
        row = bench.measure_arm(model, segments, [False] * len(segments.chunks), "refrag_cache", repeats=2,
                                warmup=1, decode_tokens=2)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    assert row["peak_mem_bytes"] >= weights and row["ttft_ms_median"] > 0
