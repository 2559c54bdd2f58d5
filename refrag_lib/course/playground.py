"""The playground of notebook 07: one question, ordinary RAG and REFRAG side by side, every knob a widget.

Both readers are the fine-tuned models of notebook 05 and read the same retrieved passages: RAG as
tokens, REFRAG as cached chunk vectors with a fraction p of chunks expanded by the chosen selector.
Each k the course was trained for lives in its own run folder (this run and its siblings, e.g.
runs/cpu and runs/cpu-k8), so the k menu offers exactly the trained ones.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path

from ..answering import generate_answer, retrieve_question
from ..errors import CourseError
from ..ready_index import READY_FILE, READY_FOLDER, check_request, load_run_ready, weights_run
from ..runs import Run, open_run
from ..selectors import DEFAULT_SELECTOR, SELECTORS, make_selector
from ..trained import load_sft_model

# A chunk's background, with dark text on it: readable in a light and a dark notebook theme alike.
EXPANDED, COMPRESSED = "#c8f0c8", "#e4e4e4"

log = logging.getLogger(__name__)


def trained_runs(run: Run) -> dict[int, Path]:
    """k -> run folder, for this run and its sibling folders that finished notebook 05 with the same preset."""
    found = {}
    for folder in [run.root, *sorted(p for p in run.root.parent.iterdir() if p.is_dir())]:
        ready, metrics = folder / "sft" / READY_FOLDER / READY_FILE, folder / "sft" / "metrics.json"
        if ready.is_file() and metrics.is_file() and json.loads(metrics.read_text()).get("preset") == run.preset.name:
            found.setdefault(int(json.loads(ready.read_text())["k"]), folder)
    return found


class Playground:
    """Loads each k's models on first use and answers with both readers."""

    def __init__(self, run: Run):
        self.run = run
        self.runs = trained_runs(run)
        if not self.runs:
            raise CourseError(f"No run under {run.root.parent} has finished notebooks/05_sft.ipynb for preset "
                              f"'{run.preset.name}': run notebooks 01-05 first (SMOKE = True takes a few minutes).")
        self._loaded = {}

    @property
    def ks(self) -> list[int]:
        return sorted(self.runs)

    def _models(self, k: int):
        if k not in self.runs:
            folder = self.run.root.parent / f"{self.run.preset.name}-k{k}"
            raise CourseError(f"k = {k} has not been trained: choose one of {self.ks}, or train it by running "
                              f"notebooks 01-05 with K = {k} and RUN_DIR = '{folder}'.")
        if k not in self._loaded:
            sibling = open_run(self.run.preset.name, self.runs[k], k=k)
            self._loaded[k] = (load_run_ready(sibling), load_sft_model(weights_run(sibling), "rag"))
        return self._loaded[k]

    def n_passages(self, k: int | None = None) -> int:
        return len(self._models(k or self.ks[0])[0].index.passages)

    def compare(self, question: str, k: int, p: float, top_k: int, selector: str = DEFAULT_SELECTOR, seed: int = 0,
                max_new_tokens: int = 12, repeats: int = 3) -> dict:
        """Both answers for one question, with the TTFT of each and every chunk marked expanded or compressed."""
        if selector not in SELECTORS:
            raise CourseError(f"Unknown selector {selector!r}: choose one of {', '.join(SELECTORS)}.")
        if k in self.runs:  # refused before the models of k load (an unknown k is refused by _models)
            check_request(open_run(self.run.preset.name, self.runs[k], k=k), question, top_k, p)
        ready, rag_model = self._models(k)
        chooser = make_selector(selector, ready.policies, ready.model, seed)
        retrieved = retrieve_question(ready, question, top_k)  # one retrieval: both readers see the same passages
        refrag = generate_answer(ready, question, top_k, p, max_new_tokens, repeats, selector=chooser,
                                 retrieved=retrieved)
        rag = generate_answer(ready, question, top_k, p, max_new_tokens, repeats, arm="rag", model=rag_model,
                              retrieved=retrieved)
        return {"question": question, "k": k, "p": p, "top_k": top_k, "selector": selector, "rag": rag,
                "refrag": refrag}

    def ask(self, question: str, k: int, p: float, top_k: int, selector: str = DEFAULT_SELECTOR) -> str:
        """compare() as HTML; bad input becomes a friendly message instead of a traceback.

        A widget callback that raises shows nothing on the page (the error goes to the kernel's log), so
        an unexpected error is turned into a message too, its traceback logged for whoever runs the server.
        """
        try:
            return render_html(self.compare(question, k, p, top_k, selector))
        except CourseError as err:
            return message_html("Cannot answer yet:", str(err))
        except Exception as err:  # the page must say something; the log keeps the traceback
            log.exception("the playground failed on %r", question)
            return message_html("Something went wrong:", f"{type(err).__name__}: {err}. The traceback is in the "
                                "log of the notebook's kernel (the terminal that runs `make playground`).")


def message_html(title: str, text: str) -> str:
    """The playground's one way of saying that no answer came, in red on the page."""
    return f"<p class='playground-message' style='color:#a33'><b>{title}</b> {html.escape(text)}</p>"


def render_html(result: dict) -> str:
    """The two answers with TTFT and decoder length, then the passages with each chunk coloured."""
    rag, refrag = result["rag"], result["refrag"]
    speedup = rag["ttft_ms"] / refrag["ttft_ms"] if refrag["ttft_ms"] > 0 else float("nan")
    rows = "".join(
        f"<tr><td><b>{name}</b></td><td>{html.escape(r['answer'])}</td><td>{r['ttft_ms']:.0f} ms</td>"
        f"<td>{r['input_positions']}</td></tr>"
        for name, r in (("RAG (tokens)", rag), (f"REFRAG k={result['k']}, p={result['p']:.2f}", refrag)))
    out = [f"<p><b>Q:</b> {html.escape(result['question'])}</p>",
           "<table style='border-spacing:14px 2px'><tr><th></th><th>answer</th><th>TTFT</th><th>decoder positions</th>"
           "</tr>" + rows + "</table>",
           f"<p>REFRAG's first token came {speedup:.1f}x sooner; it expanded {len(refrag['expanded_chunks'])} of "
           f"{refrag['n_chunks']} chunks ({SELECTORS[result['selector']]}). "
           f"<span style='background:{EXPANDED};color:#111'>expanded</span> chunks are read as tokens, "
           f"<span style='background:{COMPRESSED};color:#111'>compressed</span> ones as one vector each.</p>"]
    for rank, passage in enumerate(refrag["passages"], start=1):
        spans = "".join(
            f"<span style='background:{EXPANDED if c['expanded'] else COMPRESSED};color:#111;"
            "border-right:1px solid #999'>"
            f"{html.escape(c['text'])}</span>" for c in passage["chunks"])
        out.append(f"<p><b>{rank}. {html.escape(passage['id'])}</b> ({passage['score']:.2f}) {spans}</p>")
    return "\n".join(out)


def controls(playground: Playground, question: str = "", top_k: int = 3, p: float = 0.25,
             selector: str = DEFAULT_SELECTOR):
    """The ipywidgets form (works with ipywidgets 7 in Colab and 8 in Jupyter): ask, read the HTML answer."""
    import ipywidgets as widgets

    ask = widgets.Text(value=question, description="question", layout=widgets.Layout(width="80%"))
    k = widgets.Dropdown(options=playground.ks, value=playground.ks[0], description="k")
    fraction = widgets.FloatText(value=p, step=0.05, description="p (0 to 1)")  # typed: a wrong p gets the message
    most = min(20, playground.n_passages())
    passages = widgets.IntSlider(value=min(top_k, most), min=1, max=most, description="top-K", continuous_update=False)
    choose = widgets.Dropdown(options=list(SELECTORS), value=selector, description="selector")
    button = widgets.Button(description="Ask", button_style="primary")
    answer = widgets.HTML()
    answer.add_class("playground-answer")  # where the browser tests look for the answer

    def on_click(_):
        answer.value = "<p>thinking...</p>"
        answer.value = playground.ask(ask.value, k.value, fraction.value, passages.value, choose.value)

    button.on_click(on_click)
    form = widgets.VBox([ask, widgets.HBox([k, choose]), widgets.HBox([fraction, passages]), button, answer])
    form.add_class("playground-form")
    return form
