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
# # 07 · Playground: ask a question, watch REFRAG read it
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/refrag-course/refrag-course/blob/main/notebooks/07_playground.ipynb)
#
# Everything the course built, in one place. Type a question about the course's encyclopedia and see
# - the passages the retriever found, each cut into chunks of k tokens, every chunk coloured
#   **expanded** (read as tokens) or **compressed** (read as one projected vector);
# - the answer of ordinary RAG (the passages as tokens) and of REFRAG, both fine-tuned in notebook 05,
#   each with its time to first token (TTFT, with cached chunk vectors for REFRAG).
#
# The knobs: **k** (among the compression rates you trained: each k has its own run folder),
# **p** the fraction of chunks to expand, **top-K** passages, and the **selector** that picks the
# chunks: **question** (the chunks the retriever finds closest to the question), **question_rl**
# (notebook 04's policy that reads the question, each chunk's share of the question's words and its
# place; the one REFRAG was fine-tuned with in notebook 05), **rl** (the paper's question-blind GRPO
# policy of notebook 04), the perplexity heuristic, random, or none. Answers are IDs such as River_033
# that only exact tokens carry, so REFRAG can answer only when the chunk holding the answer is one it
# expands: try the same question with `question_rl` and with `rl`.
#
# Needs `RUN_DIR/sft/` from notebook 05 (and what it needs: 01-04).

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
SMOKE = False  # the playground is the same either way; SMOKE runs read the SMOKE models
PRESET = "auto"  # auto: chosen by the GPU present (cpu without one); or cpu, t4, a100, paper
RUN_DIR = ""
PACK = ""  # a teacher's pack (local or Drive path, or https URL): verified, added to RUN_DIR, its stages loaded
QUESTION = ""  # empty: a question from the evaluation split
K = 0  # 0: the run's k
P = 0.25
TOP_K = 3
SELECTOR = "question_rl"  # question | question_rl | rl | perplexity | random | none
QUESTIONS = ""  # the questions file the first example comes from (.jsonl); empty: the course's

# %%
from IPython.display import HTML, display

from refrag_lib.course.notebooks import start
from refrag_lib.course.playground import Playground, controls, render_html
from refrag_lib.data import default_data_dir, load_qa

run = start(PRESET, RUN_DIR, SMOKE, pack=PACK)
playground = Playground(run)
print(f"trained compression rates: k in {playground.ks}; {playground.n_passages()} passages in the index")
example = load_qa(QUESTIONS or default_data_dir() / "qa_eval.jsonl")[0]
question = QUESTION or example.question
print(f"question: {question}\ngold answer: {' | '.join(example.answers) if not QUESTION else '(your question)'}")

# %% [markdown]
# ## One question, both readers
#
# This cell calls the same function the widgets below call, so an error here is an error there. Look
# at the decoder positions: RAG reads every token of the K passages, REFRAG one position per
# compressed chunk plus the tokens of the expanded ones. TTFT follows the number of positions.

# %%
result = playground.compare(question, K or playground.ks[0], P, TOP_K, SELECTOR)
display(HTML(render_html(result)))

# %% [markdown]
# ## Try it yourself
#
# Change the question or a knob and press **Ask**. Things to try:
# - p = 0 (everything compressed) against p = 1 (everything expanded: REFRAG reads what RAG reads);
# - the same p with `question_rl`, `rl` and random: which chunks does each expand, and does the answer change?
# - more passages (top-K): RAG's TTFT grows much faster than REFRAG's.
#
# Mistakes get a message, not a traceback (an empty question, a k that was not trained):

# %%
display(HTML(playground.ask("", playground.ks[0], P, TOP_K)))
display(HTML(playground.ask(question, 999, P, TOP_K)))

# %%
controls(playground, question, top_k=TOP_K, p=P, selector=SELECTOR)
