"""`python -m refrag_lib ...` speaks like a tool: a mistake the course explains is one line on stderr."""

import subprocess
import sys

import pytest

from refrag_lib.__main__ import main
from refrag_lib.errors import MissingArtifactError


@pytest.mark.parametrize("argv, says", [
    (["train", "--stage", "cpt", "--steps", "1"], "CPT starts from the reconstruction weights"),
    (["generate", "--question", "Where?"], "notebook"),
    (["regress", "--baseline", "tests/baselines/cpu.json"], "notebook"),
])
def test_a_course_error_prints_its_message_alone(argv, says, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("REFRAG_DEBUG", raising=False)
    assert main([*argv, "--run-dir", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and says in err and "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    argv = ["train", "--stage", "cpt", "--steps", "1", "--run-dir", str(tmp_path)]
    with pytest.raises(MissingArtifactError):
        main([*argv, "--debug"])
    monkeypatch.setenv("REFRAG_DEBUG", "1")
    with pytest.raises(MissingArtifactError):
        main(argv)


def test_the_real_entry_point_exits_non_zero_without_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "refrag_lib", "train", "--stage", "cpt", "--steps", "1",
                           "--run-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr


def test_bad_data_files_print_their_line_and_field_not_a_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("REFRAG_DEBUG", raising=False)
    corpus, qa = tmp_path / "corpus.txt", tmp_path / "qa.jsonl"
    corpus.write_text("The Kestrel sailed in 1893.\n")
    qa.write_text('{"question": "When did the Kestrel sail?", "answers": ["1893"]}\n{"question": "Who?"}\n')
    for argv, says in [
        (["own-data", "--passages", str(tmp_path / "nowhere.txt"), "--qa", str(qa)], "data file not found"),
        (["own-data", "--passages", str(corpus), "--qa", str(qa)], "qa.jsonl, line 2: missing field 'answers'"),
        (["index", "--passages", str(tmp_path / "corpus.csv"), "--qa", str(qa)], "data file not found"),
        (["own-data", "--passages", str(corpus), "--qa", str(corpus)], "unsupported file type '.txt'"),
    ]:
        course = ["--trained-run", str(tmp_path / "course")] if argv[0] == "own-data" else []
        assert main([*argv, *course, "--run-dir", str(tmp_path / "run")]) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and says in err and "Traceback" not in err, (argv, err)
