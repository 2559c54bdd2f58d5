"""Distributed training with the shared loop: 2 CPU processes over gloo, started by `accelerate launch`
with the course's own configs (configs/accelerate/ddp.yaml and fsdp.yaml)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_refrag
from safetensors.torch import load_file

from refrag_lib.checkpoint import WEIGHTS, load_weights

SCRIPT = Path(__file__).with_name("distributed_tiny.py")
CONFIGS = Path(__file__).parents[1] / "configs" / "accelerate"
IDENTITY = {"preset": "tiny", "k": "4", "encoder": "tiny-bert", "decoder": "tiny-llama"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out: Path, grad_accum: int, stage: str = "recon", config: str = "", max_new_steps: int | None = None):
    """One process with plain python, or two with `accelerate launch --config_file configs/accelerate/<config>`."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parent), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(SCRIPT), str(out), str(grad_accum), stage]
    if max_new_steps:
        command.append(str(max_new_steps))
    if config:
        command[1:1] = ["-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config),
                        "--num_processes", "2", "--main_process_port", str(free_port()), "--mixed_precision", "no"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def metrics(run: Path) -> list[dict]:
    return [json.loads(row) for row in (run / "ckpt" / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    launch(tmp_path / "two", grad_accum=1, config="ddp.yaml")
    launch(tmp_path / "one", grad_accum=2)
    seen = [json.loads((tmp_path / "two" / f"seen-rank{r}.json").read_text()) for r in (0, 1)]
    single = json.loads((tmp_path / "one" / "seen-rank0.json").read_text())
    assert len(seen[0]) == len(seen[1]) == 4 and len(single) == 8  # 4 steps; 2 micro-batches each
    assert all(a != b for a, b in zip(*seen))  # the processes trained on different batches
    assert single[0::2] == seen[0] and single[1::2] == seen[1]  # together: the single run's global batch
    w0, w1 = (load_file(str(tmp_path / "two" / f"weights-rank{r}.safetensors")) for r in (0, 1))
    assert all(torch.equal(w0[name], w1[name]) for name in w0)  # DDP kept the replicas identical
    w_single = load_file(str(tmp_path / "one" / "weights-rank0.safetensors"))
    for name in w0:
        torch.testing.assert_close(w0[name], w_single[name], atol=1e-4, rtol=1e-4)
    # metrics are written once, by the main process, and count the examples of both processes
    two, one = metrics(tmp_path / "two"), metrics(tmp_path / "one")
    assert [r["step"] for r in two] == [0, 1, 2, 3]
    assert [r["examples"] for r in two] == [r["examples"] for r in one]
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], rel=1e-4)


def test_fsdp_shards_the_model_saves_whole_weights_and_resumes(tmp_path):
    """CPT with the decoder trained (its tied embedding included), sharded over two processes that
    accumulate gradients over 2 micro-batches (FSDP2 skips the gradient sync on the first)."""
    launch(tmp_path / "fsdp", grad_accum=2, stage="cpt", config="fsdp.yaml")
    launch(tmp_path / "one", grad_accum=4, stage="cpt")
    shards = [json.loads((tmp_path / "fsdp" / f"sharding-rank{r}.json").read_text()) for r in (0, 1)]
    assert all(s["sharded"] and s["decoder_layer"] == "FSDPLlamaDecoderLayer" for s in shards)
    vocab = len(tiny_refrag().decoder_tokenizer)
    assert shards[0]["local_rows"] + shards[1]["local_rows"] == vocab and shards[0]["local_rows"] < vocab
    seen = [json.loads((tmp_path / "fsdp" / f"seen-rank{r}.json").read_text()) for r in (0, 1)]
    assert all(a != b for a, b in zip(*seen))
    # the weights file holds whole tensors, equal to the single-process run with the same global batch
    sharded, single = (load_file(str(tmp_path / run / "ckpt" / WEIGHTS)) for run in ("fsdp", "one"))
    assert sharded.keys() == single.keys() and any(name.startswith("decoder.") for name in sharded)
    for name in sharded:
        # A key bias adds one score to all of a query's keys, which softmax ignores: its gradient is zero but for
        # rounding, and Adam scales that noise up to steps of either sign as large as lr (3e-3), whichever process
        # sums it. The rest must agree to rounding.
        noise_only = name.endswith("attention.self.key.bias")
        torch.testing.assert_close(sharded[name], single[name], atol=3e-3 if noise_only else 1e-5, rtol=1e-5)
    losses = [r["loss"] for r in metrics(tmp_path / "one")]
    assert [r["loss"] for r in metrics(tmp_path / "fsdp")] == pytest.approx(losses, rel=1e-4)
    # stopped after 2 of 4 steps and launched again: resumes from the gathered state, ends identical
    launch(tmp_path / "resumed", grad_accum=2, stage="cpt", config="fsdp.yaml", max_new_steps=2)
    assert not (tmp_path / "resumed" / "ckpt" / WEIGHTS).exists()
    launch(tmp_path / "resumed", grad_accum=2, stage="cpt", config="fsdp.yaml", max_new_steps=2)
    resumed = load_file(str(tmp_path / "resumed" / "ckpt" / WEIGHTS))
    for name in sharded:
        torch.testing.assert_close(resumed[name], sharded[name], atol=1e-6, rtol=0)
    # and the notebooks load it into a plain, unsharded model
    plain = tiny_refrag()
    load_weights(tmp_path / "fsdp" / "ckpt" / WEIGHTS, plain, IDENTITY)
    for part in ("encoder", "projector", "decoder"):
        for name, tensor in getattr(plain, part).state_dict().items():
            if f"{part}.{name}" in sharded:
                torch.testing.assert_close(tensor, sharded[f"{part}.{name}"], atol=0, rtol=0)
