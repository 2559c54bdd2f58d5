"""The precision rules: one precision per preset, the precision a model trains in, and everything that must match it.

The preset decides (RefragModel.precision, fixed when the model is loaded), never a module's current dtype:
training keeps the trained parts in fp32 (master weights; AdamW on fp16 weights loses small updates) under
autocast in the preset's precision, and afterwards they return to the preset's dtype. So an arm trained in this
runtime and one loaded from a pack or a resume are scored and timed alike, and a second training in the same
process asks accelerate for the same mixed precision as the first (accelerate fixes it per process).

An fp32 preset on a CPU whose cores multiply bf16 in hardware trains under bf16 autocast (fp32 weights and
optimizer); its held-out scores, GRPO rewards and greedy answers run in the same precision. Serving
(refrag_lib.answering) and training (refrag_lib.train) both read these rules, so they live below both.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from .errors import CourseError
from .model import RefragModel, Segments

MIXED_PRECISION = {"float32": "no", "float16": "fp16", "bfloat16": "bf16"}
CPU_BF16 = True  # the course's default for TrainConfig.cpu_bf16 and SFTConfig.cpu_bf16


def native_cpu_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (x86 AVX512-BF16 or AMX); elsewhere torch emulates it."""
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(check() for check in checks if check is not None)


def mixed_precision(model: RefragModel, cfg) -> str:
    """accelerate's mixed_precision for training `model`: the preset's precision, except that an fp32 preset on
    a CPU with native bf16 maths trains under bf16 autocast (fp32 weights and optimizer). There a step takes
    1.5x less time (`python -m refrag_lib loss-speed`) and stage 1 learnt as much (notebook 02's lever table);
    on a CPU without it bf16 is emulated and slower, so the maths stay fp32. cfg.cpu_bf16 = False keeps fp32
    everywhere."""
    if computes_in_cpu_bf16(model, cfg.cpu_bf16):
        return "bf16"
    return MIXED_PRECISION[str(model.precision).removeprefix("torch.")]


def computes_in_cpu_bf16(model: RefragModel, cpu_bf16: bool = CPU_BF16) -> bool:
    """The rule of mixed_precision: an fp32 model on a CPU with native bf16 maths computes under bf16 autocast."""
    return (cpu_bf16 and model.device.type == "cpu" and model.precision == torch.float32
            and native_cpu_bf16())


def master_weights(model: RefragModel, parts) -> None:
    """Put the parts about to be trained in fp32, before their weights are loaded: a stage that goes on from an
    earlier one starts from its fp32 weights, not from a copy rounded to fp16/bf16 on the way."""
    for part in parts:
        getattr(model, part).float()


def back_to_preset(model: RefragModel, parts=("encoder", "projector", "decoder")) -> None:
    """Return trained parts to the preset's precision: what loading their weights file into a fresh model gives."""
    for part in parts:
        getattr(model, part).to(model.precision)


def loss_scaler(model: RefragModel) -> torch.amp.GradScaler:
    """A gradient scaler for training outside accelerate (notebook 02's free-vector fit): through an fp16 decoder
    small gradients underflow to zero unless the loss is scaled up first. Disabled for bf16 and fp32."""
    return torch.amp.GradScaler(model.device.type, enabled=model.precision == torch.float16)


def cpu_bf16_autocast(model: RefragModel, cpu_bf16: bool = CPU_BF16) -> torch.autocast:
    """The same precision outside accelerate's training loop: notebook 02's free-vector fit (it is training),
    notebook 05's greedy answers (answering.answer_questions) and every held-out score (in_training_precision).
    A no-op where the rule says fp32."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=computes_in_cpu_bf16(model, cpu_bf16))


def in_training_precision(score: Callable) -> Callable:
    """Run a scoring function of (model, ...) in the precision the model trains in (cpu_bf16_autocast).

    The GPU presets score in their bf16/fp16 weights anyway; on a CPU with native bf16 the fp32 presets
    now do the same and score 2x faster. Measured against fp32 on notebook 02's 160 and notebook 03's 64
    held-out windows: log-ppl means moved by at most 0.007, the gains over the floor by at most 0.003,
    far inside their intervals. TTFT is the exception: it is always timed in the model's own precision.
    """

    @functools.wraps(score)
    def scored(model: RefragModel, *args, **kwargs):
        with cpu_bf16_autocast(model):
            return score(model, *args, **kwargs)

    return scored


@torch.inference_mode()
def check_finite_logits(model: RefragModel, text: str = "Question: Which river flows through City_003?") -> None:
    """Stop with the fix when the decoder's logits overflow in the preset's precision (fp16 reaches inf at 65,504,
    a bound that models trained in bf16 can cross): every later number of the course would be nan."""
    inputs = model.build_inputs([Segments(prefix=model.tokenize(text))])
    logits, _ = model.prefill(inputs)
    if not torch.isfinite(logits).all():
        raise CourseError(
            f"The decoder's logits in {str(model.precision).removeprefix('torch.')} are not finite (inf or nan): "
            "this model overflows in that precision. Use a GPU with bf16 (L4, A100, H100: PRESET = 'a100'), "
            "or PRESET = 'cpu'."
        )
