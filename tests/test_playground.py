"""The playground's pieces that need no trained model: run discovery, the HTML, the widget form."""

import json

from refrag_lib.course.playground import Playground, controls, render_html, trained_runs
from refrag_lib.runs import open_run


def fake_finished_run(folder, k, preset="cpu"):
    (folder / "sft" / "ready_index").mkdir(parents=True)
    (folder / "sft" / "ready_index" / "ready.json").write_text(json.dumps({"k": k}))
    (folder / "sft" / "metrics.json").write_text(json.dumps({"preset": preset}))


def test_trained_runs_finds_this_run_and_finished_siblings_of_the_same_preset(tmp_path):
    fake_finished_run(tmp_path / "cpu", 16)
    fake_finished_run(tmp_path / "cpu-k8", 8)
    fake_finished_run(tmp_path / "t4-run", 4, preset="t4")
    (tmp_path / "cpu-k32" / "sft").mkdir(parents=True)  # notebook 05 not finished
    found = trained_runs(open_run("cpu", tmp_path / "cpu"))
    assert found == {16: (tmp_path / "cpu").resolve(), 8: tmp_path / "cpu-k8"}


def answer(text, ttft, positions, passages=(), expanded=()):
    return {"answer": text, "ttft_ms": ttft, "input_positions": positions, "passages": list(passages),
            "expanded_chunks": list(expanded), "n_chunks": 4}


def test_render_html_escapes_and_colours_chunks():
    passage = {"id": "p1", "score": 0.5, "chunks": [{"text": "<b>x</b>", "expanded": True},
                                                     {"text": "y", "expanded": False}]}
    result = {"question": "<script>alert(1)</script>", "k": 16, "p": 0.25, "selector": "rl",
              "rag": answer("River_1", 400.0, 300), "refrag": answer("River_2", 100.0, 40, [passage], ["<b>x</b>"])}
    html = render_html(result)
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert "4.0x sooner" in html and "expanded 1 of 4 chunks" in html
    assert html.count("#c8f0c8") == 2 and html.count("#e4e4e4") == 2  # legend + one chunk each


class FakePlayground:
    ks = [8, 16]

    def __init__(self):
        self.asked = []

    def n_passages(self, k=None):
        return 7

    def ask(self, *args):
        self.asked.append(args)
        return "<p>answer</p>"


def test_form_sends_its_values_to_ask():
    playground = FakePlayground()
    form = controls(playground, "Where?", top_k=3, p=0.25)
    question, (k, selector), (p, top_k), button, answer_box = (
        form.children[0], form.children[1].children, form.children[2].children, form.children[3], form.children[4])
    assert question.value == "Where?" and list(k.options) == [8, 16] and top_k.max == 7
    k.value, selector.value, p.value = 16, "random", 0.5
    button.click()
    assert playground.asked == [("Where?", 16, 0.5, 3, "random")] and answer_box.value == "<p>answer</p>"


class BrokenPlayground(Playground):
    """A playground whose answering path fails the way a bug would (not a CourseError)."""

    def __init__(self):
        pass

    def compare(self, *args, **kwargs):
        raise RuntimeError("tensor shapes do not match")


def test_an_unexpected_error_in_a_callback_is_shown_on_the_page_not_swallowed(caplog):
    html = BrokenPlayground().ask("Where?", 16, 0.25, 3)
    assert "Something went wrong" in html and "RuntimeError: tensor shapes do not match" in html
    assert "the playground failed" in caplog.text and "Traceback" in caplog.text  # the server's log keeps it


def test_the_page_needs_a_finished_run_and_listens_on_this_machine_only(tmp_path):
    from pathlib import Path

    import pytest

    from refrag_lib.course.playground_page import prepare_page, voila_command
    from refrag_lib.errors import CourseError

    with pytest.raises(CourseError, match="has not finished notebooks/05_sft.ipynb.*make course"):
        prepare_page(open_run("cpu", tmp_path / "empty"))
    command = voila_command(Path("page.ipynb"), 8866)
    assert "--Voila.ip=127.0.0.1" in command and "--Voila.port=8866" in command and "--no-browser" in command
    assert "--Voila.port_retries=0" in command  # a busy port fails instead of serving elsewhere


def test_a_busy_port_is_refused_with_the_make_variable_to_change(tmp_path, capsys, monkeypatch):
    import socket

    from refrag_lib.__main__ import main

    monkeypatch.delenv("REFRAG_DEBUG", raising=False)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["playground", "--run-dir", str(tmp_path), "--port", str(port)]) == 1
    assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err
