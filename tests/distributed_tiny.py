"""Train a tiny REFRAG model with the shared loop; launched by tests/test_distributed.py.

Usage: <launcher> tests/distributed_tiny.py OUT_DIR GRAD_ACCUM STAGE [MAX_NEW_STEPS]
Each process records the examples it trained on; under DDP also its final trained weights, under FSDP
how its copy of the model is sharded (the gathered weights are in OUT_DIR/ckpt/weights.safetensors).
"""

import json
import os
import sys
from pathlib import Path

import torch
from conftest import tiny_refrag
from safetensors.torch import save_file

from refrag_lib import stages
from refrag_lib.stages import StageTask, TrainConfig
from refrag_lib.train import train

IDENTITY = {"preset": "tiny", "k": "4", "encoder": "tiny-bert", "decoder": "tiny-llama"}


def allow_fsdp_on_cpu() -> None:
    """accelerate turns FSDP on only for accelerators (GPUs); on CPU processes it falls back to plain
    data parallel. Flip that one decision so accelerate's own FSDP2 preparation runs over gloo here."""
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if kwargs.get("fsdp_plugin") is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            self.fsdp_plugin = kwargs["fsdp_plugin"]

    AcceleratorState.__init__ = init


def main(out: Path, grad_accum: int, stage: str, max_new_steps: int | None) -> None:
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false") == "true"
    if fsdp:
        allow_fsdp_on_cpu()
    torch.manual_seed(0)
    model = tiny_refrag(k=4, seed=0)  # identical initial weights on every process
    for module in model.modules():  # dropout draws differ per process; without it runs are comparable
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    generator = torch.Generator().manual_seed(1)
    docs = [torch.randint(3, len(model.decoder_tokenizer), (120,), generator=generator).tolist() for _ in range(8)]
    seen = []
    draw = stages.step_examples

    def recording(*args, **kwargs):
        examples = draw(*args, **kwargs)
        seen.append(examples)
        return examples

    stages.step_examples = recording
    cfg = TrainConfig(stage=stage, steps=4, context_tokens=16, continuation_tokens=8, positions_per_step=40,
                      grad_accum=grad_accum, lr=3e-3, curriculum=False, save_every=100, train_decoder=stage == "cpt")
    train(model, cfg, StageTask(model, cfg, docs), out / "ckpt", IDENTITY, progress=False, max_new_steps=max_new_steps)
    rank = int(os.environ.get("RANK", 0))
    (out / f"seen-rank{rank}.json").write_text(json.dumps(seen))
    if fsdp:
        from torch.distributed.tensor import DTensor

        weight = model.decoder.lm_head.weight
        (out / f"sharding-rank{rank}.json").write_text(json.dumps({
            "decoder_layer": type(model.decoder.model.layers[0]).__name__,
            "sharded": isinstance(weight, DTensor), "local_rows": weight.to_local().shape[0],
        }))
        return
    trained = {f"{part}.{name}": p.detach().contiguous() for part in ("encoder", "projector")
               for name, p in getattr(model, part).named_parameters()}
    save_file(trained, str(out / f"weights-rank{rank}.safetensors"))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else None)
