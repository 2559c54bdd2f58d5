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
# # 05 · Fine-tuning for RAG question answering, against an equally fine-tuned ordinary RAG
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/refrag-course/refrag-course/blob/main/notebooks/05_sft.ipynb)
#
# Stages 1-3 taught the decoder to read chunk vectors and a policy to pick the chunks worth keeping as
# tokens. Now the task itself: answer a question from retrieved passages. In this notebook we
# 1. fine-tune two models the same way (same start, same questions and passages, same steps and
#    learning rate): **RAG-FT** reads the K passages as tokens, **REFRAG** reads them as chunk vectors
#    with a fraction p of chunks expanded by a selector: by default the chunks closest to the question;
# 2. save a **REFRAG-ready index**: the retrieval index plus chunk vectors of the fine-tuned encoder,
#    so answering needs no encoder pass;
# 3. evaluate on held-out questions, every EM and F1 with its 95% interval: exact match, F1, whether the
#    answer was retrieved at all, decoder input length and time to first token, also with the gold passage
#    forced in, at equal latency, and for every selector at p = 0.05, 0.1 and 0.25.
#
# Artifacts go to `RUN_DIR/sft/` (weights of both arms, `ready_index/`, metrics.json).

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
    from refrag_lib.colab import prepare_colab

    prepare_colab(keep_on_drive=KEEP_ON_DRIVE)

# %% tags=["parameters"]
SMOKE = False  # True: one SFT step per arm and a handful of questions (under 3 minutes on a laptop CPU)
PRESET = "auto"  # auto: chosen by the GPU present (cpu without one); or cpu, t4, a100, paper
RUN_DIR = ""
PACK = ""  # a teacher's pack (local or Drive path, or https URL): verified, added to RUN_DIR, its stages loaded
PROGRESS = True
STEPS = 0  # SFT steps per arm (both arms get the same); 0: the preset's budget (cpu 120: about 5 minutes for both)
BATCH_SIZE = 1  # questions per step
LR = 1e-4  # peak LR of both arms: the course's, from the lever table below (the paper's is 2e-5)
TOP_K = 3  # K: passages retrieved per question
P = 0.1  # share of REFRAG chunks expanded
SELECTOR = "question_rl"  # what REFRAG expands, in training and in the table's rows (any of GRID_SELECTORS)
GRID_SELECTORS = ["question", "question_rl", "rl", "random", "none"]  # selector x p grid (+ perplexity: ~1 min more)
GRID_FRACTIONS = [0.05, 0.1, 0.25]
GOLD_FRACTION = 1.0  # share of training questions whose gold passage is put among the K passages
TRAIN_QUESTIONS = 400  # training questions retrieved for (steps x batch size of them are drawn)
WORKSHOP = False  # True: the evaluation sized for a workshop slot (refrag_lib.config.WORKSHOP_SIZE: 60 questions,
# a smaller grid; it replaces EVAL_QUESTIONS, GRID_SELECTORS, GRID_FRACTIONS, TTFT_QUESTIONS, LATENCY_CANDIDATES)
EVAL_QUESTIONS = 0  # held-out questions (each row reads them all: the slow part on a CPU); 0: the preset's (cpu 150)
MAX_NEW_TOKENS = 10  # answers are short IDs such as River_033
TTFT_QUESTIONS = 10  # questions whose TTFT is measured per row (the median over them; 3 left rows within ~25%)
TTFT_REPEATS = 3  # timed prefills per question after one warm-up (the median of them)
LATENCY_CANDIDATES = 6  # REFRAG passage counts (K .. 16K) timed to find the equal-latency row
LATENCY_QUESTIONS = 3  # questions timed per count in that search (the row it finds is timed on TTFT_QUESTIONS)
EXAMPLES = 5  # questions shown side by side
SEED = 0
QUESTIONS = ""  # your own held-out questions (.jsonl; gold_passage_id optional); empty: the course's
TRAINED_RUN = ""  # a run folder whose notebook 05 fine-tuned both arms: evaluate those here, train nothing

# %%
from refrag_lib.notebooks import start

run = start(PRESET, RUN_DIR, SMOKE, seed=SEED, pack=PACK)

import copy

import matplotlib.pyplot as plt
from IPython.display import HTML, display

from refrag_lib.answering import generate_answer
from refrag_lib.checkpoint import model_identity
from refrag_lib.chunk_store import PassageChunks, load_chunk_store
from refrag_lib.config import WORKSHOP_SIZE
from refrag_lib.data import default_data_dir, load_qa
from refrag_lib.index import load_retriever, load_run_index
from refrag_lib.intervals import format_interval
from refrag_lib.policy import effective_compression, load_run_policies
from refrag_lib.qa import answerable, input_positions, retrieve_items
from refrag_lib.qa_eval import (
    em_by_answer_place,
    evaluate_all,
    grid_table,
    metrics_table,
    paired_differences,
    sft_metrics,
    side_by_side,
)
from refrag_lib.ready_index import READY_FOLDER, build_ready_index, format_answer, load_ready_index
from refrag_lib.runs import open_run
from refrag_lib.selectors import make_selector, selector_input
from refrag_lib.sft import SFTConfig, finished_arm, train_arm
from refrag_lib.sft_plots import examples_html, plot_em_ttft, plot_selector_grid, plot_sft_losses
from refrag_lib.trained import load_start_model

if WORKSHOP and not SMOKE:  # the workshop size takes the place of these parameters
    EVAL_QUESTIONS, TTFT_QUESTIONS = WORKSHOP_SIZE.eval_questions, WORKSHOP_SIZE.ttft_questions
    GRID_SELECTORS, GRID_FRACTIONS = list(WORKSHOP_SIZE.grid_selectors), list(WORKSHOP_SIZE.grid_fractions)
    LATENCY_CANDIDATES = WORKSHOP_SIZE.latency_candidates
steps = 1 if SMOKE else STEPS or run.preset.budget.sft_steps
eval_questions = 4 if SMOKE else EVAL_QUESTIONS or run.preset.budget.eval_questions
train_questions = 40 if SMOKE else TRAIN_QUESTIONS
ttft_questions, ttft_repeats, candidates = (1, 2, 3) if SMOKE else (TTFT_QUESTIONS, TTFT_REPEATS, LATENCY_CANDIDATES)
config = SFTConfig(steps=steps, top_k=TOP_K, p=P, selector=SELECTOR, batch_size=BATCH_SIZE, lr=LR,
                   gold_fraction=GOLD_FRACTION, seed=SEED)
trained = open_run(PRESET, TRAINED_RUN, k=run.preset.k) if TRAINED_RUN else run  # where both arms are fine-tuned

# %% [markdown]
# ## The data: questions, retrieved passages, short answers
#
# Every answer is an arbitrary ID that only the gold passage states, so the decoder cannot answer from
# memory: it must read. We retrieve with the index of notebook 01. For the equal-latency row we
# retrieve up to 16K passages per evaluation question now, once. (A SMOKE index holds only part of the
# corpus; training then uses the questions whose gold passage it holds.) Your own questions without
# gold ids count a passage that contains the answer as their gold passage; those that no passage
# answers are left out.

# %%
index = load_run_index(run)
retriever = load_retriever(run.preset)
max_passages = min(16 * TOP_K, len(index))
eval_pool = answerable(load_qa(QUESTIONS or default_data_dir() / "qa_eval.jsonl"), index, eval_questions)
eval_items = retrieve_items(retriever, index, eval_pool, max_passages, progress=PROGRESS)
if TRAINED_RUN:  # the arms were fine-tuned on the course's questions in TRAINED_RUN
    train_items = []
    print(f"evaluating the arms fine-tuned in {trained.root}; nothing is trained here")
else:
    train_pool = answerable(load_qa(default_data_dir() / "qa_train.jsonl"), index, train_questions)
    train_items = retrieve_items(retriever, index, train_pool, TOP_K, progress=PROGRESS)
    hit = sum(it.gold in it.rows[:TOP_K] for it in train_items) / len(train_items)
    print(f"{len(train_items)} training questions (gold among the top {TOP_K}: {hit:.0%})")
print(f"{len(eval_items)} evaluation questions, index of {len(index)} passages")

# %% [markdown]
# ## Two arms from one start
#
# Both arms start from the weights the policy was trained with (notebook 04: CPT, then mixed-input
# CPT). The prompt is `Question: ... Context: <passages> Answer:` and the target is the answer ID,
# followed by the end-of-text token so the model learns to stop. Only those answer tokens are scored:
# the question and the passages are given, not predicted.
#
# - **RAG-FT** feeds every passage as tokens. It never uses the encoder or projector, so only the
#   decoder is trained.
# - **REFRAG** feeds each passage's k-token chunks as chunk vectors, except the round(p·L) chunks the
#   selector expands; encoder, projector and decoder are trained end to end, as in the paper. The
#   REFRAG arm trains with the selector it is evaluated with (`SELECTOR`).
#
# **Why the selector matters here.** Every answer is an ID such as River_033 that only exact tokens
# carry: a chunk vector holds the gist of 16 tokens (notebook 02: one-chunk reconstruction barely beats
# the decoder alone), not an ID. REFRAG can answer only if the chunk holding the answer is one it
# expands. The paper's policy (notebook 04, `rl`) chooses from the chunk vectors alone, blind to the
# question. The `question` selector scores each chunk by the cosine between the retriever's vector of
# the question and the retriever's vector of the chunk's text: notebook 01 stored one per chunk next to
# the index, so choosing costs a matrix-vector product and no encoder pass.
#
# Here is what that does to the decoder input of one question:

# %%
model = load_start_model(trained)
rag_model = copy.deepcopy(model)  # the same start, trained separately
policies = load_run_policies(trained, retriever.name)  # notebook 04's: rl and question_rl
index_store = load_chunk_store(run.require("index", "chunk_store.safetensors"), model, index, probe=0)  # its keys
chunks = PassageChunks(model, index.passages, keys=index_store)
selector = make_selector(SELECTOR, policies, model, seed=SEED)
demo = (train_items or eval_items)[0]
example = selector_input(model, demo, demo.rows, chunks)  # what the selector sees: chunks, c_i, retriever vectors
prompt, expand = example.segments, selector([example], P)[0]
print(demo.question, "->", demo.answers[0])
print(f"RAG-FT reads {input_positions(prompt, [True] * len(expand))} positions; REFRAG reads "
      f"{input_positions(prompt, expand)} ({len(expand)} chunks of k={model.k}, {sum(expand)} expanded; "
      f"effective compression at p={P}: {effective_compression(model.k, P):.1f}x)")

# %% [markdown]
# ## Fine-tune both arms
#
# The shared training loop of notebooks 02-04 (`refrag_lib.train`): AdamW at peak LR 1e-4 (the paper's
# 2e-5 is made for long runs; the lever table at the end of this notebook chose 1e-4), 4% linear
# warm-up, cosine decay, gradient clipping, metrics in `RUN_DIR/sft/<arm>/metrics.jsonl`, and resume
# after an interruption. Every step draws its questions from a generator seeded by the step number, so
# both arms see exactly the same questions and passages. With `GOLD_FRACTION = 1` the gold passage is
# put among the K passages (at a random place) when retrieval missed it: a model trained on
# passages that do not hold the answer learns to guess IDs, not to read them. An arm that finished in
# `RUN_DIR/sft/<arm>/` (an earlier run of this cell, or a teacher's `PACK`) is loaded, not trained again.

# %%
identity = model_identity(run.preset, "sft")
if TRAINED_RUN:  # your own questions: the arms fine-tuned there, loaded back
    rag, refrag = finished_arm(trained, "rag"), finished_arm(trained, "refrag")
    rag_model, model = rag.model, refrag.model
else:
    rag = train_arm(rag_model, "rag", config, train_items, chunks, None, run.stage_dir("sft") / "rag", identity,
                    progress=PROGRESS)
    refrag = train_arm(model, "refrag", config, train_items, chunks, selector, run.stage_dir("sft") / "refrag",
                       identity, progress=PROGRESS)
for name, arm in (("rag", rag), ("refrag", refrag)):
    done, seconds = arm.summary["steps_done"], arm.summary["train_seconds"]
    print(f"{name:6s} {done} steps in {seconds:.0f} s ({seconds / done:.1f} s/step), answer NLL "
          f"{arm.summary['first_loss']:.2f} -> {arm.summary['last_loss']:.2f}")
plot_sft_losses({"RAG-FT": rag.history, "REFRAG": refrag.history}, window=max(1, steps // 8))
plt.show()

# %% [markdown]
# ## The REFRAG-ready index
#
# Fine-tuning changed the encoder, so every chunk vector computed before is stale. We compute them
# once more with the fine-tuned encoder and save them next to the retrieval index, with notebook 01's
# retriever vector of every chunk (the question selector's; they do not depend on the encoder). At question time
# REFRAG then runs no encoder at all: it looks the vectors up ("with cache"). Loading the folder back
# re-encodes a few chunks and compares: a store made by another encoder (or another k) is refused.
# `python -m refrag_lib generate --question "..."` answers from this folder.

# %%
ready_folder = run.stage_dir("sft") / READY_FOLDER
build_ready_index(ready_folder, model, index, weights="sft/refrag/weights.safetensors", p=P, top_k=TOP_K,
                  selector=SELECTOR, keys_from=run.root / "index", progress=PROGRESS,
                  weights_run=trained.root if TRAINED_RUN else None)
ready = load_ready_index(ready_folder, model, retriever, policies)
print(f"{ready.store.n_chunks} chunk vectors for {len(ready.index)} passages in {ready_folder}")

# %% [markdown]
# ## Evaluation on held-out questions
#
# Each row answers every evaluation question greedily and is scored with SQuAD's normalisation (lower
# case, no punctuation or articles): exact match and token F1. "Answer in context" is the share of
# questions whose answer occurs in the passages the reader got at all: retrieval's ceiling.
#
# - **no context**: RAG-FT with no passages (can it guess?);
# - **RAG-FT, K** and **REFRAG, K**: the same K retrieved passages;
# - **REFRAG, equal latency**: REFRAG with as many passages (K .. 16K) as fit in RAG-FT's TTFT at K,
#   the count chosen by measured TTFT, expanding as many chunks as at K (p scaled by K / passages: an
#   answer needs one or two chunks as tokens however many passages there are, and the time REFRAG saved
#   goes to more passages as vectors);
# - each again with the **gold passage forced in** (in place of the last retrieved one; for no
#   context, the gold passage alone). The gap between a row and its gold version is retrieval's fault,
#   what remains below 1.0 with the gold passage is the reader's.
#
# TTFT follows notebook 06's rules: inputs ready (REFRAG: cached chunk vectors) -> assembly and
# projector -> prefill -> first token from the prefill logits, warm-up discarded, median of repeats.

# %%
grid_names = dict.fromkeys([*GRID_SELECTORS, SELECTOR])  # the table's selector too, in the grid's order
grid_selectors = {name: make_selector(name, policies, model, seed=SEED) for name in grid_names}
evaluation = evaluate_all(rag_model, model, eval_items, ready.store, grid_selectors, SELECTOR, P, TOP_K,
                          max_passages, GRID_FRACTIONS, ttft_questions=ttft_questions, repeats=ttft_repeats,
                          max_new_tokens=MAX_NEW_TOKENS, latency_candidates=candidates,
                          latency_questions=LATENCY_QUESTIONS, progress=PROGRESS)
results = evaluation["results"]
table = metrics_table(results)
paired = paired_differences(results)
grid = grid_table(evaluation["grid"])
n_equal = evaluation["equal_latency_passages"]
print(f"equal latency: REFRAG with {n_equal} passages; TTFT (ms) by passage count: "
      f"{ {n: round(t, 1) for n, t in evaluation['equal_latency_grid_ms'].items()} }, RAG-FT at K={TOP_K}: "
      f"{table['ttft_ms']['rag']:.1f}")
print(f"{len(eval_items)} questions; EM [95% interval]; REFRAG rows: EM minus RAG-FT's, paired interval")
print(f"{'row':28s} {'EM':>18s} {'F1':>5s} {'in ctx':>6s} {'inputs':>7s} {'TTFT ms':>8s}  vs RAG-FT")
for row in results:
    low, high = table["exact_match_ci"][row]
    versus = format_interval(paired[row], 2) if row in paired else ""
    print(f"{row:28s} {table['exact_match'][row]:5.2f} [{low:.2f}, {high:.2f}] {table['f1'][row]:5.2f} "
          f"{table['answer_in_context'][row]:6.2f} {table['input_tokens'][row]:7.1f} {table['ttft_ms'][row]:8.1f}  "
          f"{versus}")

# %% [markdown]
# ### Could REFRAG read the answer at all?
#
# An answer such as River_033 can only be copied from tokens. For each REFRAG row, the questions by where
# their answer lay in what the reader got: inside a chunk the selector expanded, inside a compressed
# chunk (one vector), straddling two chunks (readable only if both are expanded), or in none of the
# passages (retrieval's miss). The exact match within each group says whether the reader or the
# selector is the limit.

# %%
answer_places = {row: em_by_answer_place(results[row], eval_items, ready.store, model)
                 for row in results if row.startswith("refrag")}
for row, places in answer_places.items():
    print(row)
    for place, group in places.items():
        print(f"  {place:38s} {group['questions']:4d} questions, EM {group['exact_match']:.2f}")

# %% [markdown]
# ### Your turn: token F1
#
# Write `my_f1(prediction, answers)`, SQuAD's token F1: normalise the prediction and each gold answer (you may
# use `refrag_lib.qa.normalize_answer`), split into words, count the words they share (each as often as it occurs
# on both sides), F1 = 2PR / (P + R) with P = shared / prediction words and R = shared / gold words, and return
# the best F1 over the gold answers (0 when nothing is shared). The checker tries a few predictions; the cell then
# recomputes the F1 column of the table above with your function. `None` uses `refrag_lib.qa.token_f1`;
# `reveal("token_f1")` shows it, folded.

# %%
from refrag_lib.exercises import exercise, reveal

my_f1 = None  # leave None to use the reference, or define it below
# def my_f1(prediction, answers):
#     ...

f1 = exercise("token_f1", my_f1)
for row in ("rag", "refrag"):
    mine = sum(f1(answer, item.answers) for answer, item in zip(results[row]["predictions"], eval_items))
    print(f"{row:6s} F1 with your function {mine / len(eval_items):.2f} (table: {table['f1'][row]:.2f})")

# %%
reveal("token_f1")  # the reference solution, folded

# %%
plot_em_ttft(table, TOP_K, n_equal)
plt.show()

# %% [markdown]
# ## Which chunks to expand: every selector at every p
# REFRAG at K, the same fine-tuned model and the same questions, only the choice of expanded chunks
# changes: `question` (closest to the question), `question_rl` (notebook 04's policy that reads the
# question), `rl` (the paper's question-blind policy), `random`, and `none` (every chunk a vector). A
# larger p keeps more chunks as tokens: more chances that the answer's chunk is one of them, and a longer
# decoder input (TTFT). RAG-FT reads everything as tokens.
# The bars are 95% intervals over questions; two selectors differ where their paired interval (printed)
# excludes 0. (The model was fine-tuned with `SELECTOR`'s choices, which favours that selector a little.)

# %%
from refrag_lib.intervals import paired_difference

per_question = {name: {p: row["per_question"]["exact_match"] for p, row in rows.items()}
                for name, rows in evaluation["grid"].items()}
for name, rows in grid.items():
    for p, row in rows.items():
        line = f"{name:9s} p={float(p):4.2f}  EM {row['exact_match']:.2f} [{row['ci'][0]:.2f}, {row['ci'][1]:.2f}]"
        line += f"  TTFT {row['ttft_ms']:6.1f} ms"
        if name != SELECTOR and p in per_question[SELECTOR] and len(eval_items) > 1:
            diff = paired_difference(per_question[SELECTOR][p], per_question[name][p])
            line += f"  {SELECTOR} minus {name}: {format_interval(diff, 2)}"
        print(line)
plot_selector_grid(grid, table["exact_match"]["rag"], table["ttft_ms"]["rag"])
plt.show()

# %% [markdown]
# ## Answers side by side
#
# Green: exact match. The last column shows the chunks REFRAG's selector kept as tokens; everything
# else reached the decoder as one vector per k tokens.

# %%
display(HTML(examples_html(side_by_side(eval_items, results, ready.store, model, n=EXAMPLES))))

# %% [markdown]
# The same path the command line takes (`python -m refrag_lib generate --question "..."`): retrieve,
# look up the cached vectors, expand, answer.

# %%
print(format_answer(generate_answer(ready, eval_items[0].question, max_new_tokens=MAX_NEW_TOKENS,
                                    repeats=ttft_repeats)))

# %% [markdown]
# ## What to take away
#
# Read the table in pairs. RAG-FT vs REFRAG at K: how much answer quality the compression costs, and
# how much TTFT it saves. A row vs its gold version: how much is lost to retrieval rather than to
# reading. REFRAG at equal latency: what the saved time buys when it is spent on more passages (the
# paper: +1.2-1.9% over RAG at equal latency with LLaMA-2-7B).
#
# **A default run** (`make course` from a fresh clone on a 2-core CPU, 150 held-out questions, K = 3,
# p = 0.1, 120 SFT steps per arm at LR 1e-4, both arms trained under bf16 autocast and answering under it
# (this CPU has native bf16; TTFT in fp32); EM [95% interval], TTFT with cache, median over 10 questions
# per row; weights from the bf16 stage 1 and CPT, the question-aware policy after 100 GRPO steps; the
# equal-latency passage count searched on the TTFT of 3 questions per count). This shared machine's TTFTs
# move from day to day (RAG-FT: 389, 615, 699 and 445 ms in four runs), so read them as ratios:
#
# | row | EM | TTFT | vs RAG-FT (paired) |
# |---|---|---|---|
# | RAG-FT | 0.47 [0.39, 0.55] | 445 ms | |
# | REFRAG, question-aware policy | 0.45 [0.37, 0.53] | 120 ms | -0.03 [-0.09, 0.03] |
# | RAG-FT, gold passage forced in | 0.90 [0.85, 0.95] | 437 ms | |
# | REFRAG, gold passage forced in | 0.81 [0.75, 0.87] | 131 ms | |
# | RAG-FT, the gold passage alone | 0.97 [0.95, 0.99] | 184 ms | |
# | REFRAG at equal latency (48 passages, K's expansions) | 0.54 [0.46, 0.62] | 484 ms | +0.07 [-0.04, 0.17] |
# | REFRAG at equal latency, gold passage forced in | 0.71 [0.64, 0.78] | 471 ms | |
# | REFRAG, the paper's question-blind policy | 0.03 / 0.01 / 0.07 at p = 0.05 / 0.1 / 0.25 | 109-174 ms | |
#
# REFRAG answers 3.7x sooner (120 against 445 ms) with 0.94 of RAG-FT's exact match; the paired
# difference, -0.03 [-0.09, 0.03], is a tie (the run before: 0.44 against 0.49, paired -0.05 [-0.11,
# 0.00]; the fp32 run before that: 0.45 against 0.52, -0.07 [-0.13, -0.02]). Spending the time it saved
# on more passages (48 instead of 3, as many chunks expanded as at K) it answers 0.54 against 0.47 at the
# same TTFT, within the paired interval. The gain it could have is visible in its gold row: at equal
# latency retrieval finds the answer for 83% of the questions (RAG-FT at K: 54%), but the reader loses
# more among 48 passages than among 3 (0.71 against 0.81 with the gold passage in).
# The question-aware policy beats the paper's policy, random and the cosine heuristic at every p by
# more than the paired interval (at p = 0.1: +0.44 [0.36, 0.52], +0.41 [0.33, 0.49] and +0.33 [0.25,
# 0.40]). Across default runs of successive recipes this row has read 0.45, 0.49, 0.45, 0.47, 0.44 and 0.45
# (each within the others' intervals): at 150 questions a recipe change of stages 1-2 moves it by no
# more than the interval.
#
# **Could REFRAG read the answer?** (the cell above, REFRAG at K): 64 questions had the answer inside an
# expanded chunk (EM 0.94), 7 across two chunks both expanded (1.00), 7 across two chunks not both
# expanded (0.00), 3 inside a compressed chunk (0.00), 69 in no retrieved passage (0.00). The reader
# answers nearly whenever the answer reached it as tokens, and never from a vector alone: what is left
# is retrieval (69 of 150) and answers that straddle two chunks.
#
# **What moved REFRAG from 0.29 to 0.45** (the same 150 questions, the same SFT budget): the
# question-aware policy of notebook 04 now reads the question's words and is warm-started on where
# answers lie; its landing on the answer's chunk at p = 0.1 went from 0.73 to 0.99, and the REFRAG row
# of this notebook from 0.29 [0.22, 0.36] to 0.45 [0.37, 0.53] (gold forced in: 0.39 -> 0.83). The
# equal-latency row used to expand p = 0.1 of all its chunks: 0.17 [0.11, 0.23] with 20 passages (the
# previous policy), and 0.11 [0.07, 0.17] with 16 passages and this policy. With ten or more chunks
# expanded out of many look-alike passages ("directed by Person_..." in each), the reader cannot tell
# which expanded chunk belongs to the asked entity, whose name sits in a compressed chunk; keeping the
# expansions at K's 2 and spending the time on passages as vectors turned it into the tie above. The
# same confusion probably explains why p = 0.25 gains nothing over p = 0.1 in the grid (0.38 against
# 0.45 here, 0.44 against 0.44 and 0.43 against 0.47 in the runs before; the model was also fine-tuned at p = 0.1).
#
# **SFT levers** (measured with the previous question-aware policy, REFRAG at 0.29;
# `python -m refrag_lib sft-curve --steps 60 120 --lr <lr> --name <row>`, and `--arms refrag --steps
# 120 --p <p>`; the same 400 training and 150 held-out questions, one question a step; a row at 60 steps
# is the midpoint of a 120-step schedule whose LR has not decayed yet):
#
# | LR | p | RAG-FT, 60 steps | RAG-FT, 120 | REFRAG, 60 steps | REFRAG, 120 |
# |---|---|---|---|---|---|
# | 2e-5 (the paper's) | 0.1 | 0.36 [0.29, 0.44] | 0.39 [0.32, 0.47] | 0.28 [0.21, 0.35] | 0.29 [0.22, 0.37] |
# | **1e-4** (default) | 0.1 | 0.39 [0.31, 0.47] | **0.52 [0.44, 0.60]** | 0.25 [0.18, 0.32] | **0.29 [0.22, 0.36]** |
# | 1e-4 | 0.15 | | | | 0.27 [0.21, 0.35] |
# | 1e-4 | 0.25 | | | | 0.35 [0.28, 0.43] |
#
# RAG-FT keeps learning with a larger LR and more steps (0.39 -> 0.52); REFRAG stayed at 0.29 whatever
# the LR or the steps: the selector, not the fine-tuning, was its limit. The same 120 questions as 60
# steps of two (`--batch-size 2 --steps 60`) gave RAG-FT 0.36 [0.29, 0.44] and REFRAG 0.24 [0.17,
# 0.31]: at this budget more updates beat larger ones.
#
# What would move it further: retrieval (both arms read only what the top 3 hold); answers straddling
# two chunks (a selector that expands the neighbour when the answer may run over the boundary); a
# reader trained with many passages, for the equal-latency row; and stage 1-2 vectors that carry exact
# tokens (notebook 02: one-chunk reconstruction gets 3-4 more tokens in 100 right; bigger encoder and
# decoder: the GPU presets).

# %%
run.write_metrics("sft", sft_metrics(
    evaluation, answer_places, {"rag": rag.summary, "refrag": refrag.summary},
    selector=SELECTOR, n_eval=len(eval_items), p=P, top_k=TOP_K, steps=steps, batch_size=BATCH_SIZE, lr=LR,
    gold_fraction=GOLD_FRACTION, n_train_questions=len(train_items), questions=str(QUESTIONS or "course"),
    trained_run=str(trained.root)))
print("wrote", run.stage_dir("sft") / "metrics.json")
