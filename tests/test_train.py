"""The shared training loop on tiny random models: learning, exact resume, checkpoints, bad input."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import TINY_TEXT, Spy, tiny_refrag
from safetensors.torch import load_file

from refrag_lib import precision, stages
from refrag_lib.checkpoint import STATE_DIR, WEIGHTS, load_weights, read_metadata
from refrag_lib.config import get_preset
from refrag_lib.course.cli import train as train_command
from refrag_lib.curriculum import N_STAGES
from refrag_lib.errors import CourseError, MissingArtifactError
from refrag_lib.model import Parts, mean_pool, projector_net, splice_vectors
from refrag_lib.precision import mixed_precision
from refrag_lib.runs import open_run
from refrag_lib.stages import StageTask, TrainConfig, prepare_model, split_documents
from refrag_lib.train import train, warmup_cosine

IDENTITY = {"preset": "tiny", "k": "4", "encoder": "tiny-bert", "decoder": "tiny-llama"}


def docs(model):
    return [model.tokenize(" ".join(TINY_TEXT[i:] + TINY_TEXT[:i]) * 2) for i in range(3)]


def config(stage="recon", steps=6, **kw):
    return TrainConfig(stage=stage, steps=steps, context_tokens=16, continuation_tokens=8, positions_per_step=48,
                       lr=3e-3, save_every=2, **kw)


def weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def run_tiny(tmp_path, cfg, **kw):
    model = tiny_refrag(k=4)
    return train(model, cfg, StageTask(model, cfg, docs(model)), tmp_path, IDENTITY, progress=False, **kw)


def test_reconstruction_loss_goes_down_and_decoder_stays_frozen(tmp_path):
    model = tiny_refrag(k=4)
    before = weights(model)
    cfg = config(steps=30, curriculum=False)
    result = train(model, cfg, StageTask(model, cfg, docs(model)), tmp_path, IDENTITY, progress=False)
    after = weights(model)
    assert result.summary["last_loss"] < result.summary["first_loss"]
    assert all(torch.equal(before[n], after[n]) for n in before if n.startswith("decoder."))
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("projector."))
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("encoder."))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(30))
    assert read_metadata(tmp_path / WEIGHTS)["parts"] == "encoder,projector"


def test_an_fp32_preset_trains_under_bf16_autocast_only_on_a_cpu_with_native_bf16(monkeypatch):
    model = tiny_refrag(k=4)
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: True)
    assert mixed_precision(model, config()) == ("bf16" if model.device.type == "cpu" else "no")
    assert mixed_precision(model, config(cpu_bf16=False)) == "no"
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: False)
    assert mixed_precision(model, config()) == "no"
    assert mixed_precision(tiny_refrag(k=4, dtype=torch.float16), config()) == "fp16"  # a GPU preset's own


def test_bf16_autocast_training_learns_and_keeps_fp32_weights(tmp_path, monkeypatch, fresh_accelerate_state):
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: True)
    model = tiny_refrag(k=4)
    cfg = config(steps=30, curriculum=False)
    result = train(model, cfg, StageTask(model, cfg, docs(model)), tmp_path, IDENTITY, progress=False)
    assert result.summary["mixed_precision"] == ("bf16" if model.device.type == "cpu" else "no")
    assert result.summary["last_loss"] < result.summary["first_loss"]
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {t.dtype for t in load_file(tmp_path / WEIGHTS).values()} == {torch.float32}


@pytest.mark.parametrize("native_bf16", [True, False])
def test_held_out_scores_and_rewards_run_in_the_precision_of_training(monkeypatch, native_bf16):
    from refrag_lib.evaluate import floor_scores, vectors_against_floor
    from refrag_lib.grpo import rewards_of
    from refrag_lib.selectors import score_examples

    model = tiny_refrag(k=4)
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: native_bf16)
    autocast_seen, forward = [], model.decoder.base_model.forward

    def spy(*args, **kwargs):
        autocast_seen.append(torch.is_autocast_enabled("cpu"))
        return forward(*args, **kwargs)

    monkeypatch.setattr(model.decoder.base_model, "forward", spy)
    held = docs(model)
    floor = floor_scores(model, held, [1, 2], n_windows=2, batch_size=2)  # teacher-forced and greedy
    report = vectors_against_floor(model, held, floor, batch_size=2)
    examples = score_examples(model, [(held[0][:8], held[0][8:12])])  # the chunk NLL of the ppl heuristics
    rewards = rewards_of(model, examples, [[False, True]])  # GRPO's reward
    assert torch.isfinite(rewards).all() and report["by_chunks"]["2"]["log_ppl"]["mean"] > 0
    assert len(autocast_seen) > 4 and set(autocast_seen) == {native_bf16 and model.device.type == "cpu"}
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks out of the calls


def test_cpt_loss_goes_down_on_fixed_documents(tmp_path):
    # the notebook's SMOKE run is too short to show this (8 steps of 3-4 examples, each its own chunk count)
    frozen = run_tiny(tmp_path / "frozen", config("cpt", steps=30, curriculum=False, expand_fraction=0.25))
    assert frozen.summary["last_loss"] < frozen.summary["first_loss"]  # a random tiny decoder reads little context


def test_cpt_can_train_the_decoder(tmp_path):
    model = tiny_refrag(k=4)
    before = weights(model)
    cfg = config("cpt", steps=30, curriculum=False, train_decoder=True, expand_fraction=0.25)
    result = train(model, cfg, StageTask(model, cfg, docs(model)), tmp_path, IDENTITY, progress=False)
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters() if n.startswith("decoder."))
    assert result.summary["last_loss"] < result.summary["first_loss"] - 0.5  # the decoder learns the documents


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path):
    cfg = config(steps=6, grad_accum=2)
    straight = run_tiny(tmp_path / "straight", cfg)
    first = run_tiny(tmp_path / "resumed", cfg, max_new_steps=3)  # a "Colab disconnect" after step 3
    assert not first.summary["finished"] and not (tmp_path / "resumed" / WEIGHTS).exists()
    resumed = run_tiny(tmp_path / "resumed", cfg)  # a fresh process: new model, same folder
    assert resumed.summary["finished"]
    for name, value in weights(straight.model).items():
        torch.testing.assert_close(weights(resumed.model)[name], value, rtol=0, atol=0)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]
    rows = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == list(range(6))


def test_resume_with_other_settings_or_identity_is_refused(tmp_path):
    run_tiny(tmp_path, config(steps=4), max_new_steps=2)
    with pytest.raises(CourseError, match="other training settings"):
        run_tiny(tmp_path, config(steps=8))
    model = tiny_refrag(k=4)
    with pytest.raises(CourseError, match="another configuration"):
        cfg = config(steps=4)
        train(model, cfg, StageTask(model, cfg, docs(model)), tmp_path, {**IDENTITY, "k": "8"}, progress=False)
    state_file = tmp_path / STATE_DIR / "state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**state, "config": {**state["config"], "processes": 2}}))
    with pytest.raises(CourseError, match=r"other training settings \(processes\)"):  # written by 2 processes
        run_tiny(tmp_path, config(steps=4))
    # a checkpoint from before sharded training (format 1)
    state_file.write_text(json.dumps({k: v for k, v in state.items() if k != "format"}))
    with pytest.raises(CourseError, match="earlier version of the course"):
        run_tiny(tmp_path, config(steps=4))


def test_a_finished_run_without_its_state_is_loaded_not_retrained(tmp_path):
    """What a teacher's pack and the SFT arms leave: weights and metrics.jsonl, no resumable state."""
    cfg = config(steps=4)
    trained = run_tiny(tmp_path, cfg)
    import shutil

    shutil.rmtree(tmp_path / STATE_DIR)
    packed = (tmp_path / WEIGHTS).read_bytes()
    loaded = run_tiny(tmp_path, cfg)  # a fresh model: its weights must come from the file
    assert loaded.summary["loaded"] and loaded.summary["finished"] and loaded.history == trained.history
    for name, value in weights(trained.model).items():
        torch.testing.assert_close(weights(loaded.model)[name], value, rtol=0, atol=0)
    assert (tmp_path / WEIGHTS).read_bytes() == packed
    with pytest.raises(CourseError, match=r"finished run trained with other settings \(lr, steps\)"):
        run_tiny(tmp_path, replace(cfg, steps=6, lr=1e-3))
    assert (tmp_path / WEIGHTS).read_bytes() == packed  # refused before anything was written
    retrained = run_tiny(tmp_path, cfg, resume=False)  # asked to start over: it trains
    assert "loaded" not in retrained.summary and retrained.summary["finished"]


def test_a_weights_file_with_other_tensor_names_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    run_tiny(tmp_path, config(steps=2))
    tensors = load_file(str(tmp_path / WEIGHTS))
    tensors.pop(next(name for name in tensors if name.startswith("projector.")))
    save_file(tensors, str(tmp_path / WEIGHTS), metadata=read_metadata(tmp_path / WEIGHTS))
    with pytest.raises(CourseError, match="could not be loaded"):
        load_weights(tmp_path / WEIGHTS, tiny_refrag(k=4), IDENTITY)


def test_corrupt_checkpoint_gives_a_clear_error(tmp_path):
    run_tiny(tmp_path, config(steps=2))
    (tmp_path / WEIGHTS).write_bytes(b"not a safetensors file")
    with pytest.raises(CourseError, match="delete it and re-run"):
        load_weights(tmp_path / WEIGHTS, tiny_refrag(k=4), IDENTITY)
    (tmp_path / STATE_DIR / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CourseError, match="corrupt"):
        run_tiny(tmp_path, config(steps=2))


def test_weights_of_another_k_are_refused(tmp_path):
    run_tiny(tmp_path, config(steps=2))
    with pytest.raises(CourseError, match="k='4'"):
        load_weights(tmp_path / WEIGHTS, tiny_refrag(k=4), {**IDENTITY, "k": "16"})


def test_cpt_without_reconstruction_weights_needs_to_be_asked_for(tmp_path):
    run = open_run("cpu", tmp_path)
    with pytest.raises(MissingArtifactError, match="no-recon-init"):
        prepare_model(run, TrainConfig(stage="cpt", steps=1))
    with pytest.raises(MissingArtifactError, match="02_reconstruction"):
        train_command(["--stage", "cpt", "--steps", "1", "--run-dir", str(tmp_path)])


def test_config_and_schedule_checks():
    with pytest.raises(CourseError):
        TrainConfig(stage="sft", steps=1)
    with pytest.raises(CourseError, match="frozen"):
        TrainConfig(stage="recon", steps=1, train_decoder=True)
    factor = warmup_cosine(100, 0.04)
    assert factor(0) == pytest.approx(0.25) and factor(3) == pytest.approx(1.0)
    assert factor(50) < factor(10) and factor(99) < 0.01
    train_docs, held = split_documents(list(range(300)))
    assert len(held) == 30 and held == list(range(270, 300)) and not set(train_docs) & set(held)
    assert TrainConfig(stage="cpt", steps=1).peak_lr == 5e-5 and TrainConfig(stage="recon", steps=1).peak_lr == 2e-4
    assert get_preset("cpu").k == 16


def test_evaluation_helpers_on_a_tiny_model():
    from refrag_lib.evaluate import (
        ARM_INPUTS,
        chunk_counts,
        cpt_arms,
        cpt_windows,
        decoded_reconstructions,
        reconstruction_by_chunks,
    )

    assert chunk_counts(16) == [1, 4, 16] and chunk_counts(128) == [1, 4, 16, 64] and chunk_counts(3) == [1]
    model = tiny_refrag(k=4)
    held = docs(model)
    by_chunks = reconstruction_by_chunks(model, held, [1, 4], n_examples=3, batch_size=2)
    assert set(by_chunks["log_ppl_by_chunks"]) == {"1", "4"}
    assert all(0 <= a <= 1 for a in by_chunks["token_accuracy_by_chunks"].values())
    pairs = cpt_windows(held, 16, 6, n_examples=3)
    assert pairs == cpt_windows(held, 16, 6, n_examples=3) and all(len(c) == 16 and len(o) == 6 for c, o in pairs)
    context, continuation = pairs[0]
    last = ARM_INPUTS["last_tokens"](model, context, continuation)
    # s/k = 4 tokens after the start token: as many decoder positions as the start token and 4 chunk vectors
    assert last.prefix == [model.start_id, *context[-4:]]
    assert len(ARM_INPUTS["refrag"](model, context, continuation).chunks) == 4
    assert ARM_INPUTS["full_context"](model, context, continuation).prefix == [model.start_id, *context]
    scores = cpt_arms(model, pairs, list(ARM_INPUTS), baselines={"last_tokens": [0.0] * 3})
    assert all(0 < scores[arm]["low"] <= scores[arm]["mean"] <= scores[arm]["high"] for arm in ARM_INPUTS)
    refrag = scores["per_pair"]["refrag"]
    assert len(refrag) == 3 and scores["gain_over_last_tokens"]["mean"] == pytest.approx(-sum(refrag) / 3)
    rows = decoded_reconstructions(model, held, [1, 2], max_tokens=5)
    assert [r["chunks"] for r in rows] == [1, 2] and all(0 <= r["exact_token_share"] <= 1 for r in rows)
    with pytest.raises(CourseError, match="Unknown arm"):
        cpt_arms(model, pairs, ["oracle"])


def test_vectors_against_floor_scores_the_same_windows_both_ways():
    from refrag_lib.evaluate import between_models, floor_scores, reconstruction_by_chunks, vectors_against_floor

    model = tiny_refrag(k=4)
    held = docs(model)
    floor = floor_scores(model, held, [1, 2, 8], n_windows=6, long_windows=3, batch_size=4, seed=7)
    report = vectors_against_floor(model, held, floor, batch_size=4)
    assert report["n_windows"] == {"1": 6, "2": 6, "8": 3} and set(report["by_chunks"]) == {"1", "2", "8"}
    assert len(report["per_window"]["8"]["log_ppl"]) == 3
    itself = between_models(report, report)["1"]["log_ppl_gain"]
    assert itself == {"mean": 0.0, "low": 0.0, "high": 0.0}
    for n, row in report["by_chunks"].items():
        scores = floor["scores"][n]
        assert row["log_ppl_floor"]["mean"] == pytest.approx(scores["log_ppl"].mean())
        assert row["log_ppl_gain"]["mean"] == pytest.approx(row["log_ppl_floor"]["mean"] - row["log_ppl"]["mean"])
        for name in ("log_ppl", "token_accuracy", "first_chunk_exact"):
            assert row[name]["low"] <= row[name]["mean"] <= row[name]["high"], name
        assert all(0 <= row[f"first_chunk_exact{s}"]["mean"] <= 1 for s in ("", "_floor"))
    # the same seeded windows, all of one length: the mean per window equals the token-weighted figure
    same = reconstruction_by_chunks(model, held, [1, 2], n_examples=6, batch_size=4, seed=7)
    for n in ("1", "2"):
        assert report["by_chunks"][n]["log_ppl"]["mean"] == pytest.approx(same["log_ppl_by_chunks"][n], rel=1e-5)
        assert report["by_chunks"][n]["token_accuracy"]["mean"] == pytest.approx(same["token_accuracy_by_chunks"][n])


def test_train_and_probe_gives_a_curve_and_the_weights_of_one_uninterrupted_run(tmp_path, monkeypatch):
    from refrag_lib.evaluate import floor_scores, train_and_probe

    monkeypatch.setattr(stages, "prepare_model", lambda run, cfg, init_from_recon=True, parts=None: tiny_refrag(k=4))
    monkeypatch.setattr(stages, "tokenized_documents", lambda model, path=None: (docs(model), docs(model)))
    run = open_run("cpu", tmp_path, k=4)
    cfg = config(steps=6, curriculum=False)
    held = docs(tiny_refrag(k=4))
    floor = floor_scores(tiny_refrag(k=4), held, [1], n_windows=4, batch_size=4)
    probed, curve = train_and_probe(run, cfg, held, floor, points=3, resume=False, progress=False)
    assert [point["step"] for point in curve] == [2, 4, 6] and probed.summary["finished"]
    assert set(curve[-1]["by_chunks"]["1"]) >= {"log_ppl_gain", "first_chunk_exact"}
    whole = stages.train_stage(run, cfg, folder="whole", resume=False, progress=False)
    for name, tensor in whole.model.named_parameters():
        torch.testing.assert_close(dict(probed.model.named_parameters())[name], tensor, atol=1e-6, rtol=0)
    with pytest.raises(CourseError, match="points must be"):
        train_and_probe(run, cfg, held, floor, points=0)


def test_a_learners_parts_and_mixtures_are_what_the_stage_trains_with(tmp_path, monkeypatch):
    from refrag_lib.evaluate import floor_scores, train_and_probe

    monkeypatch.setattr(stages, "load_refrag", lambda preset, parts=None: tiny_refrag(k=4, parts=parts))
    monkeypatch.setattr(stages, "tokenized_documents", lambda model, path=None: (docs(model), docs(model)))
    run = open_run("cpu", tmp_path, k=4)
    held = docs(tiny_refrag(k=4))
    floor = floor_scores(tiny_refrag(k=4), held, [1], n_windows=2, batch_size=2)
    pool, net, splice = Spy(mean_pool), Spy(projector_net), Spy(splice_vectors)
    mixtures = Spy(lambda max_chunks: ([2], np.ones((N_STAGES, 1))))  # every stage: 2 chunks, never Table 8's mix
    result, _ = train_and_probe(run, config(steps=4), held, floor, points=2, resume=False, progress=False,
                                parts=Parts(pool, net, splice), mixtures=mixtures)
    assert {row["chunks"] for row in result.history} == {2}
    assert len(net.grad_modes) == len(mixtures.grad_modes) == 2  # one model and one curriculum per segment
    assert True in pool.grad_modes and True in splice.grad_modes  # in the training steps, not only the probes


def test_levers_share_the_compute_and_the_windows(tmp_path, monkeypatch):
    from refrag_lib.evaluate import cpt_arms, cpt_windows, floor_scores, vectors_against_floor
    from refrag_lib.studies.levers import Lever, equal_compute_steps, format_levers, merge_rows, run_levers

    inits = []
    def prepare(run, cfg, init_from_recon=True, parts=None):
        inits.append(init_from_recon)
        return tiny_refrag(k=run.preset.k)

    monkeypatch.setattr(stages, "prepare_model", prepare)
    monkeypatch.setattr(stages, "tokenized_documents", lambda model, path=None: (docs(model), docs(model)))
    run = open_run("cpu", tmp_path, k=4)
    held = docs(tiny_refrag(k=4))
    floors = {k: floor_scores(tiny_refrag(k=k), held, [1, 2], n_windows=4, batch_size=4) for k in (2, 4)}

    def score(model):
        probe = vectors_against_floor(model, held, floors[model.k])
        return {"by_chunks": probe["by_chunks"], "per_window": probe["per_window"]}

    base = config(steps=4, curriculum=False)
    levers = [Lever("base", {}, "-"), Lever("bigger steps", {"positions_per_step": 96}, "-"), Lever("k2", {}, "-", k=2),
              Lever("longer", {}, "-", budget=1.5)]
    rows = run_levers(run, base, levers, score, progress=False)
    assert [(r["lever"], r["steps"], r["k"]) for r in rows] == [("base", 4, 4), ("bigger steps", 2, 4), ("k2", 4, 2),
                                                               ("longer", 6, 4)]
    assert equal_compute_steps(base, replace(base, positions_per_step=24)) == 8
    for row in rows:
        assert set(row["by_chunks"]) == {"1", "2"} and len(row["per_window"]["1"]["log_ppl"]) == 4
        assert row["max_grad_norm"] > 0
    rerun = {**rows[0], "steps": 99}
    merged = merge_rows(rows, [rerun, {"lever": "new", "steps": 1}], [*levers, Lever("new", {}, "-")])
    assert [(r["lever"], r["steps"]) for r in merged] == [("base", 99), ("bigger steps", 2), ("k2", 4), ("longer", 6),
                                                        ("new", 1)]
    table = format_levers({"stage": "recon", "heading": "h", "rows": rows}).splitlines()
    assert len(table) == 5 and "vs default" in table[2] and "vs default" not in table[1]
    assert "1 ch of k=2" in table[3] and "vs default" not in table[3]  # other windows: nothing to pair

    pairs = cpt_windows(held, 16, 8, 4)
    baselines = cpt_arms(tiny_refrag(k=4), pairs, ("last_tokens",))["per_pair"]
    cpt_rows = run_levers(run, config("cpt", steps=2), [Lever("base", {}, "-"), Lever("scratch", {}, "-", False)],
                          lambda model: cpt_arms(model, pairs, ("refrag",), baselines=baselines), progress=False)
    assert inits[-2:] == [True, False]  # the Table 12 row starts from a fresh encoder + projector
    assert len(cpt_rows[1]["per_pair"]["refrag"]) == 4 and "gain_over_last_tokens" in cpt_rows[1]
    cpt_table = format_levers({"stage": "cpt", "heading": "h", "rows": cpt_rows}).splitlines()
    assert "vs last s/k tokens" in cpt_table[1] and "vs default" in cpt_table[2]


def test_the_seed_fixes_the_projector_and_the_dropout(tmp_path):
    """Two runs with one seed end with the same weights, whatever the process drew before."""
    from refrag_lib.stages import default_config

    ends = []
    for noise in (123, 456):
        model = tiny_refrag(k=4)
        assert model.encoder.config.hidden_dropout_prob > 0  # dropout draws from torch's generator
        torch.manual_seed(noise)  # whatever ran before in the process
        cfg = config(steps=3)
        ends.append(train(model, cfg, StageTask(model, cfg, docs(model)), tmp_path / str(noise), IDENTITY,
                          progress=False).model)
    for (name, a), b in zip(ends[0].named_parameters(), ends[1].parameters()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)
    assert default_config("cpt").expand_fraction == 0.1 and default_config("recon", steps=5).steps == 5
    assert default_config("recon").encoder_lr_scale == 0.1 and default_config("cpt").encoder_lr_scale == 1.0
    assert default_config("recon").warmup_fraction == 0.15 and default_config("cpt").warmup_fraction == 0.04
    assert default_config("recon", encoder_lr_scale=1.0).encoder_lr_scale == 1.0  # a lever row overrides it
    with pytest.raises(CourseError, match="stage must be"):
        default_config("sft")


def test_the_encoder_can_take_smaller_steps(tmp_path):
    from refrag_lib.train import _param_groups

    assert run_tiny(tmp_path, config(steps=2, encoder_lr_scale=0.1)).summary["finished"]

    model = tiny_refrag(k=4)
    encoder, rest = _param_groups(model, ["encoder", "projector"], config(encoder_lr_scale=0.1))
    assert encoder["lr"] == pytest.approx(3e-4) and rest["lr"] == pytest.approx(3e-3)  # config() peaks at 3e-3
    assert {id(p) for p in encoder["params"]} == {id(p) for p in model.encoder.parameters()}
    with pytest.raises(CourseError, match="encoder_lr_scale"):
        config(encoder_lr_scale=0)
    with pytest.raises(CourseError, match="pooling must be one of"):
        config(pooling="max")


def test_the_decoder_can_take_its_own_steps(tmp_path):
    from refrag_lib.train import _param_groups

    model = tiny_refrag(k=4)
    cfg = config("cpt", train_decoder=True, decoder_lr_scale=0.1)
    groups = _param_groups(model, cfg.trained_parts(), cfg)
    by_lr = {}
    for group in groups:
        by_lr.setdefault(round(group["lr"], 8), set()).update(id(p) for p in group["params"])
    assert by_lr[3e-4] == {id(p) for p in model.decoder.parameters()}  # config() peaks at 3e-3
    assert by_lr[3e-3] == {id(p) for p in model.encoder.parameters()} | {id(p) for p in model.projector.parameters()}
    with pytest.raises(CourseError, match="decoder_lr_scale"):
        config(decoder_lr_scale=0)


def test_a_run_written_before_a_later_field_still_loads(tmp_path):
    from refrag_lib.train import LATER_FIELDS, stored_settings

    cfg = config(steps=2)
    run_tiny(tmp_path, cfg, keep_state=False)
    assert not set(LATER_FIELDS) & set(stored_settings(cfg))  # at its default a later field is not stored
    metadata = read_metadata(tmp_path / WEIGHTS)
    assert not set(LATER_FIELDS) & set(json.loads(metadata["config"]))  # as runs before the field were written
    assert run_tiny(tmp_path, cfg).summary["loaded"]  # the same recipe loads
    with pytest.raises(CourseError, match="decoder_lr_scale"):  # another value of the field is another recipe
        run_tiny(tmp_path, replace(cfg, decoder_lr_scale=0.5))
