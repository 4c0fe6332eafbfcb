"""Test setup: TRITON_INTERPRET and HF_HUB_OFFLINE must be set before anything imports triton or the hub."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

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
