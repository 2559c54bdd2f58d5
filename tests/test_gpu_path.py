"""What a first Colab GPU run meets, shown on the CPU: faiss placement without a probe, one precision per preset,
bounded writes to RUN_DIR, memory that fits the GPU, and bad requests refused before any model loads."""

import json
import math
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from conftest import TINY_TEXT, tiny_refrag

from refrag_lib import index as ix
from refrag_lib import precision, ready_index
from refrag_lib import train as train_module
from refrag_lib.checkpoint import STATE_DIR, WEIGHTS, load_state, load_weights, save_state
from refrag_lib.config import get_preset
from refrag_lib.course import envcheck, footprint
from refrag_lib.errors import CourseError
from refrag_lib.stages import StageTask, TrainConfig, long_run_save_every
from refrag_lib.train import summarise, train

IDENTITY = {"preset": "tiny", "k": "4", "encoder": "tiny-bert", "decoder": "tiny-llama"}
PARTS = ("encoder", "projector", "decoder")


def docs(model):
    return [model.tokenize(" ".join(TINY_TEXT[i:] + TINY_TEXT[:i]) * 2) for i in range(3)]


def cpt_config(steps=4, **kw):
    """CPT that trains the decoder too, in the preset's own precision (no CPU bf16 autocast on top)."""
    return TrainConfig(stage="cpt", steps=steps, context_tokens=16, continuation_tokens=8, positions_per_step=48,
                       lr=3e-3, save_every=2, train_decoder=True, cpu_bf16=False, **kw)


def run_train(model, cfg, folder: Path, **kw):
    return train(model, cfg, StageTask(model, cfg, docs(model)), folder, IDENTITY, progress=False, **kw)


# ---- B1: faiss never aborts the kernel -------------------------------------------------------------------
@pytest.fixture
def fake_gpu(monkeypatch):
    """faiss and torch as on a machine with one GPU of a chosen capability; any GPU index or search is recorded."""
    made = []
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: made.append("resources") or object(), raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", lambda res, dev, index: made.append("gpu index") or index,
                        raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=0: "a GPU")

    def with_capability(capability):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=0: capability)
        return made

    return with_capability


def flat_index():
    vectors = np.eye(8, 16, dtype=np.float32)
    cpu_index = faiss.IndexFlatIP(16)
    cpu_index.add(vectors)
    return cpu_index


def test_the_course_index_is_searched_on_the_cpu_without_touching_the_gpu(fake_gpu):
    made = fake_gpu((8, 0))
    cpu_index = flat_index()
    assert ix.place_index(cpu_index) == (cpu_index, "faiss-cpu", None)
    assert made == []  # no GPU resources (about 1.5 GB each), no copy, no search


def test_a_gpu_without_faiss_kernels_is_refused_before_any_kernel_runs(fake_gpu, capsys):
    made = fake_gpu((9, 0))  # H100/H200: faiss-gpu-cu12 carries no sm_90 kernels, and its search calls abort()
    cpu_index = flat_index()
    assert ix.place_index(cpu_index, use_gpu=True) == (cpu_index, "faiss-cpu", None)
    assert made == [] and "no GPU kernels" in capsys.readouterr().out
    assert "sm_90" in envcheck.faiss_gpu_check().found


def test_a_gpu_with_faiss_kernels_gets_the_copy_and_no_probe_search(fake_gpu):
    made = fake_gpu((7, 5))  # T4: sm_70 kernels run on 7.5
    index, device, resources = ix.place_index(flat_index(), use_gpu=True)
    assert made == ["resources", "gpu index"] and device.startswith("faiss-gpu") and resources is not None


# ---- B4 and W1: one precision per preset -------------------------------------------------------------------
def test_a_half_precision_preset_trains_twice_in_one_process(tmp_path, fresh_accelerate_state):
    model = tiny_refrag(k=4, dtype=torch.bfloat16)
    first = run_train(model, cpt_config(), tmp_path / "first")
    second = run_train(model, cpt_config(), tmp_path / "second")  # accelerate refused "no" after "bf16" here
    assert first.summary["mixed_precision"] == second.summary["mixed_precision"] == "bf16"


def test_a_run_split_in_segments_resumes_on_a_half_precision_preset(tmp_path, fresh_accelerate_state):
    model = tiny_refrag(k=4, dtype=torch.bfloat16)
    run_train(model, cpt_config(), tmp_path, max_new_steps=2)  # what sft-curve and notebook 02's probes do
    result = run_train(model, cpt_config(), tmp_path, max_new_steps=2)
    assert result.summary["finished"] and [row["step"] for row in result.history] == [0, 1, 2, 3]


def test_an_arm_trained_now_equals_the_same_arm_loaded_from_its_weights(tmp_path, fresh_accelerate_state):
    trained = tiny_refrag(k=4, dtype=torch.bfloat16)
    run_train(trained, cpt_config(), tmp_path)
    assert {getattr(trained, part).dtype if part == "decoder" else next(getattr(trained, part).parameters()).dtype
            for part in PARTS} == {torch.bfloat16}
    loaded = tiny_refrag(k=4, dtype=torch.bfloat16)
    precision.back_to_preset(loaded)
    load_weights(tmp_path / WEIGHTS, loaded, IDENTITY)
    for name, value in loaded.state_dict().items():
        assert torch.equal(trained.state_dict()[name], value), name


def test_parts_about_to_be_trained_load_their_fp32_weights_unrounded(tmp_path, monkeypatch):
    from refrag_lib import trained as trained_module
    from refrag_lib.checkpoint import save_weights
    from refrag_lib.runs import open_run

    written = tiny_refrag(k=4, seed=3)  # fp32 weights, most of them not representable in bf16
    run = open_run("cpu", tmp_path)
    save_weights(run.stage_dir("cpt") / WEIGHTS, written, ["encoder", "projector"],
                 {**trained_module.model_identity(run.preset, "cpt")})
    monkeypatch.setattr(trained_module, "load_refrag", lambda preset: tiny_refrag(k=4, dtype=torch.bfloat16))
    model = trained_module.load_trained(run, "cpt", train_parts=["encoder", "projector"])
    assert model.projector.net[0].weight.dtype == torch.float32
    assert torch.equal(model.projector.net[0].weight, written.projector.net[0].weight)
    served = trained_module.load_trained(run, "cpt")  # nothing to train: the preset's precision
    assert served.projector.net[0].weight.dtype == torch.bfloat16


def test_skipped_fp16_steps_are_counted_and_kept_out_of_the_largest_gradient_norm():
    rows = [{"step": s, "loss": 1.0, "grad_norm": g, "examples": 2, "seconds": s + 1.0, "skipped": skipped}
            for s, (g, skipped) in enumerate([(math.inf, True), (3.0, False), (2.0, False)])]
    summary = summarise(rows, cpt_config(), ["encoder"], finished=True)
    assert summary["max_grad_norm"] == 3.0 and summary["skipped_steps"] == 1


def test_the_loss_scalers_state_resumes(tmp_path):
    model = tiny_refrag(k=4)
    parts = ["projector"]
    optimizer = torch.optim.AdamW(model.projector.parameters(), lr=1e-3)
    model.projector(torch.ones(1, 24)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    scaler.scale(torch.ones(()))
    scaler.update(new_scale=2.0**7)  # what overflowing steps leave behind
    save_state(tmp_path, model, parts, optimizer, scheduler, 3, IDENTITY, {"steps": 6}, scaler)
    resumed = torch.amp.GradScaler("cpu")
    assert load_state(tmp_path, model, parts, optimizer, scheduler, IDENTITY, {"steps": 6}, resumed) == 3
    assert resumed.get_scale() == 2.0**7


def test_the_free_vector_fit_scales_its_loss_for_an_fp16_decoder(monkeypatch):
    from refrag_lib.studies import vector_ceiling

    assert precision.loss_scaler(tiny_refrag(k=4, dtype=torch.float16)).is_enabled()
    assert not precision.loss_scaler(tiny_refrag(k=4, dtype=torch.bfloat16)).is_enabled()
    scaled = []

    class Spy(torch.amp.GradScaler):
        def scale(self, outputs):
            scaled.append(outputs)
            return super().scale(outputs)

    monkeypatch.setattr(vector_ceiling, "loss_scaler", lambda model: Spy("cpu", enabled=False))
    model = tiny_refrag(k=4)
    vector_ceiling.fit_free_vectors(model, [docs(model)[0][:4]], steps=2)
    assert len(scaled) == 2


def test_the_retriever_embeds_in_fp32_whatever_the_presets_precision(monkeypatch):
    asked = []
    monkeypatch.setattr(ix, "load_encoder", lambda name, dtype, device: asked.append(dtype) or (torch.nn.Linear(1, 1),
                                                                                               None))
    ix.load_retriever(get_preset("t4"))
    assert asked == ["float32"]


def test_a_decoder_that_overflows_stops_notebook_00_with_the_fix(monkeypatch):
    model = tiny_refrag(k=4)
    precision.check_finite_logits(model)  # finite: nothing to say
    monkeypatch.setattr(model, "prefill", lambda inputs: (torch.full((1, 1, 5), math.inf), None))
    with pytest.raises(CourseError, match="not finite.*PRESET"):
        precision.check_finite_logits(model)


# ---- B3: what a stage writes is bounded and known ---------------------------------------------------------
def test_a_long_run_writes_the_states_footprint_counts_and_keeps_none(tmp_path, monkeypatch):
    sizes = []
    save = train_module.save_state

    def measured(folder, *args, **kwargs):
        save(folder, *args, **kwargs)
        sizes.append(sum(f.stat().st_size for f in (folder / STATE_DIR).iterdir()))

    monkeypatch.setattr(train_module, "save_state", measured)
    model = tiny_refrag(k=4)
    cfg = TrainConfig(stage="recon", steps=8, context_tokens=16, positions_per_step=48, lr=3e-3,
                      save_every=long_run_save_every(8))
    run_train(model, cfg, tmp_path, keep_state=False)
    trained = sum(p.numel() for part in ("encoder", "projector") for p in getattr(model, part).parameters())
    assert len(sizes) == footprint.STATES_PER_LONG_RUN and not (tmp_path / STATE_DIR).exists()
    assert all(12 * trained <= size <= 1.1 * 12 * trained for size in sizes)  # weights + 2 moments, in fp32
    assert 4 * trained <= (tmp_path / WEIGHTS).stat().st_size <= 1.1 * 4 * trained


def test_short_stages_write_no_resumable_state(tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "save_state", lambda *a, **k: pytest.fail("a short stage wrote a state"))
    model = tiny_refrag(k=4)
    cfg = TrainConfig(stage="recon", steps=4, context_tokens=16, positions_per_step=48, save_every=0)
    run_train(model, cfg, tmp_path)
    assert (tmp_path / WEIGHTS).exists() and not (tmp_path / STATE_DIR).exists()
    with pytest.raises(CourseError, match="save_every"):
        run_train(tiny_refrag(k=4), cfg, tmp_path / "split", max_new_steps=2)


def test_sft_arms_write_weights_only():
    from refrag_lib.sft import SFTConfig

    assert SFTConfig(steps=10).save_every == 0
    assert long_run_save_every(400, train_decoder=True) == 0  # the decoder's state would fill a learner's Drive


def test_the_t4_run_stays_under_10_gb_on_drive_and_notebook_00_prints_it():
    t4 = get_preset("t4")
    assert footprint.run_bytes(t4) < 10 * footprint.GB
    report = footprint.format_footprint(t4)
    assert all(f"notebook {nb}" in report for nb in ("01", "02", "03", "04", "05"))
    assert footprint.bytes_by_notebook(t4)["05"] == 2 * footprint.part_parameters(t4)["decoder"] + 2 * sum(
        footprint.part_parameters(t4).values())  # both arms in fp16


def test_drive_counts_every_byte_written_and_a_local_disk_what_it_holds(tmp_path):
    t4 = get_preset("t4")
    assert envcheck.disk_needed(t4, Path("/content/drive/MyDrive/refrag-course/runs")) == footprint.run_bytes(t4)
    assert envcheck.disk_needed(t4, tmp_path) < footprint.run_bytes(t4)


# ---- B2: the a100 preset fits a 40 GB A100 -----------------------------------------------------------------
def gpu_of(monkeypatch, gib: float):
    props = type("Props", (), {"total_memory": int(gib * 2**30), "name": "a GPU"})()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=0: props)


def test_the_a100_preset_fits_a_40_gb_a100_and_a_t4_is_refused_with_the_fix(monkeypatch):
    a100 = get_preset("a100")
    stage, needed = footprint.largest_default_stage(a100)
    assert stage == "05 SFT, REFRAG arm" and needed < 38 * footprint.GIB  # a 40 GB A100 holds 39.4 GiB
    gpu_of(monkeypatch, 39.4)
    assert envcheck.gpu_memory_check(a100).ok
    gpu_of(monkeypatch, 14.6)  # a T4
    check = envcheck.gpu_memory_check(a100)
    assert not check.ok and "PRESET='t4'" in check.fix


@pytest.mark.real_models
def test_the_offline_models_sizes_match_the_table(cpu_model):
    n = footprint.part_parameters(get_preset("cpu"))
    for part in PARTS:
        assert sum(p.numel() for p in getattr(cpu_model, part).parameters()) == n[part], part


# ---- bad requests refused before any model loads -------------------------------------------------------------
@pytest.fixture
def ready_run(tmp_path, monkeypatch):
    from refrag_lib.runs import open_run

    run = open_run("cpu", tmp_path)
    folder = run.stage_dir("sft") / ready_index.READY_FOLDER
    folder.mkdir(parents=True)
    (folder / ix.META_FILE).write_text(json.dumps({"n_passages": 20}))
    monkeypatch.setattr(ready_index, "load_run_ready", lambda run: pytest.fail("models loaded before the check"))
    return run


@pytest.mark.parametrize("question, top_k, p, message", [
    ("   ", None, None, "empty"),
    ("Which river?", None, 1.5, r"\[0, 1\]"),
    ("Which river?", 21, None, "top-K must be between 1 and the 20 passages"),  # the playground's wording too
])
def test_generate_refuses_a_bad_request_before_loading_models(ready_run, question, top_k, p, message):
    argv = ["--question", question, "--run-dir", str(ready_run.root)]
    argv += ["--top-k", str(top_k)] if top_k is not None else []
    argv += ["--p", str(p)] if p is not None else []
    with pytest.raises(CourseError, match=message):
        ready_index.main(argv)


def test_the_readme_table_is_the_one_footprint_computes():
    from refrag_lib.config import PRESETS

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert footprint.readme_table(list(PRESETS.values())) in readme, "regenerate it: footprint.readme_table"
