"""The method interface: the README's complete minimal method runs, and equals the built-in `lora` row."""

import re
from pathlib import Path

import pytest

from segpcl.config import resolve_config
from segpcl.engine.entry import run_training
from segpcl.errors import ConfigError
from segpcl.method.base import ContinualMethod
from segpcl.method.registry import method_class, method_names, register_method

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_example() -> str:
    section = README.read_text().split("## Extending", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the Extending section holds one python example"
    return blocks[0]


def _reduced(method: str):
    return resolve_config(
        "toy",
        overrides={
            "model": {"arch": "tiny"},
            "data": {"max_train_per_class": 3, "max_test_per_class": 2, "task_sizes": [32, 16, 16]},
            "train": {"epochs": 1, "batch_size": 16},
            "method": {"name": method},
        },
    )


@pytest.fixture(scope="module")
def readme_namespace(tmp_path_factory):
    """The README block, run as a user would (it trains two toy tasks into ./runs)."""
    code = _readme_example()
    assert len(code.strip().splitlines()) <= 40
    cwd = Path.cwd()
    work = tmp_path_factory.mktemp("readme")
    import os

    os.chdir(work)
    try:
        namespace: dict = {}
        exec(compile(code, str(README), "exec"), namespace)
    finally:
        os.chdir(cwd)
    return namespace


def test_readme_method_trains_two_tasks(readme_namespace):
    metrics = readme_namespace["result"].metrics
    assert metrics["method"] == "my-lora" and metrics["tasks_completed"] == 2
    assert len(metrics["accuracy_matrix"]) == 2


def test_readme_method_is_the_lora_row_bit_for_bit(readme_namespace, tmp_path):
    assert "my-lora" in method_names() and method_class("my-lora").__name__ == "MyLoRA"
    mine = run_training(_reduced("my-lora"), out_dir=tmp_path / "mine", progress=False).metrics
    builtin = run_training(_reduced("lora"), out_dir=tmp_path / "builtin", progress=False).metrics
    assert mine["accuracy_matrix"] == builtin["accuracy_matrix"]
    assert mine["task_info"][1]["mean_ce"] == builtin["task_info"][1]["mean_ce"]


def test_registry_refuses_what_is_not_a_method():
    with pytest.raises(TypeError):
        register_method("not-a-method")(object)
    with pytest.raises(ValueError):
        register_method("segpcl")(type("Clash", (ContinualMethod,), {}))
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        method_class("nope")


def test_a_method_without_training_loss_says_so(tmp_path):
    register_method("no-loss")(type("NoLoss", (ContinualMethod,), {}))
    with pytest.raises(NotImplementedError, match="defines no training_loss"):
        run_training(_reduced("no-loss"), out_dir=tmp_path / "run", progress=False)


def test_peer_names_listed_for_the_cli_are_the_registered_peers():
    from segpcl.method.registry import PEERS
    from segpcl.method.rows import PEER_METHODS

    assert set(PEERS) == set(PEER_METHODS)
