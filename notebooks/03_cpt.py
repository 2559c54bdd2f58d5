# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     gpuType: T4
#     provenance: []
#   jupytext:
#     formats: ipynb,py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Continual pre-training: use the compressed context to predict what comes next
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/refrag-course/refrag-course/blob/main/notebooks/03_cpt.ipynb)
#
# ## What the paper does, and why
#
# Reconstruction (notebook 02) taught the chunk vectors to *carry* a text. Stage 2, continual
# pre-training (CPT), teaches the model to *use* them: the first s tokens of a document are compressed
# into s/k chunk vectors and the decoder predicts the next o tokens. Only then is a compressed context
# worth reading. The paper's evidence, which this notebook repeats at course scale:
#
# * Table 1 of the paper: log-perplexity orders no context > REFRAG-32 > REFRAG-16 > REFRAG-8 > full
#   context, and REFRAG-8 beats the last-256-token baseline, which spends as many decoder positions on raw tokens.
# * Table 12 of the paper: CPT from the reconstruction weights is far better than CPT from scratch
#   (2.02 against 3.27 log-ppl at P16, the paper's numbers).
#
# Our synthetic reports repeat earlier facts word for word in later paragraphs, so a model that reads
# the compressed context well predicts the continuation far better than one that does not.
#
# In this notebook we
# 1. train CPT from the reconstruction weights with the same loop and curriculum as notebook 02,
# 2. train it once more from a fresh encoder + projector (the paper's Table 12 question),
# 3. compare log-perplexity on held-out documents with the paper's baselines on the same decoder:
#    no context, full context (all s tokens), the last s/k tokens (as many decoder positions as
#    REFRAG uses), and REFRAG-k,
# 4. read what this run shows against the paper.
#
# Needs `RUN_DIR/recon/` from notebook 02. Writes `RUN_DIR/cpt/`.
#
# The history of these choices, with the tables that made them: [docs/results.md](https://github.com/refrag-course/refrag-course/blob/main/docs/results.md).

# %%
# Setup. In Colab: fetch the course, add the packages Colab lacks (none of Colab's own is replaced), and keep
# runs on Google Drive, where the next notebook's runtime finds them (1-2 minutes; Colab asks once for Drive).
# Locally `make venv` did all of this already and this cell does nothing.
import sys

KEEP_ON_DRIVE = True  # Colab: each notebook runs in its own runtime; Drive carries this one's results to the next
if "google.colab" in sys.modules:
    import os
    import subprocess

    repository = "https://github.com/refrag-course/refrag-course"
    if not os.path.isdir("/content/refrag-course"):
        subprocess.run(["git", "clone", "-q", "--depth", "1", repository, "/content/refrag-course"], check=True)
    sys.path.insert(0, "/content/refrag-course")
    from refrag_lib.course.colab import prepare_colab

    prepare_colab(keep_on_drive=KEEP_ON_DRIVE)

# %% tags=["parameters"]
SMOKE = False  # True: a few training steps, to check the notebook runs (about 2 minutes on a laptop CPU)
PRESET = "auto"  # auto: chosen by the GPU present (cpu without one); or cpu, t4, a100, paper
RUN_DIR = ""
PACK = ""  # a teacher's pack (local or Drive path, or https URL): verified, added to RUN_DIR, its stages loaded
K = 0  # tokens per chunk; 0: the preset's k (16). Must match notebook 02's run.
CONTEXT_TOKENS = 256  # s: compressed context (16 chunks of k 16)
CONTINUATION_TOKENS = 64  # o: tokens predicted after the context
STEPS = 0  # CPT steps; 0: the preset's budget (cpu 120, t4 1000, a100 1200)
ABLATION_STEPS = 0  # CPT without reconstruction initialisation; 0: the same as STEPS (a fair comparison)
POSITIONS_PER_STEP = 512
LR = 0.0  # peak learning rate; 0: the course's 3e-4 (chosen by the lever table below; the paper's is 5e-5)
EXPAND_FRACTION = 0.1  # p: share of chunks left as tokens during training (the paper's mixed input)
TRAIN_DECODER = False  # the paper unfreezes everything; see the note below before turning this on
EVAL_PAIRS = 0  # held-out (context, continuation) pairs every arm is scored on; 0: the preset's (cpu 64)
SEED = 0
RESUME = True
PROGRESS = True
DOCUMENTS = ""  # your own long texts to train on (.jsonl with "text", or .txt, one per line); empty: the course's

# %%
from refrag_lib.course.notebooks import start

run = start(PRESET, RUN_DIR, SMOKE, k=K or None, pack=PACK)

import matplotlib.pyplot as plt

from refrag_lib.course.train_plots import plot_log_ppl_bars, plot_loss_curves
from refrag_lib.evaluate import cpt_arms, cpt_windows, paired_cpt
from refrag_lib.intervals import format_interval
from refrag_lib.model import load_refrag
from refrag_lib.stages import COURSE_LR, TrainConfig, long_run_save_every, tokenized_documents, train_stage
from refrag_lib.trained import load_trained

budget = run.preset.budget
steps = 8 if SMOKE else STEPS or budget.cpt_steps
ablation_steps = 6 if SMOKE else ABLATION_STEPS or steps
positions = 300 if SMOKE else POSITIONS_PER_STEP
lr = LR or COURSE_LR["cpt"]
eval_pairs = 3 if SMOKE else EVAL_PAIRS or budget.cpt_pairs
recon = run.read_metrics("recon")  # stops here, naming notebook 02, when it has not run
print(f"reconstruction run: {recon['steps_done']} steps, held-out log-ppl by chunks {recon['log_ppl_by_chunks']}")

# %% [markdown]
# ## Build it: what CPT trains
#
# The paper unfreezes everything in CPT. The course keeps the decoder frozen by default
# (`TRAIN_DECODER = False`) and trains the encoder + projector on the next-paragraph objective, for two
# reasons. A step that also updates the decoder takes noticeably longer. And a decoder tuned on these
# reports gets better *without* reading the context well, because it learns the reports' template: its
# log-ppl can fall below even the frozen decoder given the full context. Against baselines scored on the
# untuned decoder that says nothing about the chunk vectors; a fair comparison needs every baseline
# tuned the same way. Set `TRAIN_DECODER = True` for the paper's recipe, and read the baselines as "the
# untuned decoder".
#
# **Mixed input.** During training a random 10% of chunks stay as ordinary tokens (`p = 0.1`,
# `EXPAND_FRACTION`). The paper ends CPT with such mixed inputs so that the decoder can read sequences
# where some chunks are expanded, which is what the policy of notebook 04 produces. Here the mixed input
# runs through all of CPT; notebook 04 then runs its own, separate mixed-input CPT phase from these weights
# (`refrag_lib.mixed_cpt.continue_cpt_mixed`) before it trains the policy.

# %% [markdown]
# ### Your turn: which chunks stay tokens
#
# Every CPT step below chooses, for each example, the chunks that stay ordinary tokens with
# `refrag_lib.losses.random_expansion(batch, fraction, rng)` (each mask drawn by `refrag_lib.policy.random_mask`).
# Write it as `my_expansion(batch, fraction, rng)`:
# `batch` is a list of `Segments` (example `i` has `len(batch[i].chunks)` chunks), `rng` a NumPy `Generator`;
# return one list of booleans per example, one per chunk, True where the chunk stays tokens: exactly
# round(p·L) of the L chunks, chosen at random with `rng` so that a run is reproducible from its seed. The checker
# counts, repeats seeds and looks for randomness. `None` uses the reference; `reveal("mixed_expansion")` shows it.
# The cell prints three masks for one example of s/k chunks: `T` stays tokens, `.` is a chunk vector.

# %%
import numpy as np

from refrag_lib.course.exercises import exercise, reveal
from refrag_lib.losses import next_paragraph_example

my_expansion = None  # leave None to use the reference, or define it below
# def my_expansion(batch, fraction, rng):
#     masks = []
#     for example in batch:
#         ...
#     return masks

expansion = exercise("mixed_expansion", my_expansion)
# token ids do not matter here, only the number of chunks
example = next_paragraph_example(range(CONTEXT_TOKENS), range(CONTINUATION_TOKENS), run.preset.k)
for mask in expansion([example] * 3, EXPAND_FRACTION, np.random.default_rng(SEED)):
    print("".join("T" if expanded else "." for expanded in mask), f" {sum(mask)} of {len(mask)} chunks stay tokens")

# %%
reveal("mixed_expansion")  # the reference solution, folded

# %% [markdown]
# ## Train CPT from the reconstruction weights
#
# The cell below starts from notebook 02's encoder + projector and trains the preset's CPT budget with
# the shared loop and its chunk curriculum. It prints the run's summary (steps, seconds, first and last
# loss) and the largest gradient norm before clipping: how calm training was. Compare it with the run
# from scratch below, whose fresh projector starts far from anything the decoder can read.
# A CPT run that finished in `RUN_DIR/cpt/` (a teacher's `PACK`) is loaded instead of trained.

# %%
config = TrainConfig(stage="cpt", steps=steps, context_tokens=CONTEXT_TOKENS,
                     continuation_tokens=CONTINUATION_TOKENS, positions_per_step=positions, lr=lr,
                     expand_fraction=EXPAND_FRACTION, train_decoder=TRAIN_DECODER, seed=SEED,
                     save_every=long_run_save_every(steps, TRAIN_DECODER))
result = train_stage(run, config, resume=RESUME, progress=PROGRESS, documents=DOCUMENTS or None)
print({key: value for key, value in result.summary.items() if key != "config"})
print(f"largest gradient norm before clipping at {config.clip_norm}: {result.summary['max_grad_norm']:.1f}")

# %% [markdown]
# ## The Table 12 question: does reconstruction initialisation matter?
#
# The same CPT run from a fresh encoder + projector (explicitly asked for: without
# `init_from_recon=False` the loop refuses to start CPT when the reconstruction weights are missing).
# The plot then puts both loss curves side by side: faint lines are the raw per-step loss, solid ones
# smoothed; the grey steps (right axis) are the number of context chunks in each step, the curriculum.
# If reconstruction initialisation matters, the run from reconstruction starts lower and stays lower.

# %%
ablation_config = TrainConfig(stage="cpt", steps=ablation_steps, context_tokens=CONTEXT_TOKENS,
                              continuation_tokens=CONTINUATION_TOKENS, positions_per_step=positions, lr=lr,
                              expand_fraction=EXPAND_FRACTION, train_decoder=TRAIN_DECODER, seed=SEED,
                              save_every=long_run_save_every(ablation_steps, TRAIN_DECODER))
ablation = train_stage(run, ablation_config, folder="cpt/no_recon_init", init_from_recon=False,
                       resume=RESUME, progress=PROGRESS, documents=DOCUMENTS or None)
print(f"largest gradient norm before clipping: from reconstruction {result.summary['max_grad_norm']:.1f}, "
      f"from scratch {ablation.summary['max_grad_norm']:.1f}")

# %%
plot_loss_curves({"CPT from reconstruction": result.history, "CPT from scratch": ablation.history},
                 window=max(1, steps // 10))
plt.title("CPT loss: NLL of the next o tokens (grey: context chunks in that step)")
plt.show()

# %% [markdown]
# ## Measure it: log-perplexity on held-out documents
#
# Every arm scores the same o held-out tokens after the same s-token context, with the same decoder:
# * no context: only a start token; what the decoder guesses from its own knowledge;
# * full context: all s tokens; the quality REFRAG tries to keep (s + o decoder positions);
# * last s/k tokens: the same decoder length as REFRAG (s/k + o positions), spent on raw tokens;
# * REFRAG after reconstruction only (before CPT), after CPT, and CPT without reconstruction init.
#
# Lower is better. Each line gives the mean over the held-out pairs with its 95% interval; the REFRAG
# arms also give their *paired* gain over the last s/k tokens on the same pairs (> 0: the chunk vectors
# predict better). A paired interval is what decides a comparison: if it contains 0, the two are a tie.

# %%
_, held_out = tokenized_documents(result.model, DOCUMENTS or None)
pairs = cpt_windows(held_out, CONTEXT_TOKENS, CONTINUATION_TOKENS, eval_pairs)
base = load_refrag(run.preset) if TRAIN_DECODER else result.model  # the decoder the baselines use
scores = cpt_arms(base, pairs, ("no_context", "full_context", "last_tokens"))
per_pair = scores.pop("per_pair")
gains = {}  # paired gain over the last s/k tokens on the same pairs (> 0: the chunk vectors do better)
for name, model in (("refrag_recon_only", load_trained(run, "recon")), ("refrag", result.model),
                    ("refrag_no_recon_init", ablation.model)):
    arm = cpt_arms(model, pairs, ("refrag",), baselines=per_pair)
    scores[name], gains[name] = arm["refrag"], arm["gain_over_last_tokens"]
    per_pair[name] = arm["per_pair"]["refrag"]
recon_init_gain = paired_cpt({"refrag": per_pair["refrag"]}, {"refrag": per_pair["refrag_no_recon_init"]})
log_ppl = {name: interval["mean"] for name, interval in scores.items()}
print(f"{len(pairs)} held-out pairs; log-ppl of the {CONTINUATION_TOKENS}-token continuation [95% interval]")
for name, interval in scores.items():
    gain = f"   gain over the last s/k tokens {format_interval(gains[name])}" if name in gains else ""
    print(f"{name:22s} {format_interval(interval)}{gain}")
print(f"reconstruction init vs from scratch (paired, > 0: init helps): {format_interval(recon_init_gain)}")

# %%
plot_log_ppl_bars(scores)
plt.title(f"Held-out continuation log-ppl, 95% intervals (s={CONTEXT_TOKENS}, o={CONTINUATION_TOKENS}, "
          f"k={run.preset.k})")
plt.show()

# %% [markdown]
# ## What this run shows
#
# The cell below turns the paired intervals printed above into sentences, so they hold for whatever
# preset and seed ran. It ends with *context recovered*: the share of the full context's gain over no
# context that the vectors give, (no context - REFRAG) / (no context - full context), with a paired
# bootstrap interval. Read them against the paper:
# * **REFRAG-k against the last s/k tokens.** The paper's REFRAG-8 wins this comparison after 20B tokens
#   of training. The chunk vectors beating the raw tokens at the same decoder length is the paper's
#   ordering; a tie means they are worth about as much as the tokens they replace.
# * **Reconstruction initialisation.** In the paper's Table 12 it helps, by 1.25 nats at P16; the course
#   trains far less, so read the sign and the interval rather than the size.
# * **What CPT adds on top of reconstruction.** Notebook 02's stage 1 spends most of its steps on one
#   chunk, so its vectors of s/k chunks may start weak; CPT, which trains on all of them, should close
#   that gap.
#
# Check the bar chart for the paper's shape too. At course scale expect the full-context arm to stay
# clearly best (a course-sized budget cannot pack k tokens into one vector as well as the paper's
# 7B-scale training), and the compressed arms to beat "no context" only by as much as the short
# training taught them. Where the shape differs, the budget is the first suspect: rerun with more
# `STEPS` on a GPU preset.

# %%
from refrag_lib.intervals import recovered_interval, verdict

refrag_k, last = f"REFRAG-{run.preset.k}", "the last s/k tokens"
print(f"After CPT, {refrag_k} against {last} (paired log-ppl gain, > 0: the chunk vectors predict better):")
print("  " + verdict(gains["refrag"], above=f"{refrag_k} beats {last}", below=f"{last} beat {refrag_k}"))
print(f"Before CPT (reconstruction alone), {refrag_k} against {last}:")
print("  " + verdict(gains["refrag_recon_only"], above=f"{refrag_k} beats {last}", below=f"{last} beat {refrag_k}"))
print("CPT from reconstruction against CPT from scratch (paired, the Table 12 question):")
print("  " + verdict(recon_init_gain, above="reconstruction initialisation helps",
                     below="CPT from scratch does better"))
print(f"{refrag_k} log-ppl: {log_ppl['refrag_recon_only']:.3f} after reconstruction alone, {log_ppl['refrag']:.3f} "
      f"after CPT (full context {log_ppl['full_context']:.3f}, no context {log_ppl['no_context']:.3f})")
recovered = recovered_interval(per_pair["no_context"], per_pair["refrag"], per_pair["full_context"])
print(f"context recovered, (no context - {refrag_k}) / (no context - full context): "
      f"{format_interval(recovered, 2)} (the paper's Table 1, REFRAG16 on Arxiv P512: 0.82)")
print(f"largest gradient norm before clipping: {result.summary['max_grad_norm']:.1f} from reconstruction, "
      f"{ablation.summary['max_grad_norm']:.1f} from scratch")

# %% [markdown]
# ## Levers: what makes CPT learn most in the same budget
#
# `python -m refrag_lib levers --stage cpt` trains CPT once per lever from the same reconstruction
# weights (learning rates, the decoder trained as the paper does, another seed, no reconstruction
# init, twice the budget, shorter continuations), each for the same decoder positions, and scores them
# on the same held-out pairs against the last s/k tokens. It trains CPT once per row, far longer than
# this notebook, so the course does not run it for you; this cell shows the table once it exists.
# Each row gives its training steps and seconds, its largest gradient norm, its REFRAG log-ppl and its
# gain over the last s/k tokens; "vs default" is the paired change against the first row, and `*`
# marks one whose 95% interval excludes 0. The "seed 1" row is the spread a lever has to beat.

# %%
from refrag_lib.studies.levers import ablation_rows, format_levers, read_levers

levers = read_levers(run, "cpt")
if levers:
    print(format_levers(levers))
else:
    print(f"No lever table in this run yet: `python -m refrag_lib levers --stage cpt --run-dir {run.root}` makes one.")

# %% [markdown]
# ### What moves context recovered
#
# Two commands ask how much more the vectors could carry. `python -m refrag_lib fair-cpt` trains the
# decoder too, as the paper does, and gives every baseline its own decoder fine-tuned the same way, so
# that a lower log-ppl means the vectors carry more, not that the decoder learnt the reports' template.
# `python -m refrag_lib recovery-levers` puts that beside k = 8 and other splits of the steps between
# stages 1 and 2, every row on the same held-out windows and the same steps. Both train several runs, so
# the course leaves them to you; this cell shows their tables once they exist.

# %%
from refrag_lib.studies.fair_cpt import FAIR_TABLE
from refrag_lib.studies.fair_cpt import format_table as format_fair
from refrag_lib.studies.recovery_levers import RECOVERY_TABLE
from refrag_lib.studies.recovery_levers import format_table as format_recovery

fair, recovery = run.read_study(FAIR_TABLE), run.read_study(RECOVERY_TABLE)
for table, show in ((fair, format_fair), (recovery, format_recovery)):
    if table:
        print(show(table), end="\n\n")
if not (fair or recovery):
    print(f"No table yet: `python -m refrag_lib recovery-levers --run-dir {run.root}` makes one.")

# %% [markdown]
# ## Save the metrics

# %%
summary = {key: value for key, value in result.summary.items() if key != "config"}
path = run.write_metrics("cpt", {
    **summary, "config": result.summary.get("config"), "log_ppl": log_ppl, "eval_pairs": len(pairs),
    "intervals": scores, "gain_over_last_tokens": gains, "recon_init_gain": recon_init_gain,
    "ablation_no_recon_init": {"steps": ablation_steps, "train_seconds": ablation.summary.get("train_seconds"),
                               "first_loss": ablation.summary.get("first_loss"),
                               "last_loss": ablation.summary.get("last_loss"),
                               "max_grad_norm": ablation.summary.get("max_grad_norm")},
    "ablation": ablation_rows(levers) if levers else [], "context_recovered": recovered,
})
print("wrote", path)

# %% [markdown]
# ## Your turn: move a lever
#
# Change one setting in the parameters cell, set `RESUME = False` and run the notebook again: no mixed
# input (`EXPAND_FRACTION = 0`), another `LR`, or twice the `STEPS`. Then read "What this run shows"
# again: did a verdict change, and is the change larger than its interval? This overwrites
# `RUN_DIR/cpt/`, which notebooks 04 and 05 start from: point `RUN_DIR` at a copy of the run folder
# to keep the default.


# %%
from refrag_lib.course.colab import flush_drive

flush_drive()  # in Colab: this notebook's results written to Drive before the runtime goes; elsewhere nothing
