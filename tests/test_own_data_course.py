"""A learner's own corpus end to end (SMOKE): a corpus the course did not make, in the public format
(.txt passages, QA lines without gold ids), through notebooks 01, 05 and 07 and `generate`, read by the
models the SMOKE course run trained; and its bad inputs refused before any work is spent."""

import json
import time

import pytest
from own_corpus import write

from refrag_lib.__main__ import main
from refrag_lib.course.notebooks import notebook_errors
from refrag_lib.course.own_data import check_inputs, run_own_data
from refrag_lib.errors import CourseError, DataFormatError
from refrag_lib.index import ANSWER_IN_PASSAGE, GOLD_PASSAGE
from refrag_lib.runs import open_run

pytestmark = pytest.mark.notebooks


@pytest.fixture(scope="module")
def course(notebooks):
    notebooks.run("07_playground")  # the SMOKE course run: notebooks 01-05 trained its readers
    return open_run("cpu", notebooks.root)


@pytest.fixture(scope="module")
def own(course, tmp_path_factory):
    corpus, qa = write(tmp_path_factory.mktemp("own_files"), n_passages=300, seed=3)
    before = (course.root / "index" / "metrics.json").read_text()
    own = open_run("cpu", tmp_path_factory.mktemp("own_run"), smoke=True)
    summary = run_own_data(corpus, qa, course, own, smoke=True)
    assert (course.root / "index" / "metrics.json").read_text() == before  # the course run is left as it was
    return own, summary, qa


def test_the_reading_notebooks_run_clean_on_a_corpus_in_the_public_format(own):
    run, summary, _ = own
    for stem in ("01_indexing", "05_sft", "07_playground"):
        executed = json.loads((run.root / "executed" / f"{stem}.ipynb").read_text())
        assert notebook_errors(executed) == [], stem
    index = json.loads((run.root / "index" / "metrics.json").read_text())
    assert index["recall_kind"] == ANSWER_IN_PASSAGE and index["n_passages"] == 200  # SMOKE: part of the corpus
    # each question was written about one passage, and its answer is in it: retrieval finds far more than chance
    assert summary["recall_at_10"] >= summary["recall_at_5"] >= summary["recall_at_1"] > 10 * (1 / 200)
    sft = json.loads((run.root / "sft" / "metrics.json").read_text())
    assert sft["n_eval"] == 4 and sft["n_train_questions"] == 0  # evaluated, nothing trained here
    assert sft["questions"].endswith("qa.jsonl")
    for row in ("rag", "refrag"):
        low, high = sft["exact_match_ci"][row]
        assert 0.0 <= low <= sft["exact_match"][row] <= high <= 1.0
        assert sft["ttft_ms"][row] > 0


def test_generate_and_the_playground_read_the_course_models_from_the_own_run(own, course, capsys):
    run, _, qa = own
    ready = json.loads((run.root / "sft" / "ready_index" / "ready.json").read_text())
    assert ready["weights_run"] == str(course.root)
    assert not (run.root / "sft" / "refrag" / "weights.safetensors").exists()  # no copy of the weights
    question = json.loads(qa.read_text().splitlines()[0])["question"]
    assert main(["generate", "--run-dir", str(run.root), "--question", question, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["question"] == question and result["ttft_ms"] > 0 and result["passages"]


def test_bad_files_are_refused_in_seconds_with_line_and_field(course, tmp_path):
    corpus, qa = write(tmp_path, n_passages=20)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(qa.read_text() + '{"question": "Who?", "answers": []}\n')
    started = time.perf_counter()
    with pytest.raises(DataFormatError, match=r"bad.jsonl, line 21: field 'answers' must be a non-empty list"):
        run_own_data(corpus, bad, course, open_run("cpu", tmp_path / "own"), smoke=True)
    unrelated = tmp_path / "unrelated.jsonl"
    unrelated.write_text('{"question": "Who wrote Hamlet?", "answers": ["Shakespeare"]}\n')
    with pytest.raises(CourseError, match="No passage of .* contains an answer"):
        run_own_data(corpus, unrelated, course, open_run("cpu", tmp_path / "own"), smoke=True)
    with pytest.raises(CourseError, match="has not finished notebooks/05_sft.ipynb"):
        run_own_data(corpus, qa, open_run("cpu", tmp_path / "untrained"), open_run("cpu", tmp_path / "own"))
    with pytest.raises(CourseError, match="must not be the course run"):
        run_own_data(corpus, qa, course, course)
    assert time.perf_counter() - started < 10  # all refused before a model was loaded
    assert not (tmp_path / "own" / "index").exists()


def test_check_inputs_says_what_recall_will_mean(tmp_path):
    corpus, qa = write(tmp_path, n_passages=10)
    assert check_inputs(corpus, qa) == {"n_passages": 10, "n_questions": 10, "n_answered": 10,
                                        "recall_kind": ANSWER_IN_PASSAGE}
    with_gold = tmp_path / "gold.jsonl"
    with_gold.write_text('{"question": "When?", "answers": ["x"], "gold_passage_id": "p00003"}\n')
    assert check_inputs(corpus, with_gold)["recall_kind"] == GOLD_PASSAGE
