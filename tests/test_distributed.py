"""Distributed training with the shared loop: 2 CPU processes over gloo (torchrun, as accelerate uses)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).with_name("distributed_tiny.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out: Path, processes: int, grad_accum: int) -> None:
    out.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(SCRIPT.parent), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(SCRIPT), str(out), str(grad_accum)]
    if processes > 1:
        command[1:1] = ["-m", "torch.distributed.run", f"--nproc_per_node={processes}",
                        "--master_addr=127.0.0.1", f"--master_port={free_port()}"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    launch(tmp_path / "two", processes=2, grad_accum=1)
    launch(tmp_path / "one", processes=1, grad_accum=2)
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
    two, one = ([json.loads(r) for r in (tmp_path / run / "ckpt" / "metrics.jsonl").read_text().splitlines()]
                for run in ("two", "one"))
    assert [r["step"] for r in two] == [0, 1, 2, 3]
    assert [r["examples"] for r in two] == [r["examples"] for r in one]
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], rel=1e-4)
