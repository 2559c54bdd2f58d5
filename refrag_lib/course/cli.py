"""The course-level commands: run the notebooks, keep them paired, time model loads, train one stage.

Each command imports what it needs inside its function: `python -m refrag_lib X` then starts without loading
the modules (and torch, papermill or jupytext) of every other command."""

from __future__ import annotations

import argparse
import json
import time

from ..config import PRESETS


def course(argv: list[str]) -> int:
    """`python -m refrag_lib course`: every notebook, in order, headless."""
    from .notebooks import run_course

    parser = argparse.ArgumentParser(prog="python -m refrag_lib course", description=course.__doc__)
    parser.add_argument("--preset", default="cpu", choices=[*PRESETS, "auto"])
    parser.add_argument("--run-dir", default="", help="artifacts folder (default runs/<preset>)")
    parser.add_argument("--smoke", action="store_true", help="the notebooks' SMOKE parameters (minutes)")
    parser.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 01 06")
    args = parser.parse_args(argv)
    timings = run_course(args.preset, args.run_dir, smoke=args.smoke, only=args.only)
    print("notebook timings (s):", timings)
    return 0


def notebooks(argv: list[str]) -> int:
    """`python -m refrag_lib notebooks --sync|--check|--colab`: the .ipynb files from their jupytext sources,
    and the Colab badge and setup cell of every notebook from pyproject.toml's repository."""
    from .colab_cells import update_notebooks
    from .notebooks import NOTEBOOK_DIR, sync_notebooks

    parser = argparse.ArgumentParser(prog="python -m refrag_lib notebooks", description=notebooks.__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--sync", action="store_true", help="rewrite notebooks/*.ipynb from notebooks/*.py")
    mode.add_argument("--check", action="store_true", help="fail if an .ipynb differs from its source")
    mode.add_argument("--colab", action="store_true", help="rewrite badges and setup cells, then --sync")
    args = parser.parse_args(argv)
    if args.colab:
        print("Colab cells rewritten:", ", ".join(update_notebooks(NOTEBOOK_DIR)) or "none")
    stale_colab = update_notebooks(NOTEBOOK_DIR, check=True) if args.check else []
    if stale_colab:
        print("Colab badge or setup cell out of date (run `make colab`):", ", ".join(stale_colab))
    stale = sync_notebooks(check=args.check)
    if args.check and (stale or stale_colab):
        if stale:
            print("out of date with their .py sources (run `make notebooks`):", ", ".join(stale))
        return 1
    print("rewritten:" if stale else "all notebooks match their sources", ", ".join(stale))
    return 0


def load_time(argv: list[str]) -> int:
    """`python -m refrag_lib load-time`: seconds to load the preset's decoder, cache preparation apart."""
    from ..config import get_preset
    from ..hub import load_decoder, resolve

    parser = argparse.ArgumentParser(prog="python -m refrag_lib load-time", description=load_time.__doc__)
    parser.add_argument("--preset", default="cpu", choices=[*PRESETS, "auto"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    preset = get_preset(args.preset)
    start = time.perf_counter()
    resolve(preset.decoder)  # de-quantises and caches a GGUF decoder the first time only
    print(f"cache ready for {preset.decoder}: {time.perf_counter() - start:.2f} s (one-off when it had to be built)")
    for attempt in range(1, args.repeats + 1):
        start = time.perf_counter()
        load_decoder(preset.decoder, preset.dtype, preset.device)
        note = " (includes importing the model code)" if attempt == 1 else ""
        print(f"decoder load {attempt}: {time.perf_counter() - start:.2f} s{note}")
    return 0


def train(argv: list[str] | None = None) -> int:
    """`python -m refrag_lib train --stage recon|cpt ...` (also under `accelerate launch -m refrag_lib train`)."""
    from ..runs import open_run
    from ..stages import TrainConfig, train_stage
    from ..trained import STAGES

    parser = argparse.ArgumentParser(prog="python -m refrag_lib train", description=train.__doc__)
    parser.add_argument("--stage", required=True, choices=STAGES)
    parser.add_argument("--preset", default="cpu", choices=[*PRESETS, "auto"])
    parser.add_argument("--k", type=int, default=None, help="tokens per chunk (default: the preset's)")
    parser.add_argument("--run-dir", default="", help="artifacts folder (default runs/<preset>)")
    parser.add_argument("--folder", default="", help="sub-folder of the run (default: the stage name)")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--context", type=int, default=256, help="s: context tokens (s/k chunks)")
    parser.add_argument("--continuation", type=int, default=64, help="o: tokens CPT predicts")
    parser.add_argument("--positions", type=int, default=512, help="decoder positions per micro-batch")
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--warmup-fraction", type=float, default=0.04,
                        help="share of the steps warming up the LR (notebook 02 uses 0.15)")
    parser.add_argument("--lr", type=float, default=0.0, help="peak LR (default: the paper's for the stage)")
    parser.add_argument("--encoder-lr-scale", type=float, default=1.0,
                        help="the encoder's peak LR is --lr x this (the course's notebook 02 uses 0.1)")
    parser.add_argument("--expand-fraction", type=float, default=0.0, help="p: chunks left as tokens in CPT")
    parser.add_argument("--train-decoder", action="store_true", help="CPT: unfreeze the decoder too")
    parser.add_argument("--decoder-lr-scale", type=float, default=1.0,
                        help="with --train-decoder: the decoder's peak LR is --lr x this")
    parser.add_argument("--no-curriculum", action="store_true", help="every step uses s/k chunks")
    parser.add_argument("--one-chunk-share", type=float, default=0.0,
                        help="share of the steps on one chunk before the curriculum (notebook 02 uses 0.9)")
    parser.add_argument("--no-recon-init", action="store_true", help="CPT from scratch (Table 12 ablation)")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    parser.add_argument("--max-new-steps", type=int, default=None, help="stop after this many steps (resumable)")
    parser.add_argument("--save-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--documents", default=None, help=".jsonl ({'text'} or {'tokens'}) or .txt file")
    parser.add_argument("--trackers", nargs="*", default=[], help="tensorboard | mlflow | wandb")
    parser.add_argument("--fp32", action="store_true",
                        help="keep the maths in fp32 on a CPU with native bf16 (default there: bf16 autocast)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = TrainConfig(
        stage=args.stage, steps=args.steps, context_tokens=args.context, continuation_tokens=args.continuation,
        positions_per_step=args.positions, grad_accum=args.grad_accum, lr=args.lr,
        warmup_fraction=args.warmup_fraction, encoder_lr_scale=args.encoder_lr_scale,
        decoder_lr_scale=args.decoder_lr_scale, curriculum=not args.no_curriculum, one_chunk_share=args.one_chunk_share,
        expand_fraction=args.expand_fraction, train_decoder=args.train_decoder, seed=args.seed,
        save_every=args.save_every, cpu_bf16=not args.fp32,
    )
    run = open_run(args.preset, args.run_dir, k=args.k)
    result = train_stage(run, cfg, folder=args.folder, init_from_recon=not args.no_recon_init,
                         documents=args.documents, resume=not args.fresh, max_new_steps=args.max_new_steps,
                         progress=not args.no_progress, trackers=args.trackers)
    from accelerate import PartialState

    if PartialState().is_main_process:  # under `accelerate launch` every process gets here
        run.write_metrics(args.folder or cfg.stage, result.summary)
        print(json.dumps({k: v for k, v in result.summary.items() if k != "config"}, indent=1))
    return 0
