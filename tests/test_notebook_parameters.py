"""Papermill reads every parameter of every notebook (name, default and help), as `papermill --help-notebook`
and the course's headless runs see them: a line it cannot parse is silently left out of the list."""

import jupytext
import nbformat
import pytest

from refrag_lib.course.notebooks import NOTEBOOK_DIR

# papermill runs the notebooks headless in make course and make test; Colab's runtime has none, so this skips there
PythonTranslator = pytest.importorskip(
    "papermill.translators", reason="papermill is not in Colab's runtime (colab/pip-freeze.gpu.txt)"
).PythonTranslator

SOURCES = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("source", SOURCES, ids=[s.stem for s in SOURCES])
def test_every_parameter_line_parses(source):
    cells = [c for c in jupytext.read(source).cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1
    lines = [line for line in cells[0].source.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    parsed = PythonTranslator.inspect(nbformat.v4.new_code_cell("\n".join(lines)))
    assert [p.name for p in parsed] == [line.split("=")[0].strip() for line in lines]
