"""The "your turn" checkers: each accepts the reference and rejects the typical wrong answers with a useful hint."""

import time

import numpy as np
import pytest
import torch
from torch import nn

from refrag_lib.analytic import prefill_flops, ttft_ratio, ttft_speedup
from refrag_lib.course.exercises import EXERCISES, ExerciseError, exercise, reference_source, reveal
from refrag_lib.course.notebooks import NOTEBOOK_DIR
from refrag_lib.curriculum import TABLE8, capped_table, stage_mixtures
from refrag_lib.errors import CourseError
from refrag_lib.grpo import clipped_objective
from refrag_lib.losses import IGNORE
from refrag_lib.timing import Prefilled, clock


@pytest.mark.parametrize("name", list(EXERCISES))
def test_every_checker_accepts_its_reference(name, capsys):
    EXERCISES[name].check(EXERCISES[name].reference)
    assert capsys.readouterr().out.startswith(f"✓ {name}")


def rejects(name, fn, hint):
    """The checker refuses fn, and its message carries the hint for that mistake."""
    with pytest.raises(ExerciseError) as err:
        EXERCISES[name].check(fn)
    assert hint in str(err.value), str(err.value)
    return str(err.value)


# ---- 02: reconstruction labels --------------------------------------------------------------------
def labels_unshifted(inputs):
    return torch.where(inputs.is_suffix, inputs.token_ids, IGNORE)


def labels_not_masked(inputs):
    labels = torch.full_like(inputs.token_ids, IGNORE)
    labels[:, :-1] = inputs.token_ids[:, 1:]
    return labels


def labels_masked_by_pad(inputs):
    labels = torch.full_like(inputs.token_ids, IGNORE)
    labels[:, :-1] = torch.where(inputs.token_ids[:, 1:] != 0, inputs.token_ids[:, 1:], IGNORE)
    return labels


def test_labels_checker_names_the_mistake():
    message = rejects("reconstruction_labels", labels_unshifted, "not shifted by one")
    assert "expected: [[-100, 12, 13, 14, -100]]" in message and "received: [[-100, -100, 12, 13, 14]]" in message
    rejects("reconstruction_labels", labels_not_masked, f"else {IGNORE}")
    rejects("reconstruction_labels", labels_masked_by_pad, "is_suffix")


# ---- 02: the projector -----------------------------------------------------------------------------
class OneLinear(nn.Module):
    def __init__(self, encoder_dim, decoder_dim):
        super().__init__()
        self.net = nn.Linear(encoder_dim, decoder_dim)

    def forward(self, c):
        return self.net(c)


class TwoLinearNoActivation(OneLinear):
    def __init__(self, encoder_dim, decoder_dim):
        super().__init__(encoder_dim, decoder_dim)
        self.net = nn.Sequential(nn.Linear(encoder_dim, decoder_dim), nn.Linear(decoder_dim, decoder_dim))


class WrongWay(OneLinear):
    def __init__(self, encoder_dim, decoder_dim):
        super().__init__(decoder_dim, encoder_dim)


class NamedLayers(nn.Module):
    """A right MLP under its own weight names (fc1, fc2), which checkpoints do not have."""

    def __init__(self, encoder_dim, decoder_dim):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(encoder_dim, decoder_dim), nn.Linear(decoder_dim, decoder_dim)

    def forward(self, c):
        return self.fc2(torch.relu(self.fc1(c)))


def test_projector_checker_names_the_mistake():
    rejects("projector", OneLinear, "2-layer MLP")
    rejects("projector", TwoLinearNoActivation, "non-linearity")
    rejects("projector", WrongWay, "maps [n, encoder_dim] to [n, decoder_dim]")
    rejects("projector", lambda e, d: torch.zeros(e, d), "return an nn.Module")
    assert "fc1.weight" in rejects("projector", NamedLayers, "notebook 03 loads")


def test_projector_checker_accepts_another_activation():
    EXERCISES["projector"].check(lambda e, d: nn.Sequential(nn.Linear(e, d), nn.ReLU(), nn.Linear(d, d)))


def test_checking_a_projector_leaves_the_notebooks_random_stream_alone():
    state = torch.random.get_rng_state()
    exercise("projector", EXERCISES["projector"].reference)
    assert torch.equal(torch.random.get_rng_state(), state)


# ---- 02: chunk pooling -----------------------------------------------------------------------------------
def pool_all_positions(hidden, mask):
    return hidden.mean(dim=1)


def pool_divide_by_length(hidden, mask):
    return (hidden * mask.unsqueeze(-1)).sum(dim=1) / hidden.shape[1]


def pool_wrong_axis(hidden, mask):
    return hidden.mean(dim=-1)


def pool_bool_only(hidden, mask):
    kept = hidden.masked_fill(~mask.unsqueeze(-1), 0.0)
    return kept.sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1)


def pool_unguarded(hidden, mask):
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1)


def test_pooling_checker_names_the_mistake():
    rejects("chunk_pooling", pool_wrong_axis, "token axis (dim=1)")
    rejects("chunk_pooling", pool_all_positions, "padded positions were averaged in")
    rejects("chunk_pooling", pool_divide_by_length, "not by the padded length t")
    assert "raised RuntimeError" in rejects("chunk_pooling", pool_bool_only, "mask.to(hidden.dtype)")
    assert "nan" in rejects("chunk_pooling", pool_unguarded, "not NaN")


# ---- 02: the splice ----------------------------------------------------------------------------------------
def splice_by_columns(token_embeds, is_vector, projected):
    out = token_embeds.transpose(0, 1).clone()
    out[is_vector.T] = projected.to(out.dtype)
    return out.transpose(0, 1)


def splice_per_row(token_embeds, is_vector, projected):
    out = token_embeds.clone()
    per_row = projected.reshape(len(out), -1, projected.shape[-1])
    for row in range(len(out)):
        out[row, is_vector[row]] = per_row[row].to(out.dtype)
    return out


def splice_keeps_float32(token_embeds, is_vector, projected):
    return torch.where(is_vector.unsqueeze(-1), torch.zeros_like(token_embeds, dtype=projected.dtype).masked_scatter(
        is_vector.unsqueeze(-1), projected), token_embeds)


def splice_without_grad(token_embeds, is_vector, projected):
    with torch.no_grad():
        out = token_embeds.clone()
        out[is_vector] = projected.to(out.dtype)
    return out


def splice_in_place(token_embeds, is_vector, projected):
    token_embeds[is_vector] = projected.to(token_embeds.dtype)
    return token_embeds


def test_splice_checker_names_the_mistake():
    rejects("splice", splice_by_columns, "row-major order")
    rejects("splice", splice_per_row, "some none")
    assert "returned torch.float32" in rejects("splice", splice_keeps_float32, "projected.to(token_embeds.dtype)")
    message = rejects("splice", splice_without_grad, "no torch.no_grad()")
    assert "gradient reaching projected" in message and "received: [[0.0, 0.0]" in message
    rejects("splice", lambda e, v, p: EXERCISES["splice"].reference(e, v, p.detach()), ".detach()")
    EXERCISES["splice"].check(splice_in_place)  # writing into the embeddings is fine: the gradient still flows


# ---- 02: the curriculum ------------------------------------------------------------------------------------
def mixtures_from(table):
    """stage_mixtures built on another way of capping Table 8 (the typical mistakes vary that part)."""
    def mixtures(max_chunks):
        factors = sorted(table(max_chunks))
        counts = np.stack([table(max_chunks)[f] for f in factors], axis=1)
        return factors, counts / counts.sum(axis=1, keepdims=True)
    return mixtures


def table_dropping(max_chunks):
    return {f: np.asarray(c, dtype=float) for f, c in TABLE8.items() if f <= max_chunks}


def table_power_of_two_cap(max_chunks):
    cap = 2 ** int(np.log2(max_chunks))
    return capped_table(cap)


def counts_not_normalised(max_chunks):
    table = capped_table(max_chunks)
    return list(table), np.stack(list(table.values()), axis=1)


def test_curriculum_checker_names_the_mistake():
    rejects("curriculum", mixtures_from(table_dropping), "cap, don't drop")
    rejects("curriculum", mixtures_from(table_power_of_two_cap), "min(factor, max_chunks)")
    rejects("curriculum", lambda m: (stage_mixtures(m)[0], stage_mixtures(m)[1].T), "transpose")
    rejects("curriculum", counts_not_normalised, "along axis=1")
    rejects("curriculum", lambda m: stage_mixtures(m)[1], "return a pair")


# ---- 03: the mixed input ---------------------------------------------------------------------------
def expansion_floor(batch, fraction, rng):
    masks = []
    for ex in batch:
        chosen = set(rng.choice(len(ex.chunks), size=int(fraction * len(ex.chunks)), replace=False).tolist())
        masks.append([i in chosen for i in range(len(ex.chunks))])
    return masks


def expansion_per_chunk(batch, fraction, rng):
    return [(rng.random(len(ex.chunks)) < fraction).tolist() for ex in batch]


def expansion_global_random(batch, fraction, rng):
    return expansion_floor(batch, fraction, np.random) if fraction else [[False] * len(ex.chunks) for ex in batch]


def expansion_first_chunks(batch, fraction, rng):
    return [[i < round(fraction * len(ex.chunks)) for i in range(len(ex.chunks))] for ex in batch]


def test_expansion_checker_names_the_mistake():
    rejects("mixed_expansion", expansion_floor, "not int(p·L)")
    rejects("mixed_expansion", expansion_per_chunk, "not each chunk with probability p")
    rejects("mixed_expansion", expansion_first_chunks, "at random")


def test_expansion_checker_asks_for_the_given_rng():
    def rounded_global(batch, fraction, rng):
        masks = []
        for ex in batch:
            chosen = set(np.random.choice(len(ex.chunks), size=round(fraction * len(ex.chunks)), replace=False))
            masks.append([i in chosen for i in range(len(ex.chunks))])
        return masks

    rejects("mixed_expansion", rounded_global, "draw from the rng argument")


# ---- 04: the GRPO advantage ------------------------------------------------------------------------
def advantage_not_normalised(rewards):
    return rewards - rewards.mean(dim=1, keepdim=True)


def advantage_sample_std(rewards):
    return (rewards - rewards.mean(dim=1, keepdim=True)) / (rewards.std(dim=1, keepdim=True) + 1e-6)


def advantage_batch_wide(rewards):
    return (rewards - rewards.mean()) / (rewards.std(unbiased=False) + 1e-6)


def advantage_no_eps(rewards):
    return (rewards - rewards.mean(dim=1, keepdim=True)) / rewards.std(dim=1, keepdim=True, unbiased=False)


def test_advantage_checker_names_the_mistake():
    rejects("grpo_advantage", advantage_not_normalised, "divide by the std")
    rejects("grpo_advantage", advantage_sample_std, "unbiased=False")
    rejects("grpo_advantage", advantage_batch_wide, "not over the whole batch")
    assert "received: [[nan, nan, nan, nan]" in rejects("grpo_advantage", advantage_no_eps, "add eps")


# ---- 04: the clipped objective ----------------------------------------------------------------------------
def objective_from(term):
    """A clipped objective whose per-step term is term(ratio, clipped_ratio, A) (the mistakes vary that part)."""
    def objective(new_logp, old_logp, advantages, clip_eps):
        ratio = torch.exp(new_logp - old_logp.detach())
        adv = advantages.unsqueeze(-1)
        loss = -term(ratio, ratio.clamp(1 - clip_eps, 1 + clip_eps), adv).mean()
        return loss, ((ratio - 1).abs() > clip_eps).float().mean()
    return objective


def objective_sign_flipped(new_logp, old_logp, advantages, clip_eps):
    loss, fraction = clipped_objective(new_logp, old_logp, advantages, clip_eps)
    return -loss, fraction


def objective_ratio_of_logs(new_logp, old_logp, advantages, clip_eps):
    ratio = new_logp / old_logp
    adv = advantages.unsqueeze(-1)
    loss = -torch.minimum(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv).mean()
    return loss, ((ratio - 1).abs() > clip_eps).float().mean()


def objective_not_broadcast(new_logp, old_logp, advantages, clip_eps):
    ratio = torch.exp(new_logp - old_logp.detach())
    return -torch.minimum(ratio * advantages, ratio.clamp(1 - clip_eps, 1 + clip_eps) * advantages).mean(), 0.0


def objective_counts_clipped_terms(new_logp, old_logp, advantages, clip_eps):
    ratio = torch.exp(new_logp - old_logp)
    adv = advantages.unsqueeze(-1)
    unclipped, clipped = ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv
    return -torch.minimum(unclipped, clipped).mean(), (clipped < unclipped).float().mean()


def test_objective_checker_names_the_mistake():
    rejects("clipped_objective", objective_sign_flipped, "minus the objective")
    rejects("clipped_objective", objective_ratio_of_logs, "exp(new_logp - old_logp)")
    assert "raised RuntimeError" in rejects("clipped_objective", objective_not_broadcast, "unsqueeze(-1)")
    rejects("clipped_objective", objective_from(lambda r, c, a: r * a), "and clip")
    rejects("clipped_objective", objective_from(lambda r, c, a: torch.maximum(r * a, c * a)), "not the max")
    rejects("clipped_objective", objective_from(lambda r, c, a: c * a), "min of BOTH terms")
    rejects("clipped_objective", lambda n, o, a, e: clipped_objective(n, o, a, 0.2), "not a fixed 0.2")
    rejects("clipped_objective", objective_counts_clipped_terms, "share of ALL steps")


def test_objective_checker_follows_the_gradients():
    def old_not_detached(new_logp, old_logp, advantages, clip_eps):
        ratio = torch.exp(new_logp - old_logp)
        adv = advantages.unsqueeze(-1)
        loss = -torch.minimum(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv).mean()
        return loss, ((ratio - 1).abs() > clip_eps).float().mean()

    def returns_a_float(new_logp, old_logp, advantages, clip_eps):
        loss, fraction = clipped_objective(new_logp, old_logp, advantages, clip_eps)
        return loss.item(), fraction

    rejects("clipped_objective", old_not_detached, "old_logp.detach()")
    rejects("clipped_objective", returns_a_float, "no .item()")


# ---- 05: token F1 ------------------------------------------------------------------------------------
def f1_from(words):
    """A token F1 built on a given way of splitting into words (the typical mistakes vary that part)."""
    def f1(prediction, answers):
        best = 0.0
        for answer in answers:
            p, g = words(prediction), words(answer)
            common = sum(min(p.count(w), g.count(w)) for w in set(p))
            if common:
                best = max(best, 2 * common / (len(p) + len(g)))
        return best
    return f1


def f1_first_answer_only(prediction, answers):
    return EXERCISES["token_f1"].reference(prediction, answers[:1])


def f1_sets(prediction, answers):
    from refrag_lib.qa import normalize_answer

    p, g = set(normalize_answer(prediction).split()), set(normalize_answer(answers[0]).split())
    return 2 * len(p & g) / (len(p) + len(g)) if p & g else 0.0


def f1_unguarded(prediction, answers):
    from refrag_lib.qa import normalize_answer

    p, g = normalize_answer(prediction).split(), normalize_answer(answers[-1]).split()
    common = sum(min(p.count(w), g.count(w)) for w in set(p))
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall) if common else 0.0


def test_f1_checker_names_the_mistake():
    from refrag_lib.qa import normalize_answer

    rejects("token_f1", f1_from(str.split), "normalise both sides")
    EXERCISES["token_f1"].check(f1_from(lambda text: normalize_answer(text).split()))  # another correct F1
    rejects("token_f1", f1_first_answer_only, "best F1 over them")
    rejects("token_f1", f1_sets, "multiset")
    assert "ZeroDivisionError" in rejects("token_f1", f1_unguarded, "without dividing by zero")


# ---- 06: the TTFT timer ------------------------------------------------------------------------------
def timer_whole_generate(model, segments, expand, vectors, encode):
    start = clock(model.device)
    inputs = model.build_inputs([segments], [expand], chunk_vectors=vectors)
    model.generate(inputs, max_new_tokens=8)
    logits, cache = model.prefill(inputs)
    token = logits.argmax(dim=-1)
    return Prefilled(token, cache, inputs, clock(model.device) - start, 0.0)


def timer_not_synchronised(model, segments, expand, vectors, encode):
    start = time.perf_counter()
    inputs = model.build_inputs([segments], [expand], chunk_vectors=vectors)
    logits, cache = model.prefill(inputs)
    return Prefilled(logits.argmax(dim=-1), cache, inputs, time.perf_counter() - start, 0.0)


def timer_encodes_with_cache(model, segments, expand, vectors, encode):
    start = clock(model.device)
    inputs = model.build_inputs([segments], [expand])  # the precomputed vectors are ignored
    logits, cache = model.prefill(inputs)
    return Prefilled(logits.argmax(dim=-1), cache, inputs, clock(model.device) - start, 0.0)


def timer_starts_after_assembly(model, segments, expand, vectors, encode):
    inputs = model.build_inputs([segments], [expand], chunk_vectors=vectors)
    start = clock(model.device)
    logits, cache = model.prefill(inputs)
    return Prefilled(logits.argmax(dim=-1), cache, inputs, clock(model.device) - start, 0.0)


def test_timer_checker_names_the_mistake():
    rejects("ttft_timer", timer_whole_generate, "timing the whole generate")
    rejects("ttft_timer", timer_not_synchronised, "synchronise")
    rejects("ttft_timer", timer_encodes_with_cache, "run no encoder inside the timed region")
    rejects("ttft_timer", timer_starts_after_assembly, "start the clock before build_inputs")


# ---- 00: the analytic TTFT ratio -----------------------------------------------------------------------------
def ratio_from(flops):
    """A TTFT ratio built on a given prefill cost flops(shape, positions) (the mistakes vary that part)."""
    return lambda shape, s, k: flops(shape, s) / flops(shape, s / k)


def test_ratio_checker_names_the_mistake():
    rejects("ttft_ratio", lambda shape, s, k: 1 / ttft_ratio(shape, s, k), "not its inverse")
    rejects("ttft_ratio", ratio_from(lambda sh, t: sh.layers * 2 * sh.linear_params * t), "4·attention_width·T²")
    rejects("ttft_ratio", ratio_from(lambda sh, t: sh.layers * 4 * sh.attention_width * t * t), "2·linear_params·T")
    rejects("ttft_ratio", lambda shape, s, k: ttft_speedup(shape, s, s * k), "s/k positions")
    no_head = ratio_from(lambda sh, t: sh.layers * (2 * sh.linear_params * t + 4 * sh.attention_width * t * t))
    assert "SmolLM2-135M" in rejects("ttft_ratio", no_head, "count the LM head")
    EXERCISES["ttft_ratio"].check(ratio_from(prefill_flops))


# ---- exercise() and reveal() -------------------------------------------------------------------------
def test_a_blank_exercise_falls_back_to_the_reference(capsys):
    for name, ex in EXERCISES.items():
        assert exercise(name, None) is ex.reference
        assert "left blank" in capsys.readouterr().out


def test_a_passing_answer_is_returned_and_a_failing_one_raises():
    def my_advantage(rewards):
        centred = rewards - rewards.mean(dim=1, keepdim=True)
        return centred / (centred.pow(2).mean(dim=1, keepdim=True).sqrt() + 1e-6)

    assert exercise("grpo_advantage", my_advantage) is my_advantage
    with pytest.raises(ExerciseError):
        exercise("grpo_advantage", advantage_no_eps)


def test_unknown_names_and_non_functions_are_refused_clearly():
    with pytest.raises(ExerciseError, match="no exercise named 'grpo'.*grpo_advantage") as err:
        exercise("grpo", None)
    assert isinstance(err.value, CourseError)
    with pytest.raises(ExerciseError, match="expected a function"):
        exercise("token_f1", 0.5)


def test_a_learners_exception_is_reported_with_its_case():
    def broken(rewards):
        raise ValueError("not written yet")

    with pytest.raises(ExerciseError, match="raised ValueError: not written yet\n  on one group") as err:
        EXERCISES["grpo_advantage"].check(broken)
    assert isinstance(err.value.__cause__, ValueError)


def test_reveal_prints_the_reference_and_its_helpers_outside_a_notebook(capsys):
    reveal("token_f1")
    out = capsys.readouterr().out
    assert "def token_f1(" in out and "def normalize_answer(" in out and "def _f1(" in out
    assert reference_source("ttft_timer").startswith("def ttft_once(")


@pytest.mark.parametrize("name", list(EXERCISES))
def test_every_exercise_has_its_cell_in_its_notebook(name):
    source = (NOTEBOOK_DIR / f"{EXERCISES[name].notebook}.py").read_text()
    assert f'exercise("{name}",' in source and f'reveal("{name}")' in source
