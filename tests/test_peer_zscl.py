"""ZSCL (`--method zscl`, `--method zscl-lora`, method/peers/zscl.py): its two distillation terms and its weight
average against computations written out here, the loss of a step against the initial model recomputed from
scratch, its preset and reference inputs, and two-task toy runs (tiny model) through resume, eval, predict and
export."""

from __future__ import annotations

import contextlib
import json
from importlib import resources

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from interrupt import cut_in_task_two_then_resume

import segpcl
from segpcl.cli import main
from segpcl.config import MethodSection, resolve_config, validate
from segpcl.engine.build import build_method, build_model, build_stream
from segpcl.engine.entry import run_training
from segpcl.engine.reference_images import reference_images
from segpcl.errors import ConfigError
from segpcl.method.peers.zscl import distillation, merge_average, reference_sentences, toy_captions, zscl_terms


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _soft_ce(teacher: np.ndarray, student: np.ndarray, tau: float) -> float:
    """tau^2 * mean over rows of -sum_j p_j log q_j, p = softmax(teacher / tau), q = softmax(student / tau)."""
    p, log_q = _softmax(teacher / tau), np.log(_softmax(student / tau))
    return float(np.mean([-(p[i] * log_q[i]).sum() for i in range(len(p))]) * tau**2)


def _unit(rows: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(rows, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# -- core operations --------------------------------------------------------------------------------------------
def test_both_distillation_terms_match_the_definition():
    student, teacher, sentences = _unit(5, 8, 0), _unit(5, 8, 1), _unit(7, 8, 2)
    scale, tau = 12.0, 2.0
    now, before = scale * student @ sentences.T, scale * teacher @ sentences.T  # [images, sentences]
    want_image = _soft_ce(before, now, tau)  # each image's distribution over the sentences
    want_text = _soft_ce(before.T, now.T, tau)  # each sentence's distribution over the images
    got_image, got_text = zscl_terms(*(torch.tensor(a) for a in (student, teacher, sentences)), scale, tau)
    assert float(got_image) == pytest.approx(want_image, rel=1e-10)
    assert float(got_text) == pytest.approx(want_text, rel=1e-10)
    assert abs(want_image - want_text) > 1e-3  # two different terms
    # the code's soft-target CE is the KL plus the teacher's entropy: the same gradient, a constant apart
    p = _softmax(before / tau)
    entropy = float(np.mean([-(p[i] * np.log(p[i])).sum() for i in range(len(p))]) * tau**2)
    kl = float(F.kl_div(F.log_softmax(torch.tensor(now) / tau, 1), torch.tensor(p), reduction="batchmean")) * tau**2
    assert want_image == pytest.approx(kl + entropy, rel=1e-10)
    same = distillation(torch.tensor(before), torch.tensor(before), tau)
    assert float(same) == pytest.approx(entropy, rel=1e-10)


def test_merge_average_is_the_running_mean():
    rng = np.random.default_rng(3)
    snapshots = [[rng.normal(size=(3, 2)), rng.normal(size=4)] for _ in range(5)]
    average = [torch.tensor(a).clone() for a in snapshots[0]]
    for n, snap in enumerate(snapshots[1:], start=1):
        merge_average(average, [torch.tensor(a) for a in snap], n)
    for i, got in enumerate(average):
        assert np.allclose(got.numpy(), np.mean([s[i] for s in snapshots], axis=0), atol=1e-12)


# -- the method on the tiny model ---------------------------------------------------------------------------------
def _cfg(name: str = "zscl", epochs: int = 1, **method):
    """Two tasks of the toy (32 + 16 classes, 2 images each, batches of 16) on the tiny model."""
    return resolve_config(
        "toy",
        overrides={
            "model": {"arch": "tiny"},
            "data": {"max_train_per_class": 2, "max_test_per_class": 2, "task_sizes": [32, 16, 16], "max_tasks": 2},
            "train": {"epochs": epochs, "batch_size": 16, "lr": 1e-3, "warmup_frac": 0.0, "device": "cpu"},
            "method": {"name": name, **method},
        },
    )


def _method(cfg):
    model = build_model(cfg, torch.device("cpu"))
    stream = build_stream(cfg, model.image_size, None)
    refs = reference_images(cfg, model.image_size)
    return build_method(cfg, model, stream, "cpu", contextlib.nullcontext, refs), stream, refs


def _batches(stream, t: int, n: int = 16):
    items = [stream.train_set(t)[i] for i in range(len(stream.train_set(t)))]
    images, labels = torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])
    return [(images[i : i + n], labels[i : i + n]) for i in range(0, len(items), n)]


def test_a_step_is_ce_plus_both_terms_from_the_initial_model():
    cfg = _cfg(zscl_weight=3.0)
    first, stream, refs = _method(cfg)
    batches = _batches(stream, 0)
    first.before_task(0, batches)
    opt = torch.optim.SGD(first.trainable_parameters(), lr=0.05)
    for images, labels in batches[:2]:  # move the model away from the initial one
        loss, _ = first.training_loss(images, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    first.after_task(0, batches)
    method, _, _ = _method(cfg)  # as a resumed run: built afresh, then the checkpoint of task 1 loaded
    method.load_state_dict(first.state_dict())
    pairs = list(zip(method.model.clip.parameters(), first.model.clip.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in pairs)
    method.before_task(1, _batches(stream, 1))  # the second task's classes: 32..47
    pick = torch.tensor([5, 200, 17, 0, 99, 31, 64, 128, 7, 3, 250, 12, 44, 90, 160, 2])
    method._reference_batch = lambda n: pick[:n]
    images, labels = _batches(stream, 1)[0]
    loss, parts = method.training_loss(images, labels)

    initial = build_model(cfg, torch.device("cpu"))  # the model as built, from scratch
    model = method.model
    with torch.no_grad():
        k = method.n_templates
        prompts = initial.tokenize([t.format(n) for n in stream.class_names[32:48] for t in stream.bench.templates])
        text = F.normalize(F.normalize(model.base.encode_text(prompts), dim=-1).view(16, k, -1).mean(1), dim=-1)
        scale = float(initial.base.logit_scale.exp())
        logits = scale * F.normalize(model.base.encode_image(model._normalise(images)), dim=-1) @ text.T
        ce = F.cross_entropy(logits, labels - 32, label_smoothing=0.2)
        sentences = F.normalize(initial.base.encode_text(initial.tokenize(toy_captions())), dim=-1)
        before = F.normalize(initial.base.encode_image(initial._normalise(refs[pick])), dim=-1)
        now = F.normalize(model.base.encode_image(model._normalise(refs[pick])), dim=-1)
    teacher, student = ((scale * x @ sentences.T).double().numpy() for x in (before, now))
    want_image, want_text = _soft_ce(teacher, student, 2.0), _soft_ce(teacher.T, student.T, 2.0)
    assert float(parts["ce"]) == pytest.approx(float(ce), rel=1e-4)
    assert float(parts["zscl_image"]) == pytest.approx(want_image, rel=1e-4)
    assert float(parts["zscl_text"]) == pytest.approx(want_text, rel=1e-4)
    assert float(loss.detach()) == pytest.approx(float(ce) + 3.0 * (want_image + want_text), rel=1e-4)
    assert len(toy_captions()) == len(set(toy_captions())) == 448  # 64 classes x (3 + 2 sizes x 2) phrasings


def test_the_task_ends_on_the_average_of_steps_1_4_7_and_its_start():
    method, stream, _ = _method(_cfg(zscl_avg_every=3))
    batches = _batches(stream, 0, 8)[:7]
    method.before_task(0, batches)
    params = method.trainable_parameters()
    assert len(params) == len(list(method.model.clip.parameters())) - 1  # everything but the logit scale
    opt = torch.optim.SGD(params, lr=0.05)
    snapshots = [[p.detach().clone() for p in params]]  # the weights after 0, 1, ..., 7 steps
    for images, labels in batches:
        loss, _ = method.training_loss(images, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        snapshots.append([p.detach().clone() for p in params])
    info = method.after_task(0, batches)
    assert info == {"averaged_models": 4}
    for i, p in enumerate(params):
        want = sum(snapshots[s][i] for s in (0, 1, 4, 7)) / 4
        assert torch.allclose(p.detach(), want, atol=1e-6)
    assert not torch.allclose(params[0].detach(), snapshots[7][0])


def test_no_averaging_keeps_the_last_weights():
    method, stream, _ = _method(_cfg(zscl_avg_every=0))
    batches = _batches(stream, 0)[:2]
    method.before_task(0, batches)
    opt = torch.optim.SGD(method.trainable_parameters(), lr=0.05)
    for images, labels in batches:
        loss, _ = method.training_loss(images, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = [p.detach().clone() for p in method.trainable_parameters()]
    assert method.after_task(0, batches) == {}
    assert all(torch.equal(a, p) for a, p in zip(last, method.trainable_parameters(), strict=True))


# -- inputs, preset -------------------------------------------------------------------------------------------------
def test_reference_sentences_and_their_errors(tmp_path):
    assert reference_sentences(MethodSection(name="zscl")) == toy_captions()  # the toy's default reference set
    with pytest.raises(ConfigError, match="method.zscl_ref_text=FILE"):
        reference_sentences(MethodSection(name="zscl", reference=str(tmp_path)))
    path = tmp_path / "captions.txt"
    path.write_text("a dog on a beach\n\n  two red cups  \n")
    cfg = MethodSection(name="zscl", reference=str(tmp_path), zscl_ref_text=str(path))
    assert reference_sentences(cfg) == ["a dog on a beach", "two red cups"]
    path.write_text("\n \n")
    with pytest.raises(ConfigError, match="holds no sentence"):
        reference_sentences(cfg)
    cfg.zscl_ref_text = str(tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match="cannot be read"):
        reference_sentences(cfg)
    bad = resolve_config("toy", overrides={"method": {"name": "zscl", "zscl_label_smoothing": 1.0}})
    with pytest.raises(ConfigError, match="zscl_label_smoothing must be in"):
        validate(bad)


def test_a_reference_folder_without_sentences_is_a_one_line_error(tmp_path):
    from PIL import Image

    for i in range(2):
        Image.fromarray(np.full((32, 32, 3), 40 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    args = ["train", "--model", "tiny", "--method", "zscl", "--max-tasks", "1", "--out", str(tmp_path / "run")]
    result = CliRunner().invoke(main, [*args, "--set", f"method.reference={tmp_path}"])
    assert result.exit_code == 2 and "method.zscl_ref_text=FILE" in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_preset_applies_zscls_settings_with_their_source():
    cfg = resolve_config("imagenet_sub", overrides={"method": {"name": "zscl"}})
    t, m = cfg.train, cfg.method
    assert (t.optimizer, t.lr, t.weight_decay, t.epochs, t.batch_size, t.warmup_frac, t.grad_clip) == (
        "adamw",
        7e-6,
        0.0,
        1,
        128,
        0.3,
        0.0,
    )
    assert (m.zscl_label_smoothing, m.zscl_weight, m.zscl_temperature, m.zscl_avg_every) == (0.2, 5.0, 2.0, 10)
    assert cfg.data.templates == "single"
    cifar = resolve_config("cifar100", overrides={"method": {"name": "zscl"}, "train": {"epochs": 2}})
    assert (cifar.train.lr, cifar.train.batch_size, cifar.train.epochs) == (7.1e-6, 64, 2)  # --set still wins
    lora = resolve_config("cifar100", overrides={"method": {"name": "zscl-lora"}})
    assert (lora.train.optimizer, lora.method.zscl_weight, lora.train.batch_size) == ("adamw", 5.0, 64)
    assert resolve_config("cifar100").train.optimizer == "sgd"  # other methods keep the benchmark's preset
    for name in ("zscl", "zscl-lora"):
        text = resources.files("segpcl.presets").joinpath("methods", f"{name}.yaml").read_text()
        for line in text.splitlines():
            value = line.split("#")[0].partition(":")[2].strip()
            if value:  # a setting (section headers have none)
                assert "# ZSCL " in line or "our reading" in line or "# toy:" in line, line


# -- two-task toy runs ----------------------------------------------------------------------------------------------
def _tensors(run_dir, t: int) -> dict:
    from safetensors.torch import load_file

    return load_file(run_dir / "checkpoints" / f"task_{t:02d}" / "method.safetensors")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return run_training(_cfg(zscl_avg_every=2), out_dir=tmp_path_factory.mktemp("zscl") / "run", progress=False)


def test_two_task_run_fine_tunes_the_whole_model(run):
    m = run.metrics
    assert m["method"] == "zscl" and m["tasks_completed"] == 2
    first, second = m["task_info"]
    assert (first["steps"], second["steps"]) == (4, 2)  # 64 and 32 images, batch 16
    assert (first["averaged_models"], second["averaged_models"]) == (3, 2)  # start + steps 1, 3 / start + step 1
    assert first["reference_images"] == 256 and first["reference_sentences"] == 448
    assert all(first[f"mean_{k}"] > 0 for k in ("ce", "zscl_image", "zscl_text"))
    a, b = _tensors(run.run_dir, 0), _tensors(run.run_dir, 1)
    model = build_model(_cfg(), torch.device("cpu"))
    trained = {n: p for n, p in model.clip.named_parameters() if not n.endswith("logit_scale")}
    assert set(a) == set(b) == set(trained)  # every weight of both towers, in every checkpoint
    for name in ("visual.conv1.weight", "token_embedding.weight"):
        assert not torch.equal(a[name], trained[name].detach()) and not torch.equal(a[name], b[name]), name
    assert not (run.run_dir / "checkpoints" / "task_00" / "adapter").exists()


def test_resume_after_task_one_replays_task_two(run, tmp_path, monkeypatch):
    resumed = cut_in_task_two_then_resume(monkeypatch, _cfg(zscl_avg_every=2), tmp_path / "cut")
    assert resumed["accuracy_matrix"] == run.metrics["accuracy_matrix"]
    for key in ("mean_ce", "mean_zscl_image", "mean_zscl_text"):
        assert resumed["task_info"][1][key] == pytest.approx(run.metrics["task_info"][1][key], rel=1e-6), key
    for name, value in _tensors(run.run_dir, 1).items():
        assert torch.allclose(_tensors(tmp_path / "cut", 1)[name], value, atol=1e-6), name


def test_eval_predict_and_export_follow_the_fine_tuned_weights(run, tmp_path):
    from PIL import Image
    from safetensors.torch import load_file

    from segpcl.models.tiny import build_tiny

    out = tmp_path / "eval.json"
    result = CliRunner().invoke(main, ["eval", str(run.run_dir), "--json", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["accuracy"] == run.metrics["accuracy_matrix"][-1]
    path = tmp_path / "x.png"
    Image.fromarray(np.full((32, 32, 3), 90, dtype=np.uint8)).save(path)
    result = CliRunner().invoke(main, ["predict", str(run.run_dir), str(path), "--top-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output.strip().splitlines()[-1])["top"]) == 3

    export = tmp_path / "export"
    result = CliRunner().invoke(main, ["export", str(run.run_dir), "--out", str(export)])
    assert result.exit_code == 0, result.output
    info = json.loads((export / "classes.json").read_text())
    assert info["inference"]["branch"] == "clip" and not (export / "method.safetensors").exists()
    weights = load_file(str(export / "model.safetensors"))
    assert torch.equal(weights["visual.conv1.weight"], _tensors(run.run_dir, 1)["visual.conv1.weight"])
    clip = segpcl.load_run(run.run_dir)
    images = torch.rand(4, 3, clip.image_size, clip.image_size)
    plain, _, _ = build_tiny("tiny")  # plain open_clip, weights from the export only
    plain.load_state_dict(weights, strict=True)
    plain.eval()
    prompts = [tpl.format(name) for name in info["class_names"] for tpl in info["templates"]]
    with torch.no_grad():
        f = F.normalize(plain.encode_image(clip.model._normalise(images)), dim=-1)
        text = F.normalize(plain.encode_text(clip.model.tokenize(prompts)), dim=-1)
        text = F.normalize(text.view(len(info["class_names"]), -1, text.shape[-1]).mean(1), dim=-1)
        want = torch.softmax(info["inference"]["logit_scale"] * f @ text.T, dim=-1)
    assert torch.allclose(clip.predict(images), want, atol=1e-5)


def test_zscl_lora_trains_the_adapter_only(tmp_path):
    result = run_training(_cfg("zscl-lora"), out_dir=tmp_path / "run", progress=False)
    first = result.metrics["task_info"][0]
    assert result.metrics["tasks_completed"] == 2 and first["averaged_models"] == 2  # start + step 1 (every 10)
    folder = result.run_dir / "checkpoints" / "task_01"
    assert (folder / "adapter" / "adapter_model.safetensors").is_file() and not (folder / "method.safetensors").exists()
    reopened = segpcl.load_run(result.run_dir)
    base = build_model(_cfg("zscl-lora"), torch.device("cpu"))
    lora = {n: p for n, p in reopened.model.clip.named_parameters() if "lora_B" in n}
    assert lora and any(float(p.detach().abs().max()) > 0 for p in lora.values())  # the adapter trained
    frozen = dict(base.clip.named_parameters())
    for name, p in reopened.model.clip.named_parameters():  # every base weight is the pretrained one
        if "lora_" not in name:
            key = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(p, frozen[key]), name
