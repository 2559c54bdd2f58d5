"""The models that finished stages left in a run folder, loaded for the notebooks after them and for serving.

Reading weights back needs the model, the checkpoint format and the run folder, never the training loop:
the playground, `python -m refrag_lib generate` and the ready index load through here without importing
refrag_lib.train or refrag_lib.stages.
"""

from __future__ import annotations

from .checkpoint import WEIGHTS, load_weights, model_identity
from .errors import CourseError
from .model import RefragModel, load_refrag
from .precision import master_weights

STAGES = ("recon", "cpt")  # the stages of refrag_lib.stages, each in RUN_DIR/<stage>/
MIXED_CPT_FOLDER = "policy/cpt_mixed"  # notebook 04's mixed-input CPT: the policy's weights, and SFT's start


def load_trained(run, stage: str, folder: str = "", train_parts=()) -> RefragModel:
    """The model a finished stage left in RUN_DIR/<stage>/weights.safetensors (for later notebooks), in the
    preset's precision, except `train_parts`: the parts about to be trained, loaded in fp32 (training's master
    weights), so that the next stage starts from the weights this one wrote, not from a rounded copy."""
    if stage not in STAGES:
        raise CourseError(f"stage must be one of {STAGES}, got {stage!r}.")
    path = run.require(folder or stage, WEIGHTS)
    model = load_refrag(run.preset)
    master_weights(model, train_parts)
    load_weights(path, model, model_identity(run.preset, stage), stage=stage)
    return model.eval()


def load_start_model(run, train_parts=()) -> RefragModel:
    """Both arms start here: the mixed-input CPT weights the policy was trained with (notebook 04); `train_parts`
    in fp32, as for load_trained."""
    run.require("policy", f"cpt_mixed/{WEIGHTS}")  # a missing file names notebook 04
    return load_trained(run, "cpt", folder=MIXED_CPT_FOLDER, train_parts=train_parts)


def load_sft_model(run, arm: str) -> RefragModel:
    """The model an SFT arm left in RUN_DIR/sft/<arm>/weights.safetensors (the start weights + SFT parts)."""
    path = run.require("sft", f"{arm}/{WEIGHTS}")
    model = load_start_model(run)
    load_weights(path, model, model_identity(run.preset, f"sft_{arm}"), stage=f"sft_{arm}")
    return model.eval()
