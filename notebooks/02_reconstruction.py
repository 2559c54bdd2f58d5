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
# # 02 · Reconstruction: teach the encoder and projector to speak the decoder's language
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/refrag-course/refrag-course/blob/main/notebooks/02_reconstruction.ipynb)
#
# **The question of this notebook:** can one vector per chunk of k tokens carry that chunk's text in a form
# the decoder can read back?
#
# REFRAG replaces each chunk of k context tokens by ONE vector: an *encoder* (a small BERT-style model) reads the
# chunk, and a *projector* φ maps its output into the decoder's token-embedding space, where the vector takes one
# ordinary input position. To the decoder, a fresh projector's output is noise. Stage 1 of the paper's recipe,
# *reconstruction*, fixes that: compress a text x_1..x_s into s/k chunk vectors and ask the decoder, kept
# frozen, to write the text back from them alone. If it can, the vectors carry the text in a form it reads.
#
# **What you will build**, each piece as a function the training then uses: how a chunk's encoder states
# become one vector (pooling), the projector, the *splice* that writes projected vectors into the decoder's
# input, the training labels, and the *curriculum* that orders the training from one chunk to many. Then you
# train them, measure what the vectors carry on held-out text, and compare with the paper. Weights and metrics
# go to `RUN_DIR/recon/`, where notebook 03 starts.

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
RUN_DIR = ""  # where the course's results go; empty: runs/<preset>
PACK = ""  # a teacher's pack (docs/teaching.md): its trained stages are loaded instead of trained
K = 0  # tokens per chunk; 0: the preset's k (16)
STEPS = 0  # training steps of each run; 0: the preset's budget (cpu 320, t4 1200, a100 1500)
SEED = 0
RESUME = True  # continue an interrupted run from RUN_DIR/recon/checkpoint
PROGRESS = True
DOCUMENTS = ""  # your own long texts to train on (.jsonl with "text", or .txt, one per line); empty: the course's

# %%
from refrag_lib.course.lesson import show_pipeline

show_pipeline("02")

# %%
from refrag_lib.course.notebooks import start

run = start(PRESET, RUN_DIR, SMOKE, k=K or None, pack=PACK)

# %%
# Advanced settings: the training recipe and the sizes of the evaluation. The defaults are the course's recipe
# (why each: docs/results.md, notebook 02); change one at a time, in a fresh RUN_DIR.
from refrag_lib.stages import COURSE_ENCODER_LR_SCALE, COURSE_LR, COURSE_ONE_CHUNK_SHARE, COURSE_WARMUP

CONTEXT_TOKENS = 256  # s: the longest text reconstructed (16 chunks of k = 16)
POSITIONS_PER_STEP = 512  # decoder positions per step: 30 one-chunk examples (17 positions each) or 1 of 16 chunks
LR = COURSE_LR["recon"]  # peak learning rate (the paper's is 2e-4, made for batches of 256 over billions of tokens)
ENCODER_LR_SCALE = COURSE_ENCODER_LR_SCALE["recon"]  # the encoder's peak LR is LR x this
ONE_CHUNK_SHARE = COURSE_ONE_CHUNK_SHARE  # share of the steps on one chunk before the curriculum's 9 stages
WARMUP_FRACTION = COURSE_WARMUP["recon"]  # share of the steps warming the LR up
EVAL_EXAMPLES = 16  # held-out windows per number of chunks in the quick table
EVAL_WINDOWS = 0  # held-out windows per number of chunks for the interval table; 0: the preset's (cpu 64)
CURVE_POINTS = 4  # probes of the vectors during training (the run is cut into this many exact-resume segments)
CURVE_WINDOWS = 48  # held-out one-chunk windows per probe
CEILING_WINDOWS, CEILING_STEPS = 32, 100  # one-chunk windows whose free vectors are fitted, and Adam steps each

import matplotlib.pyplot as plt

from refrag_lib.course.train_plots import plot_by_chunks, plot_ceiling, plot_loss_curves, plot_vector_gain
from refrag_lib.curriculum import Curriculum, plot_curriculum
from refrag_lib.evaluate import (
    between_models,
    chunk_counts,
    decoded_reconstructions,
    floor_scores,
    reconstruction_by_chunks,
    train_and_probe,
    vectors_against_floor,
)
from refrag_lib.intervals import format_interval
from refrag_lib.losses import reconstruction_example, shifted_labels
from refrag_lib.model import load_refrag
from refrag_lib.stages import TrainConfig, long_run_save_every, tokenized_documents, train_stage
from refrag_lib.studies.vector_ceiling import free_vector_ceiling

budget = run.preset.budget  # what this device trains in about 10 minutes (cpu: measured; GPUs: see sized_from)
steps = 10 if SMOKE else STEPS or budget.recon_steps
positions = 300 if SMOKE else POSITIONS_PER_STEP
eval_examples = 3 if SMOKE else EVAL_EXAMPLES
eval_windows = 8 if SMOKE else EVAL_WINDOWS or budget.recon_windows
long_windows = 4 if SMOKE else eval_windows // 2  # windows of 16 chunks average 256 tokens each: half as many
curve_points = 2 if SMOKE else CURVE_POINTS
curve_windows = 6 if SMOKE else CURVE_WINDOWS
ceiling_windows, ceiling_steps = (4, 5) if SMOKE else (CEILING_WINDOWS, CEILING_STEPS)
decode_tokens = 24 if SMOKE else None  # greedy decoding is token by token: keep it short in SMOKE
k = run.preset.k
counts = chunk_counts(CONTEXT_TOKENS // k)
curve_counts = [1]  # probes during training stay cheap: one-chunk windows only
print(f"k={k}, s={CONTEXT_TOKENS} -> up to {CONTEXT_TOKENS // k} chunks; evaluated at {counts} chunks")
print(f"{steps} steps per run at peak LR {LR:g} (encoder {LR * ENCODER_LR_SCALE:g}); "
      f"budget of the {run.preset.name} preset: {budget.sized_from}")

# %% [markdown]
# ## Build 1: a chunk becomes one vector
#
# The chunk store of notebook 01 already holds such vectors; here is how one is made (`RefragModel.encode_chunks`).
# The encoder has its own tokenizer, so a chunk of k *decoder* tokens is first decoded back to text and
# re-tokenised for the encoder. The encoder then gives one hidden state per encoder token, [t, h], and *pooling*
# turns them into the chunk's one vector [h]. The course pools by the mean over the chunk's real tokens (the
# encoder, all-MiniLM-L6-v2, was trained that way). A mean forgets the order of the tokens, and reconstruction
# needs it: keep that in mind when you read the reconstructions below.

# %%
model = load_refrag(run.preset)
train_docs, held_out = tokenized_documents(model, DOCUMENTS or None)
print(f"{len(train_docs)} training documents, {len(held_out)} held out (never trained on)")

import torch

from refrag_lib.model import chunk_ids

chunks = chunk_ids(held_out[0][: 2 * k], k)
texts = model.decoder_tokenizer.batch_decode(chunks)
encoded = model.encoder_tokenizer(texts, padding=True, return_tensors="pt").to(model.encoder.device)
for text, ids in zip(texts, encoded["input_ids"]):
    print(f"chunk text {text!r}\n  -> encoder tokens {model.encoder_tokenizer.convert_ids_to_tokens(ids)}")
with torch.no_grad():
    hidden = model.encoder(**encoded).last_hidden_state
print(f"encoder states {tuple(hidden.shape)} (chunks, encoder tokens, h); attention mask marks the real tokens")

# %% [markdown]
# ### Your turn: pooling
#
# Write `my_pool(hidden, mask)`: from the encoder states `hidden` [n, t, h] and the attention mask `mask` [n, t]
# (1 at real tokens, 0 at padding) return [n, h], the mean of each chunk's states over its real tokens only. A
# checker tries it on small cases; `None` uses the package's `refrag_lib.model.mean_pool`. Whatever passes is what
# this notebook's training uses.

# %%
from refrag_lib.course.exercises import exercise, reveal

my_pool = None  # leave None to use the reference, or define it below
# def my_pool(hidden, mask):
#     ...

pool_fn = exercise("chunk_pooling", my_pool)
with torch.no_grad():
    vectors = pool_fn(hidden, encoded["attention_mask"])
    same = torch.allclose(vectors, model.encode_chunks(chunks), atol=1e-4)
print(f"{len(chunks)} chunks -> vectors {tuple(vectors.shape)}; equal to the model's encode_chunks: {same}")

# %%
reveal("chunk_pooling")  # the reference solution, folded: open it once you have tried

# %% [markdown]
# ## Build 2: the projector φ
#
# The encoder's vector lives in the encoder's space (h numbers), the decoder reads vectors of its own hidden size
# d. The paper's projector is a 2-layer MLP from h to d, with a hidden width of d and a non-linearity between
# the layers: two linear layers in a row would collapse into one linear map. The course then rescales every
# output to the decoder's mean token-embedding length, so that one large early step cannot hand the frozen
# decoder a vector far longer than any token it has seen (that made training diverge).
#
# ### Your turn: the projector
#
# Write `my_projector(encoder_dim, decoder_dim)`: return an `nn.Module` that maps [n, encoder_dim] to
# [n, decoder_dim], built as `nn.Sequential(Linear, activation, Linear)` so that its weights are saved under the
# names notebook 03 loads. `None` uses `refrag_lib.model.projector_net`. The model wraps it with the rescaling,
# and this notebook trains it.

# %%
my_projector = None  # leave None to use the reference, or define it below
# from torch import nn
# def my_projector(encoder_dim, decoder_dim):
#     return nn.Sequential(...)

projector_fn = exercise("projector", my_projector)
encoder_dim, decoder_dim = model.encoder.config.hidden_size, model.decoder.config.hidden_size
with torch.random.fork_rng(devices=[]):  # fresh weights are random: keep the run's random stream
    net = projector_fn(encoder_dim, decoder_dim)
print(f"encoder h = {encoder_dim} -> decoder d = {decoder_dim}: {sum(p.numel() for p in net.parameters()):,} "
      "parameters, the only part of REFRAG that starts from scratch")

# %%
reveal("projector")  # the reference solution, folded

# %% [markdown]
# ## Build 3: the splice
#
# The decoder normally looks its input tokens up in its embedding table, one row of d numbers per position.
# REFRAG builds that same [B, T, d] tensor, `inputs_embeds`, with one difference: at every slot where a
# compressed chunk sits it writes the chunk's projected vector instead of a token's embedding. The decoder
# takes `inputs_embeds` in place of token ids, so it needs no change at all.
#
# ### Your turn: the splice
#
# Write `my_splice(embeds, is_vector, projected)`: `embeds` [B, T, d] holds token embeddings (at vector slots, the
# pad token's), `is_vector` [B, T] is True where a chunk vector sits, `projected` [n, d] holds the n projected
# vectors in reading order (row by row, left to right). Return [B, T, d] with the vectors in their slots, in
# `embeds`' dtype, without cutting the gradient that must flow back into the projector. `None` uses
# `refrag_lib.model.splice_vectors`.

# %%
my_splice = None  # leave None to use the reference, or define it below
# def my_splice(embeds, is_vector, projected):
#     ...

splice_fn = exercise("splice", my_splice)

# %%
reveal("splice")  # the reference solution, folded

# %% [markdown]
# ## Build 4: one reconstruction example, and its labels
#
# The decoder input is `[<start>, e_1 .. e_L, x_1 .. x_s]`: the start token (why: below), L chunk vectors, then
# the text. With *teacher forcing* (the true previous tokens as input) the decoder predicts each x token from
# everything before it, and the loss counts the x tokens only. The first x token is predicted from the last
# chunk vector, so there the vectors are all the decoder has. Later tokens also see earlier x tokens, which is
# why even useless vectors get some tokens right: we measure that floor below.

# %%
from refrag_lib.model import Parts, RefragModel

parts = Parts(pool=pool_fn, projector_net=projector_fn, splice=splice_fn)  # yours where you wrote them
# the same encoder and decoder, with a projector built by your MLP: from here on, and in training, REFRAG runs on
# these parts
model = RefragModel(model.encoder, model.decoder, model.encoder_tokenizer, model.decoder_tokenizer, k, parts=parts)
example = reconstruction_example(held_out[0][: 2 * k], k)
inputs = model.build_inputs([example], padding_side="right")
labels = shifted_labels(inputs)[0].tolist()
for slot, (is_vec, target) in enumerate(zip(inputs.is_vector[0].tolist(), labels)):
    what = "chunk vector" if is_vec else repr(model.decoder_tokenizer.decode([inputs.token_ids[0, slot].item()]))
    goal = "-" if target < 0 else repr(model.decoder_tokenizer.decode([target]))
    if slot < 6 or slot >= len(labels) - 2:
        print(f"slot {slot:2d}: input {what:16s} -> predicts {goal}")
    elif slot == 6:
        print("   ...")

# %% [markdown]
# ### Your turn: the labels
#
# The table above comes from `shifted_labels(inputs)`. Write it yourself as `my_labels(inputs)`: from the padded
# batch's `inputs.token_ids` and `inputs.is_suffix` (both [B, T]) return the [B, T] labels, where slot t holds the
# token of slot t+1 if that slot is a suffix token, and -100 otherwise (skipped by cross-entropy). `None` uses
# the package's function.

# %%
my_labels = None  # leave None to use the reference, or define it below
# def my_labels(inputs):
#     labels = torch.full_like(inputs.token_ids, -100)
#     ...
#     return labels

labels_fn = exercise("reconstruction_labels", my_labels)
scored = int((labels_fn(inputs) != -100).sum())
print(f"the example above: {scored} of {inputs.token_ids.shape[1]} slots are scored, one per x token "
      f"({len(example.suffix)}); the chunk vectors before the last one and the last x predict nothing")

# %%
reveal("reconstruction_labels")  # the reference solution, folded

# %% [markdown]
# ## Before training: the floor, and an untrained projector
#
# Two references on the same held-out windows: the decoder alone (a start token, no vectors) and the
# untrained projector. Teacher forcing lets the decoder's own language model predict many tokens, more so
# in long windows. Reconstruction works only where the trained model beats the "decoder alone" line.

# %%
lm_only = reconstruction_by_chunks(model, held_out, counts, eval_examples, with_vectors=False)
untrained = reconstruction_by_chunks(model, held_out, counts, eval_examples)
for n in map(str, counts):
    print(f"{n:>3} chunks: decoder alone log-ppl {lm_only['log_ppl_by_chunks'][n]:.3f} | untrained projector "
          f"{untrained['log_ppl_by_chunks'][n]:.3f} (token accuracy {untrained['token_accuracy_by_chunks'][n]:.2f})")
# The floor on the windows of the interval table (and of the probes during training): the decoder
# alone does not change in this stage, so it is scored once for every model compared below.
floor = floor_scores(model, held_out, counts, eval_windows, long_windows)
curve_floor = floor_scores(model, held_out, curve_counts, curve_windows, seed=7)
start_probe = {"step": 0, "by_chunks": vectors_against_floor(model, held_out, curve_floor)["by_chunks"]}
del model

# %% [markdown]
# ## Build 5: the curriculum
#
# For a fresh projector, 16 chunks are a search in the dark: almost every output is noise to the decoder.
# One chunk is easy, and what the projector learns there carries over to two, four, sixteen. The paper's
# curriculum (its Table 8) gives, for each of 9 training stages, how many examples have 1, 2, 4, ... 256
# chunks: single chunks dominate at first and fade, long inputs grow. The paper reports that reconstruction
# fails without it (its Table 11). Our texts have at most s/k chunks, so every larger count is capped at s/k
# (its examples then count for s/k). Each training step draws its number of chunks from its stage's mixture,
# with a generator seeded by (seed, step), so a resumed run sees the same schedule.
#
# ### Your turn: the stage mixtures
#
# `refrag_lib.curriculum.TABLE8` maps a number of chunks to its 9 example counts. Write
# `my_mixtures(max_chunks)`: return `(factors, mixtures)`, the chunk counts after capping at `max_chunks`
# (sorted, each once, with the counts of capped factors added together) and a [9, len(factors)] numpy array
# whose row j is stage j's mixture (it sums to 1). `None` uses `refrag_lib.curriculum.stage_mixtures`.

# %%
my_mixtures = None  # leave None to use the reference, or define it below
# import numpy as np
# from refrag_lib.curriculum import TABLE8
# def my_mixtures(max_chunks):
#     ...
#     return factors, mixtures

mixtures_fn = exercise("curriculum", my_mixtures)

# %%
reveal("curriculum")  # the reference solution, folded

# %% [markdown]
# Spread over a short course run, the paper's one-chunk stages would end after a few dozen steps, too few for
# the encoder to learn to write a chunk into its vector. So the course first spends a share `ONE_CHUNK_SHARE`
# of the steps (advanced settings) on one chunk, then runs the 9 stages over the rest, at some cost to the
# longer inputs that notebook 03 trains on. `ONE_CHUNK_SHARE = 0` gives the paper's schedule. The plot shows
# each stage's mixture over the run, and the count drawn at every step:

# %%
curriculum = Curriculum(CONTEXT_TOKENS // k, steps, SEED, one_chunk_share=ONE_CHUNK_SHARE, mixtures=mixtures_fn)
plot_curriculum(curriculum)
plt.show()

# %% [markdown]
# ## Train: encoder + projector learn, the decoder stays frozen
#
# A decoder allowed to change could meet the projector halfway and forget how to read ordinary text. Frozen,
# it still passes the gradient *through* to the projector and the encoder. Two details the paper leaves open
# decide whether a short run learns anything:
#
# * **A start token before the vectors.** The decoder uses position 0 as an *attention sink*: later tokens
#   attend to it heavily but read almost nothing from it. `[<start>, e_1, x_1 .. x_k]` moves the first
#   vector off it, to position 1.
# * **Vectors as long as a token:** the projector's rescaling (Build 2).
#
# The loop (`refrag_lib.train`, shared by every stage) runs AdamW with a warm-up, cosine decay of the learning
# rate (LR) and gradient clipping, on your pooling, projector, splice and curriculum. It departs from the
# paper on purpose, for a budget of minutes instead of billions of tokens: a larger peak LR, the pretrained
# encoder at a tenth of it (at the full rate its features are scrambled within a few steps), and a longer
# warm-up to calm the large first gradients (the advanced settings hold all three).
#
# A dead kernel? Re-run this cell: it resumes exactly from its checkpoint. A finished run in `RUN_DIR/recon/`
# (a teacher's `PACK`) is loaded instead, with the parts it was trained on: to train on your own functions after
# such a run, point `RUN_DIR` at a fresh folder. After each of `CURVE_POINTS` segments the vectors are probed.

# %%
config = TrainConfig(stage="recon", steps=steps, context_tokens=CONTEXT_TOKENS, positions_per_step=positions,
                     lr=LR, encoder_lr_scale=ENCODER_LR_SCALE, one_chunk_share=ONE_CHUNK_SHARE,
                     warmup_fraction=WARMUP_FRACTION, seed=SEED, save_every=long_run_save_every(steps))
result, curve = train_and_probe(run, config, held_out, curve_floor, curve_points, resume=RESUME, progress=PROGRESS,
                                documents=DOCUMENTS or None, parts=parts, mixtures=mixtures_fn)
curve = [start_probe, *curve]
print({key: value for key, value in result.summary.items() if key != "config"})

# %%
plot_loss_curves({"curriculum": result.history}, window=max(1, steps // 10))
plt.title("Reconstruction loss (grey: chunks in that step's examples)")
plt.show()

# %% [markdown]
# The per-step loss jumps with the number of chunks: under teacher forcing a sixteen-chunk step is
# *easier per token* than a one-chunk step (later tokens lean on earlier ones). Read the curve with the
# grey chunk count, and judge quality on the fixed held-out evaluation below.

# %%
trained = reconstruction_by_chunks(result.model, held_out, counts, eval_examples)
results = {"decoder alone (no vectors)": lm_only, "untrained projector": untrained, "after reconstruction": trained}
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
plot_by_chunks(results, "log_ppl_by_chunks", ax=axes[0])
plot_by_chunks(results, "token_accuracy_by_chunks", ax=axes[1])
plt.tight_layout()
plt.show()
print(f"a quick look on {eval_examples} held-out windows per chunk count; the measurement below scores "
      f"{eval_windows} (and {long_windows} of 16 chunks) with intervals, so its means differ a little")

# %% [markdown]
# ## Measure: what the vectors carry, beyond the decoder's own language model
#
# The plots above mix what the vectors tell the decoder with what it guesses by itself. To separate them,
# every held-out window is scored with its chunk vectors and with none, and we report the **gain** with a
# paired 95% bootstrap interval (`refrag_lib.intervals`): an interval that excludes 0 is something the
# vectors carry; one that straddles 0 is noise. Two measures: teacher-forced *log-perplexity* (the mean
# negative log-likelihood per token, in nats; lower is better, and the gain is the nats per token the vectors
# save), and free-running: the decoder writes k tokens from the vectors alone, and we count the first chunk's
# tokens it gets exactly right (only the vectors can lift that above the floor).

# %%
from refrag_lib.intervals import verdict

carried = vectors_against_floor(result.model, held_out, floor)
print(f"held-out windows per row: {carried['n_windows']}; mean [95% interval]; "
      "gain = with vectors minus the decoder alone")
for n, row in carried["by_chunks"].items():
    print(f"{n:>3} chunk(s): log-ppl {format_interval(row['log_ppl'])} vs floor {format_interval(row['log_ppl_floor'])}"
          f" -> gain {format_interval(row['log_ppl_gain'])} nats/token")
    print(f"{'':>12} token accuracy: " + verdict(row["token_accuracy_gain"], digits=3,
                                                 above="the vectors add token accuracy",
                                                 below="the vectors cost token accuracy"))
    print(f"{'':>12} first chunk exact {format_interval(row['first_chunk_exact'])} "
          f"vs floor {format_interval(row['first_chunk_exact_floor'])}")
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
plot_vector_gain(curve, "log_ppl_gain", ax=axes[0])
plot_vector_gain(curve, "first_chunk_exact_gain", ax=axes[1])
axes[0].set_title("teacher-forced: nats saved per token")
axes[1].set_title("free-running: exact first-chunk tokens")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Read the reconstructions
#
# Greedy decoding from the chunk vectors alone, without teacher forcing: what the decoder writes from
# 1, 4 and 16 vectors. The exact-token share counts the positions that match the original.

# %%
for row in decoded_reconstructions(result.model, held_out, [c for c in (1, 4, 16) if c in counts] or counts,
                                   max_tokens=decode_tokens):
    print(f"--- {row['chunks']} chunk(s), exact-token share {row['exact_token_share']:.2f}")
    print("original     :", row["original"].replace("\n", " "))
    print("reconstructed:", row["decoded"].replace("\n", " "))

# %% [markdown]
# ## How much could one vector carry? The decoder's ceiling
#
# Is the gain limited by the decoder or by the encoder? Take the encoder out: for each of the first
# `CEILING_WINDOWS` one-chunk windows, fit one free vector by gradient descent so that the frozen decoder
# reconstructs that window, and score it like any other. No encoder could do better for that window; the gap
# to the trained encoder is what a longer stage 1 has to learn.

# %%
ceiling = free_vector_ceiling(result.model, held_out, floor, carried, n_windows=ceiling_windows, steps=ceiling_steps)
print(f"one-chunk token accuracy on the first {ceiling['n_windows']} held-out windows, mean [95% interval]:")
print(f"  decoder alone                     {format_interval(ceiling['token_accuracy_floor'])}")
print(f"  trained encoder + projector       {format_interval(ceiling['trained_token_accuracy'])}")
print(f"  free vector, {ceiling['steps']:>3} fitting steps    {format_interval(ceiling['token_accuracy'])}")
print("fitted vector minus trained encoder: " + verdict(ceiling["gap_to_trained"], digits=3,
                                                        above="the decoder could read more than the encoder writes",
                                                        below="the trained encoder beats the fitted vectors"))
plot_ceiling(ceiling)
plt.title("What one vector can make the frozen decoder write back")
plt.show()

# %% [markdown]
# ## Ablation: the same budget without the curriculum (the paper's Table 11)
#
# Every step now uses all s/k chunks: the paper reports that reconstruction then fails. A fresh encoder +
# projector trains for the same steps and positions per step, into `RUN_DIR/recon/no_curriculum/`.

# %%
del result.model
ablation_steps = 6 if SMOKE else steps
ablation_config = TrainConfig(stage="recon", steps=ablation_steps, context_tokens=CONTEXT_TOKENS,
                              positions_per_step=positions, lr=LR, encoder_lr_scale=ENCODER_LR_SCALE,
                              warmup_fraction=WARMUP_FRACTION, seed=SEED, curriculum=False,
                              save_every=long_run_save_every(ablation_steps))
ablation = train_stage(run, ablation_config, folder="recon/no_curriculum", resume=RESUME, progress=PROGRESS,
                       documents=DOCUMENTS or None, parts=parts)
no_curriculum = reconstruction_by_chunks(ablation.model, held_out, counts, eval_examples)
carried_no_curriculum = vectors_against_floor(ablation.model, held_out, floor)
curriculum_gain = between_models(carried, carried_no_curriculum)
del ablation.model
for n, row in curriculum_gain.items():
    print(f"{n:>3} chunk(s), curriculum minus no curriculum, log-ppl gain: "
          + verdict(row["log_ppl_gain"], above="the curriculum helps", below="the run without it is better")
          + f" ({floor['n_windows'][n]} windows)")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
plot_loss_curves({"curriculum": result.history, "no curriculum": ablation.history}, ax=axes[0],
                 window=max(1, steps // 10), show_chunks=False)
plot_by_chunks({"decoder alone": lm_only, "curriculum": trained, "no curriculum": no_curriculum},
               "log_ppl_by_chunks", ax=axes[1])
plt.tight_layout()
plt.show()

# %%
# RUN_DIR/recon/metrics.json: the held-out numbers of both runs, the references, the training time
summary = {key: value for key, value in result.summary.items() if key != "config"}
path = run.write_metrics("recon", {
    **summary, **trained, "config": result.summary.get("config"),
    "ablation_no_curriculum": {**no_curriculum, "steps": ablation_steps,
                               "train_seconds": ablation.summary.get("train_seconds")},
    "decoder_alone": lm_only, "untrained_projector": untrained, "eval_examples": eval_examples,
    "vectors_against_floor": carried["by_chunks"], "vector_curve": curve, "eval_windows": floor["n_windows"],
    "curriculum_gain": curriculum_gain,
    # the contract's names for what the vectors carry: the floor, the free-running measure, intervals
    "no_vector_floor": lm_only, "intervals": carried["by_chunks"],
    "free_running_exact_first_chunk": carried["by_chunks"]["1"]["first_chunk_exact"]["mean"],
    "free_vector_ceiling": ceiling,
})
print("wrote", path)

# %% [markdown]
# ## What a normal run finds, next to the paper
#
# The reference run (the default `make course` on the cpu preset: a 22M-parameter encoder and a 135M decoder,
# a few minutes of CPU) finds:
#
# * **One vector carries a lot of one chunk.** At one chunk the vectors save several nats per token and more
#   than double the decoder's token accuracy, intervals far from 0. At sixteen chunks the gain is small: with
#   a long window the decoder's own language model predicts much of the text from the text before.
# * **Free-running, it is a gist, not a copy.** Teacher-forced accuracy measures what the vector adds to each
#   next-token guess; writing a chunk back verbatim from its vector alone succeeds for only a few tokens.
# * **The decoder could read much more than the encoder writes.** A vector fitted to each window makes the
#   frozen decoder write back about twice the tokens the trained encoder's vector does: what limits the course
#   is how far the encoder learns in a few hundred CPU steps, not the decoder.
# * **The curriculum helps where it trains.** At one and four chunks it beats the run without it by far, the
#   paper's direction. At sixteen chunks the run without a curriculum wins: it spent every step on that length,
#   the curriculum's run only a few. Notebook 03 trains on sixteen chunks, from these weights.
#
# The paper trains RoBERTa-large and LLaMA-2-7B on 20B tokens; its Table 11 gives a reconstruction log-ppl of
# 0.67 with the curriculum and 3.72 without, at 16 chunks (the paper's numbers). Your run beside the reference:

# %%
from refrag_lib.course.lesson import beside_reference

beside_reference(run, "recon", trained, {
    "token_accuracy_by_chunks.1": "token accuracy, 1 chunk", "token_accuracy_by_chunks.16": "token accuracy, 16 chunks",
    "log_ppl_by_chunks.1": "log-ppl, 1 chunk", "log_ppl_by_chunks.16": "log-ppl, 16 chunks"})

# %% [markdown]
# ### Your turn: move a lever
#
# Re-run with one setting changed, in a fresh `RUN_DIR`, and compare what the cells above print:
# `ONE_CHUNK_SHARE = 0` (the paper's curriculum throughout), `LR = 2e-4` (the paper's rate),
# `ENCODER_LR_SCALE = 1` (the encoder at the projector's rate), or your own `DOCUMENTS`. A difference counts only
# if it beats what `SEED = 1` alone moves.
#
# ## What you learnt
#
# - A chunk becomes one vector in three steps: re-tokenised for the encoder, encoded, pooled (a mean over its
#   real tokens, which forgets their order); the projector maps it to the decoder's embedding size, and the
#   splice writes it into `inputs_embeds` in the chunk's place.
# - Reconstruction trains the encoder and projector, never the decoder, to make vectors the frozen decoder can
#   write the chunk back from. Its loss counts the text tokens only, each predicted from what comes before.
# - Under teacher forcing the decoder alone already predicts much of a text, so what the vectors carry is the
#   gain over that floor, with a paired interval.
# - A curriculum from one chunk to many makes the short inputs learnable; a run spends its steps where its
#   curriculum puts them.
#
# ## Self-check
#
# 1. Why is the decoder frozen in this stage?
#    <details><summary>Answer</summary>So that the vectors must come to the decoder's language, not the decoder
#    to theirs: a decoder allowed to change could meet the projector halfway and forget ordinary text.</details>
# 2. Why does the projector need a non-linearity between its two layers?
#    <details><summary>Answer</summary>Two linear layers in a row are one linear map; the MLP could then learn
#    nothing a single layer could not.</details>
# 3. What must the splice preserve for training to work?
#    <details><summary>Answer</summary>The gradient path from `inputs_embeds` back to the projected vectors
#    (and through them to the projector and encoder), and the order of the vectors.</details>
# 4. A trained run gains little at sixteen chunks. Does that mean the vectors carry nothing there?
#    <details><summary>Answer</summary>Not necessarily: at sixteen chunks the decoder alone predicts much of
#    the text from the text before, so there is less left for the vectors to add; the gain is measured over
#    that higher floor.</details>
#
# ## Going further
#
# `python -m refrag_lib levers` retrains a fresh encoder + projector per lever (learning rates, seeds, warm-up,
# one-chunk share, start token, bounded projector, pooling, k) on this notebook's budget and scores each on the
# same held-out windows: each row costs as long as this notebook's training (about 6 minutes on a 2-core CPU).
# The tables that chose the course's recipe are in docs/results.md.

# %%
from refrag_lib.course.colab import flush_drive

flush_drive()  # in Colab: this notebook's results written to Drive before the runtime goes; elsewhere nothing
