"""SQuAD-style scoring against hand-worked cases, and prompts whose training and inference layouts agree."""

import pytest
import torch

from refrag_lib.errors import CourseError
from refrag_lib.losses import suffix_token_stats
from refrag_lib.qa import (
    answer_in_context,
    build_prompt,
    clean_prediction,
    exact_match,
    input_positions,
    normalize_answer,
    token_f1,
    training_example,
    with_gold,
)


def test_normalisation_follows_squad():
    assert normalize_answer("The  River_033.") == "river033"
    assert normalize_answer("an Apple, a pear") == "apple pear"
    assert normalize_answer("RG-8714") == "rg8714"


def test_exact_match_takes_the_best_gold_answer():
    assert exact_match("river_033", ["City_001", "River_033"]) == 1.0
    assert exact_match("River_034", ["River_033"]) == 0.0
    assert exact_match("the River_033", ["River_033"]) == 1.0


def test_token_f1_by_hand():
    # prediction 3 words, gold 2 words, 1 shared: P = 1/3, R = 1/2, F1 = 2PR/(P+R) = 0.4
    assert token_f1("founded in 1427", ["in 1500"]) == pytest.approx(0.4)
    assert token_f1("Person_042", ["Person_042"]) == 1.0
    assert token_f1("", ["Person_042"]) == 0.0
    assert token_f1("x", ["a b", "x"]) == 1.0


def test_bad_answers_are_refused():
    with pytest.raises(CourseError):
        exact_match("a", "River_033")
    with pytest.raises(CourseError):
        token_f1("a", [])


def test_answer_in_context_needs_whole_words():
    texts = ["City_017 lies on River_033 and exports Material_009."]
    assert answer_in_context(texts, ["River_033"])
    assert not answer_in_context(texts, ["River_03"])
    assert not answer_in_context([], ["River_033"])


def test_clean_prediction_keeps_the_first_line():
    assert clean_prediction(" River_033\nQuestion: ...") == "River_033"


def test_with_gold_keeps_or_replaces_the_last():
    assert with_gold([3, 5, 7], 5) == [3, 5, 7]
    assert with_gold([3, 5, 7], 9) == [3, 5, 9]


def test_prompt_layout_and_positions(tiny):
    passages = [tiny.chunk_text("City_017 lies on River_033."), tiny.chunk_text("Person_042 leads Institute_008.")]
    prompt = build_prompt(tiny, "Which river?", passages)
    assert prompt.chunks == [c for p in passages for c in p]
    expand = [False] * len(prompt.chunks)
    assert input_positions(prompt, expand) == len(prompt.prefix) + len(prompt.chunks) + len(prompt.suffix)
    all_tokens = input_positions(prompt, [True] * len(prompt.chunks))
    assert all_tokens == len(prompt.prefix) + sum(map(len, prompt.chunks)) + len(prompt.suffix)


def test_training_example_feeds_the_same_inputs_and_scores_only_the_answer(tiny):
    prompt = build_prompt(tiny, "Which river?", [tiny.chunk_text("City_017 lies on River_033.")])
    answer = tiny.tokenize(" River_033")
    example = training_example(prompt, answer, tiny.eos_id)
    mask = [i % 2 == 0 for i in range(len(prompt.chunks))]
    infer = tiny.build_inputs([prompt], [mask], padding_side="right")
    train = tiny.build_inputs([example], [[*mask, True]], padding_side="right")
    width = infer.inputs_embeds.shape[1]
    torch.testing.assert_close(train.inputs_embeds[:, :width], infer.inputs_embeds)
    assert int(train.is_suffix.sum()) == len(answer) + 1  # answer tokens and EOS, never the cue
    stats = suffix_token_stats(tiny, [example], [[*mask, True]])
    assert int(stats.tokens.sum()) == len(answer) + 1


def test_a_question_longer_than_the_window_is_refused(tiny):
    with pytest.raises(CourseError, match="window"):
        build_prompt(tiny, "City_017 " * 400, [])


def test_answerable_keeps_questions_a_passage_answers_and_names_that_passage():
    from types import SimpleNamespace

    from refrag_lib.data import Passage, QAExample
    from refrag_lib.qa import answerable

    index = SimpleNamespace(passages=[Passage("a", "The Kestrel sailed in 1893."), Passage("b", "Ilse Varn led it.")])
    questions = [QAExample("q0", "When?", ("1893",)), QAExample("q1", "Who?", ("Tomas Quell",)),
                 QAExample("q2", "Who?", ("Ilse Varn",), "b"), QAExample("q3", "?", ("x",), "gone")]
    kept = answerable(questions, index)
    assert [(q.id, q.gold_passage_id) for q in kept] == [("q0", "a"), ("q2", "b")]  # q1: no passage; q3: not indexed
    assert [q.id for q in answerable(questions, index, limit=1)] == ["q0"]
    with pytest.raises(CourseError, match="No question is answered"):
        answerable(questions[1:2], index)


def test_answer_place_says_whether_the_reader_got_the_answer_as_tokens():
    from refrag_lib.qa_eval import ANSWER_PLACES, answer_place

    chunks = ["Institute_3 stands in", " City_392. It is directed", " by Person_", "232. Its code"]
    assert answer_place(chunks, [False, True, False, False], ["City_392"]) == ANSWER_PLACES[0]
    assert answer_place(chunks, [True, False, True, True], ["City_392"]) == ANSWER_PLACES[1]
    assert answer_place(chunks, [False, False, True, True], ["Person_232"]) == ANSWER_PLACES[2]
    assert answer_place(chunks, [False, False, True, False], ["Person_232"]) == ANSWER_PLACES[3]
    assert answer_place(chunks, [True] * 4, ["River_033"]) == ANSWER_PLACES[4]


def test_equal_latency_keeps_the_expansions_it_had_at_k():
    from refrag_lib.policy import n_expanded
    from refrag_lib.qa_eval import equal_budget_fraction

    at_k = n_expanded(0.1, 21)  # 3 passages of 7 chunks
    assert n_expanded(equal_budget_fraction(0.1, 3, 20), 140) == at_k == 2
    assert equal_budget_fraction(0.1, 3, 3) == 0.1 and equal_budget_fraction(0.1, 3, 1) == 0.1


def test_answer_chunks_finds_whole_holders_or_the_two_neighbours_an_id_straddles():
    from refrag_lib.qa import answer_chunks

    chunks = ["Person_232 is", " directed by Person_", "232. And Person_232"]
    assert answer_chunks(chunks, "Person_232") == ((0, 2), ())
    assert answer_chunks(chunks[:2] + ["232."], "Person_232") == ((0,), ())
    assert answer_chunks(["a Person_", "232 b"], "Person_232") == ((), (0, 1))
    assert answer_chunks(["a", "b"], "Person_232") == ((), ()) == answer_chunks(["a"], "?!")
