"""The teacher's pack: what it carries, and every bad pack refused before anything is written."""

import io
import json
import tarfile

import pytest
import torch
from safetensors.torch import save_file

from refrag_lib.course import pack
from refrag_lib.course.pack import PackError, make_pack, unpack


def finished_run(root, preset="cpu", k=16):
    """A small run folder shaped like the course's: results, resumable state, executed notebooks."""
    for stage in ("index", "recon"):
        (root / stage).mkdir(parents=True)
        (root / stage / "metrics.json").write_text(json.dumps({"preset": preset, "k": k, "smoke": True}))
    (root / "index" / "passages.faiss").write_bytes(b"faiss index bytes")
    save_file({"w": torch.ones(3)}, str(root / "recon" / "weights.safetensors"))
    (root / "recon" / "checkpoint").mkdir()
    save_file({"m": torch.zeros(3)}, str(root / "recon" / "checkpoint" / "optimizer.safetensors"))
    (root / "executed").mkdir()
    (root / "executed" / "02_reconstruction.ipynb").write_text("{}")
    return root


def files_of(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_pack_carries_results_only_and_unpacks_the_same(tmp_path):
    run = finished_run(tmp_path / "run")
    manifest = make_pack(run, tmp_path / "pack.tar")
    assert sorted(manifest["files"]) == ["index/metrics.json", "index/passages.faiss", "recon/metrics.json",
                                         "recon/weights.safetensors"]
    assert (manifest["preset"], manifest["k"], manifest["stages"]) == ("cpu", 16, ["index", "recon"])
    assert manifest["packages"]["torch"] and manifest["course_version"]
    assert not unpack(str(tmp_path / "pack.tar"), tmp_path / "fresh", "cpu", 16).get("already")
    unpacked = files_of(tmp_path / "fresh")
    assert unpacked.pop(pack.UNPACKED) and unpacked == {name: (run / name).read_bytes() for name in manifest["files"]}
    # every notebook with PACK set opens it again, after earlier ones rewrote their evaluation: nothing to do
    rewritten = {"preset": "cpu", "k": 16, "smoke": True, "evaluated": "again"}
    (tmp_path / "fresh" / "recon" / "metrics.json").write_text(json.dumps(rewritten))
    assert unpack(str(tmp_path / "pack.tar"), tmp_path / "fresh", "cpu", 16)["already"]
    with pytest.raises(PackError, match="made with preset 'cpu'"):  # the record does not skip the identity check
        unpack(str(tmp_path / "pack.tar"), tmp_path / "fresh", "t4", 16)
    with pytest.raises(PackError, match="exists"):
        make_pack(run, tmp_path / "pack.tar")
    assert pack.UNPACKED not in make_pack(tmp_path / "fresh", tmp_path / "again.tar")["files"]


def test_a_half_precision_preset_packs_its_stage_weights_in_that_precision(tmp_path):
    """t4 models hold every tensor in fp16, so fp32 master weights lose nothing there; policies stay fp32."""
    from safetensors.torch import load_file

    run = finished_run(tmp_path / "run", preset="t4")
    save_file({"w": torch.linspace(0, 1, 1000)}, str(run / "recon" / "weights.safetensors"))
    save_file({"p": torch.linspace(0, 1, 1000)}, str(run / "recon" / "policy.safetensors"))
    manifest = make_pack(run, tmp_path / "pack.tar")
    assert manifest["weights_dtype"] == "float16"
    packed_size = manifest["files"]["recon/weights.safetensors"]["size"]
    assert packed_size < 0.6 * (run / "recon" / "weights.safetensors").stat().st_size
    unpack(str(tmp_path / "pack.tar"), tmp_path / "fresh", "t4", 16)
    weights = load_file(str(tmp_path / "fresh" / "recon" / "weights.safetensors"))["w"]
    assert weights.dtype == torch.float16 and torch.equal(weights, torch.linspace(0, 1, 1000).half())
    assert load_file(str(tmp_path / "fresh" / "recon" / "policy.safetensors"))["p"].dtype == torch.float32
    assert make_pack(finished_run(tmp_path / "cpu"), tmp_path / "cpu.tar")["weights_dtype"] == "float32"


def test_checking_a_pack_verifies_everything_and_writes_nothing(good_pack, tmp_path):
    before = files_of(tmp_path)
    assert pack.verify(str(good_pack), "cpu", 16)["stages"] == ["index", "recon"]
    assert files_of(tmp_path) == before
    with pytest.raises(PackError, match="made by a SMOKE run and this notebook runs full-size"):
        pack.verify(str(good_pack), "cpu", 16, smoke=False)
    flipped = rewrite(good_pack, tmp_path / "flipped.tar",
                      lambda n, d: (n, d[:-1] + b"?") if n == "index/passages.faiss" else (n, d))
    with pytest.raises(PackError, match="does not match its manifest"):
        pack.verify(str(flipped), "cpu", 16)


def rewrite(source, target, change):
    """A copy of a pack with its members passed through change(name, data) -> (name, data) or None."""
    with tarfile.open(source) as old, tarfile.open(target, "w") as new:
        for member in old:
            kept = change(member.name, old.extractfile(member).read())
            if kept:
                info = tarfile.TarInfo(kept[0])
                info.size = len(kept[1])
                new.addfile(info, io.BytesIO(kept[1]))
    return target


def add_to_manifest(name, data, extra_name, extra=b"x"):
    if name != "manifest.json":
        return name, data
    manifest = json.loads(data)
    manifest["files"][extra_name] = {"sha256": pack.hashlib.sha256(extra).hexdigest(), "size": len(extra)}
    return name, json.dumps(manifest).encode()


def append_member(path, name, data=b"x"):
    with tarfile.open(path, "a") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def good_pack(tmp_path):
    make_pack(finished_run(tmp_path / "run"), tmp_path / "pack.tar")
    return tmp_path / "pack.tar"


def bad_packs(good, tmp_path):
    with tarfile.open(good) as tar:
        last = tar.getmembers()[-1]
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(good.read_bytes()[: last.offset_data + 1])  # cut off inside the last file, as a download
    flipped = rewrite(good, tmp_path / "flipped.tar",
                      lambda n, d: (n, d[:-1] + b"?") if n == "index/passages.faiss" else (n, d))
    pickled = rewrite(good, tmp_path / "pickled.tar", lambda n, d: add_to_manifest(n, d, "recon/model.pt"))
    append_member(pickled, "recon/model.pt")
    escaping = rewrite(good, tmp_path / "escaping.tar", lambda n, d: add_to_manifest(n, d, "../evil.json"))
    append_member(escaping, "../evil.json")
    return {
        "missing": (str(tmp_path / "nowhere.tar"), "cpu", 16, "does not exist"),
        "unreachable": ("https://127.0.0.1:9/pack.tar", "cpu", 16, "could not be downloaded"),
        "another preset": (str(good), "t4", 16, "made with preset 'cpu'"),
        "another k": (str(good), "cpu", 8, "k = 16"),
        "truncated": (str(truncated), "cpu", 16, "truncated"),
        "hash mismatch": (str(flipped), "cpu", 16, "does not match its manifest"),
        "pickle": (str(pickled), "cpu", 16, "never pickles"),
        "escaping path": (str(escaping), "cpu", 16, "leaves the run folder"),
    }


@pytest.mark.parametrize("case", ["missing", "unreachable", "another preset", "another k", "truncated",
                                  "hash mismatch", "pickle", "escaping path"])
def test_bad_packs_are_refused_with_one_line_and_nothing_written(good_pack, tmp_path, case):
    source, preset, k, words = bad_packs(good_pack, tmp_path)[case]
    target = tmp_path / "attendee" / "runs" / "cpu"
    target.parent.mkdir(parents=True)
    before = files_of(tmp_path / "attendee")
    with pytest.raises(PackError, match=words) as err:
        unpack(source, target, preset, k)
    assert "\n" not in str(err.value)
    assert files_of(tmp_path / "attendee") == before and not target.exists()
    assert not (tmp_path / "evil.json").exists() and not (tmp_path / "attendee" / "evil.json").exists()


def test_a_run_the_learner_trained_is_never_overwritten(good_pack, tmp_path):
    mine = finished_run(tmp_path / "mine")
    save_file({"w": torch.full((3,), 7.0)}, str(mine / "recon" / "weights.safetensors"))
    before = files_of(mine)
    with pytest.raises(PackError, match="run of yours, left as it is"):
        unpack(str(good_pack), mine, "cpu", 16)
    assert files_of(mine) == before


def test_packing_refuses_a_file_it_cannot_vouch_for(tmp_path):
    run = finished_run(tmp_path / "run")
    (run / "recon" / "extra.pt").write_bytes(b"pickle")
    with pytest.raises(PackError, match="extra.pt is not safetensors"):
        make_pack(run, tmp_path / "pack.tar")
    assert not (tmp_path / "pack.tar").exists()
