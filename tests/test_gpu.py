"""Paths only a CUDA GPU takes: synchronised clocks, fp16/bf16 prefill and training (twice in one process), faiss
placement decided without a kernel, peak memory.

Skipped without CUDA; `make gpu-check` runs them (with every other unit test on the GPU) where there is one.
"""

import faiss
import numpy as np
import pytest
import torch
from conftest import TINY_TEXT, tiny_refrag
from safetensors.torch import load_file

from refrag_lib import bench, timing
from refrag_lib import index as ix
from refrag_lib.checkpoint import WEIGHTS
from refrag_lib.stages import StageTask, TrainConfig
from refrag_lib.train import train

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
    timing.clock(torch.device("cuda"))
    assert len(calls) == 1


@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_prefill_agrees_with_float32(dtype):
    full, half = tiny_refrag(device="cuda"), tiny_refrag(device="cuda", dtype=dtype)
    work = bench.build_workload(full, PASSAGES, QUESTION, s=60)
    segments = work.refrag_segments(4)
    expand = bench.expansion_mask(len(segments.chunks), 0.25)
    with torch.inference_mode():
        ref, _ = full.prefill(full.build_inputs([segments], [expand]))
        run = timing.ttft_once(half, segments, expand, None, encode=True)
        logits, _ = half.prefill(half.build_inputs([segments], [expand]))
    assert logits.dtype == dtype and torch.isfinite(logits).all()
    torch.testing.assert_close(logits.float(), ref, atol=0.05, rtol=0.05)
    assert int(run.token[0]) == int(logits.argmax(-1)[0]) and run.total_s >= run.encoder_s > 0


@pytest.mark.parametrize("dtype", HALF)
def test_half_precision_training_twice_writes_fp32_weights_and_returns_to_the_presets_dtype(tmp_path, dtype,
                                                                                             fresh_accelerate_state):
    model = tiny_refrag(device="cuda", dtype=dtype)
    docs = [model.tokenize(" ".join(TINY_TEXT[i:] + TINY_TEXT[:i]) * 2) for i in range(3)]
    cfg = TrainConfig(stage="cpt", steps=4, context_tokens=16, continuation_tokens=8, positions_per_step=48,
                      lr=3e-3, save_every=2, curriculum=False, train_decoder=True)
    before = model.projector.net[0].weight.detach().float().clone()
    identity = {"preset": "tiny", "k": "4", "encoder": "tiny-bert", "decoder": f"tiny-llama-{dtype}"}
    for folder in ("first", "second"):  # a second training in one process asks accelerate for the same precision
        result = train(model, cfg, StageTask(model, cfg, docs), tmp_path / folder, identity, progress=False)
        assert np.isfinite(result.summary["last_loss"]) and np.isfinite(result.summary["max_grad_norm"])
        assert result.summary["mixed_precision"] == {torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
    assert model.projector.net[0].weight.dtype == model.decoder.dtype == dtype
    assert {t.dtype for t in load_file(tmp_path / "second" / WEIGHTS).values()} == {torch.float32}
    assert not torch.equal(before, model.projector.net[0].weight.detach().float())


def test_faiss_on_this_gpu_is_decided_without_a_kernel_and_returns_the_cpu_results():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((64, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cpu_index = faiss.IndexFlatIP(16)
    cpu_index.add(vectors)
    index, label, _ = ix.place_index(cpu_index, use_gpu=True)  # on sm_90+ (no kernels) this would abort() if tried
    has_kernels = torch.cuda.get_device_capability(0)[0] in ix.FAISS_GPU_MAJORS and hasattr(faiss, "index_cpu_to_gpu")
    assert label.startswith("faiss-gpu") == (has_kernels and faiss.get_num_gpus() > 0)
    expected = cpu_index.search(vectors[:8], 5)[1]
    np.testing.assert_array_equal(index.search(vectors[:8], 5)[1], expected)
    assert ix.place_index(cpu_index)[1] == "faiss-cpu"  # the course's default: no GPU memory reserved


def test_peak_memory_is_measured_on_cuda():
    model = tiny_refrag(device="cuda")
    work = bench.build_workload(model, PASSAGES, QUESTION, s=60)
    segments = work.refrag_segments(4)
    with torch.inference_mode():
        row = bench.measure_arm(model, segments, [False] * len(segments.chunks), "refrag_cache", repeats=2,
                                warmup=1, decode_tokens=2)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    assert row["peak_mem_bytes"] >= weights and row["ttft_ms_median"] > 0


def test_adamw_runs_fused_on_cuda(tmp_path, monkeypatch, fresh_accelerate_state):
    """torch's default AdamW (foreach) allocates a parameter-sized temporary a step: 6.8 GB for the a100 preset."""
    fused, adamw = [], torch.optim.AdamW
    monkeypatch.setattr(torch.optim, "AdamW", lambda *args, **kwargs: fused.append(kwargs.get("fused")) or
                        adamw(*args, **kwargs))
    model = tiny_refrag(device="cuda", dtype=torch.bfloat16)
    docs = [model.tokenize(" ".join(TINY_TEXT[i:] + TINY_TEXT[:i]) * 2) for i in range(3)]
    cfg = TrainConfig(stage="recon", steps=2, context_tokens=16, positions_per_step=48, lr=3e-3, save_every=0)
    identity = {"preset": "tiny", "k": "4", "encoder": "tiny-bert", "decoder": "tiny-llama"}
    train(model, cfg, StageTask(model, cfg, docs), tmp_path, identity, progress=False)
    assert fused == [True]
