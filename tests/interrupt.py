"""A run killed during task 2 (after task 1's checkpoint), then resumed: the shared setup of the resume tests."""

import pytest

import segpcl.engine.run as engine_run
from segpcl.engine.entry import run_training


def cut_in_task_two_then_resume(monkeypatch, cfg, out) -> dict:
    """Train `cfg` into `out`, interrupted at task 2's evaluation; resume it; return the resumed metrics."""
    original, calls = engine_run.evaluate_stream, {"n": 0}

    def crash_in_task_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed during task 2, after task 1's checkpoint
        return original(*args, **kwargs)

    monkeypatch.setattr(engine_run, "evaluate_stream", crash_in_task_two)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, out_dir=out, progress=False)
    monkeypatch.setattr(engine_run, "evaluate_stream", original)
    return run_training(resume=out, progress=False).metrics
