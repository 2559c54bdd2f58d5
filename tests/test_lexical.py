"""Word overlap weighted by rarity: an ID outweighs the words every passage shares, per passage and per chunk."""

import pytest
import torch

from refrag_lib.lexical import WordRarity, words

PASSAGES = ["Institute_331 stands in City_3. It is directed by Person_2.",
            "Institute_131 stands in City_9. It is directed by Person_5.",
            "Institute_357 stands in City_4. It is directed by Person_2."]


def decode(chunks):
    return [" ".join(str(t) for t in c) for c in chunks]


def test_words_keep_ids_whole_and_ignore_case_and_punctuation():
    assert words("Who directs Institute_331? CH-8154.") == {"who", "directs", "institute_331", "ch-8154"}


def test_the_passage_holding_the_questions_id_overlaps_most():
    rarity = WordRarity(PASSAGES, decode)
    overlap = rarity.overlap("Who is the director of Institute_331?", PASSAGES)
    assert int(overlap.argmax()) == 0 and overlap[0] > 2 * overlap[1]
    assert rarity.weight("institute_331") > rarity.weight("stands")  # one passage holds it, every one the other
    assert torch.equal(rarity.overlap("?!", PASSAGES), torch.zeros(3))  # no words: no overlap
    full = rarity.overlap("institute_331 person_2", PASSAGES)
    assert full[0] == pytest.approx(1.0) and 0 < full[2] < 1 and full[1] == 0  # person_2 is in passages 0 and 2


def test_chunk_features_give_each_chunk_its_passage_and_its_own_overlap():
    texts = {1: "Institute_331 stands", 2: "in City_3", 3: "Institute_131 stands", 4: "in City_9", 5: "nothing"}
    rarity = WordRarity(PASSAGES, lambda chunks: [" ".join(texts[t] for t in c) for c in chunks])
    features = rarity.chunk_features("Where does Institute_331 stand?", [[1], [2], [3], [4], [5]], [2, 3])
    assert features.shape == (5, 2)
    assert torch.equal(features[:2, 0], features[0, 0].repeat(2)) and features[0, 0] > features[2, 0]
    assert features[0, 1] == features[0, 0] and features[1, 1] == 0  # the ID's chunk holds the passage's overlap
    assert rarity.chunk_features("Where?", [], []).shape == (0, 2)
