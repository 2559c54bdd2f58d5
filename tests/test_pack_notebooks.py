"""A teacher's pack of the SMOKE run: `python -m refrag_lib unpack PACK --check` checks it before a workshop, and in
a fresh run folder notebooks 05 and 07 run from it alone (05 loads both fine-tuned arms instead of training them)."""

import json

import pytest

from refrag_lib.course.notebooks import NOTEBOOK_DIR, notebook_errors, run_notebook
from refrag_lib.course.pack import make_pack, unpack_main

pytestmark = pytest.mark.notebooks


def run_with_pack(name, run_dir, pack, out):
    executed = json.loads(run_notebook(NOTEBOOK_DIR / f"{name}.ipynb", out, {
        "PRESET": "cpu", "RUN_DIR": str(run_dir), "SMOKE": True, "PACK": str(pack)}).read_text())
    assert notebook_errors(executed) == []
    outputs = [o for c in executed["cells"] for o in c.get("outputs", [])]
    text = "".join("".join(o.get("text", "")) for o in outputs)
    html = "".join("".join(o.get("data", {}).get("text/html", "")) for o in outputs)
    return text, html


def test_notebooks_run_from_a_pack_without_the_ones_before(notebooks, tmp_path, capsys):
    notebooks.run("07_playground")  # every stage of the SMOKE run is there
    pack = tmp_path / "smoke-pack.tar"
    manifest = make_pack(notebooks.root, pack)
    assert {"index", "recon", "cpt", "policy", "sft"} <= set(manifest["stages"])
    assert not any(name.split("/")[0] == "executed" or "/checkpoint/" in name for name in manifest["files"])

    assert unpack_main([str(pack), "--check", "--preset", "cpu"]) == 0  # the teacher's check, writing nothing
    assert f"{pack} is whole:" in capsys.readouterr().out and not (tmp_path / "teacher").exists()

    fresh = tmp_path / "attendee" / "cpu"
    arms = {arm: (notebooks.root / "sft" / arm / "weights.safetensors").read_bytes() for arm in ("rag", "refrag")}
    text, _ = run_with_pack("05_sft", fresh, pack, tmp_path / "executed-05")
    assert "unpacked:" in text
    assert "loaded the finished sft_rag run" in text and "loaded the finished sft_refrag run" in text
    assert all((fresh / "sft" / arm / "weights.safetensors").read_bytes() == arms[arm] for arm in arms)
    evaluated = json.loads((fresh / "sft" / "metrics.json").read_text())  # evaluated here, on the loaded arms
    assert evaluated["n_eval"] > 0 and evaluated["train"]["rag"]["loaded"] and evaluated["train"]["refrag"]["loaded"]

    text, html = run_with_pack("07_playground", fresh, pack, tmp_path / "executed-07")
    assert "pack already in the run folder" in text  # 05 rewrote its metrics.json: the pack is not re-applied
    assert "decoder positions" in html and "#c8f0c8" in html  # the answer table and coloured chunks
