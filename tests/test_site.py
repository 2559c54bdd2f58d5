"""The course site from a tiny fake run (notebooks written with nbformat, a README and one docs page): a page per
notebook in order with its outputs, links between pages rewritten, and the refusals (no executed notebooks, a
notebook with an error output, a folder the user made)."""

import json
import re

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from refrag_lib.__main__ import main as cli
from refrag_lib.course.site import MARKER, build_site
from refrag_lib.errors import CourseError, MissingArtifactError
from refrag_lib.runs import repo_root

# A 1x1 PNG, base64 as a display_data output holds it (matplotlib's inline backend writes the same kind).
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
README = """# The fake course

Read [the teaching notes](docs/teaching.md#timings), then [the plot](notebooks/01_plot.ipynb);
[the data card](data/README.md) and [the web](https://example.org/docs/teaching.md) stay as they are.

| a | b |
|---|---|
| 1 | 2 |
"""
TEACHING = "# Teaching\n\n## Timings\n\nBack to [the README](../README.md#the-fake-course).\n"
BADGE = "[![Open In Colab](https://colab.example/badge.svg)](https://colab.example/notebook)"


def write_notebook(path, title: str, *cells) -> None:
    introduction = new_markdown_cell(f"# {title}\n\n{BADGE}\n\nWhat this notebook does.")
    nbformat.write(new_notebook(cells=[introduction, *cells]), path)


def stream(text: str):
    return new_code_cell(f"print({text!r})", outputs=[new_output("stream", name="stdout", text=text + "\n")])


def figure():
    return new_code_cell("plt.plot([1, 2])", outputs=[
        new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure size 3x2>"})])


@pytest.fixture
def sources(tmp_path):
    """A course checkout: the README and one docs page."""
    root = tmp_path / "course"
    (root / "docs").mkdir(parents=True)
    (root / "README.md").write_text(README)
    (root / "docs" / "teaching.md").write_text(TEACHING)
    return root


@pytest.fixture
def run(tmp_path):
    """A finished run folder: two executed notebooks and a stage's metrics."""
    root = tmp_path / "cpu-smoke"
    (root / "executed").mkdir(parents=True)
    (root / "index").mkdir()
    (root / "index" / "metrics.json").write_text(json.dumps({"preset": "cpu", "k": 16, "smoke": True}))
    write_notebook(root / "executed" / "00_first.ipynb", "00 · First", stream("hello from 00"))
    write_notebook(root / "executed" / "01_plot.ipynb", "01 · Plot", stream("hello from 01"), figure())
    return root


def nav(page: str) -> list[str]:
    """The navigation's links, the current page's with a star (attributes in any order: nbconvert re-serialises)."""
    bar = page.split('<nav class="site-nav">')[1].split("</nav>")[0]
    tags = re.findall("<a [^>]*>", bar)
    return [re.search(r'href="([^"]+)"', tag)[1] + "*" * ("aria-current" in tag) for tag in tags]


def test_a_run_becomes_a_page_per_notebook_in_order_with_its_outputs(run, sources, tmp_path):
    pages = build_site(run, tmp_path / "site", sources)
    assert [page.name for page in pages] == ["index.html", "00_first.html", "01_plot.html", "teaching.html"]
    first, plot = (tmp_path / "site" / "00_first.html").read_text(), pages[2].read_text()
    assert "<title>00 · First</title>" in first and "hello from 00" in first
    assert "hello from 01" in plot and f'src="data:image/png;base64,{PNG}' in plot
    assert "<script src=" not in plot and 'src="https://' not in plot  # nothing fetched: the page stands alone
    assert 'href="https://colab.example/notebook">Open In Colab</a>' in plot  # the remote badge left as its link
    names = [page.name for page in pages]
    for page in pages:
        text = page.read_text()
        assert nav(text) == [name + "*" * (name == page.name) for name in names]
        assert "Built from the run cpu-smoke (preset cpu, k = 16, SMOKE parameters) executed on" in text
        assert re.search('<link [^>]*href="site.css"', text)
    assert "prefers-color-scheme: dark" in (tmp_path / "site" / "site.css").read_text()


def test_the_readme_is_the_index_and_links_between_pages_are_rewritten(run, sources, tmp_path):
    build_site(run, tmp_path / "site", sources)
    index, teaching = ((tmp_path / "site" / name).read_text() for name in ("index.html", "teaching.html"))
    assert "<title>The fake course</title>" in index and '<h1 id="the-fake-course">' in index
    assert '<a href="teaching.html#timings">' in index and '<a href="01_plot.html">' in index
    assert '<a href="data/README.md">' in index and '<a href="https://example.org/docs/teaching.md">' in index
    assert "<table>" in index and "<td>2</td>" in index
    assert '<h2 id="timings">' in teaching and '<a href="index.html#the-fake-course">' in teaching


def test_a_rebuild_replaces_the_previous_site(run, sources, tmp_path):
    build_site(run, tmp_path / "site", sources)
    (run / "executed" / "00_first.ipynb").unlink()
    pages = build_site(run, tmp_path / "site", sources)
    assert sorted(path.name for path in (tmp_path / "site").iterdir()) == sorted(
        [MARKER, "site.css", "index.html", "01_plot.html", "teaching.html"])
    assert nav(pages[0].read_text()) == ["index.html*", "01_plot.html", "teaching.html"]


def test_a_run_without_executed_notebooks_is_refused(tmp_path, sources):
    with pytest.raises(MissingArtifactError, match=r"holds no executed notebook: .*`make course RUN_DIR="):
        build_site(tmp_path / "never-run", tmp_path / "site", sources)
    assert not (tmp_path / "site").exists()


def test_a_notebook_with_an_error_output_is_refused_and_the_old_site_kept(run, sources, tmp_path):
    pages = build_site(run, tmp_path / "site", sources)
    failed = new_code_cell("1 / 0", outputs=[new_output("error", ename="ZeroDivisionError", evalue="division by zero",
                                                        traceback=["ZeroDivisionError: division by zero"])])
    write_notebook(run / "executed" / "02_broken.ipynb", "02 · Broken", failed)
    with pytest.raises(CourseError, match=r"02_broken.ipynb holds 1 error output.*`make course`"):
        build_site(run, tmp_path / "site", sources)
    assert all(path.exists() for path in pages) and not (tmp_path / "site" / "02_broken.html").exists()


def test_a_folder_the_user_made_is_never_overwritten(run, sources, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    with pytest.raises(CourseError, match=rf"is not empty and is not a course site \(it has no {MARKER}\)"):
        build_site(run, mine, sources)
    assert [path.name for path in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "my notes"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert build_site(run, empty, sources)[0] == empty / "index.html"  # an empty folder is the user's to give


def test_the_command_prints_the_index_and_the_page_count_or_a_one_line_error(run, tmp_path, capsys):
    assert cli(["site", "--run-dir", str(run)]) == 0  # the course's own README and docs
    docs = len(list((repo_root() / "docs").glob("*.md")))
    assert capsys.readouterr().out == f"{run / 'site' / 'index.html'} ({1 + 2 + docs} pages)\n"
    assert (run / "site" / "teaching.html").is_file()
    assert cli(["site", "--run-dir", str(tmp_path / "never-run")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error: ") and "`make course RUN_DIR=" in error
