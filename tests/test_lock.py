"""requirements.lock agrees with the ranges it was resolved from (a floor raised without `make lock` fails here)."""

import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
# The platform the lock is resolved for (Makefile: LOCK_PLATFORM); markers are judged for it.
LOCK_ENV = {"sys_platform": "linux", "platform_machine": "x86_64", "python_version": "3.11",
            "python_full_version": "3.11.7", "platform_system": "Linux", "os_name": "posix"}


def ranges() -> list[Requirement]:
    found = []
    for name in ("requirements.txt", "requirements-dev.txt"):
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                found.append(Requirement(line))
    return found


def locked() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of every pin in the lock."""
    text = (ROOT / "requirements.lock").read_text()
    pins = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        head = re.match(r"([A-Za-z0-9._-]+)==([^\s\\;]+)", block)
        if head:
            pins[canonicalize_name(head[1])] = (head[2], re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return pins


def test_every_range_is_pinned_inside_its_range():
    pins = locked()
    for req in ranges():
        name = canonicalize_name(req.name)
        if name == "torch" or (req.marker and not req.marker.evaluate(LOCK_ENV)):
            continue  # torch: the Makefile installs $(TORCH); a marker for another platform
        assert name in pins, f"{req.name} is required but not in requirements.lock: run `make lock`"
        version = pins[name][0]
        assert req.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {req.name}=={version} outside {req}: run `make lock`"
        )


def test_every_pin_carries_hashes_and_torch_is_left_to_the_makefile():
    pins = locked()
    assert len(pins) > 50 and "transformers" in pins
    assert all(hashes for _, hashes in pins.values()), "pip's --require-hashes needs a hash on every pin"
    # PyPI's CUDA build of torch would bring these (GBs); the CPU course's lock must not.
    assert "torch" not in pins and not any(n.endswith("-cu13") or n in ("triton", "cuda-toolkit") for n in pins)
