"""A learner's own corpus and questions through the reading notebooks: `make own-data CORPUS=... QA=...`.

The files may be in the format most public REFRAG code uses: a .txt corpus with one passage per line (or
.jsonl with "text"), and QA lines {"question": ..., "answers": [...]} with no gold passage id. The models
stay the ones the course trained (notebooks 02-05 of TRAINED_RUN, on the course's documents and
questions): this command indexes the learner's corpus (notebook 01), evaluates both fine-tuned readers
on the learner's questions (notebook 05, nothing trained) and opens the playground on them (notebook 07),
all in a run folder of its own, so the course run is left as it was. Every file is read and checked
before the first notebook starts, so a wrong path or a bad line fails in seconds, not after embedding.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import PRESETS
from ..data import load_passages, load_qa
from ..errors import CourseError
from ..index import ANSWER_IN_PASSAGE, relevant_rows
from ..runs import Run, open_run
from .notebooks import NOTEBOOK_DIR, run_notebook

READING_NOTEBOOKS = ("01_indexing", "05_sft", "07_playground")
TRAINED_FILES = ("sft/metrics.json", "sft/rag/weights.safetensors", "sft/refrag/weights.safetensors")


def check_inputs(passages_path: str | Path, qa_path: str | Path) -> dict:
    """Read both files (each bad line named with its field) and check that some passage answers some
    question; returns what the run will measure, for the learner to see before it starts."""
    passages, questions = load_passages(passages_path), load_qa(qa_path)
    relevant, kind = relevant_rows(passages, questions)
    answered = sum(bool(rows) for rows in relevant)
    if not answered:
        raise CourseError(f"No passage of {passages_path} contains an answer of a question in {qa_path} (after "
                          "lower-casing and dropping punctuation): were the questions written for this corpus?")
    return {"n_passages": len(passages), "n_questions": len(questions), "n_answered": answered, "recall_kind": kind}


def check_trained(trained: Run) -> dict:
    """The course run whose models are evaluated must have finished notebook 05; returns its sft metrics."""
    missing = [name for name in TRAINED_FILES if not (trained.root / name).is_file()]
    if missing:
        raise CourseError(f"{trained.root} has not finished notebooks/05_sft.ipynb ({missing[0]} is missing), so "
                          "there are no fine-tuned readers to evaluate on your data: run `make course` first "
                          "(or `make smoke` and pass TRAINED_RUN=runs/cpu-smoke).")
    return json.loads((trained.root / "sft" / "metrics.json").read_text())


def run_own_data(passages_path: str | Path, qa_path: str | Path, trained: Run, own: Run, smoke: bool = False,
                 eval_questions: int = 0) -> dict:
    """Notebooks 01, 05 and 07 on the learner's files in `own`, with the readers of `trained`; returns the
    figures the note and docs/own-data.md ask for (recall@1/5/10 and what a hit meant, EM of both readers)."""
    if own.root == trained.root:
        raise CourseError(f"the run folder for your data must not be the course run {trained.root}: its index "
                          "and results would be replaced. Choose another (OWN_RUN=runs/cpu-own).")
    inputs = check_inputs(passages_path, qa_path)
    sft = check_trained(trained)
    print(f"{inputs['n_passages']} passages, {inputs['n_questions']} questions ({inputs['n_answered']} answered by "
          f"some passage); a retrieval hit is the {inputs['recall_kind']}. Readers from {trained.root}.", flush=True)
    shared = {"PRESET": own.preset.name, "RUN_DIR": str(own.root), "SMOKE": smoke,
              "QUESTIONS": str(Path(qa_path).resolve())}
    reader = {"SELECTOR": sft["selector"], "P": sft["p"], "TOP_K": sft["top_k"]}  # as notebook 05 trained it
    parameters = {"01_indexing": {"PASSAGES": str(Path(passages_path).resolve())},
                  "05_sft": {"TRAINED_RUN": str(trained.root), "EVAL_QUESTIONS": eval_questions, **reader},
                  "07_playground": reader}
    for stem in READING_NOTEBOOKS:
        print(f"running {stem} on your data -> {own.root / 'executed'}", flush=True)
        run_notebook(NOTEBOOK_DIR / f"{stem}.ipynb", own.root / "executed", {**shared, **parameters[stem]})
    index = json.loads((own.root / "index" / "metrics.json").read_text())
    result = json.loads((own.root / "sft" / "metrics.json").read_text())
    recall = {key: value for key, value in index.items() if key.startswith("recall_at_")}
    rows = ("rag", "refrag")
    return {**inputs, **recall, "n_eval": result["n_eval"],
            **{key: {row: result[key][row] for row in rows} for key in ("exact_match", "exact_match_ci", "ttft_ms")}}


def main(argv: list[str] | None = None) -> int:
    """`python -m refrag_lib own-data --passages corpus.txt --qa qa.jsonl`: your files through notebooks 01, 05, 07."""
    parser = argparse.ArgumentParser(prog="python -m refrag_lib own-data", description=main.__doc__)
    parser.add_argument("--passages", required=True, help="your corpus: .txt (one passage per line) or .jsonl")
    parser.add_argument("--qa", required=True, help='your questions: .jsonl lines {"question": ..., "answers": [...]}')
    parser.add_argument("--preset", default="cpu", choices=[*PRESETS, "auto"])
    parser.add_argument("--trained-run", default="", help="the course run that trained the readers "
                        "(default runs/<preset>)")
    parser.add_argument("--run-dir", default="", help="where your run goes (default: the trained run + '-own')")
    parser.add_argument("--smoke", action="store_true", help="the notebooks' SMOKE sizes (a part of your corpus)")
    parser.add_argument("--eval-questions", type=int, default=0,
                        help="questions notebook 05 evaluates (default 0: the preset's, cpu 150)")
    args = parser.parse_args(argv)
    trained = open_run(args.preset, args.trained_run)
    own = open_run(args.preset, args.run_dir or trained.root.with_name(trained.root.name + "-own"), smoke=args.smoke)
    summary = run_own_data(args.passages, args.qa, trained, own, smoke=args.smoke, eval_questions=args.eval_questions)
    kind = "gold passage" if summary["recall_kind"] != ANSWER_IN_PASSAGE else "a passage holding the answer"
    print(f"\nrecall@1/5/10 ({kind} among the top k): "
          + " / ".join(f"{summary.get(f'recall_at_{k}', float('nan')):.2f}" for k in (1, 5, 10)))
    for row in ("rag", "refrag"):
        low, high = summary["exact_match_ci"][row]
        print(f"{row:6s} EM {summary['exact_match'][row]:.2f} [{low:.2f}, {high:.2f}] on {summary['n_eval']} "
              f"questions, TTFT {summary['ttft_ms'][row]:.0f} ms")
    print(f"executed notebooks in {own.root / 'executed'}; ask more with\n  python -m refrag_lib generate "
          f"--run-dir {own.root} --question \"...\"\n  make playground RUN_DIR={own.root}")
    return 0
