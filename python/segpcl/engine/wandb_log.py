"""`--log wandb` (train.log): the run's losses and accuracies in Weights & Biases, beside metrics.csv and
TensorBoard. wandb is an optional extra (`pip install segpcl[wandb]`), imported only when a run asks for it.

Offline unless the user says otherwise: with no WANDB_MODE set and no login (WANDB_API_KEY, or a netrc entry for
the wandb host), the run logs offline, its files under `<run>/wandb/` (`wandb sync <run>/wandb/offline-run-*`
uploads them later); otherwise wandb decides (WANDB_MODE, the login, `wandb offline`). The wandb run id is kept in
`<run>/wandb/run_id`, so `segpcl train --resume` continues the same wandb run (id=..., resume="allow").
"""

from __future__ import annotations

import netrc
import os
import secrets
from pathlib import Path
from urllib.parse import urlparse

from ..errors import ConfigError
from .nofollow import atomic_write_text, make_dir

RUN_ID_FILE = "run_id"
PROJECT = "segpcl"
"""The wandb project unless WANDB_PROJECT names another."""


def logged_in() -> bool:
    """Whether wandb has credentials to go online: WANDB_API_KEY, or a netrc entry for its host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    for path in (os.environ.get("NETRC"), "~/.netrc", "~/_netrc"):
        file = Path(path).expanduser() if path else None
        if file is not None and file.is_file():
            try:
                if netrc.netrc(file).authenticators(host or ""):
                    return True
            except (netrc.NetrcParseError, OSError):
                pass
    return False


def wandb_mode() -> str | None:
    """`offline` when nobody chose; None lets wandb decide (WANDB_MODE set, or logged in)."""
    return None if os.environ.get("WANDB_MODE") or logged_in() else "offline"


def run_id(folder: Path) -> str:
    """The wandb run id kept in `folder` (a new one written on first use: 8 hex digits, as wandb's own ids)."""
    path = folder / RUN_ID_FILE
    if path.is_file():
        kept = path.read_text(encoding="utf-8").strip()
        if kept:
            return kept
    made = secrets.token_hex(4)
    atomic_write_text(path, made + "\n")
    return made


class WandbLog:
    """One wandb run for a segpcl run: per-step scalars on the `step` axis, per-task ones on the `task` axis."""

    def __init__(self, run_root: Path, config: dict | None = None):
        try:
            import wandb
        except ImportError:
            raise ConfigError(
                "--log wandb needs the wandb package: pip install 'segpcl[wandb]' (or pip install wandb)"
            ) from None
        self.wandb = wandb
        root = Path(run_root)
        folder = make_dir(root / "wandb")  # wandb writes its files there (dir=root); never through a link
        try:
            self.run = wandb.init(
                project=os.environ.get("WANDB_PROJECT") or PROJECT,
                name=root.name,
                dir=str(root),
                id=run_id(folder),
                resume="allow",
                mode=wandb_mode(),
                config=config,
                settings=wandb.Settings(console="off"),  # segpcl's own output stays as it is
            )
        except Exception as err:  # wandb raises its own errors (UsageError, CommError) and OSError
            raise ConfigError(
                f"--log wandb could not start a wandb run ({type(err).__name__}: {err}); run with WANDB_MODE=offline "
                "to log offline, or check `wandb login`"
            ) from err
        self.axis_of: dict[str, str] = {}

    def _log(self, axis: str, value: int, scalars: dict) -> None:
        """Log `scalars` against `axis` (each tag is put on its axis the first time it comes)."""
        for tag in scalars.keys() - self.axis_of.keys():
            self.run.define_metric(tag, step_metric=axis)
            self.axis_of[tag] = axis
        self.run.log({**scalars, axis: value})

    def on_step(self, step: int, scalars: dict) -> None:
        self._log("step", step, scalars)

    def on_task(self, task: int, scalars: dict, matrix: list[list[float]]) -> None:
        n = task + 1
        rows = [[t + 1, *row, *[None] * (n - len(row))] for t, row in enumerate(matrix[:n])]
        table = self.wandb.Table(columns=["after task", *[f"task {j + 1}" for j in range(n)]], data=rows)
        self._log("task", task + 1, {**scalars, "accuracy_matrix": table})

    def close(self) -> None:
        self.run.finish()
