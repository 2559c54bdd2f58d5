"""Shared fixtures: tiny random models (no downloads) and the real offline models (loaded once)."""

import os

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from refrag_lib.model import Parts, RefragModel

TINY_TEXT = [
    "TITLE: Atlas Entry - City_017. City_017 lies on River_033 and exports Material_009.",
    "Which river flows through City_003? The answer is River_012, founded in year 1427.",
    "Person_042 leads Institute_008, whose registry code is RX-88213.",
]


# REFRAG_TEST_DEVICE=cuda (make gpu-check) builds every tiny model on the GPU; the default is the CPU.
TEST_DEVICE = os.environ.get("REFRAG_TEST_DEVICE", "cpu")
if TEST_DEVICE.startswith("cuda") and not torch.cuda.is_available():
    raise pytest.UsageError(f"REFRAG_TEST_DEVICE={TEST_DEVICE} but torch sees no CUDA device here; unset it.")


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE trained in memory on a few sentences: decodes back to the exact text."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(TINY_TEXT * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>")


def tiny_refrag(k: int = 4, seed: int = 0, device: str = TEST_DEVICE, dtype=torch.float32,
                parts: Parts | None = None) -> RefragModel:
    """A REFRAG model built from tiny random configs (hidden 32, 2 layers), transformers-test style.

    dtype is the decoder's (the preset's dtype); encoder and projector stay float32 as in training. parts: a
    learner's own pieces (model.Parts).
    """
    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    decoder = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id,
            tie_word_embeddings=True,
        )
    ).eval()
    encoder = BertModel(
        BertConfig(
            vocab_size=len(tok), hidden_size=24, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=256, pad_token_id=tok.pad_token_id,
        )
    ).eval()
    return RefragModel(encoder.to(device), decoder.to(device, dtype), tok, tok, k=k, parts=parts)


class Spy:
    """A learner's function stand-in: calls the wrapped one and records, per call, whether autograd was on (a
    training step) or off (an evaluation), to prove that training runs the function it was handed."""

    def __init__(self, fn):
        self.fn, self.grad_modes = fn, []

    def __call__(self, *args, **kwargs):
        self.grad_modes.append(torch.is_grad_enabled())
        return self.fn(*args, **kwargs)


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state whose mixed precision cannot change once set: start anew, and leave
    none behind for the tests after."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def tiny():
    return tiny_refrag()


FACTS = [f"City_{i:03d} lies on River_{i + 30:03d}." for i in range(8)]


def tiny_qa(k: int, top_k: int):
    """A tiny QA world: 8 facts (+ TINY_TEXT) indexed by the tiny encoder as retriever, one question per fact.
    Returns model, passages, retriever, index, the questions retrieved for at top_k."""
    from refrag_lib.data import Passage, QAExample
    from refrag_lib.index import Retriever, build_index
    from refrag_lib.qa import retrieve_items

    model = tiny_refrag(k=k)
    passages = [Passage(f"p{i}", text) for i, text in enumerate(FACTS + TINY_TEXT)]
    retriever = Retriever("tiny-retriever", model.encoder, model.encoder_tokenizer)
    index = build_index(retriever.embed([p.text for p in passages], progress=False), passages, retriever.name,
                        use_gpu=False)
    questions = [QAExample(f"q{i}", f"Which river at City_{i:03d}?", (f"River_{i + 30:03d}",), f"p{i}")
                 for i in range(8)]
    return model, passages, retriever, index, retrieve_items(retriever, index, questions, top_k)


@pytest.fixture(scope="session")
def cpu_model():
    """The real offline models of the cpu preset (all-MiniLM-L6-v2 + SmolLM2-135M-Instruct)."""
    from refrag_lib.config import get_preset
    from refrag_lib.model import load_refrag

    return load_refrag(get_preset("cpu")).eval()


class NotebookRunner:
    """Runs the course's notebooks once per test session, in order, with SMOKE parameters."""

    def __init__(self, root):
        self.root = root
        self.done = {}

    def run(self, stem: str) -> dict:
        """Execute every notebook up to `stem` not yet run; return the executed notebook as JSON."""
        import json

        from refrag_lib.course.notebooks import notebook_paths, run_notebook

        for path in notebook_paths():
            if path.stem not in self.done:
                parameters = {"PRESET": "cpu", "RUN_DIR": str(self.root), "SMOKE": True}
                out = run_notebook(path, self.root / "executed", parameters)
                self.done[path.stem] = json.loads(out.read_text())
            if path.stem == stem:
                return self.done[stem]
        raise KeyError(f"no notebook named {stem}")

    def metrics(self, stage: str) -> dict:
        import json

        return json.loads((self.root / stage / "metrics.json").read_text())


@pytest.fixture(scope="session")
def notebooks(tmp_path_factory):
    return NotebookRunner(tmp_path_factory.mktemp("smoke_run"))
