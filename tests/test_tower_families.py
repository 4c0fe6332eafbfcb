"""Tower families (models/families.py): one reduced model of each family, built in code with random weights (the
same open_clip/timm classes as the named models), gets the paper preset's LoRA in both towers with the counts
worked out by hand here, gives raw visual features of the family's width, and trains two toy tasks of `segpcl`.
Unknown towers and targets a tower lacks are one-line errors; hub tokenizers load from local folders only."""

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from fake_tokenizer import write_stand_in_tokenizer

from segpcl.cli import main
from segpcl.config import LoraSection
from segpcl.errors import ConfigError
from segpcl.models.families import lora_plan, predicted_trainable
from segpcl.models.loading import load_clip
from segpcl.models.lora import apply_lora

R = 32  # the paper preset's rank; only B ([out, r]) is trained, on q/k/v and the first MLP layer
TEXT = 1 * (3 * 32 + 4 * 32) * R  # every tiny text tower: one block of width 32
# arch -> (family, visual count worked out from the tiny config, raw visual width)
FAMILIES = {
    "tiny": ("open_clip ViT", 2 * (3 * 64 + 4 * 64) * R, 64),  # 2 blocks: in_proj [192], c_fc [256]
    "tiny-siglip": ("timm ViT", 2 * (3 * 64 + 4 * 64) * R, 64),  # attn.qkv, mlp.fc1; MAP pool, no projection
    "tiny-eva02": ("timm EVA", 2 * (3 * 64 + 2 * 170) * R, 64),  # q/k/v_proj; SwiGLU fc1_g + fc1_x (hidden 170)
    "tiny-pe-core": ("timm EVA", 2 * (3 * 64 + 4 * 64) * R, 64),  # fused qkv, fc1
    "tiny-mobileclip": ("MobileCLIP FastViT", 1 * (3 * 64 + 3 * 64) * R, 128),  # the attention stage's one block
    "tiny-rn": ("ResNet CLIP", 3 * 256 * R, 256),  # the attention pool's q/k/v (no MLP); raw = before c_proj
}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return write_stand_in_tokenizer(tmp_path_factory.mktemp("siglip-tokenizer"))


def _build(arch, tokenizer_dir):
    torch.manual_seed(0)
    return load_clip(arch, tokenizer=str(tokenizer_dir) if arch == "tiny-siglip" else None).eval()


def _trainable(model) -> dict[str, int]:
    out = {"visual": 0, "text": 0}
    for name, p in model.clip.named_parameters():
        if p.requires_grad:
            assert "lora_B" in name, name
            out["visual" if ".visual." in name else "text"] += p.numel()
    return out


@pytest.mark.parametrize("arch", list(FAMILIES))
def test_paper_lora_trains_both_towers_as_the_table_predicts_and_raw_features(arch, tokenizer_dir):
    family, visual, raw_width = FAMILIES[arch]
    model = _build(arch, tokenizer_dir)
    assert model.visual_family.name == family
    cfg = LoraSection()
    plan = lora_plan(model.base, cfg.towers, cfg.targets)
    predicted = predicted_trainable(model.base, plan, cfg.rank, cfg.train_a)
    apply_lora(model, cfg)
    assert _trainable(model) == predicted == {"visual": visual, "text": TEXT}

    size = model.image_size
    x = torch.rand(3, 3, size, size)
    torch.manual_seed(1)
    for name, p in model.clip.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)  # B = 0 would hide a LoRA layer that is not on the forward path
    f, raw = model.image_features_and_raw(x)
    assert raw.shape == (3, raw_width) and model.raw_dim == raw_width
    assert f.shape == (3, model.embed_dim) and model.embed_dim in (32, 64)  # the embed-space prototypes' width
    assert torch.allclose(f, model.image_features(x), atol=1e-5)  # the same forward, split at the raw feature
    text = model.text_features(model.tokenize(["a photo of a red circle.", "a blue star.", "a green ring."]))
    F.cross_entropy(model.logit_scale() * f @ text.T, torch.arange(3)).backward()
    grads = {n: p.grad for n, p in model.clip.named_parameters() if p.requires_grad}
    for tower in ("visual", "text"):  # every LoRA layer of both towers is on the path of the loss
        mine = [g for n, g in grads.items() if (".visual." in n) == (tower == "visual")]
        assert mine and all(g is not None and g.abs().sum() > 0 for g in mine), tower


@pytest.mark.parametrize("arch", list(FAMILIES))
def test_two_toy_tasks_train_for_every_family(arch, tokenizer_dir, tmp_path):
    out = tmp_path / "run"
    args = [
        "train", "--model", arch, "--epochs", "1", "--max-tasks", "2", "--out", str(out), "--quiet",
        "--set", "data.task_sizes=[8,8,8,8,8,8,8,8]", "--set", "data.max_train_per_class=3",
        "--set", "data.max_test_per_class=1", "--set", "method.k_seed=1", "--set", "method.pgd_steps=2",
        "--set", "train.batch_size=16",
    ]  # fmt: skip
    if arch == "tiny-siglip":
        args += ["--tokenizer", str(tokenizer_dir)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tasks_completed"] == 2 and [len(r) for r in metrics["accuracy_matrix"]] == [1, 2]
    assert metrics["task_info"][1]["anchors"] == 8  # k_seed 1 per old class, from the raw-space prototypes
    adapter = json.loads((out / "checkpoints" / "task_01" / "adapter" / "adapter_config.json").read_text())
    assert "visual" in adapter["target_modules"] and "resblocks" in adapter["target_modules"]


def test_unknown_visual_tower_is_one_line_naming_its_layers_and_text_only_is_explicit():
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg, CustomTextCLIP

    from segpcl.models.clip import ClipModel

    torch.manual_seed(0)
    vision = CLIPVisionCfg(timm_model_name="convnext_atto", timm_pool="avg", timm_proj="linear", image_size=32)
    text = CLIPTextCfg(context_length=16, vocab_size=49408, width=32, heads=2, layers=1)
    model = ClipModel(CustomTextCLIP(embed_dim=32, vision_cfg=vision, text_cfg=text), None, 32)
    assert model.visual_family is None and model.raw_dim is None
    with pytest.raises(ConfigError) as err:
        apply_lora(model, LoraSection())
    msg = str(err.value)
    assert "\n" not in msg and "ConvNeXt" in msg and "trunk.stages.N.blocks.N.mlp.fc1" in msg
    assert "lora.towers=[text]" in msg
    apply_lora(model, LoraSection(towers=["text"]))  # asked for: the image tower stays frozen
    assert _trainable(model) == {"visual": 0, "text": TEXT}


def test_unknown_text_tower_is_an_error(tiny_model):
    tiny_model.base.transformer = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(ConfigError, match="text tower .*Sequential.*0 x1"):
        lora_plan(tiny_model.base, ["visual", "text"], ["attn.in_proj"])


def test_resnet_never_trains_one_tower_silently(tokenizer_dir):
    model = _build("tiny-rn", tokenizer_dir)
    plan = lora_plan(model.base, ["visual", "text"], ["attn.in_proj", "mlp.c_fc"])
    assert plan["visual"] == [f"visual.attnpool.{p}_proj" for p in "qkv"]
    with pytest.raises(ConfigError, match=r"visual tower \(ResNet CLIP\) no LoRA layer.*attn.in_proj"):
        lora_plan(model.base, ["visual", "text"], ["mlp.c_fc"])  # the paper's MLP layer alone: none in a ResNet


def test_a_target_a_block_lacks_is_an_error(tokenizer_dir):
    eva = _build("tiny-eva02", tokenizer_dir)
    with pytest.raises(ConfigError, match="'ln_1' has no counterpart in a timm EVA tower"):
        lora_plan(eva.base, ["visual"], ["attn.in_proj", "ln_1"])
    vit = _build("tiny", tokenizer_dir)
    with pytest.raises(ConfigError, match=r"'mlp.fc9' .* matches no layer of visual.transformer.resblocks.0"):
        lora_plan(vit.base, ["visual"], ["attn.in_proj", "mlp.fc9"])


def test_linear_attention_pool_matches_open_clip():
    import copy

    from open_clip.modified_resnet import ModifiedResNet

    from segpcl.models.attention import linearize_attention

    torch.manual_seed(0)
    resnet = ModifiedResNet([1, 1, 1, 1], output_dim=32, heads=4, image_size=64, width=8).eval()  # a 2 x 2 grid
    linear = copy.deepcopy(resnet)
    assert linearize_attention(linear) == 1
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(linear(x), resnet(x), atol=1e-5)
    assert linear.state_dict().keys() == resnet.state_dict().keys()


def test_sigmoid_trained_scale_is_not_capped(tokenizer_dir):
    siglip, clip = _build("tiny-siglip", tokenizer_dir), _build("tiny", tokenizer_dir)
    for model in (siglip, clip):
        model.base.logit_scale.data.fill_(float(torch.log(torch.tensor(120.0))))
    assert siglip.base.logit_bias is not None and clip.base.logit_bias is None
    assert siglip.logit_scale().item() == pytest.approx(120.0) and clip.logit_scale().item() == 100.0


# ----------------------------------------------------------------------------------------- tokenizers offline


def test_hub_tokenizer_from_a_folder_beside_the_weights_or_given(tokenizer_dir, tmp_path):
    from safetensors.torch import save_file

    given = _build("tiny-siglip", tokenizer_dir)
    folder = write_stand_in_tokenizer(tmp_path / "siglip")
    save_file({k: v.contiguous() for k, v in given.open_clip_state_dict().items()}, str(folder / "model.safetensors"))
    beside = load_clip("tiny-siglip", folder / "model.safetensors")
    texts = ["a photo of a red circle.", "A LARGE blue star!"]
    assert torch.equal(beside.tokenize(texts), given.tokenize(texts))
    assert beside.tokenize(texts)[0, :6].tolist() != [2] * 6  # known words, not all <unk>


def test_missing_hub_tokenizer_says_what_to_pass(tmp_path):
    from segpcl.models.tokenizer import load_tokenizer

    text_cfg = {"hf_tokenizer_name": "segpcl-tests/no-such-tokenizer", "context_length": 16}
    with pytest.raises(ConfigError, match="--tokenizer DIR") as err:
        load_tokenizer("ViT-X", text_cfg)
    assert "\n" not in str(err.value) and "never downloads" in str(err.value)
    with pytest.raises(ConfigError, match="holds none of tokenizer.json"):
        load_tokenizer("ViT-X", text_cfg, str(tmp_path))
    with pytest.raises(ConfigError, match="built-in tokenizer"):
        load_clip("tiny", tokenizer=str(tmp_path))


def test_cli_without_the_tokenizer_is_one_error_line(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--model", "tiny-siglip", "--out", str(out), "--set", "data.max_train_per_class=1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--tokenizer DIR" in lines[0]
    assert not out.exists()  # a start that fails removes what it created


# ----------------------------------------------------------------------------------------- standard sizes


@pytest.mark.parametrize(
    "arch, visual, text",
    [  # the README's table: worked out from each architecture's widths, depths and MLP sizes
        ("ViT-B-16-SigLIP", 12 * (3 * 768 + 3072) * R, 12 * (3 * 768 + 3072) * R),
        ("EVA02-B-16", 12 * (3 * 768 + 2 * 2048) * R, 12 * (3 * 512 + 2048) * R),
        ("RN50", 3 * 2048 * R, 12 * (3 * 512 + 2048) * R),
        ("MobileCLIP-S2", 4 * (3 * 640 + 3 * 640) * R, 12 * (3 * 512 + 2048) * R),
        ("PE-Core-B-16", 12 * (3 * 768 + 3072) * R, 24 * (3 * 1024 + 4096) * R),
    ],
)
def test_paper_lora_counts_on_standard_sizes(arch, visual, text):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "lora_counts.py"
    spec = importlib.util.spec_from_file_location("lora_counts", path)
    counts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(counts)
    r = counts.paper_lora_counts(arch)
    assert (r["visual"], r["text"]) == (visual, text)
