"""Gradient checkpointing (`model.grad_checkpointing`): the same loss and LoRA gradients as without it, switched on
in every tower that has it, and `segpcl bench overhead` reports the peak memory of a step with and without it."""

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from segpcl.cli import main
from segpcl.config import LoraSection, resolve_config
from segpcl.models.loading import load_clip
from segpcl.models.lora import apply_lora


def _loss_and_grads(arch: str, checkpointing: bool):
    torch.manual_seed(0)
    model = apply_lora(load_clip(arch), LoraSection(rank=4))
    model.set_grad_checkpointing(checkpointing)
    model.train()
    torch.manual_seed(1)
    for name, p in model.clip.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    x = torch.rand(4, 3, model.image_size, model.image_size)
    text = model.text_features(model.tokenize(["a red circle.", "a blue star.", "a green ring.", "a cross."]))
    loss = F.cross_entropy(model.logit_scale() * model.image_features(x) @ text.T, torch.arange(4))
    loss.backward()
    return model, loss.detach(), {n: p.grad.clone() for n, p in model.clip.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("arch", ["tiny", "tiny-eva02"])
def test_checkpointing_gives_the_same_loss_and_gradients(arch):
    _, loss0, grads0 = _loss_and_grads(arch, False)
    model, loss1, grads1 = _loss_and_grads(arch, True)
    flags = [m.grad_checkpointing for m in model.base.modules() if hasattr(m, "grad_checkpointing")]
    assert flags and all(flags)  # every tower's transformer recomputes its blocks
    assert torch.allclose(loss0, loss1, atol=1e-6)
    assert grads0.keys() == grads1.keys()
    for name in grads0:
        assert torch.allclose(grads0[name], grads1[name], atol=1e-6), name


def test_config_key_switches_it_on():
    from segpcl.engine.build import build_model

    cfg = resolve_config("toy", overrides={"model": {"arch": "tiny", "grad_checkpointing": True}})
    model = build_model(cfg, torch.device("cpu"))
    assert model.base.transformer.grad_checkpointing and model.base.visual.transformer.grad_checkpointing
    off = build_model(resolve_config("toy", overrides={"model": {"arch": "tiny"}}), torch.device("cpu"))
    assert not off.base.transformer.grad_checkpointing


def test_bench_overhead_reports_peak_memory_with_and_without(tmp_path):
    out = tmp_path / "overhead.json"
    args = [
        "bench", "overhead", "--model", "tiny", "--classes", "6", "--increment", "2", "--templates", "2",
        "--batch-size", "64", "--anchors-per-step", "2", "--k-seed", "2", "--pgd-steps", "1",
        "--images-per-task", "64", "--eval-batch-size", "8", "--repeats", "1", "--warmup", "0",
        "--anchor-repeats", "1", "--threads", "1", "--json", str(out),
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    memory = json.loads(out.read_text())["memory"]
    assert memory["unit"] == "MiB" and "peak RSS" in memory["how"]  # no CUDA here: the CPU measure
    # activations of 64 images through 2 ViT blocks: megabytes, and checkpointing keeps fewer of them
    assert 0 < memory["with"] < memory["without"]
    assert memory["ratio"] == pytest.approx(memory["with"] / memory["without"])
    assert "peak memory of a SeGP-CL training step" in result.output
