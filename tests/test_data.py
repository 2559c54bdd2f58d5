"""Tests for the seeded synthetic data set (refrag_lib.course.synthetic_corpus) and the loaders users feed their files
through (refrag_lib.data)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from refrag_lib.course import synthetic_corpus
from refrag_lib.course.synthetic_corpus import FILE_NAMES, write_dataset
from refrag_lib.data import Passage, QAExample, default_data_dir, load_documents, load_passages, load_qa

SMALL = {"n_passages": 60, "n_documents": 4, "n_qa_train": 40, "n_qa_eval": 10,
         "doc_min_words": 200, "doc_max_words": 300}
ID = re.compile(r"\b(?:City|Person|Material|Institute|River)_\d{3}\b|\b[A-Z]{2}-\d{3,5}\b")
SHIPPED = default_data_dir()


def read_bytes(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in FILE_NAMES}


@pytest.fixture(scope="module")
def corpus() -> dict[str, Passage]:
    return {p.id: p for p in load_passages(SHIPPED / "corpus.jsonl")}


@pytest.fixture(scope="module")
def qa() -> tuple[list[QAExample], list[QAExample]]:
    return load_qa(SHIPPED / "qa_train.jsonl"), load_qa(SHIPPED / "qa_eval.jsonl")


# --- generation --------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    first = read_bytes(Path(write_dataset(tmp_path / "a", seed=3, **SMALL)["corpus.jsonl"]).parent)
    again = read_bytes(Path(write_dataset(tmp_path / "b", seed=3, **SMALL)["corpus.jsonl"]).parent)
    other = read_bytes(Path(write_dataset(tmp_path / "c", seed=4, **SMALL)["corpus.jsonl"]).parent)
    assert first == again
    for name in FILE_NAMES:
        assert first[name] != other[name], name
        assert first[name].endswith(b"\n") and b"\r" not in first[name]


def test_shipped_files_equal_a_fresh_regeneration(tmp_path):
    write_dataset(tmp_path, seed=0)
    fresh = read_bytes(tmp_path)
    shipped = read_bytes(SHIPPED)
    for name in FILE_NAMES:
        assert shipped[name] == fresh[name], f"data/{name} differs: run python -m refrag_lib data --out data"


def test_more_documents_do_not_change_the_corpus_or_questions(tmp_path):
    write_dataset(tmp_path / "a", **SMALL)
    write_dataset(tmp_path / "b", **{**SMALL, "n_documents": 7})
    for name in ("corpus.jsonl", "qa_train.jsonl", "qa_eval.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert len(load_documents(tmp_path / "b" / "documents.jsonl")) == 7


def test_cli_main_writes_the_requested_counts(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--seed", "1", "--passages", "50", "--documents", "3",
            "--qa-train", "20", "--qa-eval", "5", "--doc-min-words", "100", "--doc-max-words", "150"]
    assert synthetic_corpus.main(argv) == 0
    assert len(load_passages(tmp_path / "corpus.txt")) == 50
    assert len(load_documents(tmp_path / "documents.jsonl")) == 3
    assert len(load_qa(tmp_path / "qa_train.jsonl")) == 20
    assert len(load_qa(tmp_path / "qa_eval.jsonl")) == 5
    assert "corpus.jsonl" in capsys.readouterr().out


def test_impossible_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="n_passages"):
        write_dataset(tmp_path, n_passages=5)
    with pytest.raises(ValueError, match="fewer questions"):
        write_dataset(tmp_path, **{**SMALL, "n_qa_train": 10_000})
    with pytest.raises(ValueError, match="doc_min_words"):
        write_dataset(tmp_path, **{**SMALL, "doc_min_words": 500, "doc_max_words": 400})


# --- the shipped data set ----------------------------------------------------------------------


def test_shipped_counts_sizes_and_formats(corpus, qa):
    qa_train, qa_eval = qa
    assert len(corpus) == 2000 and len(qa_train) == 1500 and len(qa_eval) == 300
    assert len(load_documents(SHIPPED / "documents.jsonl")) == 300
    assert sum((SHIPPED / name).stat().st_size for name in FILE_NAMES) < 6_000_000
    assert Counter(p.type for p in corpus.values()) == {t: 400 for t in synthetic_corpus.TYPES}
    for p in corpus.values():
        name = p.title.split()[-1]
        assert p.text.startswith(f"TITLE: {p.title}. ") and name in p.text[len(p.title) + 9:]
        assert "\n" not in p.text
        assert 50 <= len(p.text.split()) <= 90, p.id


def test_txt_corpus_matches_jsonl_corpus(corpus):
    from_txt = load_passages(SHIPPED / "corpus.txt")
    assert [(p.id, p.text, p.title) for p in from_txt] == [(p.id, p.text, p.title) for p in corpus.values()]


def test_every_gold_passage_exists_and_contains_every_answer(corpus, qa):
    for example in qa[0] + qa[1]:
        gold = corpus[example.gold_passage_id]
        assert gold.type == example.type
        assert gold.title.endswith(" " + ID.findall(example.question)[0])
        for answer in example.answers:
            assert answer in gold.text, (example.id, answer)


def test_train_and_eval_share_no_question_and_no_gold_passage(qa):
    qa_train, qa_eval = qa
    train_questions = {q.question for q in qa_train}
    assert len(train_questions) == len(qa_train)
    assert train_questions.isdisjoint(q.question for q in qa_eval)
    assert {q.gold_passage_id for q in qa_train}.isdisjoint(q.gold_passage_id for q in qa_eval)
    assert len({q.id for q in qa_train + qa_eval}) == len(qa_train) + len(qa_eval)


def test_questions_use_several_templates_per_type(qa):
    skeletons = Counter()
    for q in qa[0]:
        skeletons[(q.type, ID.sub("X", q.question))] += 1
    for kind in synthetic_corpus.TYPES:
        assert sum(1 for t, _ in skeletons if t == kind) >= 8, kind


def test_corpus_has_many_near_duplicates(corpus):
    skeletons = Counter(re.sub(r"\d+", "0", ID.sub("X", p.text)) for p in corpus.values())
    with_twin = sum(n for n in skeletons.values() if n > 1)
    assert with_twin >= 0.5 * len(corpus)
    rivers = Counter(re.search(r"River_\d{3}", p.text.split(". ", 1)[1]).group()
                     for p in corpus.values() if p.type == "city")
    assert sum(n for n in rivers.values() if n > 1) >= 0.3 * 400


def test_documents_refer_back_to_their_first_paragraph():
    documents = load_documents(SHIPPED / "documents.jsonl")
    referring = 0
    for text in documents:
        paragraphs = text.split("\n\n")
        assert len(paragraphs) >= 4
        assert 600 <= len(text.split()) <= 1400
        subject, *stated = ID.findall(paragraphs[0])  # the subject's name recurs trivially; skip it
        first_ids = set(stated) - {subject}
        later = "\n\n".join(paragraphs[1:])
        referring += any(i in later for i in first_ids)
    assert referring >= 0.9 * len(documents)


# --- loaders on the formats users bring --------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_load_passages_from_txt_skips_blank_lines(tmp_path):
    text = "TITLE: Atlas Entry – City_0. City_0 is old.\n\n  \nplain passage\n"
    path = write(tmp_path / "corpus.txt", text)
    assert load_passages(path) == [
        Passage("p00000", "TITLE: Atlas Entry – City_0. City_0 is old.", "Atlas Entry – City_0"),
        Passage("p00001", "plain passage"),
    ]


def test_load_passages_from_jsonl_with_optional_fields(tmp_path):
    lines = [{"text": "first", "extra": 1}, {"id": "x9", "text": "second", "type": "city", "title": "T"}]
    path = write(tmp_path / "c.jsonl", "\n".join(json.dumps(r) for r in lines) + "\n")
    assert load_passages(path) == [Passage("p00000", "first"), Passage("x9", "second", "T", "city")]


def test_load_documents_accepts_text_tokens_and_txt(tmp_path):
    public = {"id": "cpt-0", "tokens": "long text here", "split": {"s": 2048, "o": 256}}
    path = write(tmp_path / "d.jsonl", json.dumps(public) + "\n" + json.dumps({"text": "own text"}) + "\n")
    assert load_documents(path) == ["long text here", "own text"]
    assert load_documents(write(tmp_path / "d.txt", "doc one\n\ndoc two\n")) == ["doc one", "doc two"]


def test_load_qa_accepts_answers_list_or_single_answer(tmp_path):
    lines = [{"question": "Which river flows through City_3?", "answers": ["River_033", "R33"]},
             {"id": "k", "question": "Who?", "answer": "Person_1", "gold_passage_id": "p00002",
              "type": "city"}]
    path = write(tmp_path / "qa.jsonl", "\n".join(json.dumps(r) for r in lines) + "\n")
    assert load_qa(path) == [
        QAExample("q00000", "Which river flows through City_3?", ("River_033", "R33")),
        QAExample("k", "Who?", ("Person_1",), "p00002", "city"),
    ]


# --- error messages ----------------------------------------------------------------------------


@pytest.mark.parametrize("loader", [load_passages, load_documents, load_qa])
def test_missing_file_names_path_and_how_to_generate(tmp_path, loader):
    missing = tmp_path / "nowhere.jsonl"
    with pytest.raises(FileNotFoundError) as err:
        loader(missing)
    assert str(missing) in str(err.value) and "python -m refrag_lib data --out data" in str(err.value)


@pytest.mark.parametrize("loader", [load_passages, load_documents, load_qa])
def test_bad_json_line_names_file_and_line(tmp_path, loader):
    good = json.dumps({"text": "t", "question": "q?", "answers": ["a"]})
    path = write(tmp_path / "bad.jsonl", good + "\n{not json\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 2: invalid JSON"):
        loader(path)


@pytest.mark.parametrize(("loader", "rows", "field"), [
    (load_passages, [{"text": "ok"}, {"title": "no text"}], "'text'"),
    (load_documents, [{"tokens": "ok"}, {"split": {"s": 8}}], "'text'"),
    (load_documents, [{"text": "ok"}, {"tokens": ["not", "text"]}], "'tokens'"),
    (load_qa, [{"question": "q?", "answers": ["a"]}, {"question": "q?"}], "'answers'"),
    (load_qa, [{"question": "q?", "answers": ["a"]}, {"question": "q?", "answers": []}], "'answers'"),
    (load_qa, [{"question": "q?", "answers": ["a"]}, {"question": " ", "answers": ["a"]}], "'question'"),
])
def test_wrong_schema_names_line_and_field(tmp_path, loader, rows, field):
    path = write(tmp_path / "rows.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(ValueError) as err:
        loader(path)
    assert "line 2" in str(err.value) and field in str(err.value) and "rows.jsonl" in str(err.value)


def test_empty_file_unsupported_suffix_and_duplicate_ids(tmp_path):
    with pytest.raises(ValueError, match="has no passages"):
        load_passages(write(tmp_path / "empty.txt", "\n \n"))
    with pytest.raises(ValueError, match="has no questions"):
        load_qa(write(tmp_path / "empty.jsonl", ""))
    with pytest.raises(ValueError, match="unsupported file type '.csv'"):
        load_passages(write(tmp_path / "corpus.csv", "a,b\n"))
    with pytest.raises(ValueError, match="'a' appears more than once"):
        load_passages(write(tmp_path / "dup.jsonl", '{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n'))
