"""Weight files in every accepted format round-trip; wrong, missing and corrupt files give WeightsError."""

import pytest
import torch

from segpcl.errors import ConfigError, WeightsError
from segpcl.models.loading import load_clip
from segpcl.models.text import TextEmbeddingCache


def _same_weights(a, b):
    sa, sb = a.clip.state_dict(), b.clip.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def source():
    torch.manual_seed(1)
    return load_clip("tiny")


def test_state_dict_file(tmp_path, source):
    torch.save(source.open_clip_state_dict(), tmp_path / "w.bin")
    assert _same_weights(load_clip("tiny", tmp_path / "w.bin"), source)


def test_safetensors_file(tmp_path, source):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in source.open_clip_state_dict().items()}, str(tmp_path / "w.safetensors"))
    assert _same_weights(load_clip("tiny", tmp_path / "w.safetensors"), source)


def test_open_clip_training_checkpoint(tmp_path, source):
    sd = {f"module.{k}": v for k, v in source.open_clip_state_dict().items()}
    torch.save({"epoch": 3, "state_dict": sd}, tmp_path / "epoch_3.pt")
    assert _same_weights(load_clip("tiny", tmp_path / "epoch_3.pt"), source)


def test_torchscript_archive_needs_quickgelu(tmp_path, source):
    class Holder(torch.nn.Module):
        def __init__(self, sd):
            super().__init__()
            for i, v in enumerate(sd.values()):
                self.register_buffer(f"b{i}", v)

        def forward(self, x):
            return x

    torch.jit.save(torch.jit.script(Holder(source.open_clip_state_dict())), str(tmp_path / "openai.pt"))
    with pytest.raises(WeightsError, match="quickgelu"):
        load_clip("tiny", tmp_path / "openai.pt")


def test_openai_style_keys_ask_for_quickgelu(tmp_path, source):
    sd = dict(source.open_clip_state_dict(), input_resolution=torch.tensor(32))
    torch.save(sd, tmp_path / "ViT-B-16.pt")
    with pytest.raises(WeightsError, match="QuickGELU"):
        load_clip("tiny", tmp_path / "ViT-B-16.pt")


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_clip("tiny", tmp_path / "nope.safetensors")


def test_corrupt_file(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match="could not read"):
        load_clip("tiny", tmp_path / "bad.pt")


def test_other_architecture_names_mismatching_keys(tmp_path):
    from segpcl.models.tiny import build_tiny

    torch.save(build_tiny("toy-clip")[0].state_dict(), tmp_path / "other.bin")
    with pytest.raises(WeightsError, match="do not fit architecture 'tiny'.*shape mismatches"):
        load_clip("tiny", tmp_path / "other.bin")


def test_unknown_architecture():
    with pytest.raises(ConfigError, match="unknown architecture"):
        load_clip("ViT-Q-99")


def test_text_embeddings_are_template_means(tiny_model):
    names, templates = ["red circle", "blue square"], ["a {}.", "a photo of a {}."]
    cache = TextEmbeddingCache(tiny_model, names, templates)
    assert cache.embeddings.shape == (2, tiny_model.embed_dim)
    with torch.no_grad():
        per = tiny_model.text_features(tiny_model.tokenize(["a red circle.", "a photo of a red circle."]))
    expected = torch.nn.functional.normalize(per.mean(0), dim=0)
    assert torch.allclose(cache.embeddings[0], expected, atol=1e-6)
    assert torch.allclose(cache.embeddings.norm(dim=1), torch.ones(2), atol=1e-5)


def test_image_features_are_normalised(tiny_model):
    f = tiny_model.image_features(torch.rand(3, 3, 32, 32))
    assert f.shape == (3, tiny_model.embed_dim)
    assert torch.allclose(f.norm(dim=1), torch.ones(3), atol=1e-5)
