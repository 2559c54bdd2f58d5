"""What batching and precision buy in stage 1: reconstruction samples/s of the course's batched loss
against a batch-1, per-chunk-loop version of the same loss, and of the batched loss under bf16
autocast (what `precision.mixed_precision` picks on a CPU with native bf16 maths), measured in the same run.

The per-chunk loop is how a first implementation usually looks (one encoder call per chunk, the
decoder input concatenated by hand, one decoder forward and full-vocabulary logits per example). It
lives only here, as the yardstick; tests check that it computes the same loss as
`losses.reconstruction_loss`. Command: ``python -m refrag_lib loss-speed``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..config import PRESETS, get_preset
from ..losses import reconstruction_loss
from ..model import RefragModel, chunk_ids, load_refrag
from ..precision import native_cpu_bf16
from ..stages import tokenized_documents, windows
from ..train import _freeze_for


def per_chunk_loop_loss(model: RefragModel, tokens: Sequence[int]) -> tuple[torch.Tensor, int]:
    """Summed NLL of one example's reconstruction, one chunk at a time (the naive yardstick)."""
    chunks = chunk_ids(tokens, model.k)
    dtype = model.projector.net[0].weight.dtype
    vectors = [model.projector(model.encode_chunks([chunk]).to(model.device, dtype)) for chunk in chunks]
    targets = torch.tensor(list(tokens), device=model.device)
    embed = model.decoder.get_input_embeddings()
    start = embed(torch.tensor([model.start_id], device=model.device))  # the start token before the vectors
    logits = model.decoder(inputs_embeds=torch.cat([start, *vectors, embed(targets)])[None]).logits[0]
    first = len(chunks)  # the last chunk vector (after the start token) predicts x_1
    nll = F.cross_entropy(logits[first : first + len(tokens)].float(), targets, reduction="sum")
    return nll, len(tokens)


def _batched_step(model: RefragModel, batch: list[list[int]]) -> None:
    reconstruction_loss(model, batch).loss.backward()


def _batched_bf16_step(model: RefragModel, batch: list[list[int]]) -> None:
    with torch.autocast(model.device.type, dtype=torch.bfloat16):
        loss = reconstruction_loss(model, batch).loss
    loss.backward()


def _looped_step(model: RefragModel, batch: list[list[int]]) -> None:
    total = sum(map(len, batch))
    for tokens in batch:
        nll, _ = per_chunk_loop_loss(model, tokens)
        (nll / total).backward()  # the same mean over the batch's tokens, one example at a time


def samples_per_second(model: RefragModel, step, batch: list[list[int]], repeats: int, warmup: int) -> float:
    """Examples per second of forward + backward (median over repeats), gradients cleared between runs."""
    seconds = []
    for attempt in range(warmup + repeats):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        step(model, batch)
        if attempt >= warmup:
            seconds.append(time.perf_counter() - start)
    return len(batch) / statistics.median(seconds)


def compare(model: RefragModel, token_docs: list[list[int]], chunk_counts: Sequence[int], target_tokens: int = 512,
            repeats: int = 3, warmup: int = 1, seed: int = 0) -> list[dict]:
    """Per number of chunks: both implementations on the same batch (target_tokens / (n * k) examples)."""
    _freeze_for(model, ["encoder", "projector"])  # as in stage 1: the decoder is frozen
    rng = np.random.default_rng(seed)
    rows = []
    for n in chunk_counts:
        batch = windows(token_docs, n * model.k, max(1, target_tokens // (n * model.k)), rng)
        batched = samples_per_second(model, _batched_step, batch, repeats, warmup)
        looped = samples_per_second(model, _looped_step, batch, repeats, warmup)
        bf16 = samples_per_second(model, _batched_bf16_step, batch, repeats, warmup)
        rows.append({"chunks": n, "batch": len(batch), "batched_samples_per_s": batched,
                     "per_chunk_loop_samples_per_s": looped, "speedup": batched / looped,
                     "batched_bf16_samples_per_s": bf16, "bf16_speedup": bf16 / batched})
    return rows


def main(argv: list[str] | None = None) -> int:
    """`python -m refrag_lib loss-speed`: batched reconstruction loss against a per-chunk loop and under bf16
    autocast, samples/s."""

    parser = argparse.ArgumentParser(prog="python -m refrag_lib loss-speed", description=main.__doc__)
    parser.add_argument("--preset", default="cpu", choices=[*PRESETS, "auto"])
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 4, 16], help="chunks per example")
    parser.add_argument("--target-tokens", type=int, default=512, help="reconstructed tokens per batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--out", default="", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    model = load_refrag(get_preset(args.preset))
    train_docs, _ = tokenized_documents(model)
    rows = compare(model, train_docs, args.chunks, args.target_tokens, args.repeats, args.warmup)
    print(f"native bf16 maths on this CPU: {native_cpu_bf16()}")
    print(f"{'chunks':>6} {'batch':>5} {'batched/s':>10} {'loop/s':>8} {'speedup':>8} {'bf16/s':>8} {'bf16 gain':>9}")
    for r in rows:
        print(f"{r['chunks']:6d} {r['batch']:5d} {r['batched_samples_per_s']:10.2f} "
              f"{r['per_chunk_loop_samples_per_s']:8.2f} {r['speedup']:7.1f}x "
              f"{r['batched_bf16_samples_per_s']:8.2f} {r['bf16_speedup']:8.2f}x")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"preset": args.preset, "rows": rows}, f, indent=2)
    return 0
