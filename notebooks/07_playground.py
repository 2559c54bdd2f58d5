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
# **The question of this notebook:** what does REFRAG do with *your* question, chunk by chunk?
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
from refrag_lib.course.lesson import show_pipeline

show_pipeline("07")

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
# An empty question or a k that was not trained gets a message in the page, not a traceback.

# %%
controls(playground, question, top_k=TOP_K, p=P, selector=SELECTOR)

# %% [markdown]
# ## The course in one page
#
# What each stage contributed, in the order you built them:
#
# - **01 retrieve**: the passages that can answer, and one cached encoder vector per chunk of k tokens next to
#   the index. Retrieval is the ceiling of everything after it.
# - **02 compress**: pooling, projector and splice put a chunk into one decoder position, and reconstruction
#   trained them, with a curriculum, until the frozen decoder could write much of a chunk back.
# - **03 read**: continual pre-training on the next paragraph, so that compressed context helps to predict what
#   follows, compared at equal decoder length with the last s/k tokens.
# - **04 select**: RL with GRPO, because choosing chunks is discrete and scored by another forward; the
#   paper's policy learns places, the course's question-aware policy (beyond the paper) learns answers.
# - **05 answer**: both arms fine-tuned alike; REFRAG's time to first token is a fraction of RAG's, and its
#   answers depend on what stays tokens.
# - **06 measure**: the speed-up between k and k², as the FLOP count predicts, a share of it realised by the
#   machine; the KV cache about k times smaller.
#
# What this run found, from its own metrics (the README's table is the same, from the reference run):

# %%
from refrag_lib.course.results_table import read_run, rows
from refrag_lib.errors import MissingArtifactError

try:
    for measure, rag, refrag in rows(read_run(run.root)):
        print(f"- {measure}\n    RAG: {rag or '-'}\n    REFRAG: {refrag}")
except MissingArtifactError as missing:  # a run of your own data holds notebooks 01, 05 and 07 only
    print(f"this run folder holds part of the course only ({missing}); the README's table is the reference run's")

# %% [markdown]
# **What the paper found at scale.** With LLaMA-2-7B and 20B tokens of training, REFRAG-16 recovers most of
# what the full context gives on ordinary text, the first token comes about 16 times sooner at 16k-token
# contexts (over 30 times with k = 32), and at equal latency the saved time on more passages improves answers. The
# course repeats the mechanism and the direction of each finding at laptop scale; where it departs, the reasons
# are scale and data: a 135M decoder trained for minutes, and answers that are exact codes, which one vector per
# chunk keeps only as gist.
#
# **Where to go next.**
# - A GPU preset (`PRESET = "t4"` or `"a100"` in Colab: docs/colab.md) trains larger models for longer.
# - Your own corpus and questions: `make own-data` (docs/own-data.md).
# - The studies behind the recipe, with their costs: the "going further" sections of notebooks 02-04 and
#   docs/results.md.
# - The paper: arXiv 2509.01092, "REFRAG: Rethinking RAG based Decoding".
#
# ## Self-check
#
# 1. Name the three parts REFRAG adds in front of an unchanged decoder, and what each does.
#    <details><summary>Answer</summary>An encoder (a chunk of k tokens to one vector), a projector (that vector
#    to the decoder's embedding space) and a selection policy (which chunks stay tokens).</details>
# 2. Which training stage would you lengthen first to recover more context on this corpus, and why?
#    <details><summary>Answer</summary>Stage 1 and 2 on the encoder's side: notebook 02's ceiling shows that
#    the frozen decoder can read far more from a vector than the trained encoder writes.</details>
# 3. Where does REFRAG's speed-up come from, and where does its risk to answer quality come from?
#    <details><summary>Answer</summary>Speed: s/k decoder positions instead of s in the prefill. Risk: what one
#    vector per chunk cannot carry, which the policy mitigates by keeping the key chunks as tokens.</details>
