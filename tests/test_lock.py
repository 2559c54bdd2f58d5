"""Each requirements-py<X.Y>.lock agrees with the ranges it was resolved from (a floor raised without
`make lock` fails here), and the course supports the Pythons of Colab's runtimes."""

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
# The Pythons the locks are resolved for (Makefile: LOCK_PYTHONS): this machine's and Colab's runtimes'.
PYTHONS = ("3.11", "3.12", "3.13")


def lock_env(python: str) -> dict:
    """The platform a lock is resolved for (Makefile: LOCK_PLATFORM); markers are judged for it."""
    return {"sys_platform": "linux", "platform_machine": "x86_64", "python_version": python,
            "python_full_version": f"{python}.0", "platform_system": "Linux", "os_name": "posix"}


def ranges() -> list[Requirement]:
    found = []
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                found.append(Requirement(line))
    return found


def locked(python: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of every pin in the lock of one Python."""
    text = (ROOT / f"requirements-py{python}.lock").read_text()
    pins = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = re.match(r"([A-Za-z0-9._-]+)==([^\s\\;]+)", block)
        if head:
            pins[canonicalize_name(head[1])] = (head[2], re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return pins


@pytest.mark.parametrize("python", PYTHONS)
def test_every_range_is_pinned_inside_its_range(python):
    pins = locked(python)
    for req in ranges():
        name = canonicalize_name(req.name)
        if name == "torch" or (req.marker and not req.marker.evaluate(lock_env(python))):
            continue  # torch: the Makefile installs $(TORCH); a marker for another platform
        assert name in pins, f"{req.name} is required but not in requirements-py{python}.lock: run `make lock`"
        version = pins[name][0]
        assert req.specifier.contains(version, prereleases=True), (
            f"requirements-py{python}.lock pins {req.name}=={version} outside {req}: run `make lock`"
        )


@pytest.mark.parametrize("python", PYTHONS)
def test_every_pin_carries_hashes_and_torch_is_left_to_the_makefile(python):
    pins = locked(python)
    assert len(pins) > 50 and "transformers" in pins
    assert all(hashes for _, hashes in pins.values()), "pip's --require-hashes needs a hash on every pin"
    # PyPI's CUDA build of torch would bring these (GBs); the CPU course's lock must not.
    assert "torch" not in pins and not any(n.endswith("-cu13") or n in ("triton", "cuda-toolkit") for n in pins)


def test_the_locks_share_their_pins():
    """One tested set of versions: a package pinned in two locks has the same version in both."""
    first = locked(PYTHONS[0])
    for python in PYTHONS[1:]:
        differ = {n: (first[n][0], v) for n, (v, _) in locked(python).items() if n in first and first[n][0] != v}
        assert not differ, f"requirements-py{python}.lock differs from {PYTHONS[0]}'s: {differ}; run `make lock`"


def test_the_makefile_locks_every_supported_python():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^LOCK_PYTHONS := " + " ".join(map(re.escape, PYTHONS)) + "$", makefile, re.MULTILINE)
