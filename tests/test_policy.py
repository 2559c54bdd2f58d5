"""The expansion policy: Plackett-Luce log-probabilities, Gumbel-top-k sampling, selectors, checkpoints."""

import itertools
import math

import pytest
import torch

from refrag_lib.errors import CourseError
from refrag_lib.model import Segments
from refrag_lib.policy import (
    ChunkPolicy,
    PolicyConfig,
    effective_compression,
    greedy,
    load_policy,
    n_expanded,
    sample_ordered,
    save_policy,
    selection_log_prob,
    step_log_probs,
    to_mask,
)
from refrag_lib.selectors import FixedSelector, PerplexitySelector, PolicySelector, RandomSelector, ScoredExample


def scored(nll, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    nll = torch.tensor(nll, dtype=torch.float)
    chunks = [[i + 2] * 4 for i in range(len(nll))]
    return ScoredExample(Segments(chunks=chunks, suffix=[1, 2]), torch.randn(len(nll), dim, generator=g), nll)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_probabilities_of_all_ordered_selections_sum_to_one(n):
    logits = torch.tensor([[0.3, -1.2, 2.0, 0.7]])
    total = sum(math.exp(selection_log_prob(logits, torch.tensor([order])).item())
                for order in itertools.permutations(range(4), n))
    assert total == pytest.approx(1.0, abs=1e-5)


def test_step_log_probs_are_softmaxes_over_the_chunks_not_yet_chosen():
    logits = torch.tensor([[1.0, 0.0, -1.0, 2.0]])
    steps = step_log_probs(logits, torch.tensor([[3, 0, 2]]))[0]
    first = logits[0].log_softmax(-1)[3]
    second = logits[0, [0, 1, 2]].log_softmax(-1)[0]
    third = logits[0, [1, 2]].log_softmax(-1)[1]
    torch.testing.assert_close(steps, torch.stack([first, second, third]))


def test_gumbel_top_k_draws_the_plackett_luce_distribution():
    logits = torch.tensor([[1.0, 0.0, -0.5]])
    draws = sample_ordered(logits.expand(20000, -1), 2, torch.Generator().manual_seed(0))
    for order in itertools.permutations(range(3), 2):
        expected = math.exp(selection_log_prob(logits, torch.tensor([order])).item())
        observed = (draws == torch.tensor(order)).all(dim=1).float().mean().item()
        assert observed == pytest.approx(expected, abs=0.015)
    assert (draws[:, 0] != draws[:, 1]).all()  # without replacement


def test_greedy_takes_the_highest_logits_and_masks_mark_them():
    logits = torch.tensor([[0.1, 3.0, -2.0, 1.0], [5.0, 0.0, 1.0, 2.0]])
    picks = greedy(logits, 2)
    assert [sorted(r) for r in picks.tolist()] == [[1, 3], [0, 3]]
    assert to_mask(picks, [4, 4]) == [[False, True, False, True], [True, False, False, True]]
    with pytest.raises(CourseError):
        greedy(logits, 5)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.2"])
def test_fraction_outside_zero_one_is_refused(bad):
    with pytest.raises(CourseError, match="in \\[0, 1\\]"):
        n_expanded(bad, 16)
    with pytest.raises(CourseError):
        RandomSelector(0)([scored([1.0, 2.0])], bad)


def test_expanded_count_and_effective_compression():
    assert [n_expanded(p, 16) for p in (0, 0.05, 0.1, 0.25, 0.5, 1)] == [0, 1, 2, 4, 8, 16]
    assert effective_compression(16, 0.0) == 16 and effective_compression(16, 1.0) == 1
    assert effective_compression(16, 0.25) == pytest.approx(16 / 4.75)


def test_perplexity_selectors_pick_the_hardest_or_easiest_chunks():
    ex = scored([0.5, 3.0, 1.0, 2.0])
    assert PerplexitySelector(True)([ex], 0.5) == [[False, True, False, True]]
    assert PerplexitySelector(False)([ex], 0.5) == [[True, False, True, False]]
    assert FixedSelector(False)([ex], 0.5) == [[False] * 4]
    assert FixedSelector(True)([ex], 0.0) == [[True] * 4]


def test_random_selector_is_seeded_and_picks_round_p_l_chunks():
    examples = [scored([0.0] * 16, seed=i) for i in range(5)]
    a, b, c = RandomSelector(0)(examples, 0.25), RandomSelector(0)(examples, 0.25), RandomSelector(1)(examples, 0.25)
    assert a == b and a != c
    assert all(sum(mask) == 4 for mask in a)


def test_policy_logits_ignore_padding_and_selector_handles_ragged_examples():
    torch.manual_seed(0)
    policy = ChunkPolicy(PolicyConfig(input_dim=6, width=16, heads=2))
    for p in policy.out.parameters():  # a non-uniform policy
        torch.nn.init.normal_(p)
    long, short = scored([0.0] * 8, seed=1), scored([0.0] * 4, seed=2)
    c = torch.stack([long.chunk_vectors, torch.cat([short.chunk_vectors, torch.zeros(4, 6)])])
    valid = torch.tensor([[True] * 8, [True] * 4 + [False] * 4])
    logits = policy(c, valid)
    assert torch.isinf(logits[1, 4:]).all() and torch.isfinite(logits[1, :4]).all()
    torch.testing.assert_close(logits[1, :4], policy(short.chunk_vectors[None])[0])  # padding changes nothing
    masks = PolicySelector(policy)([long, short], 0.5)
    assert [len(m) for m in masks] == [8, 4] and [sum(m) for m in masks] == [4, 2]
    assert all(i < 4 for i in sample_ordered(logits[1:], 4, torch.Generator().manual_seed(0))[0].tolist())


def test_fresh_policy_is_uniform():
    policy = ChunkPolicy(PolicyConfig(input_dim=6, width=16, heads=2))
    logits = policy(torch.randn(2, 5, 6))
    torch.testing.assert_close(logits, torch.zeros(2, 5))


IDENTITY = {"preset": "cpu", "k": "16", "encoder": "enc", "decoder": "dec", "stage": "policy"}


def test_policy_checkpoint_round_trip_and_refusals(tmp_path):
    policy = ChunkPolicy(PolicyConfig(input_dim=6, width=16, heads=2))
    for p in policy.parameters():
        torch.nn.init.normal_(p)
    path = save_policy(tmp_path / "policy.safetensors", policy, IDENTITY)
    loaded = load_policy(path, IDENTITY)
    c = torch.randn(1, 5, 6)
    torch.testing.assert_close(loaded(c), policy(c))
    with pytest.raises(CourseError, match="k="):
        load_policy(path, {**IDENTITY, "k": "8"})
    with pytest.raises(CourseError, match="encoder="):
        load_policy(path, {**IDENTITY, "encoder": "other"})
    with pytest.raises(CourseError, match="another encoder"):
        loaded(torch.randn(1, 5, 7))
