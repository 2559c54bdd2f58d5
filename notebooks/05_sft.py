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
# **The question of this notebook:** fine-tuned alike on the same questions, does REFRAG answer as well as
# ordinary RAG, and sooner?
#
# The decoder reads every retrieved passage before its first answer token, so the time to first token (TTFT)
# grows with the context. The paper fine-tunes REFRAG and the same LLM reading the passages as tokens on the same
# RAG data (supervised fine-tuning, SFT), and asks (its Figure 4): with the same passages, does REFRAG answer as
# well, sooner? At the same latency, spending the saved time on more passages, does it answer better? It reports
# +1.2-1.9% over RAG at equal latency with LLaMA-2-7B (the paper's numbers).
#
# **What you will build**, with the decoder, encoder and policies of notebooks 02-04:
# 1. two *arms* (two ways of feeding the model the same passages), fine-tuned alike (same start, questions,
#    passages, steps and LR): **RAG-FT** reads the K passages as tokens, **REFRAG** reads them as chunk vectors
#    with a fraction p expanded by a selector (by default notebook 04's question-aware policy, the course's
#    addition beyond the paper);
# 2. a **REFRAG-ready index**: the retrieval index plus the fine-tuned encoder's chunk vectors, so answering
#    runs no encoder;
# 3. the evaluation on held-out questions: exact match (EM) with its 95% interval, token F1 (your function),
#    whether the answer was in the context at all, input length and TTFT; also with the gold passage forced
#    in, at equal latency, and for every selector and p.
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
    from refrag_lib.course.colab import prepare_colab

    prepare_colab(keep_on_drive=KEEP_ON_DRIVE)

# %% tags=["parameters"]
SMOKE = False  # True: one SFT step per arm and a handful of questions (under 3 minutes on a laptop CPU)
PRESET = "auto"  # auto: chosen by the GPU present (cpu without one); or cpu, t4, a100, paper
RUN_DIR = ""  # where the course's results go; empty: runs/<preset>
PACK = ""  # a teacher's pack (docs/teaching.md): its trained stages are loaded instead of trained
TOP_K = 3  # K: passages retrieved per question
P = 0.1  # share of REFRAG chunks expanded
SELECTOR = "question_rl"  # what REFRAG expands, in training and in the table's rows: question_rl, question, rl, ...
WORKSHOP = False  # True: the evaluation sized for a workshop slot (refrag_lib.config.WORKSHOP_SIZE: 60 questions)
EVAL_QUESTIONS = 0  # held-out questions (each row reads them all: the slow part on a CPU); 0: the preset's (cpu 150)
QUESTIONS = ""  # your own held-out questions (.jsonl; gold_passage_id optional); empty: the course's
TRAINED_RUN = ""  # a run folder whose notebook 05 fine-tuned both arms: evaluate those here, train nothing

# %%
from refrag_lib.course.lesson import show_pipeline

show_pipeline("05")

# %%
from refrag_lib.course.notebooks import start

SEED = 0
run = start(PRESET, RUN_DIR, SMOKE, seed=SEED, pack=PACK)

# %%
# Advanced settings: the fine-tuning recipe and the evaluation's sizes (why each: docs/results.md, notebook 05).
STEPS = 0  # SFT steps per arm (both arms get the same); 0: the preset's budget (cpu 120: about 5 minutes for both)
BATCH_SIZE = 1  # questions per step
LR = 1e-4  # peak LR of both arms (the paper's is 2e-5, for much longer runs)
GOLD_FRACTION = 1.0  # share of training questions whose gold passage is put among the K passages
TRAIN_QUESTIONS = 400  # training questions retrieved for (steps x batch size of them are drawn)
GRID_SELECTORS = ["question", "question_rl", "rl", "random", "none"]  # the selector x p grid
GRID_FRACTIONS = [0.05, 0.1, 0.25]
MAX_NEW_TOKENS = 10  # answers are short IDs such as River_033
TTFT_QUESTIONS = 10  # questions whose TTFT is measured per row (the median over them)
TTFT_REPEATS = 3  # timed prefills per question after one warm-up (the median of them)
LATENCY_CANDIDATES = 6  # REFRAG passage counts (K .. 16 x K) timed to find the equal-latency row
LATENCY_QUESTIONS = 3  # questions timed per count in that search
EXAMPLES = 5  # questions shown side by side
PROGRESS = True

import matplotlib.pyplot as plt
from IPython.display import HTML, display

from refrag_lib.answering import generate_answer
from refrag_lib.checkpoint import model_identity
from refrag_lib.chunk_store import PassageChunks, load_chunk_store
from refrag_lib.config import WORKSHOP_SIZE
from refrag_lib.course.sft_plots import examples_html, plot_em_ttft, plot_selector_grid, plot_sft_losses
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
from refrag_lib.sft import TRAINED_PARTS, SFTConfig, finished_arm, train_arms
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
# memory: it must read. We retrieve with notebook 01's index, once, up to 16 × K passages per evaluation
# question (for the equal-latency row). A SMOKE index holds part of the corpus; training then uses the
# questions whose gold passage it holds. Your own questions without gold ids count a passage that
# contains the answer as gold; those no passage answers are left out.

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
# ### Your turn: token F1
#
# Write `my_f1(prediction, answers)`, SQuAD's token F1: normalise the prediction and each gold answer (you may
# use `refrag_lib.qa.normalize_answer`), split into words, count the words they share (each as often as it occurs
# on both sides), F1 = 2PR / (P + R) with P = shared / prediction words and R = shared / gold words, and return
# the best F1 over the gold answers (0 when nothing is shared). The checker tries a few predictions; after the
# evaluation below, a cell recomputes the table's F1 column with your function. `None` uses
# `refrag_lib.qa.token_f1`; `reveal("token_f1")` shows it, folded.

# %%
from refrag_lib.course.exercises import exercise, reveal

my_f1 = None  # leave None to use the reference, or define it below
# def my_f1(prediction, answers):
#     ...

f1 = exercise("token_f1", my_f1)

# %%
reveal("token_f1")  # the reference solution, folded

# %% [markdown]
# ## Two arms from one start
#
# Both start from the weights the policy was trained with (notebook 04: CPT, then mixed-input CPT). The
# prompt is `Question: ... Context: <passages> Answer:`; only the target is scored: the answer ID and
# the end-of-text token, so the model learns to stop.
#
# - **RAG-FT** feeds every passage as tokens: no encoder or projector, only the decoder is trained.
# - **REFRAG** feeds each passage's k-token chunks as vectors, except the round(p·L) chunks the selector
#   expands; encoder, projector and decoder are trained end to end, as in the paper, with the selector
#   it is evaluated with (`SELECTOR`).
#
# **Why the selector matters.** An answer here is an ID such as River_033, and an ID survives only as exact
# tokens. A chunk vector holds the gist of its k tokens: notebook 02 showed that one vector lifts the decoder's
# token accuracy well above the floor, but does not let it copy every token. So REFRAG can answer only if it
# expands the chunk that holds the answer. Three selectors can choose that chunk:
#
# - `rl`, the paper's policy from notebook 04, sees the chunk vectors alone and never the question;
# - `question`, a heuristic, ranks chunks by the cosine between their retriever vector and the question's
#   (vectors that notebook 01 stored next to the index, so no encoder runs);
# - `question_rl`, the default, is notebook 04's GRPO policy that also reads the question, the course's
#   addition beyond the paper.
#
# One question's decoder input, as each arm reads it:

# %%
model = load_start_model(trained, train_parts=TRAINED_PARTS["refrag"])  # what is about to be trained, in fp32
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
# The shared training loop of notebooks 02-04 (`refrag_lib.train`): AdamW at peak `LR` (larger than the
# paper's 2e-5, which is made for long runs), 4% linear warm-up, cosine decay, gradient clipping,
# metrics in `RUN_DIR/sft/<arm>/metrics.jsonl`, resume after an interruption. Both arms draw the same
# questions at each step (a generator seeded by the step number). With `GOLD_FRACTION = 1`
# the gold passage is put among the K (at a random place) when retrieval missed it: trained on passages
# without the answer, a model learns to guess IDs, not to read them. A finished arm in
# `RUN_DIR/sft/<arm>/` (an earlier run, or a teacher's `PACK`) is loaded, not retrained. The plot: each
# arm's answer loss per step, smoothed.

# %%
identity = model_identity(run.preset, "sft")
if TRAINED_RUN:  # your own questions: the arms fine-tuned there, loaded back
    rag, refrag = finished_arm(trained, "rag"), finished_arm(trained, "refrag")
    rag_model, model = rag.model, refrag.model
else:  # one arm at a time on the device; `model` becomes the REFRAG arm, the RAG arm is a copy of its start
    arms = train_arms(model, config, train_items, chunks, selector, run.stage_dir("sft"), identity, progress=PROGRESS)
    rag, refrag = arms["rag"], arms["refrag"]
    rag_model = rag.model
for name, arm in (("rag", rag), ("refrag", refrag)):
    done, seconds = arm.summary["steps_done"], arm.summary["train_seconds"]
    print(f"{name:6s} {done} steps in {seconds:.0f} s ({seconds / done:.1f} s/step), answer NLL "
          f"{arm.summary['first_loss']:.2f} -> {arm.summary['last_loss']:.2f}")
plot_sft_losses({"RAG-FT": rag.history, "REFRAG": refrag.history}, window=max(1, steps // 8))
plt.show()

# %% [markdown]
# ## The REFRAG-ready index
#
# Fine-tuning changed the encoder, so every earlier chunk vector is stale. We compute them once more and
# save them next to the retrieval index, with notebook 01's retriever vector of every chunk. At question
# time REFRAG runs no encoder: it looks the vectors up ("with cache"). Loading re-encodes a few chunks and
# compares: a store made by another encoder (or k) is refused.
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
# Each row answers every question greedily, scored with SQuAD's normalisation: exact match and token
# F1. "In ctx" is the share of questions whose answer occurs in the passages the reader got: retrieval's
# ceiling.
#
# - **no context**: RAG-FT with no passages (can it guess?);
# - **RAG-FT, K** and **REFRAG, K**: the same K retrieved passages;
# - **REFRAG, equal latency**: as many passages (K .. 16 × K) as fit in RAG-FT's TTFT at K, chosen by
#   measured TTFT, expanding as many chunks as at K (an answer needs one or two chunks as tokens however
#   many passages there are; the saved time goes to more passages as vectors);
# - each again with the **gold passage forced in** (in place of the last retrieved one; for no context,
#   the gold passage alone). A row's gap to its gold version is retrieval's; what the gold version still
#   misses is the reader's.
#
# TTFT follows notebook 06's rules: inputs ready (REFRAG: cached chunk vectors) -> assembly and
# projector -> prefill -> first token, warm-up discarded, median of repeats. The last column: each
# REFRAG row's EM minus RAG-FT's, with its paired 95% interval.

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

# %%
# The table's F1 column, recomputed with your token F1 from the exercise above
for row in ("rag", "refrag"):
    mine = sum(f1(answer, item.answers) for answer, item in zip(results[row]["predictions"], eval_items))
    print(f"{row:6s} F1 with your function {mine / len(eval_items):.2f} (table: {table['f1'][row]:.2f})")

# %% [markdown]
# ### Could REFRAG read the answer at all?
#
# For each REFRAG row, the questions by where their answer lay: inside an expanded chunk, inside a
# compressed chunk (one vector), across two chunks (readable only if both are expanded), or in no
# passage (retrieval's miss), with each group's EM. High EM where the answer was expanded and none where
# it was compressed means the reader copies tokens and cannot read an ID from a vector: then the
# selector and retrieval are the limits, not the reader.


# %%
answer_places = {row: em_by_answer_place(results[row], eval_items, ready.store, model)
                 for row in results if row.startswith("refrag")}
for row, places in answer_places.items():
    print(row)
    for place, group in places.items():
        print(f"  {place:38s} {group['questions']:4d} questions, EM {group['exact_match']:.2f}")

# %% [markdown]
# The table as a picture. Left: EM of each row, retrieved and with the gold passage forced in. Right:
# median TTFT. A shared machine's TTFTs move from day to day: compare rows of one run as ratios.

# %%
plot_em_ttft(table, TOP_K, n_equal)
plt.show()

# %% [markdown]
# ## Which chunks to expand: every selector at every p
# REFRAG at K, the same model and questions; only the choice of expanded chunks changes: `question`
# (closest to the question), `question_rl` (notebook 04's policy that reads the question), `rl` (the
# paper's question-blind policy), `random`, and `none` (every chunk a vector). A larger p keeps more
# chunks as tokens: more chances to expand the answer's chunk, and a longer input (TTFT). Bars are 95%
# intervals; each printed line ends with `SELECTOR` minus that selector at that p, a paired interval:
# where it excludes 0 the two differ. (The model was fine-tuned with `SELECTOR`'s choices, which favours
# it a little.) A larger p can also confuse the reader among look-alike expanded passages.

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
# ## What the intervals say
#
# Read the table in pairs. RAG-FT against REFRAG at K: what the compression costs in answers and saves in TTFT.
# A row against its gold version: what is lost to retrieval rather than to reading. REFRAG at equal latency:
# what the saved time buys as more passages. The cell answers the paper's two Figure 4 questions for this run
# from its paired differences; an interval that contains 0 is a tie, and at K a tie means the same answers
# sooner.

# %%
from refrag_lib.intervals import verdict

ttft = table["ttft_ms"]
if paired:  # a paired interval needs two questions at least
    print(f"REFRAG at K={TOP_K}: TTFT {ttft['refrag']:.0f} ms against RAG-FT's {ttft['rag']:.0f} ms (RAG-FT's is "
          f"{ttft['rag'] / ttft['refrag']:.1f}x REFRAG's); EM minus RAG-FT's: "
          + verdict(paired["refrag"], above="REFRAG answers better", below="RAG-FT answers better"))
    print(f"REFRAG at equal latency ({n_equal} passages, TTFT {ttft['refrag_equal_latency']:.0f} ms); EM minus "
          "RAG-FT's at K: " + verdict(paired["refrag_equal_latency"], above="REFRAG answers better",
                                       below="RAG-FT answers better"))
else:
    print("fewer than two questions: no paired interval, no verdict")

# %%
run.write_metrics("sft", sft_metrics(
    evaluation, table, paired, grid, answer_places, {"rag": rag.summary, "refrag": refrag.summary},
    selector=SELECTOR, n_eval=len(eval_items), p=P, top_k=TOP_K, steps=steps, batch_size=BATCH_SIZE, lr=LR,
    gold_fraction=GOLD_FRACTION, n_train_questions=len(train_items), questions=str(QUESTIONS or "course"),
    trained_run=str(trained.root)))
print("wrote", run.stage_dir("sft") / "metrics.json")

# %% [markdown]
# ## What a normal run finds, next to the paper
#
# The reference run (the default `make course` on the cpu preset, 150 held-out questions) finds:
#
# * **At K, a tie, several times sooner.** REFRAG's exact match is a little below RAG-FT's, but the paired
#   interval contains 0, and its TTFT is a fraction of RAG-FT's: the paper's first Figure 4 answer, the same
#   answers sooner.
# * **Why a tie and not better: the answers are codes.** The reader answers nearly whenever the answer's chunk
#   reached it as tokens and almost never from a vector alone (the "could REFRAG read the answer" cell). So
#   REFRAG's answers hinge on the selector expanding the right chunk, and most of the remaining misses are
#   retrieval's: the answer was in no retrieved passage.
# * **At equal latency, a tie leaning REFRAG's way.** Spending the saved time on many more passages raises how
#   often the answer is in the context, but the reader loses more among dozens of look-alike passages, and the
#   gain stays inside the interval. The paper's small gain at equal latency comes from a 7B reader on ordinary
#   text.
# * **The selector decides.** With the paper's question-blind policy REFRAG almost never answers; the
#   question-aware policy (beyond the paper) is what makes REFRAG competitive on this data.
#
# Your run beside the reference:

# %%
from refrag_lib.course.lesson import beside_reference

beside_reference(run, "sft", run.read_metrics("sft"), {
    "exact_match.rag": "EM, RAG-FT at K", "exact_match.refrag": "EM, REFRAG at K",
    "exact_match.refrag_equal_latency": "EM, REFRAG at equal latency"})

# %% [markdown]
# ### Your turn: what would move it further
#
# Change a parameter and rerun: `SELECTOR = "question"` or `"rl"` fine-tunes REFRAG with another selector, `P`
# trades expanded chunks against TTFT, `TOP_K` gives both arms more passages. Where answers go missing says what
# to try: answers in no passage are retrieval's; answers across two chunks want a selector that also expands the
# neighbour; a weak equal-latency row wants a reader trained with many passages; answers lost in compressed
# chunks want vectors that carry exact tokens (a bigger encoder and decoder: the GPU presets).
#
# ## What you learnt
#
# - A fair comparison fine-tunes both arms alike, from the same start, on the same questions and passages, and
#   evaluates them on the same held-out questions with paired intervals.
# - REFRAG's time to first token is a fraction of RAG's at the same K, because its prefill reads s/k positions;
#   whether its answers keep up depends on what the vectors can carry and on which chunks stay tokens.
# - Answers that are exact codes survive only as tokens, so the selector, and retrieval before it, set REFRAG's
#   ceiling on this data; forcing the gold passage in separates retrieval's misses from the reader's.
# - The REFRAG-ready index stores the fine-tuned encoder's chunk vectors next to the retrieval index, so answering
#   runs no encoder.
#
# ## Self-check
#
# 1. Why must the chunk vectors be computed again after fine-tuning?
#    <details><summary>Answer</summary>Fine-tuning changed the encoder (and projector), and the vectors are the
#    encoder's outputs: vectors of the old encoder would be read by a model trained on the new ones.</details>
# 2. REFRAG at K ties RAG-FT with an interval of about ±0.07. What does that allow you to claim?
#    <details><summary>Answer</summary>That the run cannot tell them apart on these questions: any difference
#    larger than the interval is ruled out, a smaller one is not.</details>
# 3. What does the row with the gold passage forced in measure?
#    <details><summary>Answer</summary>The reader alone: retrieval can no longer miss, so its gap to the
#    retrieved row is what retrieval costs.</details>
# 4. How does REFRAG spend the time it saves in the equal-latency row?
#    <details><summary>Answer</summary>On more passages, read as vectors with as many chunks expanded as at K,
#    until its TTFT reaches RAG-FT's at K.</details>
#
# Next: notebook 06 measures the speed itself, at longer contexts and for several k and p.

# %%
from refrag_lib.course.colab import flush_drive

flush_drive()  # in Colab: this notebook's results written to Drive before the runtime goes; elsewhere nothing
