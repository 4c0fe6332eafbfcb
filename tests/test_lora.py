"""LoRA via peft on both towers: changes outputs, only LoRA parameters get gradients, adapters round-trip."""

import pytest
import torch

from segpcl.config import LoraSection
from segpcl.errors import ConfigError
from segpcl.models.lora import apply_lora, frozen_teacher, load_adapter, lora_parameters, save_adapter


def _perturb_lora(model):
    torch.manual_seed(5)
    for p in lora_parameters(model):
        p.data.normal_(0, 0.2)


def test_lora_changes_both_towers_and_only_lora_gets_gradients(tiny_model):
    x = torch.rand(2, 3, 32, 32)
    tokens = tiny_model.tokenize(["a red circle.", "a blue star."])
    with torch.no_grad():
        img0, txt0 = tiny_model.image_features(x), tiny_model.text_features(tokens)
    apply_lora(tiny_model, LoraSection(rank=4))
    with torch.no_grad():  # fresh LoRA (B = 0) is the identity
        assert torch.allclose(tiny_model.image_features(x), img0, atol=1e-6)
    _perturb_lora(tiny_model)
    img1, txt1 = tiny_model.image_features(x), tiny_model.text_features(tokens)
    assert (img1 - img0).abs().max() > 1e-3
    assert (txt1 - txt0).abs().max() > 1e-3
    (img1.sum() + txt1.sum()).backward()
    with_grad = [n for n, p in tiny_model.named_parameters() if p.grad is not None]
    assert with_grad and all("lora_" in n for n in with_grad)
    assert any("visual" in n and ".attn." in n for n in with_grad)
    assert any("visual" not in n and ".attn." in n for n in with_grad)


def test_visual_only_leaves_text_unchanged(tiny_model):
    tokens = tiny_model.tokenize(["a red circle."])
    with torch.no_grad():
        txt0 = tiny_model.text_features(tokens)
    apply_lora(tiny_model, LoraSection(rank=4, towers=["visual"]))
    _perturb_lora(tiny_model)
    with torch.no_grad():
        assert torch.allclose(tiny_model.text_features(tokens), txt0)


def test_whole_attention_target_is_refused(tiny_model):
    # `attn` named peft's MultiheadAttention layer; segpcl's attention is two Linear layers
    with pytest.raises(ConfigError, match="attn.in_proj"):
        apply_lora(tiny_model, LoraSection(targets=["attn"]))
    with pytest.raises(ConfigError, match="attn.in_proj"):
        apply_lora(tiny_model, LoraSection(targets=["attn", "mlp.c_fc"]))


def test_out_proj_alone_is_no_longer_a_no_op(tiny_model):
    # with nn.MultiheadAttention, LoRA on out_proj alone was silently ignored; on the Linear attention it acts
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        img0 = tiny_model.image_features(x)
    apply_lora(tiny_model, LoraSection(rank=4, targets=["attn.out_proj"]))
    _perturb_lora(tiny_model)
    with torch.no_grad():
        assert (tiny_model.image_features(x) - img0).abs().max() > 1e-3


def test_adapter_round_trip_and_merged_teacher(tiny_model, tmp_path):
    from segpcl.models.loading import load_clip

    apply_lora(tiny_model, LoraSection(rank=4))
    _perturb_lora(tiny_model)
    save_adapter(tiny_model, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    torch.manual_seed(0)
    other = apply_lora(load_clip("tiny").eval(), LoraSection(rank=4))
    load_adapter(other, tmp_path / "adapter")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        want = tiny_model.image_features(x)
        assert torch.allclose(other.image_features(x), want, atol=1e-6)
        teacher = frozen_teacher(tiny_model)
        assert torch.allclose(teacher.image_features(x), want, atol=1e-5)
    assert not any(p.requires_grad for p in teacher.parameters())
    assert not any("lora_" in n for n, _ in teacher.named_parameters())
