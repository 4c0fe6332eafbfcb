"""Test setup. Without CUDA, TRITON_INTERPRET=1 runs the Triton kernels on CPU tensors; it must be set before
anything imports triton (peft and open_clip do), and `import torch` alone does not. HF_HUB_OFFLINE keeps a
missing weight from costing network retries."""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny_model():
    """A randomly initialised tiny CLIP (no weights, no download)."""
    from segpcl.models.loading import load_clip

    torch.manual_seed(0)
    model = load_clip("tiny")
    model.eval()
    return model
