"""Train a tiny REFRAG model with the shared loop; launched by tests/test_distributed.py.

Usage: accelerate launch --cpu --num_processes N tests/distributed_tiny.py OUT_DIR GRAD_ACCUM
Each process records the examples it trained on and its final trained weights.
"""

import json
import sys
from pathlib import Path

import torch
from conftest import tiny_refrag
from safetensors.torch import save_file

from refrag_lib import train as train_module
from refrag_lib.train import StageTask, TrainConfig, train

IDENTITY = {"preset": "tiny", "k": "4", "encoder": "tiny-bert", "decoder": "tiny-llama"}


def main(out: Path, grad_accum: int) -> None:
    torch.manual_seed(0)
    model = tiny_refrag(k=4, seed=0)  # identical initial weights on every process
    for module in model.modules():  # dropout draws differ per process; without it runs are comparable
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    generator = torch.Generator().manual_seed(1)
    docs = [torch.randint(3, len(model.decoder_tokenizer), (120,), generator=generator).tolist() for _ in range(8)]
    seen = []
    draw = train_module.step_examples

    def recording(*args, **kwargs):
        examples = draw(*args, **kwargs)
        seen.append(examples)
        return examples

    train_module.step_examples = recording
    cfg = TrainConfig(stage="recon", steps=4, context_tokens=16, positions_per_step=40, grad_accum=grad_accum,
                      lr=3e-3, curriculum=False, save_every=100)
    train(model, cfg, StageTask(model, cfg, docs), out / "ckpt", IDENTITY, progress=False)
    rank = int(__import__("os").environ.get("RANK", 0))
    trained = {f"{part}.{name}": p.detach().contiguous() for part in ("encoder", "projector")
               for name, p in getattr(model, part).named_parameters()}
    save_file(trained, str(out / f"weights-rank{rank}.safetensors"))
    (out / f"seen-rank{rank}.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
