"""The Colab rehearsal: every notebook run here as a learner runs it in Colab (`make colab-rehearsal`).

Colab cannot be reached from this machine or CI, but Colab publishes the exact packages of its runtimes;
colab/pip-freeze.gpu.txt is a committed copy. The rehearsal
1. recreates, once, the part of that runtime the course touches: Colab's Python, and at Colab's versions
   every package of the course's dependency tree and of Colab's kernel (torch from PyPI: its CUDA build
   also runs on a CPU), plus a stand-in for google.colab (colab/standin) that the kernel imports first;
2. runs each notebook in a FRESH copy of that runtime (a new kernel, a new /content; only the "Drive"
   folder persists), from the committed notebook, its setup cell first, with the SMOKE parameters;
3. reports, per notebook, the Colab packages the setup cell replaced and the packages it added, the setup
   cell's seconds and the notebook's result, then runs the unit tests in such a runtime (the course at
   Colab's versions, on Colab's Python).

The notebooks clone the course's committed HEAD (git is pointed from the GitHub address to this
checkout), as Colab clones main: commit before rehearsing a change. pip's download cache is shared
between runtimes, so the setup cell's seconds here are those of a warm cache.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from ..errors import CourseError
from ..runs import repo_root
from .colab import CLONE_DIR, OFFLINE_DECODER, canonical_name, changed_packages
from .colab_cells import repository_url
from .notebooks import notebook_errors

MANIFEST = repo_root() / "colab" / "pip-freeze.gpu.txt"
STANDIN = repo_root() / "colab" / "standin"
CONTENT = Path(CLONE_DIR).parent  # Colab's working folder, /content: made anew for every runtime
CONTENT_MARK = ".made-by-colab-rehearsal"
# What Colab's kernel brings beside the course's own needs, and the unit tests' tools (Colab ships both).
KERNEL_AND_TEST_TOOLS = ("ipykernel", "ipywidgets", "notebook", "pytest", "jupytext")
# The CUDA libraries of torch's own build: Colab's torch is built for CUDA 12.8, PyPI's for another CUDA,
# so each runtime keeps the ones its torch wheel asks for.
TORCH_CUDA_STACK = re.compile(r"^(nvidia-|cuda-|triton$)")
KERNEL_NAME = "colab-rehearsal"
KERNEL_LAUNCH = "import google.colab; from ipykernel.kernelapp import launch_new_instance; launch_new_instance()"
MAKEFILE = repo_root() / "Makefile"


@dataclass(frozen=True)
class Manifest:
    """A Colab runtime as published: its Python, where the list came from, name -> version pins, and the names
    installed from a URL (`name @ url`: not on PyPI, but importable in Colab like any other)."""

    python: str
    source: str
    pins: dict[str, str]
    from_urls: frozenset[str] = field(default_factory=frozenset)


def read_manifest(path: Path = MANIFEST) -> Manifest:
    """Parse a committed manifest (a pip freeze with `# python:` and `# source:` header lines)."""
    text = path.read_text()
    header = dict(re.findall(r"^# (python|source): (.+)$", text, re.MULTILINE))
    if "python" not in header:
        raise CourseError(f"{path} has no '# python: X.Y.Z' line: refresh it with --refresh-manifest.")
    pins, from_urls = {}, set()
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:==(\S+)$| @ )", line.strip())
        if match and match[2]:
            pins[canonical_name(match[1])] = match[2]
        elif match:  # `name @ url` lines (Colab's own packages, wheels from other indexes) are not on PyPI
            from_urls.add(canonical_name(match[1]))
    return Manifest(python=header["python"], source=header.get("source", "unknown"), pins=pins,
                    from_urls=frozenset(from_urls))


def refresh_manifest(freeze: Path, python: str, source: str, out: Path = MANIFEST) -> Path:
    """Replace the committed manifest with a newer pip freeze of Colab's, keeping the header's shape."""
    if not re.fullmatch(r"3\.\d+\.\d+", python):
        raise CourseError(f"--python takes Colab's full Python version (e.g. 3.13.15), not {python!r}.")
    comment = [line for line in out.read_text().splitlines() if line.startswith("# ")][:5]
    lines = [*comment, f"# source: {source}", f"# python: {python}", freeze.read_text().rstrip("\n")]
    out.write_text("\n".join(lines) + "\n")
    return out


def pypi_version(version: str) -> str:
    """Colab's version as PyPI has it: builds for a CUDA carry a local label (2.11.0+cu128) PyPI lacks."""
    return version.split("+")[0]


def colab_selection(makefile: Path = MAKEFILE) -> list[str]:
    """pytest's arguments for the tests a learner's runtime runs: the Makefile's UNIT_TESTS, the one definition
    that `make unit`, `make test-oldest`, `make gpu-check` and the rehearsal share."""
    match = re.search(r"^UNIT_TESTS := (.+)$", makefile.read_text(), re.MULTILINE)
    if match is None:
        raise CourseError(f"{makefile} has no line 'UNIT_TESTS := <pytest arguments>': the Colab selection of tests "
                          "is defined there.")
    return shlex.split(match[1])


def setup_cell_distributions(course: str) -> set[str]:
    """What the setup cell may add to Colab: the course with its dependency tree (pip install -e, read from the
    metadata installed here) and the offline decoder, which it installs without dependencies."""
    found, todo = set(), [course]
    while todo:
        name = canonical_name(todo.pop())
        if name in found:
            continue
        found.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:  # not installed here (another platform's): nothing to follow
            continue
        todo += [req.name for req in map(Requirement, requires) if not req.marker or req.marker.evaluate({"extra": ""})]
    return found | {canonical_name(OFFLINE_DECODER.split("==")[0])}


def modules_colab_lacks(manifest_path: Path = MANIFEST) -> set[str]:
    """Top-level modules importable here that a learner's Colab runtime has not: every distribution that provides
    one is neither in Colab's manifest nor added by the setup cell (the tools of `make test`, say)."""
    manifest = read_manifest(manifest_path)
    providers = metadata.packages_distributions()
    package = __package__.split(".")[0]  # refrag_lib, the course's top-level package
    if package not in providers:
        raise CourseError(f"{package} is not installed as a distribution here (`make venv` installs it): the "
                          "setup cell's additions are read from its metadata.")
    has = set(manifest.pins) | manifest.from_urls | setup_cell_distributions(providers[package][0])
    return {module for module, dists in providers.items() if not any(canonical_name(d) in has for d in dists)}


def find_python(version: str) -> str:
    """An interpreter of Colab's Python minor version on this machine (pyenv's, then PATH's) that runs."""
    minor = ".".join(version.split(".")[:2])
    candidates = [*map(str, sorted(Path.home().glob(f".pyenv/versions/{minor}*/bin/python{minor}"))),
                  shutil.which(f"python{minor}")]
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "--version"], capture_output=True).returncode == 0:
            return candidate
    raise CourseError(f"The rehearsal needs Python {minor} (Colab's): install it (e.g. `pyenv install {minor}`) "
                      "or pass --python.")


def _pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", "install", "-q", *args], check=True,
                   env=_clean_env())


def _clean_env(**extra: str) -> dict:
    """This process's environment less its virtualenv and pip configuration (this machine's pip.conf caps torch)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PIP_CONSTRAINT")}
    env["PIP_CONFIG_FILE"] = "/dev/null"
    env.update(extra)
    return env


def versions_of(python: Path) -> dict[str, str]:
    """Installed distributions of another interpreter (the course's own listing, run there; the checkout is on
    sys.path only for the import, so that its own egg-info is not listed)."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); "
            "from refrag_lib.course.colab import installed_versions; sys.path.pop(0); "
            "print(json.dumps(installed_versions()))")
    done = subprocess.run([str(python), "-I", "-c", code, str(repo_root())], capture_output=True, text=True, check=True,
                          env=_clean_env())
    return json.loads(done.stdout)


def _write_constraints(path: Path, pins: dict[str, str]) -> Path:
    path.write_text("".join(f"{name}=={pypi_version(v)}\n" for name, v in sorted(pins.items())))
    return path


def build_base(work: Path, manifest_path: Path, python: str) -> Path:
    """The recreated runtime in work/base-<hash> (reused while the manifest and requirements are unchanged)."""
    manifest = read_manifest(manifest_path)
    stamp = hashlib.sha256(manifest_path.read_bytes() + (repo_root() / "requirements.txt").read_bytes()).hexdigest()
    base = work / f"base-{stamp[:12]}"
    if (base / "stamp").exists() and (base / "stamp").read_text() == stamp:
        return base
    for stale in work.glob("base-*"):  # one runtime at a time: each is several GB
        shutil.rmtree(stale)
    print(f"recreating Colab's runtime ({manifest.source}, Python {manifest.python}) in {base}", flush=True)
    subprocess.run([python, "-m", "venv", str(base)], check=True)
    bin_python = base / "bin" / "python"
    _pip(bin_python, f"pip=={manifest.pins['pip']}")
    # torch with its own CUDA stack, everything else it needs at Colab's versions
    not_cuda = {n: v for n, v in manifest.pins.items() if not TORCH_CUDA_STACK.match(n)}
    _pip(bin_python, "-c", str(_write_constraints(work / "constraints-torch.txt", not_cuda)),
         f"torch=={pypi_version(manifest.pins['torch'])}")
    torch_stack = {n for n in versions_of(bin_python) if TORCH_CUDA_STACK.match(n)}
    # the course's dependency tree and Colab's kernel at Colab's versions, then away with what Colab lacks
    colab_pins = {n: v for n, v in manifest.pins.items() if n not in torch_stack}
    _pip(bin_python, "-c", str(_write_constraints(work / "constraints.txt", colab_pins)),
         "-r", str(repo_root() / "requirements.txt"), *KERNEL_AND_TEST_TOOLS)
    lacking = sorted(n for n in versions_of(bin_python) if n not in manifest.pins and n not in torch_stack
                     and n not in ("pip", "setuptools"))
    if lacking:
        subprocess.run([str(bin_python), "-m", "pip", "uninstall", "-q", "-y", *lacking], check=True, env=_clean_env())
    site = next((base / "lib").glob("python3.*/site-packages"))
    shutil.copytree(STANDIN / "google", site / "google", dirs_exist_ok=True)
    (base / "stamp").write_text(stamp)
    return base


def fresh_runtime(work: Path, base: Path) -> Path:
    """A new runtime: a copy of the base (hard links: pip replaces files, never edits them) and a new /content."""
    runtime = work / "runtime"
    shutil.rmtree(runtime, ignore_errors=True)
    subprocess.run(["cp", "-al", str(base), str(runtime)], check=True)
    if CONTENT.exists():
        if not (CONTENT / CONTENT_MARK).exists() and any(CONTENT.iterdir()):
            raise CourseError(f"{CONTENT} exists and was not made by the rehearsal: move it away, then run it again.")
        shutil.rmtree(CONTENT)
    CONTENT.mkdir()
    (CONTENT / CONTENT_MARK).touch()
    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir()
    return runtime


def kernel_env(work: Path, runtime: Path, drive: Path) -> dict[str, str]:
    """The kernel's environment: Colab's paths, a fresh HOME, the Drive and secrets stand-ins, and git
    pointed from the course's GitHub address to this checkout."""
    return {
        "HOME": str(work / "home"),
        "PATH": f"{runtime / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "VIRTUAL_ENV": str(runtime),
        "PYTHONPATH": "",
        "PIP_CONFIG_FILE": "/dev/null",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",  # quiet: Python 3.13's frozen modules warn the debugger on each start
        "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR") or str(Path.home() / ".cache" / "pip"),
        "COLAB_STANDIN_DRIVE": str(drive),
        "COLAB_STANDIN_SECRETS": str(work / "secrets.json"),
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": f"url.file://{repo_root()}.insteadOf",
        "GIT_CONFIG_VALUE_0": repository_url(),
    }


def install_kernel(work: Path, runtime: Path, env: dict[str, str]) -> Path:
    """A kernelspec that starts the runtime's Python with google.colab imported, as Colab's kernel does."""
    folder = work / "jupyter" / "kernels" / KERNEL_NAME
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [str(runtime / "bin" / "python"), "-c", KERNEL_LAUNCH, "-f", "{connection_file}"],
            "display_name": "Python 3 (Colab rehearsal)", "language": "python", "env": env}
    (folder / "kernel.json").write_text(json.dumps(spec, indent=1))
    return work / "jupyter"


def setup_seconds(executed: Path) -> float | None:
    """The setup cell's run time, from papermill's record in the executed notebook."""
    for cell in json.loads(executed.read_text())["cells"]:
        if cell["cell_type"] == "code" and "".join(cell["source"]).startswith("# Setup."):
            return cell.get("metadata", {}).get("papermill", {}).get("duration")
    return None


def committed_notebooks(work: Path, only: list[str] | None) -> list[Path]:
    """The notebooks as the learner opens them from GitHub: the committed HEAD's, outputs stripped."""
    folder = work / "notebooks"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    names = subprocess.run(["git", "-C", str(repo_root()), "ls-files", "notebooks/[0-9][0-9]_*.ipynb"],
                           capture_output=True, text=True, check=True).stdout.split()
    paths = []
    for name in names:
        if only and not any(Path(name).name.startswith(prefix) for prefix in only):
            continue
        text = subprocess.run(["git", "-C", str(repo_root()), "show", f"HEAD:{name}"], capture_output=True,
                              text=True, check=True).stdout
        (folder / Path(name).name).write_text(text)
        paths.append(folder / Path(name).name)
    return paths


def run_in_colab(notebook: Path, work: Path, base: Path, base_versions: dict, drive: Path,
                 refuse_drive: bool = False) -> dict:
    """One notebook in a fresh runtime, as Colab runs it; what it did to the runtime and how it ended."""
    import papermill

    runtime = fresh_runtime(work, base)
    env = kernel_env(work, runtime, drive) | ({"COLAB_STANDIN_DRIVE_REFUSED": "1"} if refuse_drive else {})
    os.environ["JUPYTER_PATH"] = str(install_kernel(work, runtime, env))
    out = work / "executed" / notebook.name
    out.parent.mkdir(exist_ok=True)
    tick = time.perf_counter()
    error = ""
    try:
        papermill.execute_notebook(str(notebook), str(out), parameters={"SMOKE": True}, kernel_name=KERNEL_NAME,
                                   cwd=str(CONTENT), progress_bar=False, execution_timeout=1800)
        hidden = notebook_errors(json.loads(out.read_text()))
        error = f"hidden: {hidden[0]}" if hidden else ""
    except papermill.PapermillExecutionError as err:
        error = f"{err.ename}: {err.evalue}".splitlines()[0][:600]
    replaced, added = changed_packages(base_versions, versions_of(runtime / "bin" / "python"))
    return {"notebook": notebook.stem, "ok": not error, "error": error, "seconds": round(time.perf_counter() - tick),
            "setup_seconds": setup_seconds(out) if out.exists() else None, "replaced": replaced, "added": added}


# What a learner can get wrong in Colab, and the message each must end in: (notebook, Drive refused, words).
BAD_INPUT = [
    ("03_cpt", False, "open notebooks/02_reconstruction.ipynb in Colab"),  # opened first, on an empty Drive
    ("00_setup", True, "Google Drive was not mounted"),  # the learner refuses Drive access
]


def bad_input(notebooks: list[Path], work: Path, base: Path, base_versions: dict) -> list[dict]:
    """Each BAD_INPUT case in a fresh runtime with an empty Drive: it must stop with its message."""
    by_name = {path.stem: path for path in notebooks}
    found = []
    for name, refuse, words in BAD_INPUT:
        if name not in by_name:
            continue
        drive = work / "drive-empty"
        shutil.rmtree(drive, ignore_errors=True)
        drive.mkdir()
        result = run_in_colab(by_name[name], work, base, base_versions, drive, refuse_drive=refuse)
        found.append({"case": f"{name}{' with Drive refused' if refuse else ' first, empty Drive'}",
                      "ok": not result["ok"] and words in result["error"], "message": result["error"]})
    return found


def unit_tests(work: Path, base: Path) -> dict:
    """The unit tests in a fresh runtime after the setup cell's install: the course at Colab's versions."""
    runtime = fresh_runtime(work, base)
    python = str(runtime / "bin" / "python")
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{repo_root()}", CLONE_DIR], check=True)
    install = (f"import sys; sys.path.insert(0, {CLONE_DIR!r}); from refrag_lib.course.colab import install_course, "
               f"install_offline_decoder; install_course({CLONE_DIR!r}); install_offline_decoder()")
    env = _clean_env(HOME=str(work / "home"))
    subprocess.run([python, "-c", install], check=True, env=env)
    tick = time.perf_counter()
    selection = colab_selection(Path(CLONE_DIR) / "Makefile")
    done = subprocess.run([python, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *selection], cwd=CLONE_DIR,
                          capture_output=True, text=True, env=env)
    (work / "unit-tests.log").write_text(done.stdout + done.stderr)
    lines = done.stdout.strip().splitlines() or ["(no output)"]
    failed = [line for line in lines if line.startswith(("FAILED ", "ERROR "))]  # named, so that a CI log says which
    return {"ok": done.returncode == 0, "summary": lines[-1], "failed": failed,
            "seconds": round(time.perf_counter() - tick)}


def report(manifest: Manifest, results: list[dict], units: dict | None, refused: list[dict] = ()) -> str:
    lines = [f"Colab rehearsal on {manifest.source}, Python {manifest.python} (this machine's "
             f"{sys.version_info[0]}.{sys.version_info[1]} runs the orchestration only)",
             f"{'notebook':24s} {'result':6s} {'seconds':>7s} {'setup s':>7s} {'replaced':>8s} {'added':>5s}"]
    for r in results:
        setup = f"{r['setup_seconds']:.0f}" if r["setup_seconds"] is not None else "-"
        lines.append(f"{r['notebook']:24s} {'pass' if r['ok'] else 'FAIL':6s} {r['seconds']:7d} {setup:>7s} "
                     f"{len(r['replaced']):8d} {len(r['added']):5d}" + (f"  {r['error']}" if r["error"] else ""))
    replaced = {name: change for r in results for name, change in r["replaced"].items()}
    added = sorted({name for r in results for name in r["added"]})
    lines.append("Colab packages replaced: " + (", ".join(f"{n} {a} -> {b or 'removed'}" for n, (a, b) in
                                                         sorted(replaced.items())) or "none"))
    lines.append(f"packages added ({len(added)}): " + ", ".join(added))
    for case in refused:
        lines.append(f"bad input, {case['case']}: {'refused as expected' if case['ok'] else 'NOT AS EXPECTED'}: "
                     f"{case['message'] or 'no error'}")
    if units:
        lines.append(f"unit tests at Colab's versions: {'pass' if units['ok'] else 'FAIL'} ({units['summary']}, "
                     f"{units['seconds']} s)")
        lines.extend(f"  {line}" for line in units.get("failed", []))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m refrag_lib colab-rehearsal`: every notebook as in Colab, each in a fresh runtime (SMOKE)."""
    parser = argparse.ArgumentParser(prog="python -m refrag_lib colab-rehearsal", description=main.__doc__)
    parser.add_argument("--work", default=str(repo_root() / ".colab-rehearsal"),
                        help="runtimes, Drive, executed copies")
    parser.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 00 07")
    parser.add_argument("--manifest", default=str(MANIFEST), help="Colab's pip freeze with its header "
                        "(default: the current GPU runtime's; colab/ also holds the pinned past runtime 2026.07)")
    parser.add_argument("--python", help="the interpreter to recreate Colab's with (default: its minor version here)")
    parser.add_argument("--no-unit-tests", action="store_true", help="skip the unit tests at Colab's versions")
    parser.add_argument("--refresh-manifest", metavar="FREEZE", help="replace colab/pip-freeze.gpu.txt with this "
                        "pip-freeze.gpu.txt of Colab's (then give --python-version and --source) and stop")
    parser.add_argument("--python-version", help="with --refresh-manifest: Colab's Python (its os-info-gpu.txt)")
    parser.add_argument("--source", help="with --refresh-manifest: where the freeze came from (commit, date)")
    args = parser.parse_args(argv)
    if args.refresh_manifest:
        if not (args.python_version and args.source):
            raise CourseError("--refresh-manifest needs --python-version (e.g. 3.13.15) and --source (commit, date).")
        print("wrote", refresh_manifest(Path(args.refresh_manifest), args.python_version, args.source,
                                        Path(args.manifest)))
        return 0
    if subprocess.run(["git", "-C", str(repo_root()), "status", "--porcelain", "--untracked-files=no"],
                      capture_output=True, text=True).stdout.strip():
        print("NOTE: uncommitted changes are not rehearsed: the notebooks clone the committed HEAD, "
              "as Colab clones main.")
    manifest = read_manifest(Path(args.manifest))
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    base = build_base(work, Path(args.manifest), args.python or find_python(manifest.python))
    base_versions = versions_of(base / "bin" / "python")
    drive = work / "drive"
    shutil.rmtree(drive, ignore_errors=True)  # a new learner: an empty Drive
    drive.mkdir()
    notebooks = committed_notebooks(work, args.only)
    results = []
    for notebook in notebooks:
        print(f"{notebook.stem}: a fresh runtime", flush=True)
        results.append(run_in_colab(notebook, work, base, base_versions, drive))
        print(f"  {'pass' if results[-1]['ok'] else 'FAIL ' + results[-1]['error']} in {results[-1]['seconds']} s",
              flush=True)
    refused = bad_input(notebooks, work, base, base_versions)
    units = None if args.no_unit_tests else unit_tests(work, base)
    text = report(manifest, results, units, refused)
    (work / "report.json").write_text(json.dumps({"results": results, "bad_input": refused, "unit_tests": units},
                                                 indent=1))
    print(text)
    failed = any(not r["ok"] or r["replaced"] for r in results) or not all(case["ok"] for case in refused)
    failed = failed or (units is not None and not units["ok"])
    return 1 if failed else 0
