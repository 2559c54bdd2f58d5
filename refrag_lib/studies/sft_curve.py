"""The SFT learning curve: exact match on held-out questions against SFT steps, for both arms.

Notebook 05 trains each arm for the preset's sft_steps; this command shows what more steps buy, so the
budget is a measured choice. Each arm trains once for the longest budget and is evaluated at the
shorter step counts on the way (the same questions, with 95% intervals; step 0 is the common start).
An intermediate point has not had its learning rate decay yet: a run of exactly that many steps would
usually end a little better. REFRAG is scored with the selector it trains with, its chunk vectors
re-encoded at each point (the encoder is training) for the evaluation questions' passages only.
`python -m refrag_lib sft-curve --steps 30 60 120` writes RUN_DIR/sft/curve/curve.json; `--lr` and
`--batch-size` make it a lever row (`--name` keeps each row in its own folder, RUN_DIR/sft/<name>/).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import replace

from ..checkpoint import model_identity
from ..chunk_store import PassageChunks, build_chunk_store, load_chunk_store
from ..data import default_data_dir, load_qa
from ..errors import CourseError
from ..index import load_retriever, load_run_index
from ..policy import load_run_policies
from ..qa import answerable, retrieve_items
from ..qa_eval import Setting, evaluate_setting
from ..ready_index import READY_FOLDER
from ..runs import open_run
from ..selectors import DEFAULT_SELECTOR, make_selector
from ..sft import COURSE_SFT_LR, SFTConfig, SFTTask
from ..train import train
from ..trained import load_start_model


def passages_store(model, index, index_store, items, top_k: int):
    """The chunk store of the passages these questions read (c_i from the model's current encoder, the
    stored retriever keys), and the questions with their rows renumbered into it."""
    import torch

    rows = sorted({int(r) for it in items for r in it.rows[:top_k]})
    position = {r: i for i, r in enumerate(rows)}
    keys = torch.cat([index_store.keys_for([r]) for r in rows]) if index_store.keys is not None else None
    store = build_chunk_store(model, [index.passages[r] for r in rows], progress=False, keys=keys)
    renumbered = [replace(it, rows=[position[int(r)] for r in it.rows[:top_k]], gold=position.get(it.gold))
                  for it in items]
    return store, renumbered


def evaluate_point(model, arm: str, index, index_store, items, selector, p: float, top_k: int) -> dict:
    """One arm's exact match and F1 (with 95% intervals) on the held-out questions at K passages."""
    store, renumbered = passages_store(model, index, index_store, items, top_k)
    row = evaluate_setting(model, Setting(arm, arm, top_k), renumbered, store, selector, p, ttft_questions=1,
                           repeats=1, max_new_tokens=10)
    return {key: row[key] for key in ("exact_match", "exact_match_ci", "f1", "f1_ci")}


def learning_curve(run, steps: list[int], eval_questions: int = 150, train_questions: int = 400, top_k: int = 3,
                   p: float = 0.1, selector_name: str = DEFAULT_SELECTOR, arms=("rag", "refrag"),
                   lr: float = 0.0, batch_size: int = 1, name: str = "curve", progress: bool = True) -> dict:
    """{arm: [{step, seconds, exact_match, exact_match_ci, f1, f1_ci}, ...]} with the settings used."""

    if not steps or min(steps) < 1:
        raise CourseError(f"--steps needs positive step counts, got {steps}.")
    steps = sorted(set(steps))
    index = load_run_index(run)
    retriever = load_retriever(run.preset)
    train_items = retrieve_items(retriever, index, answerable(load_qa(default_data_dir() / "qa_train.jsonl"), index,
                                                              train_questions), top_k)
    eval_items = retrieve_items(retriever, index, answerable(load_qa(default_data_dir() / "qa_eval.jsonl"), index,
                                                             eval_questions), top_k)
    cfg = SFTConfig(steps=steps[-1], top_k=top_k, p=p, selector=selector_name, batch_size=batch_size,
                    lr=lr or COURSE_SFT_LR, save_every=steps[-1])
    curve = {"steps": steps, "n_eval": len(eval_items), "top_k": top_k, "p": p, "selector": selector_name,
             "batch_size": cfg.batch_size, "lr": cfg.lr}
    policies = load_run_policies(run, retriever.name)  # read once: SFT does not change them
    for arm in arms:
        model = load_start_model(run)
        index_store = load_chunk_store(run.require("index", "chunk_store.safetensors"), model, index, probe=0)
        selector = make_selector(selector_name, policies, model) if arm == "refrag" else None
        task = SFTTask(model, arm, cfg, train_items, PassageChunks(model, index.passages, keys=index_store), selector)
        out_dir = run.stage_dir("sft") / name / arm
        if out_dir.exists():
            raise CourseError(f"{out_dir} holds an earlier curve's training: delete it to measure the curve again.")
        points, done, seconds = [], 0, 0.0
        for target in [0, *steps]:
            if target > done:
                tick = time.perf_counter()
                train(model, cfg, task, out_dir, model_identity(run.preset, "sft"), max_new_steps=target - done,
                      progress=progress, keep_state=target < steps[-1])
                seconds += time.perf_counter() - tick
                done = target
            model.eval()
            point = evaluate_point(model, arm, index, index_store, eval_items, selector, p, top_k)
            points.append({"step": target, "train_seconds": round(seconds, 1), **point})
            print(f"{arm:6s} step {target:4d}  EM {point['exact_match']:.3f} [{point['exact_match_ci'][0]:.3f}, "
                  f"{point['exact_match_ci'][1]:.3f}]  F1 {point['f1']:.3f}  ({seconds:.0f} s of training)", flush=True)
        curve[arm] = points
    return curve


def main(argv: list[str] | None = None) -> int:
    """`python -m refrag_lib sft-curve`: EM against SFT steps for both arms, to RUN_DIR/sft/curve/curve.json."""
    parser = argparse.ArgumentParser(prog="python -m refrag_lib sft-curve", description=main.__doc__)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--run-dir", default="", help="artifacts folder (default runs/<preset>); needs notebooks 01-04")
    parser.add_argument("--steps", type=int, nargs="+", default=[30, 60, 120])
    parser.add_argument("--eval-questions", type=int, default=150)
    parser.add_argument("--selector", default=DEFAULT_SELECTOR)
    parser.add_argument("--p", type=float, default=0.1, help="share of REFRAG chunks expanded, in training and scoring")
    parser.add_argument("--arms", nargs="+", default=["rag", "refrag"], choices=["rag", "refrag"])
    parser.add_argument("--lr", type=float, default=0.0, help="peak LR of both arms (0: the course's 1e-4)")
    parser.add_argument("--batch-size", type=int, default=1, help="questions per step")
    parser.add_argument("--name", default="curve", help="the folder under RUN_DIR/sft/ for this curve")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", args.name) or args.name in ("rag", "refrag", READY_FOLDER):
        raise CourseError(f"--name must be a plain folder name (letters, digits, _ -) other than notebook 05's "
                          f"rag, refrag and {READY_FOLDER}, got {args.name!r}.")
    run = open_run(args.preset, args.run_dir)
    curve = learning_curve(run, args.steps, args.eval_questions, p=args.p, selector_name=args.selector, arms=args.arms,
                           lr=args.lr, batch_size=args.batch_size, name=args.name)
    out = run.stage_dir("sft") / args.name / "curve.json"
    out.write_text(json.dumps(curve, indent=1))
    print("wrote", out)
    return 0
