"""The recipe table of context recovered: every row keeps the two stages' steps, and the table says which
changes its intervals support."""

from refrag_lib.config import CPU_BUDGET, T4_BUDGET
from refrag_lib.studies.recovery_levers import RECIPES, format_table, stage_steps


def test_a_recipe_moves_steps_between_the_stages_and_keeps_their_sum():
    for budget in (CPU_BUDGET, T4_BUDGET):
        total = budget.recon_steps + budget.cpt_steps
        assert stage_steps(budget, RECIPES[0]) == (budget.recon_steps, budget.cpt_steps)
        for recipe in RECIPES:
            first, second = stage_steps(budget, recipe)
            assert first + second == total and first > 0 and second > 0
    shorter = next(r for r in RECIPES if r.cpt_share and r.cpt_share > 0.5)
    assert stage_steps(CPU_BUDGET, shorter) == (198, 242)


def test_every_recipe_has_its_own_folder_and_the_default_comes_first():
    assert len({r.slug for r in RECIPES}) == len(RECIPES)
    assert RECIPES[0].decoder_lr == 0 and RECIPES[0].k is None and RECIPES[0].cpt_share is None


def test_the_table_marks_a_change_its_interval_supports():
    interval = {"mean": 0.3, "low": 0.25, "high": 0.35}
    row = {"recipe": "k = 8", "k": 8, "steps": [320, 120], "protocol": "decoder frozen",
           "context_recovered": interval, "gain_over_last_tokens": {"mean": 0.1, "low": 0.02, "high": 0.2},
           "one_chunk_accuracy": {"mean": 0.5, "low": 0.45, "high": 0.55}}
    tie = {**row, "recipe": "tie", "refrag_vs_default": {"mean": 0.01, "low": -0.02, "high": 0.04}}
    ahead = {**row, "recipe": "ahead", "refrag_vs_default": {"mean": 0.2, "low": 0.1, "high": 0.3}}
    trained = {**row, "recipe": "trained", "protocol": "decoder trained, fair baselines", "one_chunk_accuracy": None}
    text = format_table({"rows": [row, tie, ahead, trained], "eval_pairs": 64, "one_chunk_windows": 64})
    lines = text.splitlines()
    assert "+0.010)" in lines[3] and "+0.200*)" in lines[4]
    assert "trained, fair" in lines[5] and lines[5].rstrip().endswith("| -")
    assert "0.30 [0.25, 0.35]" in lines[2]


def test_a_study_table_is_optional_in_a_run(tmp_path):
    from refrag_lib.runs import open_run
    from refrag_lib.studies.recovery_levers import RECOVERY_TABLE

    run = open_run("cpu", tmp_path)
    assert run.read_study(RECOVERY_TABLE) is None and not (tmp_path / "cpt").exists()  # reading creates nothing
    path = run.write_study(RECOVERY_TABLE, {"rows": [], "eval_pairs": 0})
    assert path == tmp_path / RECOVERY_TABLE and run.read_study(RECOVERY_TABLE) == {"rows": [], "eval_pairs": 0}
