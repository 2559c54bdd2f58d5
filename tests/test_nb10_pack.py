"""A teacher's pack of the SMOKE run, unpacked into a fresh run folder: notebook 07 answers from it alone."""

import json

import pytest

from refrag_lib.notebooks import NOTEBOOK_DIR, notebook_errors, run_notebook
from refrag_lib.pack import make_pack, unpack

pytestmark = pytest.mark.notebooks


def test_notebook_07_runs_from_an_unpacked_pack(notebooks, tmp_path):
    notebooks.run("07_playground")  # every stage of the SMOKE run is there
    manifest = make_pack(notebooks.root, tmp_path / "smoke-pack.tar")
    assert {"index", "recon", "cpt", "policy", "sft"} <= set(manifest["stages"])
    assert not any(name.split("/")[0] == "executed" or "/checkpoint/" in name for name in manifest["files"])
    fresh = tmp_path / "attendee" / "cpu"
    unpack(str(tmp_path / "smoke-pack.tar"), fresh, "cpu", 16)
    out = run_notebook(NOTEBOOK_DIR / "07_playground.ipynb", tmp_path / "executed",
                       {"PRESET": "cpu", "RUN_DIR": str(fresh), "SMOKE": True})
    executed = json.loads(out.read_text())
    assert notebook_errors(executed) == []
    html = "".join("".join(o.get("data", {}).get("text/html", "")) for c in executed["cells"]
                   for o in c.get("outputs", []))
    assert "decoder positions" in html and "#c8f0c8" in html  # the answer table and coloured chunks
