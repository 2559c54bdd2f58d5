"""A teacher's pack: one archive of a finished run that attendees unpack instead of training.

`python -m refrag_lib pack` (or `make pack`) writes a plain tar of what later notebooks read (each stage's
metrics, trained weights in safetensors, the index and chunk store, the REFRAG-ready index), with
manifest.json first: preset, k, course version and commit, package versions, and the sha256 and size of
every file. Left out: resumable training state (optimizer moments, twice the weights' size), executed
notebooks, the playground page and browser screenshots (each rebuilt by the notebook that needs it). A
preset whose models compute in fp16 or bf16 packs its stages' weights in that dtype (half the bytes, the same
model once loaded); the cpu preset keeps fp32, the precision its models hold.

`python -m refrag_lib unpack PACK` checks everything before it writes anything: the manifest, the preset
and k, every member's path (no links, nothing outside the run folder), no file a loader could unpickle,
and every size and hash. It never overwrites a file that differs: a run the learner trained stays theirs.
PACK is a local path (a Google Drive folder in Colab is one) or an https URL, downloaded with a progress bar.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from contextlib import nullcontext
from pathlib import Path, PurePosixPath

from .. import __version__
from ..checkpoint import WEIGHTS
from ..config import get_preset
from ..errors import CourseError
from ..runs import course_commit

MANIFEST = "manifest.json"
FORMAT = 1
# Written into a run folder by unpack: which pack it holds, so that opening the same pack again (every notebook
# with PACK set does) finds it there, even after a notebook has rewritten its evaluation into metrics.json.
UNPACKED = "unpacked-pack.json"
# Folders of a run that are not results: resumable state, executed notebooks, pages and screenshots.
LEFT_OUT = {"checkpoint", "executed", "playground", "browser", UNPACKED}
# What a pack may hold: tensors in safetensors, the FAISS index, text. Nothing a loader could unpickle.
ALLOWED_SUFFIXES = {".safetensors", ".json", ".jsonl", ".faiss", ".csv", ".txt"}
PACKAGES = ("torch", "transformers", "accelerate", "safetensors", "faiss-gpu-cu12", "faiss-cpu", "numpy")
CHUNK = 1 << 20


class PackError(CourseError):
    """A pack that cannot be made or used here; the message says what to do."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def packed_files(run_dir: Path) -> list[Path]:
    """The files of a run a pack carries, relative to the run folder (see LEFT_OUT and ALLOWED_SUFFIXES)."""
    files = []
    for path in sorted(run_dir.rglob("*")):
        relative = path.relative_to(run_dir)
        if not path.is_file() or relative.parts[0] in LEFT_OUT or "checkpoint" in relative.parts:
            continue
        if path.suffix not in ALLOWED_SUFFIXES:
            raise PackError(f"{path} is not safetensors, JSON or a FAISS index: a pack carries no other file. Move "
                            "it out of the run folder, then pack again.")
        files.append(relative)
    return files


def run_identity(run_dir: Path) -> dict:
    """Preset, k and SMOKE of a finished run, from its stages' metrics.json (they must agree)."""
    found = {}
    for metrics in sorted(run_dir.glob("*/metrics.json")):
        if metrics.parent.name in LEFT_OUT:
            continue
        data = json.loads(metrics.read_text())
        found[metrics.parent.name] = (data.get("preset"), data.get("k"), data.get("smoke", False))
    if not found:
        raise PackError(f"{run_dir} holds no stage's metrics.json: run the course there first (make course).")
    if len(set(found.values())) != 1:
        raise PackError(f"The stages of {run_dir} were made with different presets or k: {found}. Pack a run "
                        "that one `make course` made.")
    preset, k, smoke = next(iter(found.values()))
    return {"preset": preset, "k": k, "smoke": smoke, "stages": sorted(found)}


def make_pack(run_dir: Path, out: Path) -> dict:
    """Write the pack of a finished run to `out` (refuses to overwrite); returns its manifest."""
    from importlib.metadata import PackageNotFoundError, version

    run_dir = Path(run_dir)
    if out.exists():
        raise PackError(f"{out} exists: give another --out, or remove it first.")
    files = packed_files(run_dir)
    manifest = {"format": FORMAT, **run_identity(run_dir), "course_version": __version__,
                "commit": course_commit() or "unknown", "packages": {}, "files": {}}
    for name in PACKAGES:
        try:
            manifest["packages"][name] = version(name)
        except PackageNotFoundError:
            continue
    dtype = _compute_dtype(manifest["preset"], manifest["k"])
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with tempfile.TemporaryDirectory(prefix="refrag-pack-") as scratch:
        sources = {relative: _in_dtype(run_dir / relative, dtype, Path(scratch) / str(number))
                   if relative.name == WEIGHTS and dtype != "float32" else run_dir / relative
                   for number, relative in enumerate(files)}
        for relative, path in sources.items():
            manifest["files"][relative.as_posix()] = {"sha256": _sha256(path), "size": path.stat().st_size}
        manifest["weights_dtype"] = dtype
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            payload = json.dumps(manifest, indent=1, sort_keys=True).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
            for relative, path in sources.items():
                tar.add(path, arcname=relative.as_posix(), recursive=False)
    partial.rename(out)
    return manifest


def _compute_dtype(preset: str, k: int) -> str:
    """The dtype a preset's models hold every tensor in (float32 for a preset this course does not know)."""
    try:
        return get_preset(preset, k=k).dtype
    except CourseError:
        return "float32"


def _in_dtype(path: Path, dtype: str, target: Path) -> Path:
    """A stage's weights file with its floating tensors in `dtype`. Loading casts them to the model's dtype,
    which is the preset's for every tensor of a REFRAG model (the projector too), so an fp16 or bf16 preset
    loads the same model from half the bytes. Other files (the policies, trained and run in fp32) stay."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    cast = getattr(torch, dtype)
    save_file({name: t.to(cast) if t.is_floating_point() else t for name, t in tensors.items()}, str(target),
              metadata=metadata)
    return target


def fetch(source: str, download_dir: Path) -> Path:
    """A local pack as it is; an https URL downloaded into download_dir, with a progress bar."""
    if source.startswith("https://"):
        import urllib.error
        import urllib.request

        from tqdm.auto import tqdm

        target = download_dir / (PurePosixPath(source.split("?")[0]).name or "pack.tar")
        download_dir.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        try:
            with urllib.request.urlopen(source, timeout=30) as response, partial.open("wb") as handle:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {target.name}") as bar:
                    while block := response.read(CHUNK):
                        handle.write(block)
                        bar.update(len(block))
        except (urllib.error.URLError, OSError) as err:
            partial.unlink(missing_ok=True)
            raise PackError(f"PACK {source} could not be downloaded ({err}): check the address and the network, "
                            "or download it yourself and give its path.") from None
        partial.rename(target)
        return target
    if "://" in source:
        raise PackError(f"PACK {source}: give a local path (a Drive folder in Colab) or an https:// address.")
    path = Path(source).expanduser()
    if not path.is_file():
        hint = " In Colab, mount Drive first (KEEP_ON_DRIVE = True)." if source.startswith("/content/drive") else ""
        raise PackError(f"PACK {path} does not exist: check the path the teacher gave.{hint}")
    return path


def _checked_name(name: str) -> PurePosixPath:
    """A member's path, refused unless it stays inside the run folder."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise PackError(f"The pack holds a path that leaves the run folder ({name!r}): do not use it; ask for a "
                        "pack made by `make pack`.")
    return path


def read_manifest(tar: tarfile.TarFile, source: Path) -> dict:
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isfile():
        raise PackError(f"{source} does not start with a manifest: it is not a course pack (make one with make pack).")
    manifest = json.loads(tar.extractfile(first).read())
    if manifest.get("format") != FORMAT:
        raise PackError(f"{source} is a pack of format {manifest.get('format')}, this course reads {FORMAT}: update "
                        "the course (git pull) or ask for a new pack.")
    return manifest


def unpack(source: str, run_dir: Path, preset: str, k: int, smoke: bool | None = None) -> dict:
    """Verify a pack completely, then add its files to run_dir; returns its manifest.

    Nothing is written before every check has passed; a file already in run_dir is left as it is when it
    is the same, and refused when it differs (the learner's own run is never overwritten). A pack already
    unpacked into run_dir is not unpacked (nor downloaded) again: manifest["already"] is then True. An https
    pack is downloaded to a temporary folder on local disk and removed once unpacked (in Colab, runs live on
    Drive: the download would take as much Drive space again).
    """
    run_dir = Path(run_dir)
    record = run_dir / UNPACKED
    seen = json.loads(record.read_text()) if record.exists() else {}
    if seen.get("pack") == str(source):  # a local pack is compared by its manifest; an address names one pack
        manifest = seen.get("manifest") if source.startswith("https://") else _same_manifest(source, seen)
        if manifest is not None:
            _check_identity(manifest, Path(source), preset, k, smoke)
            return {**manifest, "already": True}
    with tempfile.TemporaryDirectory(prefix="refrag-pack-") as download:
        path = fetch(source, Path(download))
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=run_dir.parent if run_dir.parent.exists() else None))
        try:
            manifest = _opened(path, lambda tar: _verify_into(tar, path, staging, preset, k, smoke))
            _install(staging, run_dir, manifest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"pack": str(source), "manifest_sha256": _manifest_sha256(path),
                                      "manifest": manifest}, indent=1))
    return manifest


def _same_manifest(source: str, seen: dict) -> dict | None:
    """The manifest of the local pack at source when it is the one the record names, else None."""
    path = fetch(source, Path(tempfile.gettempdir()))  # a local path: nothing is downloaded
    if seen.get("manifest_sha256") != _manifest_sha256(path):
        return None
    return _opened(path, lambda tar: read_manifest(tar, path))


def verify(source: str, preset: str, k: int, smoke: bool | None = None) -> dict:
    """Check a pack as unpack does (reachable, whole, every hash, made for this preset, k and SMOKE) and write
    nothing (an https pack is downloaded to a temporary folder, then removed): notebook 00's check."""
    with tempfile.TemporaryDirectory(prefix="refrag-pack-") as download:
        path = fetch(source, Path(download))
        return _opened(path, lambda tar: _verify_into(tar, path, None, preset, k, smoke))


def _opened(path: Path, read):
    """read(tar) on the pack at path, with a damaged archive reported as such."""
    try:
        with tarfile.open(path, "r:") as tar:
            return read(tar)
    except (tarfile.TarError, EOFError, json.JSONDecodeError) as err:
        raise PackError(f"{path} is truncated or not a course pack ({err}): download or copy it again.") from None


def _manifest_sha256(path: Path) -> str:
    """The sha256 of a pack's manifest: it names every file by its hash, so it names the whole pack."""
    def digest(tar):
        first = tar.next()
        return hashlib.sha256(tar.extractfile(first).read()).hexdigest() if first is not None else ""
    return _opened(path, digest)


def summary(manifest: dict) -> str:
    """One line on what a pack holds."""
    size = sum(entry["size"] for entry in manifest["files"].values())
    return (f"{len(manifest['files'])} files, {size / 2**20:,.0f} MiB, preset {manifest['preset']}, k = {manifest['k']}"
            f"{', SMOKE' if manifest.get('smoke') else ''}; stages {', '.join(manifest['stages'])}; made by course "
            f"{manifest.get('course_version')} at commit {str(manifest.get('commit'))[:10]}")


def _check_identity(manifest: dict, path: Path, preset: str, k: int, smoke: bool | None = None) -> None:
    if manifest.get("preset") != preset or manifest.get("k") != k:
        raise PackError(f"{path} was made with preset {manifest.get('preset')!r}, k = {manifest.get('k')}; this "
                        f"notebook runs preset {preset!r}, k = {k}: set PRESET (and K) to match, or use a pack "
                        "made for your preset.")
    if smoke is not None and bool(manifest.get("smoke")) != smoke:
        made, runs = ("a SMOKE run", "full-size") if manifest.get("smoke") else ("a full-size run", "SMOKE")
        raise PackError(f"{path} was made by {made} and this notebook runs {runs} (SMOKE = {smoke}): set SMOKE "
                        "to match, or use the other pack.")


def _verify_into(tar: tarfile.TarFile, path: Path, staging: Path | None, preset: str, k: int,
                 smoke: bool | None = None) -> dict:
    """Check every member against the manifest, writing each into staging (None: check only)."""
    manifest = read_manifest(tar, path)
    _check_identity(manifest, path, preset, k, smoke)
    expected = manifest.get("files", {})
    seen = set()
    while (member := tar.next()) is not None:  # the members after the manifest, read once, in order
        name = _checked_name(member.name)
        if not member.isfile():
            raise PackError(f"{path} holds {member.name!r}, which is not a plain file (a link?): ask for a pack "
                            "made by `make pack`.")
        if name.suffix not in ALLOWED_SUFFIXES:
            raise PackError(f"{path} holds {member.name!r}: a pack carries safetensors, JSON and FAISS files only "
                            "(never pickles). Do not use it.")
        entry = expected.get(name.as_posix())
        if entry is None:
            raise PackError(f"{path} holds {member.name!r}, which its manifest does not list: do not use it.")
        digest = hashlib.sha256()
        if staging is not None:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
        with tar.extractfile(member) as data, (staging / name).open("wb") if staging else nullcontext() as out:
            while block := data.read(CHUNK):
                digest.update(block)
                if out is not None:
                    out.write(block)
        if member.size != entry["size"] or digest.hexdigest() != entry["sha256"]:
            raise PackError(f"{member.name} in {path} does not match its manifest (size or sha256): the pack is "
                            "damaged; download or copy it again.")
        seen.add(name.as_posix())
    missing = sorted(set(expected) - seen)
    if missing:
        raise PackError(f"{path} lacks {len(missing)} file(s) its manifest lists (e.g. {missing[0]}): it is "
                        "truncated; download or copy it again.")
    return manifest


def _install(staging: Path, run_dir: Path, manifest: dict) -> None:
    """Move verified files into run_dir; refuse before moving any when one would replace a different file."""
    clashes = [name for name, entry in manifest["files"].items()
               if (run_dir / name).exists() and _sha256(run_dir / name) != entry["sha256"]]
    if clashes:
        raise PackError(f"{run_dir} already holds {clashes[0]} (and {len(clashes) - 1} more) that differ from the "
                        "pack's: it is a run of yours, left as it is. Give another RUN_DIR for the pack.")
    for name in manifest["files"]:
        target = run_dir / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(staging / name, target)


def main(argv: list[str] | None = None) -> int:
    """`python -m refrag_lib pack|unpack`: make a teacher's pack of a finished run, or add one to a run folder."""
    parser = argparse.ArgumentParser(prog="python -m refrag_lib pack", description=main.__doc__)
    parser.add_argument("--run-dir", required=True, help="the finished run to pack (e.g. runs/cpu)")
    parser.add_argument("--out", help="the archive (default: <run-dir>-pack.tar)")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    out = Path(args.out) if args.out else run_dir.with_name(run_dir.name + "-pack.tar")
    manifest = make_pack(run_dir, out)
    print(f"wrote {out}: {summary(manifest)}")
    return 0


def unpack_main(argv: list[str] | None = None) -> int:
    """`python -m refrag_lib unpack PACK --preset P --run-dir DIR`: verify a pack, then add it to a run folder
    (`--check`: verify only)."""

    parser = argparse.ArgumentParser(prog="python -m refrag_lib unpack", description=unpack_main.__doc__)
    parser.add_argument("pack", help="a local path or an https URL")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--k", type=int, default=None)
    parser.add_argument("--run-dir", help="the run folder to add the pack to (not needed with --check)")
    parser.add_argument("--check", action="store_true", help="verify the pack (every hash, preset, k), write nothing")
    args = parser.parse_args(argv)
    preset = get_preset(args.preset, k=args.k)
    if args.check:
        print(f"{args.pack} is whole: {summary(verify(args.pack, preset.name, preset.k))}")
        return 0
    if not args.run_dir:
        parser.error("--run-dir is needed to unpack (or give --check)")
    manifest = unpack(args.pack, Path(args.run_dir), preset.name, preset.k)
    print(f"{'already in' if manifest.get('already') else 'unpacked into'} {args.run_dir}: {summary(manifest)}")
    return 0
