"""Word overlap of a question with its passages and chunks, weighted by rarity: what the question-aware
policy reads besides the retriever's vectors.

A dense retriever vector blurs IDs: the questions about Institute_331 retrieve passages about
Institute_131 and Institute_357 too, and the chunk vectors alone cannot say which passage the question
is about. The words can. Each word of the question counts with its inverse document frequency over the
index's passages (rare words such as an ID weigh most), and a text's overlap is the share of the
question's weight it contains: 1.0 when every word of the question occurs in it. Computed from the
chunk tokens the chunk store keeps anyway, it costs no encoder pass at question time. (A dozen lines of
counting: a search library such as a BM25 package would add a dependency for less.)
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence

import torch

WORD = re.compile(r"[a-z0-9_\-]+")
FEATURES = ("passage", "chunk")  # what each chunk's overlap is measured against


def words(text: str) -> set[str]:
    """The distinct lower-cased words of a text (IDs such as River_033 or CH-8154 stay one word)."""
    return set(WORD.findall(text.lower()))


class WordRarity:
    """Inverse document frequency of every word of a collection of passages; `decode` turns chunks of token
    ids back into text (the decoder tokenizer's batch_decode)."""

    def __init__(self, texts: Sequence[str], decode: Callable[[list[list[int]]], list[str]]):
        self.decode = decode
        frequency = Counter(w for text in texts for w in words(text))
        self.n = len(texts)
        self.idf = {w: math.log((1 + self.n) / (1 + df)) for w, df in frequency.items()}

    def weight(self, word: str) -> float:
        """A word no passage holds weighs like the rarest (it cannot match anything anyway)."""
        return self.idf.get(word, math.log(1 + self.n))

    def overlap(self, question: str, texts: Sequence[str]) -> torch.Tensor:
        """Per text, the share of the question's word weight that occurs in it (0 .. 1)."""
        asked = {w: self.weight(w) for w in words(question)}
        total = sum(asked.values())
        if not total:
            return torch.zeros(len(texts))
        return torch.tensor([sum(asked[w] for w in asked.keys() & words(t)) / total for t in texts])

    def chunk_features(self, question: str, chunks: Sequence[Sequence[int]],
                       passage_lengths: Sequence[int]) -> torch.Tensor:
        """[L, 2]: each chunk's overlap with the question measured on its whole passage and on the chunk alone."""
        chunk_texts = self.decode([list(c) for c in chunks]) if len(chunks) else []
        passages, start = [], 0
        for n in passage_lengths:
            passages.append("".join(chunk_texts[start : start + n]))
            start += n
        per_passage = self.overlap(question, passages)
        on_passage = torch.repeat_interleave(per_passage, torch.tensor(list(passage_lengths), dtype=torch.long))
        return torch.stack([on_passage, self.overlap(question, chunk_texts)], dim=-1)
