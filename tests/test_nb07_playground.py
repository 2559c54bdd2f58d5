"""Notebook 07 under papermill (SMOKE), and the playground's contract on the SMOKE run's models."""

import pytest

from refrag_lib.course.notebooks import notebook_errors
from refrag_lib.course.playground import Playground
from refrag_lib.errors import CourseError
from refrag_lib.runs import open_run

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module")
def playground(notebooks):
    executed = notebooks.run("07_playground")
    assert notebook_errors(executed) == []
    html = "".join("".join(o.get("data", {}).get("text/html", "")) for c in executed["cells"]
                   for o in c.get("outputs", []))
    assert "decoder positions" in html and "#c8f0c8" in html  # the answer table and coloured chunks
    return Playground(open_run("cpu", notebooks.root))


def test_both_readers_see_the_same_passages(playground):
    question = "Where is Institute_131 located?"
    result = playground.compare(question, 16, 0.25, 3, "question", repeats=1)
    rag, refrag = result["rag"], result["refrag"]
    assert [p["id"] for p in rag["passages"]] == [p["id"] for p in refrag["passages"]]
    assert all(c["expanded"] for p in rag["passages"] for c in p["chunks"])
    assert len(refrag["expanded_chunks"]) == round(0.25 * refrag["n_chunks"])
    assert refrag["input_positions"] < rag["input_positions"]
    everything = playground.compare(question, 16, 1.0, 3, "random", repeats=1)["refrag"]
    assert everything["input_positions"] == rag["input_positions"]  # p = 1: REFRAG reads what RAG reads
    nothing = playground.compare(question, 16, 0.5, 3, "none", repeats=1)["refrag"]
    assert nothing["expanded_chunks"] == [] and nothing["input_positions"] < refrag["input_positions"]
    ppl = playground.compare(question, 16, 0.25, 3, "perplexity", repeats=1)["refrag"]
    assert len(ppl["expanded_chunks"]) == len(refrag["expanded_chunks"])


@pytest.mark.parametrize("question, k, p, top_k, selector, message", [
    ("  ", 16, 0.25, 3, "rl", "question is empty"),
    ("Where?", 8, 0.25, 3, "rl", "k = 8 has not been trained"),
    ("Where?", 16, 1.5, 3, "rl", "[0, 1]"),
    ("Where?", 16, 0.25, 10_000, "rl", "top-K must be between 1 and"),
    ("Where?", 16, 0.25, 3, "greedy", "Unknown selector"),
])
def test_bad_input_is_a_message_not_a_traceback(playground, question, k, p, top_k, selector, message):
    with pytest.raises(CourseError, match=message.replace("[", r"\[").replace("]", r"\]")):
        playground.compare(question, k, p, top_k, selector)
    html = playground.ask(question, k, p, top_k, selector)
    assert "Cannot answer yet" in html and "Traceback" not in html
