"""Notebook 05's evaluation: exact match and F1 with 95% intervals, TTFT, and REFRAG per selector and p.

Every row answers the same held-out questions greedily (refrag_lib.answering) and is scored with
SQuAD's normalisation:
- no_context: RAG-FT with no passages (can it guess?); rag: RAG-FT reading the K passages as tokens;
- refrag: REFRAG reading the same K passages as chunk vectors, its SFT selector expanding a share p;
- refrag_equal_latency: REFRAG with as many passages as fit in RAG-FT's TTFT at K (measured), expanding
  as many chunks as at K (equal_budget_fraction);
- each again with the gold passage forced in (`_gold`): what is left below 1.0 is the reader's fault.
The selector grid is REFRAG at K for every selector and p in GRID_FRACTIONS: the EM-TTFT trade-off.
EM and F1 come with a 95% bootstrap interval over questions, and every REFRAG row's EM with a paired
interval of its difference to RAG-FT on the same questions (refrag_lib.intervals).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .answering import answer_questions, prepare, read_passages, store_text, ttft_ms, with_expansion
from .arms import QA_ROWS
from .chunk_store import ChunkStore
from .errors import CourseError
from .intervals import mean_interval, paired_difference
from .model import RefragModel
from .qa import QAItem, answer_chunks, answer_in_context, exact_match, input_positions, token_f1, with_gold
from .selectors import PerplexitySelector, Selector, chunk_nll

GRID_FRACTIONS = (0.05, 0.1, 0.25)


@dataclass(frozen=True)
class Setting:
    """One row of the table: which model reads how many retrieved passages, compressed or not."""

    name: str
    arm: str  # rag: passages as tokens | refrag: chunk vectors + the selector's expansion
    n_passages: int  # 0: no retrieved context
    gold: bool = False  # force the gold passage in (no_context: the gold passage alone)


def setting_rows(it: QAItem, setting: Setting) -> list[int]:
    """The passage rows a setting gives the reader for one question."""
    rows = it.rows[: setting.n_passages]
    if len(rows) < setting.n_passages:
        raise CourseError(f"{setting.name} needs {setting.n_passages} retrieved passages per question, "
                          f"only {len(rows)} were retrieved: retrieve more (top_k).")
    if not setting.gold:
        return rows
    if it.gold is None:
        raise CourseError("Forcing the gold passage in needs questions with a gold passage in the index.")
    return with_gold(rows, it.gold) if rows else [it.gold]


def evaluate_prepared(model: RefragModel, prepared: Sequence, items: Sequence[QAItem], store: ChunkStore,
                      ttft_questions: int = 3, repeats: int = 5, warmup: int = 1, max_new_tokens: int = 12,
                      batch_size: int = 8) -> dict:
    """EM and F1 (mean, 95% interval, per question), answer-in-context, decoder length and TTFT of one row."""
    predictions = answer_questions(model, prepared, max_new_tokens, batch_size)
    em = [exact_match(a, it.answers) for a, it in zip(predictions, items)]
    f1 = [token_f1(a, it.answers) for a, it in zip(predictions, items)]
    texts = [[store_text(store, model, r) for r in x.rows] for x in prepared]
    timing = ttft_ms(model, prepared[:ttft_questions], repeats, warmup)
    return {
        "exact_match": float(np.mean(em)), "f1": float(np.mean(f1)),
        "exact_match_ci": _interval(em), "f1_ci": _interval(f1), "per_question": {"exact_match": em, "f1": f1},
        "answer_in_context": float(np.mean([answer_in_context(t, it.answers) for t, it in zip(texts, items)])),
        "input_tokens": float(np.mean([input_positions(x.prompt, x.expand) for x in prepared])),
        "ttft_ms": timing["median"], "ttft_ms_per_question": timing["per_question"],
        "expanded_fraction": float(np.mean([np.mean(x.expand) if x.expand else 0.0 for x in prepared])),
        "predictions": predictions, "expand": [x.expand for x in prepared], "rows": [x.rows for x in prepared],
    }


def _interval(values: Sequence[float]) -> list[float]:
    """[low, high] of the 95% bootstrap interval of a mean (a single question has none: [mean, mean])."""
    if len(values) < 2:
        return [float(np.mean(values))] * 2
    ci = mean_interval(values)
    return [ci["low"], ci["high"]]


def evaluate_setting(model: RefragModel, setting: Setting, items: Sequence[QAItem], store: ChunkStore,
                     selector: Selector | None = None, p: float = 0.0, **scoring) -> dict:
    """One row: every question prepared under the setting, answered and scored."""
    prepared = [prepare(model, it, setting_rows(it, setting), store, setting.arm, selector, p) for it in items]
    return evaluate_prepared(model, prepared, items, store, **scoring)


@torch.no_grad()
def selector_grid(model: RefragModel, items: Sequence[QAItem], store: ChunkStore, selectors: dict[str, Selector],
                  top_k: int, fractions: Sequence[float] = GRID_FRACTIONS, progress: bool = True,
                  **scoring) -> dict[str, dict[str, dict]]:
    """REFRAG at K for every selector and p: selector -> str(p) -> row ('none' has one row, at p = 0).

    Each question's passages are read once; a perplexity selector's chunk NLL is computed once for all p.
    """
    from tqdm.auto import tqdm

    examples = [read_passages(model, it, it.rows[:top_k], store) for it in items]
    if any(isinstance(s, PerplexitySelector) for s in selectors.values()):
        for ex in examples:
            ex.chunk_nll = chunk_nll(model, [ex.segments])[0]
    grid = {}
    todo = [(name, p) for name in selectors for p in ((0.0,) if name == "none" else fractions)]
    for name, p in tqdm(todo, desc="selector x p", disable=not progress):
        masks = selectors[name](examples, p)
        prepared = [with_expansion(ex, mask, it.rows[:top_k]) for ex, mask, it in zip(examples, masks, items)]
        grid.setdefault(name, {})[str(p)] = evaluate_prepared(model, prepared, items, store, **scoring)
    return grid


def equal_budget_fraction(p: float, top_k: int, n_passages: int) -> float:
    """The p that expands about as many chunks among n_passages as p does among top_k: at equal latency REFRAG
    keeps the expansions it had at K (the answer needs one or two chunks as tokens, however many passages
    there are) and spends the time it saved on more passages as vectors."""
    return p if n_passages <= top_k else p * top_k / n_passages


def equal_latency_passages(model: RefragModel, items: Sequence[QAItem], store: ChunkStore, selector: Selector,
                           p: float, top_k: int, budget_ms: float, candidates: Sequence[int], repeats: int = 5,
                           warmup: int = 1) -> tuple[int, dict[int, float]]:
    """The REFRAG passage count whose measured TTFT is closest to the budget (RAG-FT's at K), each count read
    with the expansions of p at K (equal_budget_fraction)."""
    if not candidates:
        raise CourseError("No passage counts to try for the equal-latency row.")
    measured = {}
    for n in candidates:
        p_n = equal_budget_fraction(p, top_k, n)
        prepared = [prepare(model, it, it.rows[:n], store, "refrag", selector, p_n) for it in items]
        measured[n] = ttft_ms(model, prepared, repeats, warmup)["median"]
    best = min(measured, key=lambda n: (abs(measured[n] - budget_ms), -n))
    return best, measured


def passage_candidates(top_k: int, most: int, model: RefragModel, n_index: int, count: int = 8) -> list[int]:
    """`count` passage counts from K up to `most` (16K) to try for equal latency, capped by the index size and the
    window (a passage costs at least one position per chunk, about 8 with k = 16)."""
    cap = min(most, n_index, max(top_k, (model.window - 64) // 9))
    return sorted({int(round(n)) for n in np.linspace(top_k, cap, max(1, count))})


def metrics_table(results: dict[str, dict]) -> dict:
    """The metrics contract: row -> value for each measure, and row -> [low, high] for EM and F1."""
    keys = ("exact_match", "f1", "ttft_ms", "input_tokens", "answer_in_context", "expanded_fraction",
            "exact_match_ci", "f1_ci")
    return {key: {row: results[row][key] for row in results} for key in keys}


def paired_differences(results: dict[str, dict], reference: str = "rag") -> dict[str, dict]:
    """EM of every REFRAG row minus the reference row's, on the same questions, with a paired 95% interval."""
    base = results[reference]["per_question"]["exact_match"]
    if len(base) < 2:
        return {}
    return {row: paired_difference(r["per_question"]["exact_match"], base)
            for row, r in results.items() if row.startswith("refrag")}


def grid_table(grid: dict[str, dict[str, dict]]) -> dict:
    """selector -> p -> {exact_match, ttft_ms, ci} (the contract's selector_grid)."""
    return {name: {p: {"exact_match": row["exact_match"], "ttft_ms": row["ttft_ms"], "ci": row["exact_match_ci"],
                       "f1": row["f1"], "expanded_fraction": row["expanded_fraction"]}
                   for p, row in rows.items()} for name, rows in grid.items()}


def side_by_side(items: Sequence[QAItem], results: dict[str, dict], store: ChunkStore, model: RefragModel,
                 n: int = 5, rows: tuple[str, str] = ("rag", "refrag")) -> list[dict]:
    """A few questions with the gold answer, each arm's answer and the chunks REFRAG expanded."""
    out = []
    for i, it in enumerate(items[:n]):
        chunks = [c for r in results[rows[1]]["rows"][i] for c in store.chunks_for([r])[0]]
        expanded = [model.decoder_tokenizer.decode(c) for c, e in zip(chunks, results[rows[1]]["expand"][i]) if e]
        out.append({"question": it.question, "gold": " | ".join(it.answers),
                    rows[0]: results[rows[0]]["predictions"][i], rows[1]: results[rows[1]]["predictions"][i],
                    "expanded_chunks": expanded})
    return out


ANSWER_PLACES = ("in an expanded chunk", "in a compressed chunk", "across two chunks, both expanded",
                 "across two chunks, not both expanded", "in no passage")


def answer_place(chunk_texts: Sequence[str], expand: Sequence[bool], answers: Sequence[str]) -> str:
    """Where a question's answer lies in what the reader got (one of ANSWER_PLACES): REFRAG can copy an ID
    only from tokens, so this says whether an answer was readable at all."""
    for answer in answers:
        inside, across = answer_chunks(chunk_texts, answer)
        if inside:
            return ANSWER_PLACES[0] if any(expand[i] for i in inside) else ANSWER_PLACES[1]
        if across:
            return ANSWER_PLACES[2] if all(expand[i] for i in across) else ANSWER_PLACES[3]
    return ANSWER_PLACES[4]


def em_by_answer_place(row: dict, items: Sequence[QAItem], store: ChunkStore, model: RefragModel) -> dict[str, dict]:
    """One evaluated row's questions grouped by where their answer lay: place -> {questions, exact_match}."""
    groups: dict[str, list[float]] = {}
    for it, rows, expand, em in zip(items, row["rows"], row["expand"], row["per_question"]["exact_match"]):
        chunks = [c for r in rows for c in store.chunks_for([r])[0]]
        place = answer_place(model.decoder_tokenizer.batch_decode(chunks), expand, it.answers)
        groups.setdefault(place, []).append(em)
    return {place: {"questions": len(groups[place]), "exact_match": float(np.mean(groups[place]))}
            for place in ANSWER_PLACES if place in groups}


def evaluate_all(rag_model: RefragModel, refrag_model: RefragModel, items: Sequence[QAItem], store: ChunkStore,
                 selectors: dict[str, Selector], selector: str, p: float, top_k: int, max_passages: int,
                 fractions: Sequence[float] = GRID_FRACTIONS, ttft_questions: int = 3, repeats: int = 5,
                 warmup: int = 1, max_new_tokens: int = 12, batch_size: int = 8, latency_candidates: int = 8,
                 latency_questions: int = 3, progress: bool = True) -> dict:
    """Every row of the table (each also with the gold passage forced in) and the selector grid.

    no_context and rag read with the RAG-FT model, the refrag rows with the REFRAG model (chunk vectors
    from the ready index's store), expanding with `selectors[selector]` at p. The equal-latency row uses
    the passage count (K..max_passages) whose REFRAG TTFT is closest to RAG-FT's at K, measured on the first
    latency_questions of the questions whose TTFT every row reports (at most ttft_questions: the search only
    picks a count, and the row it picks is then timed like every other), and expands as many chunks as p did at K.
    """
    from tqdm.auto import tqdm

    if selector not in selectors:
        raise CourseError(f"The REFRAG rows use selector {selector!r}, which is not among {sorted(selectors)}.")
    scoring = {"ttft_questions": ttft_questions, "repeats": repeats, "warmup": warmup,
               "max_new_tokens": max_new_tokens, "batch_size": batch_size}
    chooser = selectors[selector]
    grid = selector_grid(refrag_model, items, store, selectors, top_k, fractions, progress, **scoring)
    results = {}
    bar = tqdm(total=2 * len(QA_ROWS), desc="evaluating", disable=not progress)
    for name, arm, n in (("no_context", "rag", 0), ("rag", "rag", top_k), ("refrag", "refrag", top_k)):
        model = rag_model if arm == "rag" else refrag_model
        for gold in (False, True):
            setting = Setting(name + ("_gold" if gold else ""), arm, n, gold)
            if setting.name == "refrag" and str(p) in grid[selector]:
                results["refrag"] = grid[selector][str(p)]  # the same row, already answered
            else:
                results[setting.name] = evaluate_setting(model, setting, items, store, chooser, p, **scoring)
            bar.update()
    candidates = passage_candidates(top_k, max_passages, refrag_model, store.n_passages, latency_candidates)
    searched = items[: min(latency_questions, ttft_questions)]
    n_equal, measured = equal_latency_passages(refrag_model, searched, store, chooser, p, top_k,
                                               results["rag"]["ttft_ms"], candidates, repeats, warmup)
    for gold in (False, True):
        name = "refrag_equal_latency" + ("_gold" if gold else "")
        results[name] = evaluate_setting(refrag_model, Setting(name, "refrag", n_equal, gold), items, store,
                                         chooser, equal_budget_fraction(p, top_k, n_equal), **scoring)
        bar.update()
    bar.close()
    return {"results": results, "grid": grid, "equal_latency_passages": n_equal,
            "equal_latency_p": equal_budget_fraction(p, top_k, n_equal),
            "equal_latency_grid_ms": {str(n): t for n, t in measured.items()}}


def sft_metrics(evaluation: dict, table: dict, paired: dict, grid: dict, answer_places: dict, train: dict,
                **settings) -> dict:
    """Notebook 05's metrics.json, from evaluate_all's result and the tables the notebook showed of it
    (metrics_table, paired_differences, grid_table): EM/F1/TTFT with their intervals, every REFRAG row's paired
    difference to RAG-FT, the selector grid, EM by where the answer lay, both arms' training summaries, and the
    run's settings (selector, p, top_k, ...). `regress` compares these keys."""
    rag_em = table["exact_match"]["rag"]
    return {
        **{key: table[key] for key in ("exact_match", "f1", "ttft_ms", "input_tokens", "answer_in_context",
                                       "expanded_fraction", "exact_match_ci", "f1_ci")},
        "paired_difference_ci": {row: [d["low"], d["high"]] for row, d in paired.items()},
        "paired_difference": {row: d["mean"] for row, d in paired.items()},
        "selector_grid": grid, "em_by_answer_place": answer_places, **settings,
        "equal_latency_passages": evaluation["equal_latency_passages"],
        "equal_latency_grid_ms": evaluation["equal_latency_grid_ms"], "equal_latency_p": evaluation["equal_latency_p"],
        "refrag_em_over_rag": table["exact_match"]["refrag"] / rag_em if rag_em else None,
        "ttft_speedup_at_k": table["ttft_ms"]["rag"] / table["ttft_ms"]["refrag"],
        "train": train,
    }
