"""Notebooks are lessons: short enough to read in a workshop, and every figure of the course's own runs is
printed by the run, never typed into the prose (the history of what was tried lives in docs/results.md)."""

import pytest

from refrag_lib.course.notebooks import MAX_MARKDOWN_WORDS, NOTEBOOK_DIR, markdown_words, typed_run_figures

SOURCES = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("source", SOURCES, ids=[s.stem for s in SOURCES])
def test_each_notebook_reads_as_a_lesson(source):
    assert markdown_words(source) <= MAX_MARKDOWN_WORDS
    assert typed_run_figures(source) == []


def test_typed_figures_are_found_and_settings_code_and_the_paper_are_not(tmp_path):
    source = tmp_path / "99_demo.py"
    prose = ["REFRAG reached 0.54 exact match here.",
             "With p = 0.25 and `lr = 3e-4 or 0.5` nothing is measured; $p \\cdot L = 0.5$ neither.",
             "The paper's Table 1 reports 1.157."]
    source.write_text("\n".join(["# %% [markdown]", *(f"# {line}" for line in prose), "# %%",
                                 "x = 0.75  # code is not prose, and holds 6 words"]))
    assert typed_run_figures(source) == ["REFRAG reached 0.54 exact match here."]
    assert markdown_words(source) == sum(len(line.split()) for line in prose)
