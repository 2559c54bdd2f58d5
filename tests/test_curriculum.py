"""The curriculum (Table 8): geometric rows, mixtures that sum to 1, the cap at s/k, determinism."""

import numpy as np
import pytest

from refrag_lib.curriculum import N_STAGES, TABLE8, Curriculum, capped_table, stage_mixtures
from refrag_lib.errors import CourseError


@pytest.mark.parametrize("factor", sorted(TABLE8))
def test_each_row_of_table8_is_geometric(factor):
    counts = np.asarray(TABLE8[factor], dtype=float)
    assert len(counts) == N_STAGES
    big = counts >= 5  # tiny counts are rounded to integers, so only the larger ones pin the ratio
    stages = np.arange(N_STAGES)[big]
    slope, intercept = np.polyfit(stages, np.log(counts[big]), 1)
    fitted = np.exp(intercept + slope * np.arange(N_STAGES))
    assert np.all(np.abs(fitted - counts) <= np.maximum(1.5, 0.06 * counts)), (fitted.round(1), counts)


def test_short_factors_fade_and_long_factors_grow():
    assert TABLE8[1][0] > TABLE8[1][-1] and TABLE8[256][0] < TABLE8[256][-1]


@pytest.mark.parametrize("max_chunks", [1, 3, 16, 256, 1000])
def test_each_stage_mixture_sums_to_one(max_chunks):
    factors, mixtures = stage_mixtures(max_chunks)
    assert mixtures.shape == (N_STAGES, len(factors))
    np.testing.assert_allclose(mixtures.sum(axis=1), 1.0)
    assert (mixtures >= 0).all()


def test_factors_are_capped_at_what_s_over_k_allows():
    table = capped_table(16)
    assert max(table) == 16 and list(table) == [1, 2, 4, 8, 16]
    expected = sum(np.asarray(TABLE8[f], float) for f in TABLE8 if f >= 16)
    np.testing.assert_allclose(table[16], expected)  # the mass of 32..256 chunks moves onto 16
    assert max(capped_table(12)) == 12
    curriculum = Curriculum(max_chunks=4, total_steps=200, seed=1)
    assert set(curriculum.schedule()) <= {1, 2, 4}
    with pytest.raises(CourseError, match="at least one chunk"):
        capped_table(0)


def test_stages_spread_evenly_over_any_budget():
    curriculum = Curriculum(max_chunks=16, total_steps=90)
    assert [curriculum.stage(s) for s in (0, 9, 10, 89)] == [0, 0, 1, 8]
    assert Curriculum(16, 7).stage(6) == 8 and Curriculum(16, 1).stage(0) == 0
    with pytest.raises(CourseError):
        curriculum.stage(90)


def test_same_seed_same_schedule_and_other_seed_differs():
    a = Curriculum(16, 300, seed=3).schedule()
    assert a == Curriculum(16, 300, seed=3).schedule()
    assert a != Curriculum(16, 300, seed=4).schedule()


def test_schedule_moves_from_one_chunk_to_many():
    schedule = np.asarray(Curriculum(16, 900, seed=0).schedule())
    assert np.mean(schedule[:100] == 1) > 0.6  # stage 1 is mostly single chunks
    assert np.mean(schedule[-100:] == 16) > 0.4  # the last stage mostly uses all s/k chunks


def test_no_curriculum_always_uses_all_chunks():
    assert set(Curriculum(16, 50, curriculum=False).schedule()) == {16}
    assert set(Curriculum(16, 50, curriculum=False, one_chunk_share=0.5).schedule()) == {16}  # the ablation stays


def test_a_one_chunk_phase_then_all_nine_stages_on_the_rest():
    curriculum = Curriculum(16, 400, seed=2, one_chunk_share=0.75)
    schedule = curriculum.schedule()
    assert curriculum.one_chunk_steps == 300 and set(schedule[:300]) == {1}
    assert [curriculum.stage(s) for s in (0, 299, 300, 311, 312, 399)] == [-1, -1, 0, 0, 1, 8]
    plain = Curriculum(16, 100)  # the remaining 100 steps follow the 9 stages as a 100-step curriculum would
    for step in (0, 50, 99):
        np.testing.assert_allclose(curriculum.mixture(300 + step), plain.mixture(step))
    assert np.mean(np.asarray(schedule[-12:]) >= 8) > 0.5  # it still ends on long inputs
    assert Curriculum(16, 400, seed=2, one_chunk_share=0.0).schedule() == Curriculum(16, 400, seed=2).schedule()
    for share in (-0.1, 1.0):
        with pytest.raises(CourseError, match="one_chunk_share"):
            Curriculum(16, 10, one_chunk_share=share)


def test_plot_runs():
    import matplotlib

    matplotlib.use("Agg")
    from refrag_lib.curriculum import plot_curriculum

    ax = plot_curriculum(Curriculum(16, 60))
    assert ax.get_ylim() == (0, 1)


def test_a_learners_mixtures_are_what_the_curriculum_draws_from():
    def mixtures(max_chunks):  # 3 chunks is no factor of Table 8
        return [3, max_chunks], np.tile([0.25, 0.75], (N_STAGES, 1))

    schedule = Curriculum(16, 400, seed=0, mixtures=mixtures).schedule()
    assert set(schedule) == {3, 16} and schedule.count(16) > schedule.count(3)
    assert set(Curriculum(16, 50, curriculum=False, mixtures=mixtures).schedule()) == {16}
