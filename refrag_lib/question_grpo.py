"""Stage 3b: a policy that reads the question, trained with notebook 04's GRPO on answers.

The paper's policy (refrag_lib.grpo) is blind to the question and rewarded for predicting the next
paragraph. The course's answers are IDs that only exact tokens carry, so REFRAG answers only when the
chunk holding the answer is expanded, and which chunk that is depends on the question. Here the same
GRPO step (grpo.grpo_step) trains a QuestionPolicy on the QA training questions with another input and
another reward: the input is the retriever vectors of the question and of each chunk (stored next to
the index by notebook 01) with the chunk's place in its passage; the reward is minus the mean NLL of
the gold answer given question + mixed input (the decoder frozen, as for the paper's policy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from .chunk_store import encoder_eval_mode
from .errors import CourseError
from .grpo import GRPOConfig, Objective, PolicyTrainResult, clipped_objective, grpo_step, summarise
from .intervals import mean_interval, paired_difference
from .losses import masked_nll
from .model import RefragModel, Segments
from .policy import QUESTION_POLICY_WEIGHTS, QuestionPolicy, check_fraction
from .qa import QAItem, answer_chunks, build_prompt, training_example, with_gold_at_random
from .selectors import FixedSelector, MaskedNLL, ScoredExample, Selector, selector_input

HELD_OUT_FRACTIONS = (0.05, 0.1, 0.25)


@dataclass
class AnswerExample(ScoredExample):
    """A question ready for the selectors, with what its reward scores. target: the prompt with its answer
    cue as a final (always expanded) chunk and answer + EOS as the scored suffix; answer_chunks: the chunks
    whose text holds the answer, where an expansion must land for the answer to be read."""

    target: Segments | None = None
    answer_chunks: tuple[int, ...] = ()
    answer_span: tuple[int, ...] = ()  # answer_chunks, or the two neighbours whose joined text holds the answer


@torch.no_grad()
def answer_examples(model: RefragModel, items: Sequence[QAItem], chunks, top_k: int,
                    rng: np.random.Generator | None = None, encode: bool = True) -> list[AnswerExample]:
    """Each question over its top-K passages (with rng: the gold one put in at a random place when retrieval
    missed it, as in SFT), chunk vectors from ONE encoder call, retriever vectors from the chunk store.

    chunks: a refrag_lib.chunk_store.PassageChunks with the index's chunk store (its retriever vectors). encode=False
    skips the encoder (chunk vectors of width 0): what the answer-location warm start needs, which reads no c_i.
    """
    prompts, rows_of = [], []
    for it in items:
        rows = list(it.rows[:top_k])
        if rng is not None and it.gold is not None:
            rows = with_gold_at_random(rows, it.gold, rng)
        if chunks.keys_for(rows) is None or it.question_key is None:
            raise CourseError("The question-aware policy needs the retriever vectors of notebook 01's chunk store: "
                              "pass PassageChunks(model, passages, keys=<the index's chunk store>).")
        rows_of.append(rows)
        prompts.append(build_prompt(model, it.question, chunks.passage_chunks(rows)))
    all_chunks = [c for prompt in prompts for c in prompt.chunks]
    if encode:
        with encoder_eval_mode(model):
            vectors = model.encode_chunks(all_chunks).float().cpu()
    else:
        vectors = torch.zeros(len(all_chunks), 0)
    examples = []
    for it, rows, c in zip(items, rows_of, vectors.split([len(prompt.chunks) for prompt in prompts])):
        example = selector_input(model, it, rows, chunks, c)
        holds, across = answer_chunks(model.decoder_tokenizer.batch_decode(example.segments.chunks), it.answers[0])
        target = training_example(example.segments, model.tokenize(" " + it.answers[0]), model.eos_id)
        examples.append(AnswerExample(**{f.name: getattr(example, f.name) for f in fields(ScoredExample)},
                                      target=target, answer_chunks=holds, answer_span=holds or across))
    return examples


def locate_answers(policy: QuestionPolicy, examples: Sequence[AnswerExample], epochs: int, lr: float,
                   batch_size: int = 16, seed: int = 0, progress: bool = True) -> list[dict]:
    """The question-aware policy's warm start before GRPO: supervised, on where each training answer lies.

    Loss: minus the log of the policy's softmax mass on the chunks of the answer's span (either of the
    chunks holding it; split over two chunks, the pair). No decoder pass, so a few seconds cover every
    training question, where GRPO learns from the reward of one question per step; GRPO then tunes what
    the answer NLL rewards. Returns one row per epoch: the mean loss and the seconds so far.
    """
    import time

    from tqdm.auto import tqdm

    located = [ex for ex in examples if ex.answer_span]
    if epochs < 0 or batch_size < 1:
        raise CourseError(f"The warm start needs epochs >= 0 and batch_size >= 1, got {epochs} and {batch_size}.")
    if epochs and not located:
        raise CourseError("No training question has its answer in its passages' text: nothing to locate.")
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr)
    batches_per_epoch = max(1, len(located) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(1, epochs * batches_per_epoch))
    order = np.random.default_rng(seed)
    history, start = [], time.perf_counter()
    for epoch in tqdm(range(epochs), desc="answer places", disable=not progress):
        shuffled, losses = order.permutation(len(located)), []
        for b in range(batches_per_epoch):
            batch = [located[i] for i in shuffled[b * batch_size : (b + 1) * batch_size]]
            logits = policy.train()(**policy.inputs(batch))
            on_span = torch.full_like(logits, -torch.inf)
            for row, ex in enumerate(batch):
                on_span[row, list(ex.answer_span)] = 0.0
            loss = (torch.logsumexp(logits, -1) - torch.logsumexp(logits + on_span, -1)).mean()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        seconds = round(time.perf_counter() - start, 3)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "seconds": seconds})
    policy.eval()
    return history


def answer_nll(model: RefragModel, examples: Sequence[AnswerExample],
               masks: Sequence[Sequence[bool]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed NLL and token count of each row's gold answer (+ EOS) under its expansion mask (one forward)."""
    targets = [ScoredExample(ex.target, ex.chunk_vectors) for ex in examples]
    return masked_nll(model, targets, [[*mask, True] for mask in masks])  # the answer cue stays tokens


def answer_rewards(model: RefragModel):
    """The reward of the question-aware policy: r = - mean NLL of the gold answer tokens."""

    @torch.no_grad()
    def reward(rows: Sequence[AnswerExample], masks: Sequence[Sequence[bool]]) -> torch.Tensor:
        summed, tokens = answer_nll(model, rows, masks)
        return -(summed / tokens.clamp(min=1))

    return reward


def train_question_policy(model: RefragModel, policy: QuestionPolicy, items: Sequence[QAItem], chunks, top_k: int,
                          cfg: GRPOConfig, progress: bool = True,
                          objective: Objective = clipped_objective) -> PolicyTrainResult:
    """GRPO on training questions, one question (G selections of it) per step: questions differ in how many
    chunks their passages make, and a group must share one. The REFRAG model stays frozen. objective: as
    grpo.train_policy's."""
    import time

    from tqdm.auto import tqdm

    if cfg.batch_size != 1:
        raise CourseError("The question-aware policy trains on one question per step (batch_size=1): the questions "
                          "of a batch would need the same number of chunks.")
    if not items:
        raise CourseError("No training questions to train the question-aware policy on.")
    model.eval()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    reward = answer_rewards(model)
    history, elapsed = [], 0.0
    for step in tqdm(range(cfg.steps), desc="GRPO (question)", disable=not progress):
        tick = time.perf_counter()
        rng = np.random.default_rng([cfg.seed, step])
        p = float(rng.choice(cfg.fractions))
        examples = answer_examples(model, [items[int(rng.integers(len(items)))]], chunks, top_k, rng)
        row = grpo_step(model, policy, optimizer, examples, p, cfg, generator, rng, reward=reward,
                        objective=objective)
        elapsed += time.perf_counter() - tick
        history.append({"step": step, **row, "seconds": round(elapsed, 3)})
    return PolicyTrainResult(policy, history, summarise(history, cfg))


def answer_hits(selector: Selector, examples: Sequence[AnswerExample], p: float) -> list[float]:
    """Per question that has an answer chunk: 1.0 when the selector expands one of them."""
    masks = selector(examples, p)
    return [float(any(mask[i] for i in ex.answer_chunks)) for ex, mask in zip(examples, masks) if ex.answer_chunks]


def answer_landing(selector: Selector, examples: Sequence[AnswerExample],
                   fractions: Sequence[float] = HELD_OUT_FRACTIONS) -> dict[str, float | None]:
    """Per p, the share of one-chunk answers whose chunk the selector expands (None: no such question); no
    decoder pass, so it can follow a training stage cheaply."""
    hits = {str(p): answer_hits(selector, examples, p) for p in fractions}
    return {p: round(float(np.mean(h)), 3) if h else None for p, h in hits.items()}


def held_out_table(model: RefragModel, examples: Sequence[AnswerExample], selectors: dict[str, Selector],
                   fractions: Sequence[float] = HELD_OUT_FRACTIONS, reference: str = "question",
                   batch_size: int = 8) -> dict:
    """Every selector at every p on held-out questions: mean answer NLL and the share of answer chunks expanded,
    each with a 95% bootstrap interval, and paired differences against `reference` on the same questions.

    {"by_p": {name: {p: {"answer_nll", "answer_nll_ci", "answer_expanded", "answer_expanded_ci",
    "vs_reference"}}}, "none", "n_questions", "with_answer_chunk"}.
    """
    if len(examples) < 2:
        raise CourseError(f"The held-out table needs at least 2 questions, got {len(examples)}.")
    scorer = MaskedNLL(model, examples, batch_size, nll=answer_nll)
    table: dict[str, dict[str, dict]] = {}
    per_question: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    for p in [check_fraction(p) for p in fractions]:
        for name, selector in selectors.items():
            nll = [s / max(c, 1) for s, c in scorer.scored(selector, p)]
            hits = answer_hits(selector, examples, p)
            per_question[name, str(p)] = (nll, hits)
            table.setdefault(name, {})[str(p)] = {
                "answer_nll": float(np.mean(nll)), "answer_nll_ci": _bounds(mean_interval(nll)),
                "answer_expanded": float(np.mean(hits)) if hits else float("nan"),
                "answer_expanded_ci": _bounds(mean_interval(hits)) if len(hits) > 1 else None,
            }
    for (name, p), (nll, hits) in per_question.items():
        if reference in selectors and name != reference:
            base_nll, base_hits = per_question[reference, p]
            table[name][p]["vs_reference"] = {
                "answer_nll": paired_difference(nll, base_nll),
                "answer_expanded": paired_difference(hits, base_hits) if len(hits) > 1 else None,
            }
    none = [s / max(c, 1) for s, c in scorer.scored(FixedSelector(False), 0.0)]
    return {"by_p": table, "reference": reference, "none": {"answer_nll": float(np.mean(none)),
                                                           "answer_nll_ci": _bounds(mean_interval(none))},
            "n_questions": len(examples), "with_answer_chunk": sum(bool(ex.answer_chunks) for ex in examples)}


def _bounds(interval: dict) -> list[float]:
    return [interval["low"], interval["high"]]


def question_policy_path(run):
    return run.stage_dir("policy") / QUESTION_POLICY_WEIGHTS
