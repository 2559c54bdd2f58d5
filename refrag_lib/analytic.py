"""The paper's latency model (Tables 6 and 9), computed from a decoder's own config.

Prefill is compute bound: per layer and position the linear maps cost 2 FLOPs per weight, and
attention costs 4 * width * T per position (QK^T and AV over T keys). The paper writes this for a
plain transformer as (24 d^2 + 4 d T) * T per layer, so the TTFT ratio of T_rag = s to T_refrag = s/k
positions is k^2 (6d + s) / (6dk + s): about k for short contexts (the linear terms dominate, cost
~ T) and up to k^2 for long ones (attention dominates, cost ~ T^2). Decoding one token is memory
bound: it reads every weight and the whole KV cache once, so TTIT shrinks much less than TTFT.

`DecoderShape.from_config` uses the real widths (grouped-query K/V, the gated MLP of Llama-family
decoders, the LM head on the one position whose logits we keep) and counts the question tokens in
both arms; `DecoderShape.paper` keeps only the paper's attention + MLP terms.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import CourseError


@dataclass(frozen=True)
class DecoderShape:
    """What the latency model needs to know about a decoder."""

    d: int  # hidden size
    layers: int
    attention_width: int  # heads * head_dim: the width of QK^T and AV
    kv_width: int  # kv_heads * head_dim: the width of one cached K (or V) row
    linear_params: int  # weights of the linear maps of ONE layer (attention projections + MLP)
    vocab: int = 0  # LM head rows (0: leave the head out, as the paper's formula does)
    n_params: int = 0  # all parameters (TTIT reads them once per token)

    @classmethod
    def from_config(cls, config, n_params: int = 0) -> DecoderShape:
        """A Llama-family decoder (q, k, v, o projections; gated MLP with three matrices)."""
        d = config.hidden_size
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or d // heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        attention, kv = heads * head_dim, kv_heads * head_dim
        linear = d * attention + 2 * d * kv + attention * d + 3 * d * config.intermediate_size
        return cls(d, config.num_hidden_layers, attention, kv, linear, config.vocab_size, n_params)

    @classmethod
    def paper(cls, d: int, layers: int = 32) -> DecoderShape:
        """The paper's transformer: 4 d^2 attention weights + 8 d^2 MLP weights per layer, no LM head."""
        return cls(d, layers, d, d, 12 * d * d)


def prefill_flops(shape: DecoderShape, positions: float, logits_kept: int = 1) -> float:
    """FLOPs of one prefill over `positions` decoder positions, logits at `logits_kept` positions.

    Attention is counted over all T keys, as in the paper (causal kernels may skip about half).
    """
    if positions < 0:
        raise CourseError(f"positions must be >= 0, got {positions}.")
    per_layer = 2 * shape.linear_params * positions + 4 * shape.attention_width * positions**2
    return shape.layers * per_layer + 2 * shape.d * shape.vocab * logits_kept


def ttft_speedup(shape: DecoderShape, rag_positions: float, refrag_positions: float) -> float:
    """The analytic TTFT ratio ordinary RAG / REFRAG for the given decoder input lengths."""
    if refrag_positions <= 0:
        raise CourseError("REFRAG's decoder input needs at least one position.")
    return prefill_flops(shape, rag_positions) / prefill_flops(shape, refrag_positions)


def refrag_positions(s: int, k: int, p: float = 0.0, question_tokens: int = 0) -> float:
    """Decoder positions of s context tokens in chunks of k, a fraction p of the chunks expanded."""
    chunks = s / k
    return question_tokens + (1 - p) * chunks + p * s


def ttft_ratio(shape: DecoderShape, s: int, k: int) -> float:
    """How many times sooner REFRAG's first token comes than ordinary RAG's for s context tokens, every chunk of k
    compressed and no question: the prefill FLOPs of s positions over those of s/k."""
    return ttft_speedup(shape, s, refrag_positions(s, k))


def paper_ttft_bound(d: int, k: int, s: int) -> float:
    """The paper's closed form k^2 (6d + s) / (6dk + s) (no question tokens, no LM head)."""
    return k * k * (6 * d + s) / (6 * d * k + s)


def kv_cache_bytes(shape: DecoderShape, positions: int, bytes_per_value: int, batch: int = 1) -> int:
    """K and V for every layer and position (the paper's 4 d l b (s + o) is this for bf16, kv_width = d)."""
    return 2 * shape.layers * shape.kv_width * positions * bytes_per_value * batch


def ttit_speedup(shape: DecoderShape, rag_positions: int, refrag_positions: int, bytes_per_value: int) -> float:
    """Memory-bound decode: each token reads all weights plus the KV cache; the ratio RAG / REFRAG."""
    if shape.n_params <= 0:
        raise CourseError("ttit_speedup needs the decoder's parameter count (DecoderShape.n_params).")
    weights = shape.n_params * bytes_per_value
    rag = weights + kv_cache_bytes(shape, rag_positions, bytes_per_value)
    return rag / (weights + kv_cache_bytes(shape, refrag_positions, bytes_per_value))


def speedup_curve(shape: DecoderShape, s_values, k: int, p: float = 0.0, question_tokens: int = 0) -> list[float]:
    """Analytic TTFT speedup at each s (for plots next to the measurement)."""
    return [
        ttft_speedup(shape, question_tokens + s, refrag_positions(s, k, p, question_tokens)) for s in s_values
    ]
