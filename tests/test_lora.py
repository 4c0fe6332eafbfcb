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


def _lora_layers(model):
    from peft.tuners.lora import LoraLayer

    return {n for n, m in model.clip.named_modules() if isinstance(m, LoraLayer)}


def test_default_lora_wraps_only_the_in_projection_and_first_mlp_layer(tiny_model):
    cfg = LoraSection()
    assert cfg.targets == ["attn.in_proj", "mlp.c_fc"] and not cfg.train_a and cfg.rank == 32
    apply_lora(tiny_model, cfg)
    wrapped = _lora_layers(tiny_model)
    base = tiny_model.base
    blocks = [f"visual.transformer.resblocks.{i}" for i in range(len(base.visual.transformer.resblocks))]
    blocks += [f"transformer.resblocks.{i}" for i in range(len(base.transformer.resblocks))]
    want = {f"base_model.model.{b}.{t}" for b in blocks for t in ("attn.in_proj", "mlp.c_fc")}
    assert wrapped == want
    trainable = [n for n, p in tiny_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_B" in n for n in trainable)
    assert len(trainable) == len(want)
    assert len(lora_parameters(tiny_model)) == len(want)
    assert any("lora_A" in n for n, p in tiny_model.named_parameters() if not p.requires_grad)


def test_train_a_true_trains_both_factors(tiny_model):
    apply_lora(tiny_model, LoraSection(rank=4, train_a=True))
    trainable = [n for n, p in tiny_model.named_parameters() if p.requires_grad]
    assert {n.split("lora_")[1].split(".")[0] for n in trainable} == {"A", "B"}


def _snapshot(model, keep):
    return {n: p.detach().clone() for n, p in model.named_parameters() if keep(n)}


def test_lora_steps_leave_a_and_every_base_weight_bit_exact(tiny_model):
    # peft's MultiheadAttention layer merged and unmerged its delta into the base weights on every forward,
    # which drifted them by float rounding (the inexact resume); on Linear layers the base weights never move
    apply_lora(tiny_model, LoraSection(rank=4))
    base_before = _snapshot(tiny_model, lambda n: "lora_" not in n)
    a_before = _snapshot(tiny_model, lambda n: "lora_A" in n)
    b_before = _snapshot(tiny_model, lambda n: "lora_B" in n)
    assert base_before and a_before and b_before
    opt = torch.optim.SGD([p for p in tiny_model.parameters() if p.requires_grad], lr=0.5, momentum=0.9)
    torch.manual_seed(3)
    x = torch.rand(4, 3, 32, 32)
    tokens = tiny_model.tokenize(["a red circle.", "a blue star.", "a green square.", "a cat."])
    tiny_model.train()
    for _ in range(4):
        logits = 30 * tiny_model.image_features(x) @ tiny_model.text_features(tokens).T
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([1, 2, 3, 0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = dict(tiny_model.named_parameters())
    for n, p in base_before.items():
        assert torch.equal(after[n], p), f"base weight {n} changed"
    for n, p in a_before.items():
        assert torch.equal(after[n], p), f"lora_A {n} changed"
        assert after[n].grad is None
    assert any(not torch.equal(after[n], p) for n, p in b_before.items())  # B did train
    # the frozen teacher merges the delta into a copy: the live model's base weights stay as they were
    frozen_teacher(tiny_model)
    for n, p in base_before.items():
        assert torch.equal(dict(tiny_model.named_parameters())[n], p)


def test_vit_b_16_paper_lora_has_exactly_3440640_trainable_parameters():
    import open_clip

    from segpcl.models.clip import ClipModel

    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-16", pretrained=None)
    model = ClipModel(clip, open_clip.get_tokenizer("ViT-B-16"), 224)
    apply_lora(model, LoraSection())
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # independent count: rank 32 B factors [out, 32] of in_proj (3 w) and c_fc (4 w), 12 blocks per tower
    r = 32
    want = 12 * r * (3 * 768 + 4 * 768) + 12 * r * (3 * 512 + 4 * 512)
    assert want == 3_440_640
    assert n == want
    assert sum(p.numel() for p in lora_parameters(model)) == want


def test_control_peft_multihead_attention_layer_drifts_base_weights():
    # the cause of the inexact resume, shown with the same check as above: peft's own MultiheadAttention
    # layer (LoRA on open_clip's unconverted `attn`) merges and unmerges its delta on every forward, and the
    # base in_proj/out_proj weights come back changed by float rounding (peft 0.21)
    from peft import LoraConfig, get_peft_model

    from segpcl.models.tiny import build_tiny

    torch.manual_seed(0)
    clip, _, _ = build_tiny("tiny")  # plain open_clip: nn.MultiheadAttention
    model = get_peft_model(clip, LoraConfig(r=4, lora_alpha=4, target_modules=r".*visual.*resblocks\.\d+\.attn"))
    base_before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    for n, p in model.named_parameters():
        if "lora_" in n:
            p.data.normal_(0, 0.2)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    x = torch.rand(4, 3, 32, 32)
    for _ in range(4):
        loss = model.base_model.model.encode_image(x).square().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = dict(model.named_parameters())
    drifted = [n for n, p in base_before.items() if not torch.equal(after[n], p)]
    assert drifted and all(".attn." in n for n in drifted)


def test_switching_lora_off_keeps_a_frozen(tiny_model):
    # peft's disable_adapter marks every adapter parameter trainable when it ends; SeGP-CL's rooted TSGR reads
    # the zero-shot text that way at every task, which trained A (train_a: false) in the TSGR rows
    from segpcl.models.lora import lora_switched_off

    apply_lora(tiny_model, LoraSection(rank=4))
    before = {n: p.requires_grad for n, p in tiny_model.named_parameters()}
    with lora_switched_off(tiny_model):
        tiny_model.text_features(tiny_model.tokenize(["a red circle."]))
    assert {n: p.requires_grad for n, p in tiny_model.named_parameters()} == before
    assert not any(p.requires_grad for n, p in tiny_model.named_parameters() if "lora_A" in n)


def test_segpcl_trains_only_b_after_its_task_hooks(tiny_model):
    from segpcl.config import MethodSection
    from segpcl.method.learner import Learner

    apply_lora(tiny_model, LoraSection(rank=4))
    names = [f"class {i}" for i in range(6)]
    lrn = Learner(tiny_model, names, ["a photo of a {}."], [3, 3], MethodSection(name="segpcl"), text_has_lora=True)
    images, labels = torch.rand(6, 3, 32, 32), torch.arange(6)
    lrn.before_task(0, [(images[:3], labels[:3])])
    lrn.after_task(0, [(images[:3], labels[:3])])
    lrn.before_task(1, [(images[3:], labels[3:])])
    assert lrn.tsgr is not None  # the rooted TSGR (zero-shot text) was built
    params = {id(p) for p in lrn.trainable_parameters()}
    assert params == {id(p) for n, p in tiny_model.named_parameters() if "lora_B" in n}
