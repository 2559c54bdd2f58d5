"""The corpus the course reads: its records (Passage, QAExample) and the loaders every notebook reads through.

The course's own data set is the synthetic encyclopedia in data/, written by refrag_lib.course.synthetic_corpus
(why synthetic, and what it holds, is said there). The loaders also accept the plain formats people already have
(a .txt corpus with one passage per line, {"tokens": ..., "split": ...} CPT lines, {"question", "answers"} QA
lines), and refuse a malformed file with the line at fault.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import DataFormatError, MissingArtifactError

REGENERATE_HINT = "run `python -m refrag_lib data --out data` to generate the course data, or check the path"
TITLE_PREFIX = "TITLE: "


# --------------------------------------------------------------------------------------------------
# Records returned by the loaders
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Passage:
    """One retrievable passage; title and type are optional so plain .txt corpora fit too."""

    id: str
    text: str
    title: str = ""
    type: str = ""


@dataclass(frozen=True)
class QAExample:
    """One question; gold_passage_id is None when the user's file does not say which passage answers."""

    id: str
    question: str
    answers: tuple[str, ...]
    gold_passage_id: str | None = None
    type: str = ""


def passages_fingerprint(passages: Sequence[Passage]) -> str:
    """A short hash of the passage ids and texts: ties an index and a chunk store to one passage list."""
    digest = hashlib.sha256()
    for p in passages:
        digest.update(f"{p.id}\t{p.text}\n".encode())
    return digest.hexdigest()[:16]


def default_data_dir() -> Path:
    """The data/ folder shipped next to the package, so notebooks find it from any working directory."""
    return Path(__file__).resolve().parent.parent / "data"


# --------------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------------


def _existing(path: str | Path) -> Path:
    """The path as a Path, or an error that says how to create the course data."""
    path = Path(path)
    if not path.is_file():
        raise MissingArtifactError(f"data file not found: {path}; {REGENERATE_HINT}")
    return path


def _suffix(path: Path, allowed: tuple[str, ...]) -> str:
    """The file type, checked early so a wrong file fails with a clear message, not a JSON error."""
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise DataFormatError(f"{path}: unsupported file type {suffix or '(none)'!r}; expected one of "
                         f"{', '.join(allowed)}")
    return suffix


def _text_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, stripped line) for every non-blank line."""
    with open(path, encoding="utf-8") as f:
        return [(n, line.strip()) for n, line in enumerate(f, start=1) if line.strip()]


def _json_rows(path: Path) -> list[tuple[int, dict]]:
    """(1-based line number, object) for every non-blank line; bad lines name the file and line."""
    rows = []
    for n, line in _text_lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFormatError(f"{path}, line {n}: invalid JSON ({err.msg}); expected one JSON object "
                             "per line") from None
        if not isinstance(row, dict):
            raise DataFormatError(f"{path}, line {n}: expected a JSON object, got {type(row).__name__}")
        rows.append((n, row))
    return rows


def _field(path: Path, n: int, row: dict, name: str, expected: str, ok: Callable[[object], bool]) -> object:
    """A required field of a JSON line, with a message naming file, line, field and expected shape."""
    if name not in row:
        raise DataFormatError(f"{path}, line {n}: missing field {name!r} (expected {expected})")
    value = row[name]
    if not ok(value):
        raise DataFormatError(f"{path}, line {n}: field {name!r} must be {expected}, got {value!r:.80}")
    return value


def _optional_str(path: Path, n: int, row: dict, name: str, default: str | None) -> str | None:
    """An optional text field (id, title, type); ints are accepted as ids since some files use them."""
    if row.get(name) is None:
        return default
    return str(_field(path, n, row, name, "a string", lambda v: isinstance(v, (str, int))))


def _nonempty_str(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _not_empty(path: Path, items: list, what: str) -> list:
    """Empty inputs are almost always a wrong path or a failed export: fail loudly."""
    if not items:
        raise DataFormatError(f"{path} has no {what}; expected at least one non-blank line")
    return items


def split_title(line: str) -> str:
    """The title of a "TITLE: <title>. <body>" line, or "" for lines without that prefix."""
    if not line.startswith(TITLE_PREFIX) or ". " not in line:
        return ""
    return line[len(TITLE_PREFIX):line.index(". ")]


def load_passages(path: str | Path) -> list[Passage]:
    """Passages from a .txt (one per line; ids p00000, p00001, ... over non-blank lines) or a .jsonl.

    JSONL lines need "text"; "id", "title" and "type" are optional and other fields are ignored.
    """
    path = _existing(path)
    if _suffix(path, (".txt", ".jsonl")) == ".txt":
        lines = [line for _, line in _text_lines(path)]
        passages = [Passage(f"p{i:05d}", line, split_title(line)) for i, line in enumerate(lines)]
    else:
        passages = []
        for i, (n, row) in enumerate(_json_rows(path)):
            text = _field(path, n, row, "text", "a non-empty string", _nonempty_str).strip()
            title = _optional_str(path, n, row, "title", split_title(text))
            passages.append(Passage(_optional_str(path, n, row, "id", f"p{i:05d}"), text, title,
                                    _optional_str(path, n, row, "type", "")))
    seen = set()
    for p in passages:
        if p.id in seen:
            raise DataFormatError(f"{path}: passage id {p.id!r} appears more than once; ids must be unique")
        seen.add(p.id)
    return _not_empty(path, passages, "passages")


def load_documents(path: str | Path) -> list[str]:
    """Long texts for reconstruction/CPT from .jsonl ("text", or the public "tokens" field) or .txt.

    The public format {"id": "cpt-0", "tokens": "<long text>", "split": {"s": 2048, "o": 256}} keeps
    text in a field named tokens; its split is ignored here because the course sets s and o itself.
    A .txt file holds one document per line.
    """
    path = _existing(path)
    if _suffix(path, (".txt", ".jsonl")) == ".txt":
        return _not_empty(path, [line for _, line in _text_lines(path)], "documents")
    documents = []
    for n, row in _json_rows(path):
        name = "text" if "text" in row or "tokens" not in row else "tokens"
        documents.append(_field(path, n, row, name, "a non-empty string of text ('text' or 'tokens')",
                                _nonempty_str))
    return _not_empty(path, documents, "documents")


def _answers(path: Path, n: int, row: dict) -> tuple[str, ...]:
    """The answers list, or a single "answer" string as a one-element tuple."""
    if "answers" not in row and "answer" in row:
        return (_field(path, n, row, "answer", "a non-empty string", _nonempty_str),)
    answers = _field(path, n, row, "answers", "a non-empty list of strings",
                     lambda v: isinstance(v, list) and bool(v) and all(_nonempty_str(a) for a in v))
    return tuple(answers)


def load_qa(path: str | Path) -> list[QAExample]:
    """Questions from a .jsonl: "question" and "answers" (or "answer") required; gold id and type optional."""
    path = _existing(path)
    _suffix(path, (".jsonl",))
    examples = []
    for i, (n, row) in enumerate(_json_rows(path)):
        question = _field(path, n, row, "question", "a non-empty string", _nonempty_str)
        gold = _optional_str(path, n, row, "gold_passage_id", None)
        examples.append(QAExample(_optional_str(path, n, row, "id", f"q{i:05d}"), question.strip(),
                                  _answers(path, n, row), gold, _optional_str(path, n, row, "type", "")))
    return _not_empty(path, examples, "questions")
