"""MoE-Adapters4CL (`--method moe-adapters`, method/peers/moe_adapters.py): the noisy top-k router, the expert
mixture and a whole adapted block against computations written out here, frozen CLIP's outputs at
initialisation, the loss over the current task's classes, the fixed warm-up, the preset, and a two-task toy run
(tiny model) through resume, eval, predict and export."""

from __future__ import annotations

import contextlib
import json
import math
from importlib import resources

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from interrupt import cut_in_task_two_then_resume

import segpcl
from segpcl.cli import main
from segpcl.config import MethodSection, RunConfig, resolve_config, validate
from segpcl.engine.build import build_method, build_model, build_stream
from segpcl.engine.entry import run_training
from segpcl.engine.loop import lr_factor
from segpcl.errors import ConfigError
from segpcl.method.peers.moe_adapters import BlockExperts, mix_experts, noisy_top_k_gates


def _cfg(**over):
    return resolve_config(
        "toy",
        overrides={
            "model": {"arch": "tiny"},
            "data": {
                "max_train_per_class": 3,
                "max_test_per_class": 2,
                "task_sizes": [32, 16, 16],
                "max_tasks": 2,
                "templates": None,
            },
            "train": {"epochs": 2, "batch_size": 16, "device": "cpu", "warmup_steps": 2},
            "method": {"name": "moe-adapters"},
            **over,
        },
    )


def _built(cfg=None):
    """(model, method) of a fresh run of `cfg` (default: the toy run below), as the engine builds them."""
    cfg = cfg or _cfg()
    model = build_model(cfg, torch.device("cpu"))
    stream = build_stream(cfg, model.image_size, None)
    return model, build_method(cfg, model, stream, torch.device("cpu"), contextlib.nullcontext)


def _randomise(method, seed: int) -> None:
    """Non-zero up-projections and routers (as after training), so the experts act."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in method.trainable_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


# -- core operations --------------------------------------------------------------------------------------------
def _softplus(z: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(z))


def _gates(logits: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros_like(logits)
    for n, row in enumerate(logits):
        top = np.argsort(-row)[:k]
        e = np.exp(row[top] - row[top].max())
        out[n, top] = e / e.sum()
    return out


def test_router_is_noisy_top_k_in_training_and_clean_in_evaluation():
    rng = np.random.default_rng(0)
    x0, w_gate, w_noise = rng.normal(size=(5, 6)), rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    t = [torch.tensor(a) for a in (x0, w_gate, w_noise)]
    clean = noisy_top_k_gates(*t, k=2, noisy=False)
    assert np.allclose(clean.numpy(), _gates(x0 @ w_gate, 2), atol=1e-12)
    torch.manual_seed(3)
    noisy = noisy_top_k_gates(*t, k=2, noisy=True)
    torch.manual_seed(3)
    z = torch.randn(5, 4, dtype=torch.float64).numpy()
    want = _gates(x0 @ w_gate + z * (_softplus(x0 @ w_noise) + 0.01), 2)
    assert np.allclose(noisy.numpy(), want, atol=1e-12)
    assert not np.allclose(want, clean.numpy())  # the noise moved the gates
    assert ((noisy > 0).sum(1) == 2).all() and torch.allclose(noisy.sum(1), torch.ones(5, dtype=torch.float64))
    # the class-incremental configuration: 2 experts, top 2, zero-initialised router: an even mixture
    even = noisy_top_k_gates(torch.tensor(x0), torch.zeros(6, 2, dtype=torch.float64), t[2][:, :2], 2, False)
    assert torch.equal(even, torch.full((5, 2), 0.5, dtype=torch.float64))
    # under bf16 autocast the router stays in fp32 (as the code's), and the block's mixture takes bf16 input
    x16, w16 = t[0].bfloat16(), t[1].float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gates16 = noisy_top_k_gates(x16, w16, t[2].float(), k=2, noisy=False)
        y = BlockExperts(6, MethodSection(), True, torch.Generator())(torch.randn(5, 3, 6).bfloat16(), True)
    assert gates16.dtype == torch.float32 and torch.equal(gates16, noisy_top_k_gates(x16.float(), w16, w16, 2, False))
    assert y.shape == (5, 3, 6) and torch.isfinite(y.float()).all()


def test_mixture_is_the_gated_sum_of_the_adapters():
    cfg = MethodSection(moe_experts=3, moe_top_k=2, moe_bottleneck=4)
    experts = BlockExperts(6, cfg, True, torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in experts.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    x = torch.randn(2, 5, 6, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        gates = noisy_top_k_gates(x[:, 0], experts.router.double(), experts.noise.double(), 2, False)
        got = mix_experts(x, gates, experts.double(), 0.0)
    p = {k: v.detach().numpy() for k, v in experts.state_dict().items()}
    xs, g = x.numpy(), gates.numpy()
    want = np.zeros_like(xs)
    for n in range(2):
        for e in range(3):
            hidden = np.maximum(xs[n] @ p["down_weight"][e].T + p["down_bias"][e], 0)
            want[n] += g[n, e] * (hidden @ p["up_weight"][e].T + p["up_bias"][e])
    assert np.allclose(got.numpy(), want, atol=1e-10) and (g == 0).sum() == 2  # one expert left out per sample
    with torch.no_grad():
        assert torch.allclose(experts(x, training=False), 0.1 * got)  # moe_scale


def _adapted_block(block, t: dict, k: int, scale: float):
    """A forward for an open_clip block written out: x + attn(ln_1 x), then + mlp(ln_2 x) + scale * sum_e g_e
    adapter_e(x), g the top-k softmax of the router on token 0 (tensors `t` as method.safetensors names them)."""

    def forward(q_x, k_x=None, v_x=None, attn_mask=None):
        x = q_x + block.attention(q_x=block.ln_1(q_x), attn_mask=attn_mask)
        logits = x[:, 0] @ t["router"]
        top, idx = logits.topk(k, dim=1)
        gates = torch.zeros_like(logits).scatter(1, idx, torch.softmax(top, dim=1))
        mixture = torch.zeros_like(x)
        for e in range(t["router"].shape[1]):
            hidden = torch.relu(x @ t["down_weight"][e].T + t["down_bias"][e])
            mixture += gates[:, e, None, None] * (hidden @ t["up_weight"][e].T + t["up_bias"][e])
        return x + block.mlp(block.ln_2(x)) + scale * mixture

    return forward


def _adapt(clip, tensors: dict, k: int = 2, scale: float = 0.1) -> None:
    for tower, root in (("visual", clip.visual.transformer), ("text", clip.transformer)):
        for i, block in enumerate(root.resblocks):
            t = {name: tensors[f"{tower}.{i}.{name}"] for name in ("router", "down_weight", "down_bias")}
            t |= {name: tensors[f"{tower}.{i}.{name}"] for name in ("up_weight", "up_bias")}
            block.forward = _adapted_block(block, t, k, scale)


def test_hooked_blocks_are_the_written_out_block_in_both_towers():
    model, method = _built()
    _randomise(method, 4)
    plain = build_model(_cfg(), torch.device("cpu"))
    _adapt(plain.base, method.export_tensors())
    images, tokens = torch.rand(3, 3, 32, 32), method.tokens[:5]
    with torch.no_grad():
        assert torch.allclose(model.image_features(images), plain.image_features(images), atol=1e-5)
        assert torch.allclose(model.text_features(tokens), plain.text_features(tokens), atol=1e-5)
        clean = build_model(_cfg(), torch.device("cpu"))  # and the experts do change both towers
        assert not torch.allclose(model.image_features(images), clean.image_features(images), atol=1e-3)
        assert not torch.allclose(model.text_features(tokens), clean.text_features(tokens), atol=1e-3)


def test_at_initialisation_the_model_is_frozen_clip_exactly():
    model, method = _built()
    clip = build_model(_cfg(), torch.device("cpu"))
    images = torch.rand(4, 3, 32, 32)
    for mode in ("eval", "train"):  # also with router noise and dropout: the up-projections are zero
        getattr(model, mode)()
        with torch.no_grad():
            assert torch.equal(model.image_features(images), clip.image_features(images)), mode
            assert torch.equal(model.text_features(method.tokens), clip.text_features(method.tokens)), mode
    model.eval()
    assert sum(p.numel() for p in method.trainable_parameters()) > 0
    assert not any(p.requires_grad for p in model.parameters())  # both towers frozen
    method.begin_eval(0)
    with torch.no_grad():
        text = method.class_text(clip, 32)  # the plain model's class embeddings
        want = torch.softmax(clip.logit_scale() * clip.image_features(images) @ text.T, dim=-1)
    assert torch.equal(method.predict(images), want)


def test_noise_and_dropout_act_in_training_only():
    model, method = _built()
    _randomise(method, 5)
    images = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        model.train()
        assert not torch.equal(model.image_features(images), model.image_features(images))
        model.eval()
        first = model.image_features(images)
        assert torch.equal(first, model.image_features(images))
        plain = build_model(_cfg(), torch.device("cpu"))
        _adapt(plain.base, method.export_tensors())  # the clean router (no noise term) and no dropout
        assert torch.allclose(first, plain.image_features(images), atol=1e-5)


def test_loss_is_cross_entropy_over_the_current_task_only():
    model, method = _built()
    _randomise(method, 6)
    method.before_task(1, [])
    images, labels = torch.rand(5, 3, 32, 32), torch.tensor([32, 40, 47, 33, 33])
    loss, parts = method.training_loss(images, labels)  # eval mode: no noise, no dropout
    with torch.no_grad():
        text = method.class_text(model, 48)[32:]
        logits = model.logit_scale() * model.image_features(images) @ text.T
        want = F.cross_entropy(logits, labels - 32)
    assert float(loss.detach()) == pytest.approx(float(want), rel=1e-5) and torch.equal(parts["ce"], loss.detach())
    loss.backward()
    grads = {n: p.grad for n, p in method.experts.named_parameters()}
    assert all(g is not None for n, g in grads.items() if not n.endswith("noise"))  # noise: training only


def test_a_tower_without_transformer_blocks_is_one_line_error(tmp_path):
    result = CliRunner().invoke(
        main,
        ["train", "--model", "tiny-rn", "--method", "moe-adapters", "--out", str(tmp_path / "r"), "--max-tasks", "1"]
        + ["--set", "data.max_train_per_class=1", "--set", "data.max_test_per_class=1", "--quiet"],
    )
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("error:"))
    assert line.startswith("error: moe-adapters puts its experts into open_clip's transformer blocks")
    assert "visual tower (ModifiedResNet) has none" in line


# -- schedule, settings, preset ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [40, 16])
def test_warmup_steps_is_moe_adapters_cosine_lr(steps):
    def theirs(step: int) -> float:  # cil/continual_clip/utils.py cosine_lr(optimizer, 1, 30, steps)
        if step < 30:
            return (step + 1) / 30
        return 0.5 * (1 + math.cos(math.pi * (step - 30) / (steps - 30)))

    fn = lr_factor(steps, 0.0, warmup_steps=30)
    assert [fn(s) for s in range(steps)] == pytest.approx([theirs(s) for s in range(steps)])
    assert lr_factor(40, 0.25)(9) == 1.0  # without warmup_steps the share decides, as before


def test_bad_settings_are_config_errors():
    for section, key, value, match in [
        ("method", "moe_top_k", 3, "method.moe_top_k must be in"),
        ("method", "moe_dropout", 1.0, "moe_dropout in"),
        ("train", "warmup_steps", -1, "train.warmup_steps must be >= 0"),
    ]:
        cfg = RunConfig()
        setattr(getattr(cfg, section), key, value)
        with pytest.raises(ConfigError, match=match):
            validate(cfg)


def test_preset_applies_moe_adapters_settings_with_their_source():
    cfg = resolve_config("cifar100", overrides={"method": {"name": "moe-adapters"}})
    t, m = cfg.train, cfg.method
    assert (t.optimizer, t.lr, t.weight_decay, t.epochs, t.batch_size, t.warmup_steps, t.grad_clip) == (
        "adamw",
        0.001,
        0.0,
        1,
        128,
        30,
        0.0,
    )
    assert (m.moe_experts, m.moe_top_k, m.moe_bottleneck, m.moe_scale, m.moe_dropout, m.moe_noisy_gating) == (
        2,
        2,
        64,
        0.1,
        0.1,
        True,
    )
    assert cfg.data.templates == "single" and cfg.model.arch == resolve_config("cifar100").model.arch
    toy = resolve_config("toy", overrides={"method": {"name": "moe-adapters"}, "train": {"epochs": 2}})
    assert (toy.train.batch_size, toy.train.epochs) == (16, 2)  # the toy's scaling; --set still wins
    assert resolve_config("cifar100").train.warmup_steps == 0  # other methods keep the benchmark's preset
    text = resources.files("segpcl.presets").joinpath("methods", "moe-adapters.yaml").read_text()
    for line in text.splitlines():
        value = line.split("#")[0].partition(":")[2].strip()
        if value:  # a setting (section headers have none)
            assert "# MoE-Adapters4CL " in line or "our reading" in line, line


# -- a two-task toy run -------------------------------------------------------------------------------------------
def _tensors(run_dir, t: int) -> dict:
    from safetensors.torch import load_file

    return load_file(run_dir / "checkpoints" / f"task_{t:02d}" / "method.safetensors")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return run_training(_cfg(), out_dir=tmp_path_factory.mktemp("moe") / "run", progress=False)


def test_two_task_run_trains_the_experts_of_both_towers(run):
    m = run.metrics
    assert m["method"] == "moe-adapters" and m["tasks_completed"] == 2
    assert [i["steps"] for i in m["task_info"]] == [12, 6]  # 96 and 48 images, batch 16, 2 epochs
    a, b = _tensors(run.run_dir, 0), _tensors(run.run_dir, 1)
    assert {k.split(".")[0] for k in a} == {"visual", "text"} and len(a) == 6 * (2 + 1)  # 2 visual + 1 text block
    for tower in ("visual.0", "visual.1", "text.0"):
        assert a[f"{tower}.up_weight"].abs().sum() > 0  # trained away from zero
        assert not torch.equal(a[f"{tower}.up_weight"], b[f"{tower}.up_weight"])  # and again in task 2
        assert not torch.equal(a[f"{tower}.noise"], b[f"{tower}.noise"])  # the noise weights train too
    assert not (run.run_dir / "checkpoints" / "task_01" / "adapter").exists()  # no LoRA


def test_resume_after_task_one_replays_task_two(run, tmp_path, monkeypatch):
    resumed = cut_in_task_two_then_resume(monkeypatch, _cfg(), tmp_path / "cut")
    assert resumed["accuracy_matrix"] == run.metrics["accuracy_matrix"]
    assert resumed["task_info"][1]["mean_ce"] == run.metrics["task_info"][1]["mean_ce"]
    for name, value in _tensors(run.run_dir, 1).items():
        assert torch.equal(_tensors(tmp_path / "cut", 1)[name], value), name


def test_eval_and_predict_reopen_the_run(run, tmp_path):
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(main, ["eval", str(run.run_dir), "--json", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["accuracy"] == run.metrics["accuracy_matrix"][-1]
    result = CliRunner().invoke(main, ["eval", str(run.run_dir), "--task", "1", "--json", str(out), "--quiet"])
    assert result.exit_code == 0 and json.loads(out.read_text())["accuracy"] == run.metrics["accuracy_matrix"][0]
    result = CliRunner().invoke(main, ["eval", str(run.run_dir), "--branch", "dual"])
    assert result.exit_code == 2 and "no dual path" in result.output and "Traceback" not in result.output
    from PIL import Image

    path = tmp_path / "x.png"
    Image.fromarray(np.full((32, 32, 3), 90, dtype=np.uint8)).save(path)
    result = CliRunner().invoke(main, ["predict", str(run.run_dir), str(path), "--top-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output.strip().splitlines()[-1])["top"]) == 3


def test_export_writes_the_experts_and_predict_follows_from_the_files(run, tmp_path):
    from safetensors.torch import load_file

    from segpcl.models.tiny import build_tiny

    out = tmp_path / "export"
    result = CliRunner().invoke(main, ["export", str(run.run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    info = json.loads((out / "classes.json").read_text())
    assert "visual.0.router" in info["inference"]["method_tensors"]
    tensors = load_file(str(out / "method.safetensors"))
    assert tensors.keys() == _tensors(run.run_dir, 1).keys()

    clip = segpcl.load_run(run.run_dir)
    images = torch.rand(4, 3, clip.image_size, clip.image_size)
    plain, _, _ = build_tiny("tiny")  # plain open_clip, weights from the export only, blocks written out here
    plain.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
    plain.eval()
    _adapt(plain, tensors)
    prompts = [tpl.format(name) for name in info["class_names"] for tpl in info["templates"]]
    with torch.no_grad():
        e = F.normalize(plain.encode_image(clip.model._normalise(images)), dim=-1)
        text = F.normalize(plain.encode_text(clip.model.tokenize(prompts)), dim=-1)
        text = F.normalize(text.view(len(info["class_names"]), -1, text.shape[-1]).mean(1), dim=-1)
        want = torch.softmax(info["inference"]["logit_scale"] * e @ text.T, dim=-1)
    assert torch.allclose(clip.predict(images), want, atol=1e-5)
