"""The REFRAG model: an encoder and a projector in front of an unchanged decoder.

Context is cut into chunks of k decoder tokens. A compressed chunk goes through the encoder (one
vector c_i), then the projector phi (a 2-layer MLP) into the decoder's token-embedding space, where
it takes ONE ordinary position. An expanded chunk is fed as its k ordinary token embeddings. Chunk
order is preserved. Everything here works on a batch: one encoder call for all compressed chunks of
the batch, one decoder forward for the prefill.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .errors import CourseError
from .hub import check_access, decoder_window, load_decoder, load_encoder


def check_k(k: int) -> int:
    """k is the number of decoder tokens per chunk: a positive integer."""
    if not isinstance(k, int) or k < 1:
        raise CourseError(f"k must be a positive integer (decoder tokens per chunk), got {k!r}; the paper uses 8-32.")
    return k


def chunk_ids(ids: Sequence[int], k: int) -> list[list[int]]:
    """Cut token ids into consecutive chunks of k (the last one may be shorter)."""
    check_k(k)
    ids = list(ids)
    return [ids[i : i + k] for i in range(0, len(ids), k)]


@dataclass
class Segments:
    """One example's decoder input, before compression: prefix tokens, context chunks, suffix tokens.

    A RAG prompt is prefix = question, chunks = retrieved passages, suffix = "Answer:"; a
    reconstruction example is chunks = x_1..x_s and suffix = x_1..x_s again (the targets).
    """

    prefix: list[int] = field(default_factory=list)
    chunks: list[list[int]] = field(default_factory=list)
    suffix: list[int] = field(default_factory=list)

    def token_length(self) -> int:
        return len(self.prefix) + sum(map(len, self.chunks)) + len(self.suffix)


@dataclass
class DecoderInputs:
    """A padded batch ready for the decoder, plus the bookkeeping losses and timers need."""

    inputs_embeds: torch.Tensor  # [B, T, d]
    attention_mask: torch.Tensor  # [B, T] 1 = real position
    position_ids: torch.Tensor  # [B, T] one ordinary position per slot, pads excluded
    token_ids: torch.Tensor  # [B, T] token id at token slots, pad id at vector and pad slots
    is_vector: torch.Tensor  # [B, T] True where a chunk vector sits
    is_suffix: torch.Tensor  # [B, T] True at suffix tokens (the targets of the losses)

    @property
    def lengths(self) -> torch.Tensor:
        return self.attention_mask.sum(dim=1)


def projector_net(encoder_dim: int, decoder_dim: int) -> nn.Module:
    """phi's MLP: 2 layers, hidden width = the decoder's hidden size, a GELU between (two Linear layers in a row
    would collapse into one linear map). Checkpoints name its weights net.0.* and net.2.*."""
    return nn.Sequential(nn.Linear(encoder_dim, decoder_dim), nn.GELU(), nn.Linear(decoder_dim, decoder_dim))


class Projector(nn.Module):
    """phi: encoder space -> decoder token-embedding space, through the MLP that `net` builds (projector_net).

    token_norm > 0 rescales every output to that length (RefragModel passes the decoder's mean
    token-embedding norm): the MLP learns the direction, and a large early step cannot hand the frozen
    decoder a vector far longer than any token it was trained on, which made reconstruction diverge.
    """

    def __init__(self, encoder_dim: int, decoder_dim: int, token_norm: float = 0.0,
                 net: Callable[[int, int], nn.Module] = projector_net):
        super().__init__()
        self.net = net(encoder_dim, decoder_dim)
        self.token_norm = token_norm

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        out = self.net(c)
        return F.normalize(out, dim=-1) * self.token_norm if self.token_norm > 0 else out


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average the encoder states over real tokens (all-MiniLM-L6-v2 was trained with mean pooling)."""
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """A chunk's one vector from its encoder states: "mean" over real tokens, or the "first" ([CLS]) state.

    A mean forgets token order, which reconstruction needs; the first state can learn to keep it
    (the paper leaves pooling open; notebook 02's lever table compares the two).
    """
    if how == "mean":
        return mean_pool(hidden, mask)
    if how == "first":
        return hidden[:, 0]
    raise CourseError(f"Unknown pooling {how!r}: choose one of {', '.join(POOLINGS)}.")


POOLINGS = ("mean", "first")


def splice_vectors(token_embeds: torch.Tensor, is_vector: torch.Tensor, projected: torch.Tensor) -> torch.Tensor:
    """The decoder input: the projected chunk vectors, in row-major order, in the slots where is_vector is True;
    every other slot keeps its token embedding. Out of place and in the embeddings' dtype, so the loss's gradient
    reaches the projector and the encoder through it."""
    return token_embeds.masked_scatter(is_vector.unsqueeze(-1), projected.to(token_embeds.dtype))


@dataclass(frozen=True)
class Parts:
    """A learner's own pieces of the model (notebook 02's exercises), handed to the model a training run builds;
    None: the package's own. Functions, not settings: TrainConfig, which checkpoints store, holds none of them.

    pool(hidden [n, t, h], mask [n, t]) -> [n, h] replaces the pooling RefragModel.pooling names;
    projector_net(encoder_dim, decoder_dim) -> the projector's MLP, whose state-dict keys must be projector_net's so
    that saved weights load into either; splice(token_embeds, is_vector, projected) -> the decoder input.
    """

    pool: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    projector_net: Callable[[int, int], nn.Module] | None = None
    splice: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None


def expand_all(batch: Sequence[Segments], value: bool) -> list[list[bool]]:
    """An expansion mask with every chunk expanded (True: ordinary RAG) or compressed (False)."""
    return [[value] * len(ex.chunks) for ex in batch]


class RefragModel(nn.Module):
    """Encoder + projector + decoder, with batched input assembly, prefill and KV-cached decoding."""

    def __init__(self, encoder, decoder, encoder_tokenizer, decoder_tokenizer, k: int, parts: Parts | None = None):
        super().__init__()
        self.k = check_k(k)
        self.parts = parts or Parts()
        self.encoder = encoder
        self.decoder = decoder
        self.encoder_tokenizer = encoder_tokenizer
        self.decoder_tokenizer = decoder_tokenizer
        token_norm = float(decoder.get_input_embeddings().weight.detach().float().norm(dim=1).mean())
        # built where the default MLP always was: a learner's MLP with its layers starts from the same weights
        self.projector = Projector(encoder.config.hidden_size, decoder.config.hidden_size, token_norm,
                                   self.parts.projector_net or projector_net)
        self.projector.to(device=decoder.device, dtype=decoder.dtype)
        # The preset's precision, fixed at load: what the model serves, is scored and timed in, and what trained
        # parts return to after training (refrag_lib.precision), whatever dtype a part has at the moment.
        self.precision = decoder.dtype
        self.window = decoder_window(decoder.config)
        self.pad_id = decoder_tokenizer.pad_token_id
        self.eos_id = decoder_tokenizer.eos_token_id
        bos = decoder_tokenizer.bos_token_id
        self.start_id = self.eos_id if bos is None else bos  # what a text without context starts from
        # An input with no prefix (reconstruction, CPT) starts with the start token, as every text did in the
        # decoder's pretraining: the first position is the attention sink, which later tokens attend to
        # but read little from, so a chunk vector placed there is hard to learn to read.
        self.start_before_chunks = True
        # how encode_chunks turns a chunk's encoder states into its vector (see `pool`), unless parts.pool is given
        self.pooling = "mean"

    @property
    def device(self) -> torch.device:
        return self.decoder.device

    # ---- text -> segments -------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        """Decoder token ids of a text, without special tokens (the prompt builder adds what it needs)."""
        return self.decoder_tokenizer(text, add_special_tokens=False)["input_ids"]

    def chunk_text(self, text: str) -> list[list[int]]:
        """A passage as chunks of k decoder tokens (each passage chunked on its own, so chunk vectors
        depend on the passage alone and can be cached next to the index)."""
        return chunk_ids(self.tokenize(text), self.k)

    # ---- chunks -> vectors --------------------------------------------------------------------
    def encode_chunks(self, chunks: Sequence[Sequence[int]]) -> torch.Tensor:
        """c_i for a list of chunks of decoder token ids: one encoder call for all of them.

        The encoder has its own tokenizer, so each chunk is decoded to text and re-tokenised.
        """
        dim = self.encoder.config.hidden_size
        if len(chunks) == 0:
            return torch.zeros(0, dim, device=self.encoder.device, dtype=self.encoder.dtype)
        texts = self.decoder_tokenizer.batch_decode([list(c) for c in chunks])
        enc = self.encoder_tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        enc = {name: t.to(self.encoder.device) for name, t in enc.items()}
        hidden = self.encoder(**enc).last_hidden_state
        if self.parts.pool is not None:
            return self.parts.pool(hidden, enc["attention_mask"])
        return pool(hidden, enc["attention_mask"], self.pooling)

    def compressed_chunks(self, batch: Sequence[Segments], expand: Sequence[Sequence[bool]]) -> list[list[int]]:
        """The chunks to encode, in the order build_inputs consumes their vectors."""
        return [c for ex, mask in zip(batch, expand) for c, e in zip(ex.chunks, mask) if not e]

    # ---- assembly ---------------------------------------------------------------------------
    def build_inputs(
        self,
        batch: Sequence[Segments],
        expand: Sequence[Sequence[bool]] | None = None,
        chunk_vectors: torch.Tensor | None = None,
        padding_side: str = "left",
        projected: torch.Tensor | None = None,
    ) -> DecoderInputs:
        """Decoder inputs for a batch under an expansion mask (None: compress every chunk).

        chunk_vectors: encoder outputs c_i for the compressed chunks in `compressed_chunks` order
        (precomputed, "with cache"); when None they are computed here ("without cache").
        Left padding suits generation (the last position is the last real token); right padding
        suits training losses. projected: vectors already in the decoder's embedding space, one per
        compressed chunk (the encoder and projector are skipped; `vector_ceiling` optimises such vectors).
        """
        expand = expand_all(batch, False) if expand is None else expand
        self._check_mask(batch, expand)
        if projected is None:
            if chunk_vectors is None:
                chunk_vectors = self.encode_chunks(self.compressed_chunks(batch, expand))
            dtype = next(self.projector.parameters()).dtype
            projected = self.projector(chunk_vectors.to(device=self.device, dtype=dtype))
        layouts = [self._layout(ex, mask) for ex, mask in zip(batch, expand)]
        return self._pad_and_embed(layouts, projected, padding_side)

    def _check_mask(self, batch: Sequence[Segments], expand: Sequence[Sequence[bool]]) -> None:
        if len(expand) != len(batch):
            raise CourseError(f"expansion mask has {len(expand)} rows for a batch of {len(batch)} examples.")
        for i, (ex, mask) in enumerate(zip(batch, expand)):
            if len(mask) != len(ex.chunks):
                raise CourseError(f"example {i}: expansion mask has {len(mask)} entries for {len(ex.chunks)} chunks.")

    def _layout(self, ex: Segments, mask: Sequence[bool]) -> tuple[list[int], list[int], int]:
        """Per slot: a token id (or pad where a vector sits), a 0/1 vector flag, and the suffix start."""
        prefix = list(ex.prefix) or ([self.start_id] if self.start_before_chunks and ex.chunks else [])
        ids, vec = prefix, [0] * len(prefix)
        for chunk, expanded in zip(ex.chunks, mask):
            if expanded:
                ids += chunk
                vec += [0] * len(chunk)
            else:
                ids.append(self.pad_id)
                vec.append(1)
        suffix_start = len(ids)
        ids += ex.suffix
        vec += [0] * len(ex.suffix)
        if len(ids) > self.window:
            raise CourseError(
                f"The decoder input has {len(ids)} positions but the decoder's window is {self.window}. "
                "Retrieve fewer passages (top-K), use a larger k, or expand fewer chunks (smaller p)."
            )
        return ids, vec, suffix_start

    def _pad_and_embed(self, layouts, projected: torch.Tensor, padding_side: str) -> DecoderInputs:
        if padding_side not in ("left", "right"):
            raise CourseError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
        width = max((len(ids) for ids, _, _ in layouts), default=0)
        n = len(layouts)
        token_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        is_vector = torch.zeros(n, width, dtype=torch.bool)
        is_suffix = torch.zeros(n, width, dtype=torch.bool)
        attention = torch.zeros(n, width, dtype=torch.long)
        for row, (ids, vec, suffix_start) in enumerate(layouts):
            start = width - len(ids) if padding_side == "left" else 0
            end = start + len(ids)
            token_ids[row, start:end] = torch.tensor(ids, dtype=torch.long)
            is_vector[row, start:end] = torch.tensor(vec, dtype=torch.bool)
            is_suffix[row, start + suffix_start : end] = True
            attention[row, start:end] = 1
        if int(is_vector.sum()) != projected.shape[0]:
            raise CourseError(
                f"{projected.shape[0]} chunk vectors were given for {int(is_vector.sum())} compressed chunks."
            )
        token_ids, is_vector, is_suffix, attention = (
            t.to(self.device) for t in (token_ids, is_vector, is_suffix, attention)
        )
        embeds = self.decoder.get_input_embeddings()(token_ids)
        embeds = (self.parts.splice or splice_vectors)(embeds, is_vector, projected)
        positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
        return DecoderInputs(embeds, attention, positions, token_ids, is_vector, is_suffix)

    # ---- decoding -----------------------------------------------------------------------------
    def prefill(self, inputs: DecoderInputs):
        """One decoder pass over the whole input; logits only at the last position (all TTFT needs)."""
        from transformers import DynamicCache

        return forward_with_cache(
            self.decoder, DynamicCache(), inputs_embeds=inputs.inputs_embeds,
            attention_mask=inputs.attention_mask, position_ids=inputs.position_ids, logits_to_keep=1,
        )

    def decode_step(self, token: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, cache):
        """One KV-cached step: feed one token per row, get the next logits and the grown cache."""
        return forward_with_cache(
            self.decoder, cache, input_ids=token[:, None], attention_mask=attention_mask, position_ids=position_ids
        )

    @torch.no_grad()
    def generate(
        self,
        inputs: DecoderInputs,
        max_new_tokens: int = 32,
        do_sample: bool = False,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> list[list[int]]:
        """Greedy or sampled decoding with a KV cache; the FIRST token comes from the prefill logits.

        Inputs must be left-padded so that every row's last position is its last real token.
        Returns the new token ids of each row, up to and excluding EOS.
        """
        if not bool(inputs.attention_mask[:, -1].all()):
            raise CourseError("generate() needs left-padded inputs: build them with padding_side='left'.")
        logits, cache = self.prefill(inputs)
        mask, position = inputs.attention_mask, inputs.position_ids[:, -1:]
        done = torch.zeros(mask.shape[0], dtype=torch.bool, device=mask.device)
        steps = []
        for step in range(max_new_tokens):
            token = _pick(logits, do_sample, temperature, generator)
            token = torch.where(done, torch.full_like(token, self.pad_id), token)
            steps.append(token)
            done |= token == self.eos_id
            if bool(done.all()) or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            position = position + 1
            logits, cache = self.decode_step(token, mask, position, cache)
        rows = torch.stack(steps, dim=1).tolist() if steps else [[] for _ in range(mask.shape[0])]
        return [row[: row.index(self.eos_id)] if self.eos_id in row else row for row in rows]


@functools.cache
def cache_keyword(decoder_class: type) -> str:
    """The name under which this transformers release takes the KV cache.

    transformers 5.24 renamed `past_key_values` to `cache` (the old name warns, and goes in 5.40);
    earlier releases of the supported range know only `past_key_values`. Asked once per class.
    """
    parameters = inspect.signature(decoder_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def forward_with_cache(decoder: nn.Module, cache, **inputs):
    """A decoder forward that reads and grows `cache`: (last-position logits, the cache).

    Every KV-cached call in the course goes through here, so a renamed argument is mended once.
    """
    out = decoder(**inputs, use_cache=True, **{cache_keyword(type(decoder)): cache})
    grown = out.get("cache")  # the output field follows the argument's name
    return out.logits[:, -1, :], grown if grown is not None else out.past_key_values


def _pick(logits: torch.Tensor, do_sample: bool, temperature: float, generator) -> torch.Tensor:
    """The next token of each row: argmax, or a sample from softmax(logits / temperature)."""
    if not do_sample:
        return logits.argmax(dim=-1)
    if temperature <= 0:
        raise CourseError(f"temperature must be > 0 when sampling, got {temperature}.")
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def load_refrag(preset, device: str | None = None, parts: Parts | None = None) -> RefragModel:
    """The preset's encoder and decoder with a fresh (untrained) projector; parts: a learner's own (see Parts)."""
    check_access(preset)
    device = device or preset.device
    encoder, encoder_tokenizer = load_encoder(preset.encoder, preset.dtype, device)
    decoder, decoder_tokenizer = load_decoder(preset.decoder, preset.dtype, device)
    return RefragModel(encoder, decoder, encoder_tokenizer, decoder_tokenizer, k=preset.k, parts=parts)
