"""Shared fixtures: tiny random models (no downloads) and the real offline models (loaded once)."""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from refrag_lib.model import RefragModel

TINY_TEXT = [
    "TITLE: Atlas Entry - City_017. City_017 lies on River_033 and exports Material_009.",
    "Which river flows through City_003? The answer is River_012, founded in year 1427.",
    "Person_042 leads Institute_008, whose registry code is RX-88213.",
]


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


def tiny_refrag(k: int = 4, seed: int = 0) -> RefragModel:
    """A REFRAG model built from tiny random configs (hidden 32, 2 layers), transformers-test style."""
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
    return RefragModel(encoder, decoder, tok, tok, k=k)


@pytest.fixture
def tiny():
    return tiny_refrag()


@pytest.fixture(scope="session")
def cpu_model():
    """The real offline models of the cpu preset (all-MiniLM-L6-v2 + SmolLM2-135M-Instruct)."""
    from refrag_lib.config import get_preset
    from refrag_lib.model import load_refrag

    return load_refrag(get_preset("cpu")).eval()
