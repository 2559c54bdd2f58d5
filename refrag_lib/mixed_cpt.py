"""Stage 2b: mixed-input CPT before RL. The policy will choose which chunks stay tokens, so the decoder
first learns to read inputs where some chunks are tokens and the rest vectors (the paper: p = 0.1 chosen at
random). Its weights are what notebook 04's policy is trained with and notebook 05's arms start from.
"""

from __future__ import annotations

from pathlib import Path

from .checkpoint import WEIGHTS, model_identity, read_metadata
from .policy import check_fraction
from .stages import StageTask, TrainConfig, tokenized_documents
from .train import train
from .trained import MIXED_CPT_FOLDER, load_trained


def continue_cpt_mixed(run, steps: int, expand_fraction: float = 0.1, context_tokens: int = 256,
                       continuation_tokens: int = 64, positions_per_step: int = 256, progress: bool = True,
                       documents: str | Path | None = None):
    """Continue CPT from RUN_DIR/cpt with a random fraction p of chunks left as tokens (paper: p = 0.1),
    so the decoder has seen mixed sequences before the policy starts choosing them.

    Trains the same parts notebook 03 trained (the decoder too if it did) with the shared loop, every
    step on the full s/k chunks (no curriculum: the model already reads them), on the course's documents
    or a learner's own file (`documents`). A short stage: no resumable state is written (an interrupted run starts
    over); a finished run is loaded instead of retrained.
    Returns (model, TrainResult).
    """

    check_fraction(expand_fraction)
    parts = read_metadata(run.require("cpt", WEIGHTS)).get("parts", "").split(",")
    cfg = TrainConfig(stage="cpt", steps=steps, context_tokens=context_tokens,
                      continuation_tokens=continuation_tokens, positions_per_step=positions_per_step,
                      curriculum=False, expand_fraction=expand_fraction,
                      train_decoder="decoder" in parts, save_every=0)
    model = load_trained(run, "cpt", train_parts=cfg.trained_parts())
    train_docs, _ = tokenized_documents(model, documents)
    out_dir = run.stage_dir(MIXED_CPT_FOLDER)
    result = train(model, cfg, StageTask(model, cfg, train_docs), out_dir, model_identity(run.preset, "cpt"),
                   progress=progress)
    return result.model.eval(), result
