"""Notebooks are lessons: each opens with where it stands in REFRAG and the question it answers, ends with what
was learnt and a self-check, holds the learner's exercises and no author material (study sections, commit hashes,
cells that only show an error), keeps its parameter cell short, and never types a figure of the course's own runs
into the prose (a run prints its own; the history of what was tried is docs/results.md)."""

import re

import jupytext
import pytest

from refrag_lib.course.exercises import EXERCISES
from refrag_lib.course.notebooks import MAX_MARKDOWN_WORDS, NOTEBOOK_DIR, markdown_words, typed_run_figures

SOURCES = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))
IDS = [s.stem for s in SOURCES]
MAX_PARAMETERS = 11  # what a learner would change; the recipe lives in each notebook's advanced-settings cell
COMMIT_HASH = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")
STUDY_MODULES = ("refrag_lib.studies.levers", "refrag_lib.studies.fair_cpt", "refrag_lib.studies.recovery_levers",
                 "refrag_lib.studies.sft_curve", "refrag_lib.studies.loss_speed")


def cells(source):
    return jupytext.read(source).cells


@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_each_notebook_reads_as_a_lesson(source):
    assert markdown_words(source) <= MAX_MARKDOWN_WORDS
    assert typed_run_figures(source) == []


@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_each_notebook_opens_with_its_place_in_the_pipeline_and_its_question(source):
    notebook = cells(source)
    assert notebook[0].cell_type == "markdown" and "**The question of this notebook:**" in notebook[0].source
    code = [c.source for c in notebook if c.cell_type == "code"]
    # the Colab setup cell, the parameters, then the picture: before anything is loaded or trained
    assert f'show_pipeline("{source.name[:2]}")' in code[2]


@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_each_notebook_ends_with_what_was_learnt_and_a_self_check(source):
    markdown = "\n".join(c.source for c in cells(source) if c.cell_type == "markdown")
    recap = "## The course in one page" if source.name.startswith("07") else "## What you learnt"
    assert recap in markdown and "## Self-check" in markdown
    self_check = markdown.split("## Self-check", 1)[1]
    assert self_check.count("<details><summary>Answer</summary>") >= 3


@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_no_author_material_in_a_lesson(source):
    text = source.read_text()
    assert COMMIT_HASH.findall(text) == []
    assert not any(module in text for module in STUDY_MODULES)
    assert "except CourseError" not in text  # no cell that exists to show a refused call


@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_the_parameter_cell_holds_what_a_learner_changes(source):
    parameters = next(c for c in cells(source) if "parameters" in c.metadata.get("tags", []))
    names = [line for line in parameters.source.splitlines() if re.match(r"^[A-Z_]+ = ", line)]
    assert 3 <= len(names) <= MAX_PARAMETERS


def test_every_exercise_is_done_in_its_notebook_and_there_are_enough():
    for name, ex in EXERCISES.items():
        assert f'exercise("{name}"' in (NOTEBOOK_DIR / f"{ex.notebook}.py").read_text(), name
    mechanism = {"chunk_pooling", "projector", "splice", "curriculum", "clipped_objective", "ttft_ratio"}
    assert mechanism <= set(EXERCISES) and len(EXERCISES) >= 9


def test_typed_figures_are_found_and_settings_code_and_the_paper_are_not(tmp_path):
    source = tmp_path / "99_demo.py"
    prose = ["REFRAG reached 0.54 exact match here.",
             "With p = 0.25 and `lr = 3e-4 or 0.5` nothing is measured; $p \\cdot L = 0.5$ neither.",
             "The paper's Table 1 reports 1.157."]
    source.write_text("\n".join(["# %% [markdown]", *(f"# {line}" for line in prose), "# %%",
                                 "x = 0.75  # code is not prose, and holds 6 words"]))
    assert typed_run_figures(source) == ["REFRAG reached 0.54 exact match here."]
    assert markdown_words(source) == sum(len(line.split()) for line in prose)
