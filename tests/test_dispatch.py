"""The kernel dispatch: SEGPCL_KERNELS, backend(), triton_status(), and the package without Triton."""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import segpcl.kernels as K
from segpcl.errors import ConfigError

A = importlib.import_module("segpcl.kernels.anchor_kl")
P = importlib.import_module("segpcl.kernels.pgd_step")

_HAS_TRITON = importlib.util.find_spec("triton") is not None
_PYTHON_DIR = str(Path(__file__).resolve().parents[1] / "python")


def _tiny():
    x = torch.rand(2, 3, 4, 4)
    return x, torch.zeros_like(x), torch.randn_like(x), torch.randn(3, 5), torch.randn(3, 5)


def _forbid_triton(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the Triton path was taken")

    monkeypatch.setattr(P, "pgd_step_triton", boom)
    monkeypatch.setattr(P, "pgd_step_triton_", boom)
    monkeypatch.setattr(A, "anchor_kl_triton", boom)


def test_forced_torch_uses_reference(monkeypatch):
    monkeypatch.setenv("SEGPCL_KERNELS", "torch")
    assert K.backend("cpu") == "torch"
    assert K.backend("cuda") == "torch"
    _forbid_triton(monkeypatch)
    x, d, g, s, t = _tiny()
    torch.testing.assert_close(K.pgd_step(x, d, g, 0.03, 0.01), K.pgd_step_reference(x, d, g, 0.03, 0.01))
    K.pgd_step_(x, d, g, 0.03, 0.01)
    torch.testing.assert_close(K.anchor_kl(s, t), K.anchor_kl_reference(s, t))


@pytest.mark.parametrize("value", ["", "auto", "AUTO", " auto "])
def test_auto_on_cpu_uses_reference(monkeypatch, value):
    monkeypatch.setenv("SEGPCL_KERNELS", value)
    assert K.backend("cpu") == "torch"
    assert K.backend(torch.zeros(1)) == "torch"
    _forbid_triton(monkeypatch)
    x, d, g, s, t = _tiny()
    K.pgd_step(x, d, g, 0.03, 0.01)
    K.anchor_kl(s, t)


def test_unknown_mode_is_a_config_error(monkeypatch):
    monkeypatch.setenv("SEGPCL_KERNELS", "cuda")
    with pytest.raises(ConfigError, match="SEGPCL_KERNELS='cuda' is not a kernel backend"):
        K.backend("cpu")
    x, d, g, s, t = _tiny()
    with pytest.raises(ConfigError):
        K.anchor_kl(s, t)
    assert K.triton_status()["backend"].startswith("error:")


def test_forced_triton_on_cpu(monkeypatch):
    monkeypatch.setenv("SEGPCL_KERNELS", "triton")
    status = K.triton_status()
    if status["interpreter"]:
        assert K.backend("cpu") == "triton-interpreter"
    else:
        with pytest.raises(ConfigError, match="TRITON_INTERPRET=1"):
            K.backend("cpu")


def test_triton_status_keys():
    status = K.triton_status()
    assert set(status) == {"version", "importable", "cuda", "interpreter", "mode", "backend", "reason"}
    assert status["importable"] == _HAS_TRITON
    assert (status["version"] is None) == (not _HAS_TRITON)
    assert status["cuda"] == (status["reason"] is None)
    if not torch.cuda.is_available():
        assert status["cuda"] is False and status["reason"]


def _run(code: str, env_update: dict[str, str | None]) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    for key, value in env_update.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env["PYTHONPATH"] = _PYTHON_DIR + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.skipif(not _HAS_TRITON, reason="triton is not installed")
def test_forced_triton_without_interpreter_or_cuda_raises_config_error():
    code = """
        import torch
        import segpcl.kernels as K
        from segpcl.errors import ConfigError
        assert K.triton_status()["interpreter"] is False
        x = torch.rand(2, 3)
        for call in (lambda: K.pgd_step(x, x * 0, x, 0.1, 0.01), lambda: K.anchor_kl(x, x)):
            try:
                call()
            except ConfigError as exc:
                assert "SEGPCL_KERNELS=triton" in str(exc) and "TRITON_INTERPRET=1" in str(exc), exc
            else:
                raise SystemExit("no ConfigError")
        print("OK")
    """
    proc = _run(code, {"SEGPCL_KERNELS": "triton", "TRITON_INTERPRET": None, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("OK")


def test_package_works_without_triton():
    code = """
        import sys
        sys.modules["triton"] = None  # makes "import triton" raise ImportError
        sys.modules["triton.language"] = None
        import os
        import torch
        import segpcl.kernels as K
        from segpcl.errors import ConfigError
        status = K.triton_status()
        assert status["importable"] is False and status["version"] is None, status
        assert "not importable" in status["reason"], status
        assert K.backend("cpu") == "torch" and K.backend("cuda") == "torch"
        x = torch.rand(2, 3, 4)
        d = K.pgd_step(x, torch.zeros_like(x), torch.randn_like(x), 0.1, 0.05)
        assert d.shape == x.shape
        s = torch.randn(3, 5, requires_grad=True)
        K.anchor_kl(s, torch.randn(3, 5)).backward()
        assert s.grad.shape == (3, 5)
        os.environ["SEGPCL_KERNELS"] = "triton"
        try:
            K.anchor_kl(s, s.detach())
        except ConfigError as exc:
            assert "triton is not importable" in str(exc), exc
        else:
            raise SystemExit("no ConfigError")
        print("OK")
    """
    proc = _run(code, {"SEGPCL_KERNELS": None})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("OK")
