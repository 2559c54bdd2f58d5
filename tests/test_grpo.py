"""GRPO: advantages, clipping, the direction of an update, and rewards on a tiny REFRAG model."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import Spy

from refrag_lib.errors import CourseError
from refrag_lib.grpo import GRPOConfig, clipped_objective, group_advantages, policy_update, rewards_of, train_policy
from refrag_lib.losses import masked_nll, next_paragraph_example, suffix_token_stats
from refrag_lib.policy import ChunkPolicy, PolicyConfig, selection_log_prob
from refrag_lib.selectors import chunk_nll, score_examples


def test_advantages_are_normalised_within_each_group():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 6.0], [-5.0, -5.0, -5.0, -5.0]])
    adv = group_advantages(rewards)
    torch.testing.assert_close(adv[0].mean(), torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(adv[0].std(unbiased=False), torch.tensor(1.0), atol=1e-4, rtol=0)
    assert adv[0].argmax() == 3 and adv[0].argmin() == 0
    torch.testing.assert_close(adv[1], torch.zeros(4))  # equal rewards: nothing to learn from
    torch.testing.assert_close(group_advantages(rewards * 10 + 3)[0], adv[0], atol=1e-5, rtol=0)
    with pytest.raises(CourseError):
        group_advantages(torch.tensor([[1.0], [2.0]]))


def test_clipping_caps_the_ratio_in_the_direction_of_the_advantage():
    old = torch.zeros(1, 2, 1)
    new = torch.log(torch.tensor([[[1.5], [0.5]]])).requires_grad_()
    adv = torch.tensor([[1.0, -1.0]])
    loss, clipped = clipped_objective(new, old, adv, clip_eps=0.2)
    # A > 0, rho = 1.5 -> 1.2 A; A < 0, rho = 0.5 -> min(-0.5, -0.8) = -0.8
    assert loss.item() == pytest.approx(-(1.2 - 0.8) / 2)
    assert clipped.item() == 1.0
    loss.backward()
    torch.testing.assert_close(new.grad, torch.zeros_like(new))  # clipped terms give no gradient
    inside = torch.log(torch.tensor([[[1.1], [0.9]]])).requires_grad_()
    loss, clipped = clipped_objective(inside, old, adv, clip_eps=0.2)
    assert loss.item() == pytest.approx(-(1.1 - 0.9) / 2) and clipped.item() == 0.0
    loss.backward()
    assert inside.grad[0, 0, 0] < 0 < inside.grad[0, 1, 0]  # raise the good one, lower the bad one


def test_a_gradient_step_raises_the_probability_of_the_higher_reward_selection():
    torch.manual_seed(0)
    policy = ChunkPolicy(PolicyConfig(input_dim=6, width=16, heads=2))
    c, valid = torch.randn(1, 5, 6), torch.ones(1, 5, dtype=torch.bool)
    orders = torch.tensor([[[0, 1], [3, 4]]])  # G = 2 selections of the same example
    advantages = group_advantages(torch.tensor([[-1.0, -3.0]]))  # the first one predicted better

    def log_probs():
        with torch.no_grad():
            logits = policy(c, valid)
            return [selection_log_prob(logits, orders[:, g]).item() for g in range(2)]

    before = log_probs()
    old = torch.zeros(1, 2, 2)
    with torch.no_grad():
        from refrag_lib.policy import step_log_probs

        old[0] = step_log_probs(policy(c, valid).expand(2, -1), orders[0])
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.1)
    policy_update(policy, optimizer, {"c": c, "valid": valid}, orders, old, advantages, clip_eps=0.2)
    after = log_probs()
    assert after[0] > before[0] and after[1] < before[1]


# ---- on a tiny random REFRAG model ------------------------------------------------------------------------
def pairs(model, n=3, context=24, continuation=6, seed=0):
    rng = np.random.default_rng(seed)
    vocab = len(model.decoder_tokenizer)
    return [(rng.integers(2, vocab, context).tolist(), rng.integers(2, vocab, continuation).tolist()) for _ in range(n)]


def test_chunk_nll_is_the_mean_token_nll_of_each_chunk_given_the_full_context(tiny):
    (context, continuation), = pairs(tiny, 1)
    scores = chunk_nll(tiny, [next_paragraph_example(context, continuation, tiny.k)])[0]
    ids = torch.tensor([[tiny.start_id, *context]])  # every chunk token is predicted, the first from the start token
    logits = tiny.decoder(input_ids=ids, position_ids=torch.arange(ids.shape[1])[None]).logits[0, :-1]
    token_nll = F.cross_entropy(logits, ids[0, 1:], reduction="none")
    expected = [token_nll[i : i + tiny.k].mean() for i in range(0, len(context), tiny.k)]
    torch.testing.assert_close(scores, torch.stack(expected).detach(), rtol=1e-4, atol=1e-5)


def test_mixed_input_nll_matches_the_stage_2_loss_and_ignores_batch_company(tiny):
    examples = score_examples(tiny, pairs(tiny))
    masks = [[False, True, False, False, True, False], [True] * 6, [False] * 6]
    summed, tokens = masked_nll(tiny, examples, masks)
    with torch.no_grad():
        reference = suffix_token_stats(tiny, [ex.segments for ex in examples], masks)
    torch.testing.assert_close(summed, reference.nll.cpu(), rtol=1e-4, atol=1e-4)
    assert tokens.tolist() == reference.tokens.tolist() == [6, 6, 6]
    alone = rewards_of(tiny, examples[:1], masks[:1])
    repeated = rewards_of(tiny, [examples[0]] * 3 + examples[1:], masks[:1] * 3 + masks[1:])
    torch.testing.assert_close(repeated[:3], alone.expand(3), rtol=1e-4, atol=1e-5)


def test_training_runs_and_logs_finite_rewards(tiny):
    vocab = len(tiny.decoder_tokenizer)
    docs = [np.random.default_rng(i).integers(2, vocab, 60).tolist() for i in range(4)]
    policy = ChunkPolicy(PolicyConfig(input_dim=tiny.encoder.config.hidden_size, width=16, heads=2))
    cfg = GRPOConfig(steps=3, batch_size=2, group_size=4, updates=2, context_tokens=24, continuation_tokens=6,
                     fractions=(0.25, 0.5))
    objective = Spy(clipped_objective)
    result = train_policy(tiny, policy, docs, cfg, progress=False, objective=objective)
    assert objective.grad_modes == [True] * cfg.steps * cfg.updates  # every update minimised the given objective
    assert len(result.history) == 3
    for row in result.history:
        assert all(np.isfinite(row[key]) for key in ("reward_mean", "reward_std", "loss", "reward_gain_vs_random"))
        assert row["reward_mean"] < 0
    assert np.isfinite(result.summary["reward_curve_last"]) and result.summary["train_seconds"] > 0
    with pytest.raises(CourseError):
        GRPOConfig(group_size=1)
    with pytest.raises(CourseError):
        GRPOConfig(fractions=(1.2,))


@pytest.mark.real_models
def test_real_model_rewards_grow_with_the_tokens_given_back(cpu_model):
    """On SmolLM2 + MiniLM (fresh projector): the true continuation is easier with more chunks as tokens,
    and the perplexity heuristics see the chunk scores the definition promises."""
    text = ("Survey Report 7: City_017. City_017 lies on River_033 and exports Material_009. The registry code "
            "of City_017 is RX-88213, and its founding year is 1427. ") * 4
    ids = cpu_model.tokenize(text)
    context, continuation = ids[:64], ids[64:80]
    examples = score_examples(cpu_model, [(context, continuation)])
    assert examples[0].chunk_vectors.shape == (4, cpu_model.encoder.config.hidden_size)
    assert torch.isfinite(examples[0].chunk_nll).all()
    masks = [[False] * 4, [False, False, False, True], [True] * 4]
    rewards = rewards_of(cpu_model, examples * 3, masks)
    assert rewards[2] > rewards[0] and rewards[1] > rewards[0]
