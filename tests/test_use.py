"""Using what a run trained: segpcl.load_run / ContinualCLIP, segpcl eval, predict and export (tiny model,
two reduced toy tasks)."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import segpcl
from segpcl.cli import main
from segpcl.config import resolve_config
from segpcl.engine.trainer import run_training


def _cfg(method="segpcl"):
    return resolve_config(
        "toy",
        overrides={
            "model": {"arch": "tiny"},
            "data": {"max_train_per_class": 3, "max_test_per_class": 2, "task_sizes": [32, 32]},
            "train": {"epochs": 1, "batch_size": 16, "device": "cpu"},
            "method": {"name": method, "k_seed": 1, "pgd_steps": 2},
        },
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("use") / "run"
    return run_training(_cfg(), out_dir=out, progress=False)


def test_public_api_names():
    for name in ["train", "RunConfig", "load_run", "ContinualCLIP", "load_clip", "list_benchmarks",
                 "build_benchmark", "Learner", "build_anchors", "PrototypeMemory", "select_key_edges"]:  # fmt: skip
        assert getattr(segpcl, name) is not None, name
    assert set(segpcl.__all__) <= set(dir(segpcl)) and set(segpcl.__all__[1:]) == set(segpcl._EXPORTS)
    with pytest.raises(AttributeError):
        segpcl.no_such_name  # noqa: B018


def test_load_run_predict_equals_the_trainers_evaluation(run):
    clip = segpcl.load_run(run.run_dir)
    assert clip.task == 2 and len(clip.class_names) == 64
    assert clip.class_names == run.class_names
    result = clip.evaluate()
    assert result["accuracy"] == run.metrics["accuracy_matrix"][-1]
    assert result["seen_accuracy"] == run.metrics["seen_accuracy"][-1]
    first = segpcl.load_run(run.run_dir, task=1).evaluate()
    assert first["accuracy"] == run.metrics["accuracy_matrix"][0]
    images = torch.rand(3, 3, clip.image_size, clip.image_size)
    probs = clip.predict(images)
    assert probs.shape == (3, 64) and torch.allclose(probs.sum(1), torch.ones(3), atol=1e-5)
    assert torch.equal(clip.predict(images), probs)
    clip_only = clip.predict(images, branch="clip")
    assert not torch.allclose(clip_only, probs)
    assert torch.equal(clip.predict(images), probs)  # the branch is restored
    f = clip.embed_images(images)
    t = clip.embed_texts(["a photo of a red circle."])
    assert f.shape == (3, clip.model.embed_dim) and t.shape == (1, clip.model.embed_dim)
    assert torch.allclose(f.norm(dim=1), torch.ones(3), atol=1e-5)


def test_classify_files_and_folders(run, tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    clip = segpcl.load_run(run.run_dir)
    top = clip.classify([folder], top_k=3)
    assert len(top) == 2 and all(len(t) == 3 for t in top)
    assert all(name in clip.class_names for name, _ in top[0])
    assert top[0][0][1] >= top[0][1][1] >= top[0][2][1]
    direct = clip.predict(clip.load_images([folder / "0.png"]))
    # one image alone vs two in a batch: float32 rounding of the batched matmuls differs by ~1e-6 relative
    assert top[0][0][1] == pytest.approx(float(direct.max()), rel=1e-5)


def test_cli_eval_reproduces_metrics_row(run, tmp_path):
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(main, ["eval", str(run.run_dir), "--json", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["accuracy"] == run.metrics["accuracy_matrix"][-1]
    assert data["task"] == 2 and "seen" in result.output
    result = CliRunner().invoke(main, ["eval", str(run.run_dir), "--task", "1", "--json", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["accuracy"] == run.metrics["accuracy_matrix"][0]
    result = CliRunner().invoke(main, ["eval", str(run.run_dir), "--branch", "clip", "--quiet"])
    assert result.exit_code == 0, result.output


def test_cli_errors_are_one_line(run, tmp_path):
    result = CliRunner().invoke(main, ["eval", str(run.run_dir), "--task", "5"])
    assert result.exit_code == 2 and "no checkpoint of task 5" in result.output
    result = CliRunner().invoke(main, ["eval", str(tmp_path)])
    assert result.exit_code == 2 and "not a segpcl run directory" in result.output
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "nope"), str(tmp_path)])
    assert result.exit_code == 2 and "no such run directory" in result.output
    result = CliRunner().invoke(main, ["predict", str(run.run_dir), str(tmp_path / "missing.png")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_cli_predict(run, tmp_path):
    from PIL import Image

    path = tmp_path / "x.png"
    Image.fromarray(np.full((32, 32, 3), 200, dtype=np.uint8)).save(path)
    result = CliRunner().invoke(main, ["predict", str(run.run_dir), str(path), "--top-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    line = json.loads(result.output.strip().splitlines()[-1])
    assert line["image"] == str(path) and len(line["top"]) == 2
    result = CliRunner().invoke(main, ["predict", str(run.run_dir), str(path)])
    assert result.exit_code == 0 and f"{path}: " in result.output


def test_export_loads_in_plain_open_clip_and_peft(run, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file

    from segpcl.engine.device import seed_everything
    from segpcl.models.attention import linearize_attention
    from segpcl.models.tiny import build_tiny

    out = tmp_path / "export"
    result = CliRunner().invoke(main, ["export", str(run.run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ["model.safetensors", "adapter/adapter_config.json", "prototypes.npz", "classes.json", "MODEL_CARD.md"]:
        assert (out / name).is_file(), name
    info = json.loads((out / "classes.json").read_text())
    assert info["class_names"] == run.class_names and info["arch"] == "tiny"
    assert np.load(out / "prototypes.npz")["prototypes"].shape[0] == 64

    clip = segpcl.load_run(run.run_dir)
    images = torch.rand(2, 3, clip.image_size, clip.image_size)
    tokens = clip.model.tokenize(["a photo of a red circle.", "a photo of a blue star."])
    want_img, want_txt = (
        clip.embed_images(images),
        clip.embed_texts(["a photo of a red circle.", "a photo of a blue star."]),
    )
    normalised = clip.model._normalise(images)

    plain, _, _ = build_tiny("tiny")  # plain open_clip CLIP, nn.MultiheadAttention
    plain.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
    plain.eval()
    with torch.no_grad():
        img = torch.nn.functional.normalize(plain.encode_image(normalised), dim=-1)
        txt = torch.nn.functional.normalize(plain.encode_text(tokens), dim=-1)
    assert torch.allclose(img, want_img, atol=1e-5) and torch.allclose(txt, want_txt, atol=1e-5)

    # the adapter in plain peft on a freshly built model with the run's base weights, linearised like segpcl's
    seed_everything(run_cfg_seed := 0)
    fresh, _, _ = build_tiny("tiny")
    linearize_attention(fresh)
    assert run_cfg_seed == clip.config.train.seed
    peft_model = PeftModel.from_pretrained(fresh, str(out / "adapter"))
    peft_model.eval()
    with torch.no_grad():
        img = torch.nn.functional.normalize(peft_model.encode_image(normalised), dim=-1)
        txt = torch.nn.functional.normalize(peft_model.encode_text(tokens), dim=-1)
    assert torch.allclose(img, want_img, atol=1e-5) and torch.allclose(txt, want_txt, atol=1e-5)

    again = CliRunner().invoke(main, ["export", str(run.run_dir), "--out", str(out)])
    assert again.exit_code == 2 and "not an empty folder" in again.output


def test_api_train_with_overrides(tmp_path):
    result = segpcl.train(
        {
            "model": {"arch": "tiny"},
            "data": {"max_train_per_class": 1, "max_test_per_class": 1, "task_sizes": [32, 32]},
            "train": {"epochs": 1, "batch_size": 16, "device": "cpu"},
            "method": {"name": "lora"},
        },
        out_dir=tmp_path / "api",
        progress=False,
    )
    assert result.metrics["tasks_completed"] == 2
    assert segpcl.load_run(result.run_dir).evaluate()["accuracy"] == result.metrics["accuracy_matrix"][-1]


def test_cub200_with_model_tiny_then_predict_without_the_data(tmp_path):
    """--model tiny on a benchmark whose preset names OpenAI weights trains (the preset's weights are not
    inherited); once the data set is gone, load_run / predict / export still work from classes.json."""
    import shutil

    from fakedata import make_split_imagefolder
    from PIL import Image

    data = tmp_path / "data"
    make_split_imagefolder(data / "cub200", [f"{i:03d}.bird_{i}" for i in range(1, 201)])
    out = tmp_path / "run"
    args = ["train", "--bench", "cub200", "--data-root", str(data), "--model", "tiny", "--max-tasks", "1"]
    args += ["--epochs", "1", "--device", "cpu", "--workers", "0", "--quiet", "--out", str(out)]
    args += ["--set", "train.batch_size=16", "--set", "method.k_seed=1", "--set", "method.pgd_steps=1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    names = json.loads((out / "classes.json").read_text())
    assert len(names["class_names"]) == 200 and "bird 1" in names["class_names"]
    shutil.rmtree(data)

    clip = segpcl.load_run(out)
    assert clip.task == 1 and len(clip.class_names) == names["task_sizes"][0]
    assert clip.class_names == names["class_names"][: len(clip.class_names)]
    image = tmp_path / "x.png"
    Image.fromarray(np.full((32, 32, 3), 90, dtype=np.uint8)).save(image)
    result = CliRunner().invoke(main, ["predict", str(out), str(image), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["top"][0]["class"] in clip.class_names
    result = CliRunner().invoke(main, ["export", str(out), "--out", str(tmp_path / "export")])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["eval", str(out)])
    assert result.exit_code == 2 and "--data-root" in result.output
