"""What a run costs before it starts: the bytes each notebook writes to RUN_DIR, and each training stage's GPU memory.

Computed from the models' parameter counts and the course's save schedule, not measured on a GPU: notebook 00
prints them for the preset and `python -m refrag_lib check` refuses a GPU or a disk that is too small before any
training. In Colab RUN_DIR is on Google Drive, where a deleted or replaced file stays in Drive's trash (and counts
against the quota) for 30 days, so what counts there is every byte written, not what is left at the end.

Writes, per stage:
- a finished stage's weights: its trained parts in fp32 (4 bytes a parameter), since the next stage trains on from
  them; SFT's arms, which nothing trains afterwards, in the preset's precision;
- a resumable state (the trained parts' fp32 weights and AdamW's two moments: 12 bytes a parameter) at each
  quarter of notebooks 02 and 03's runs (train.long_run_save_every), none for the short stages (04's mixed CPT,
  05's arms) nor when notebook 03 trains the decoder; each replaces the one before, and the last goes at the end.
On a local disk what counts is what lies there at the worst moment: every finished weights file plus two states
(the new one is written before the old one goes).
GPU memory of a training stage: frozen parts in the preset's precision, trained parts at 16 bytes a parameter
(fp32 weights, gradients and AdamW's moments; the fused AdamW adds no temporaries), the activations of the step
(about 34 bytes x hidden size x layers a position in half precision with fused attention, Korthikanti et al. 2022,
plus fp32 logits and their gradient), and the CUDA context.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import OFFLINE_DECODER, OFFLINE_ENCODER, Preset
from ..stages import STATES_PER_LONG_RUN

GB = 10**9  # disks and Drive count in decimal gigabytes
GIB = 2**30  # GPU memory as torch and nvidia-smi report it


@dataclass(frozen=True)
class ModelSize:
    """What the estimates need of a model: parameters, hidden size, layers and (decoders) vocabulary."""

    parameters: int
    hidden: int
    layers: int
    vocab: int = 0


# From each model's config on the hub; the offline models' counts are checked against the loaded models
# (tests/test_footprint.py).
MODEL_SIZES = {
    OFFLINE_ENCODER: ModelSize(22_713_216, 384, 6),
    "sentence-transformers/all-MiniLM-L6-v2": ModelSize(22_713_216, 384, 6),
    "FacebookAI/roberta-base": ModelSize(124_645_632, 768, 12),
    "FacebookAI/roberta-large": ModelSize(355_359_744, 1024, 24),
    OFFLINE_DECODER: ModelSize(134_515_008, 576, 30, 49_152),
    "HuggingFaceTB/SmolLM2-360M-Instruct": ModelSize(361_821_120, 960, 32, 49_152),
    "HuggingFaceTB/SmolLM2-1.7B-Instruct": ModelSize(1_711_376_384, 2048, 24, 49_152),
    "meta-llama/Llama-2-7b-hf": ModelSize(6_738_415_616, 4096, 32, 32_000),
}
SMALL_FILES_BYTES = 10**8  # index, chunk vectors, policies, metrics and plots of a run (a cpu run: under 0.1 GB)
DECODER_POSITIONS = {"recon": 512, "cpt": 512, "sft": 1024}  # per micro-batch; SFT: 2 questions, 3 passages each
CUDA_CONTEXT_BYTES = int(1.0 * GIB)  # CUDA context, cuBLAS workspaces and the allocator's slack


def model_size(name: str) -> ModelSize:
    if name not in MODEL_SIZES:
        raise KeyError(f"no size known for {name!r}: add it to refrag_lib.course.footprint.MODEL_SIZES.")
    return MODEL_SIZES[name]


def part_parameters(preset: Preset) -> dict[str, int]:
    """Parameters of the encoder, the projector (a 2-layer MLP into the decoder's width) and the decoder."""
    encoder, decoder = model_size(preset.encoder), model_size(preset.decoder)
    projector = encoder.hidden * decoder.hidden + decoder.hidden * decoder.hidden + 2 * decoder.hidden
    return {"encoder": encoder.parameters, "projector": projector, "decoder": decoder.parameters}


def preset_bytes(preset: Preset) -> int:
    """Bytes a parameter takes in the preset's precision."""
    return 4 if preset.dtype == "float32" else 2


@dataclass(frozen=True)
class Write:
    """One file or folder a notebook writes, and how often."""

    notebook: str
    what: str
    bytes_each: int
    times: int = 1

    @property
    def total(self) -> int:
        return self.bytes_each * self.times


def run_writes(preset: Preset, train_decoder: bool = False) -> list[Write]:
    """Every sizeable write of a default run of notebooks 01-06 (train_decoder: notebook 03's TRAIN_DECODER)."""
    n = part_parameters(preset)
    stage_parts = n["encoder"] + n["projector"] + (n["decoder"] if train_decoder else 0)
    writes = [Write("01", "index and chunk vectors", SMALL_FILES_BYTES)]
    for notebook, runs in (("02", ("recon", "recon/no_curriculum")), ("03", ("cpt", "cpt/no_recon_init"))):
        parts = n["encoder"] + n["projector"] if notebook == "02" else stage_parts
        states = 0 if notebook == "03" and train_decoder else STATES_PER_LONG_RUN
        for folder in runs:
            writes += [Write(notebook, f"{folder} weights (fp32)", 4 * parts),
                       Write(notebook, f"{folder} resumable state", 12 * parts, states)]
    writes.append(Write("04", "mixed-input CPT weights (fp32)", 4 * stage_parts))
    writes += [Write("05", "RAG-FT arm weights", preset_bytes(preset) * n["decoder"]),
               Write("05", "REFRAG arm weights", preset_bytes(preset) * sum(n.values()))]
    return writes


def bytes_by_notebook(preset: Preset, train_decoder: bool = False) -> dict[str, int]:
    """{notebook: bytes written}; on Drive each stays counted (trash) for 30 days."""
    totals: dict[str, int] = {}
    for write in run_writes(preset, train_decoder):
        totals[write.notebook] = totals.get(write.notebook, 0) + write.total
    return totals


def run_bytes(preset: Preset, train_decoder: bool = False) -> int:
    """Every byte a run writes: what it costs on Google Drive, whose trash keeps what is deleted."""
    return sum(bytes_by_notebook(preset, train_decoder).values())


def resident_bytes(preset: Preset, train_decoder: bool = False) -> int:
    """The most a run holds on a local disk at once: every file it keeps, plus two resumable states mid-swap."""
    writes = run_writes(preset, train_decoder)
    states = [w.bytes_each for w in writes if "state" in w.what and w.times]
    return sum(w.total for w in writes if "state" not in w.what) + 2 * max(states, default=0)


def model_cache_bytes(preset: Preset) -> int:
    """The models' download or cache, counted at fp32 (the offline decoder's de-quantised cache is fp32; hub
    checkpoints are stored in fp32 or half precision)."""
    return 4 * sum(model_size(name).parameters for name in {preset.encoder, preset.retriever_model, preset.decoder})


def activation_bytes(size: ModelSize, positions: int) -> int:
    """Activations kept for the backward pass of one micro-batch through a model, in half precision."""
    return 34 * size.hidden * size.layers * positions


def stage_memory(preset: Preset) -> dict[str, int]:
    """{training stage: estimated peak GPU bytes} for the preset's default settings (see the module docstring)."""
    n = part_parameters(preset)
    encoder, decoder = model_size(preset.encoder), model_size(preset.decoder)
    half = preset_bytes(preset)

    def peak(trained: set[str], positions: int, encoder_runs: bool = True) -> int:
        weights = sum(16 * count if part in trained else half * count for part, count in n.items())
        logits = 12 * positions * decoder.vocab  # fp32 logits, their softmax and gradient
        activations = activation_bytes(decoder, positions) + (activation_bytes(encoder, positions) if encoder_runs
                                                              else 0)
        return weights + logits + activations + CUDA_CONTEXT_BYTES

    encoder_projector = {"encoder", "projector"}
    return {
        "02 reconstruction": peak(encoder_projector, DECODER_POSITIONS["recon"]),
        "03 CPT": peak(encoder_projector, DECODER_POSITIONS["cpt"]),
        "03 CPT with TRAIN_DECODER": peak(encoder_projector | {"decoder"}, DECODER_POSITIONS["cpt"]),
        "05 SFT, RAG-FT arm": peak({"decoder"}, DECODER_POSITIONS["sft"], encoder_runs=False),
        "05 SFT, REFRAG arm": peak(encoder_projector | {"decoder"}, DECODER_POSITIONS["sft"]),
    }


def largest_default_stage(preset: Preset) -> tuple[str, int]:
    """(stage, bytes) of the most memory-hungry stage a default run trains (TRAIN_DECODER is off by default)."""
    stages = {name: size for name, size in stage_memory(preset).items() if "TRAIN_DECODER" not in name}
    name = max(stages, key=stages.get)
    return name, stages[name]


def format_footprint(preset: Preset) -> str:
    """Notebook 00's report: bytes written per notebook, and each training stage's GPU memory."""
    lines = [f"What a default run of preset '{preset.name}' writes to RUN_DIR (computed from parameter counts):"]
    lines += [f"  notebook {nb}: {size / GB:5.2f} GB" for nb, size in bytes_by_notebook(preset).items()]
    lines.append(f"  in all:      {run_bytes(preset) / GB:5.2f} GB written "
                 f"({run_bytes(preset, train_decoder=True) / GB:.2f} GB with notebook 03's TRAIN_DECODER)")
    lines.append(f"  at most {resident_bytes(preset) / GB:.2f} GB on a local disk at once; on Google Drive all of it, "
                 "since its trash keeps deleted files for 30 days")
    if preset.device == "cuda":
        lines.append("Peak GPU memory of each training stage (an estimate, not measured):")
        lines += [f"  {name:28s} {size / GIB:5.1f} GiB" for name, size in stage_memory(preset).items()]
    return "\n".join(lines)


def readme_table(presets) -> str:
    """The README's table: GB written per notebook for each preset, and the largest stage's GPU memory."""
    notebooks = sorted({w.notebook for w in run_writes(presets[0])})
    head = ["preset", *(f"{nb}" for nb in notebooks), "in all", "largest training stage (GPU memory)"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for preset in presets:
        by_notebook = bytes_by_notebook(preset)
        stage, size = largest_default_stage(preset)
        memory = f"{stage}: {size / GIB:.0f} GiB" if preset.device == "cuda" else "(CPU)"
        cells = [preset.name, *(f"{by_notebook.get(nb, 0) / GB:.2f}" for nb in notebooks),
                 f"{run_bytes(preset) / GB:.1f}", memory]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)
