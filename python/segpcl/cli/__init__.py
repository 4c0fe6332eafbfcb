"""The `segpcl` command line: parse options, build a typed config, call the library. No logic of its own.

One module per command group: info, data (benches, data check), train (train, ablate), tune, report, perf (perf and
its alias bench), use (eval, predict, export), toy (toy pretrain); options holds what several of them share."""

from __future__ import annotations

import logging
import sys

import click

from .. import __version__
from ..errors import SegpclError
from . import data, info, perf, report, toy, train, tune, use
from .options import _config_from_options as _config_from_options  # importable from segpcl.cli, as before
from .train import _without_nproc as _without_nproc


class _Group(click.Group):
    """Prints segpcl's own errors and bad options as one line without a traceback; exit status 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SegpclError as exc:
            click.echo(f"error: {' '.join(str(exc).split())}", err=True)
            sys.exit(2)
        except click.UsageError as exc:
            name = exc.ctx.command_path if exc.ctx is not None else "segpcl"
            click.echo(f"error: {' '.join(exc.format_message().split())} (see `{name} --help`)", err=True)
            sys.exit(2)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (click's test runner swaps it per call)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _quiet_library_logging() -> None:
    """Libraries' log lines (open_clip's `ERROR:root:` on a missing tag) would precede segpcl's own error;
    segpcl's warnings still print, as `warning: ...`."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())
    ours = logging.getLogger("segpcl")
    if not any(getattr(h, "_segpcl_cli", False) for h in ours.handlers):
        handler = _StderrHandler()
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        handler._segpcl_cli = True
        ours.addHandler(handler)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="segpcl")
def main():
    """segpcl: exemplar-free continual learning of CLIP models with SeGP-CL."""
    _quiet_library_logging()


for _command in (
    info.info,
    data.benches,
    data.data,
    train.train,
    train.ablate,
    tune.tune,
    report.report,
    perf.perf,
    perf.bench,
    use.eval_command,
    use.predict_command,
    use.export_command,
    toy.toy_group,
):
    main.add_command(_command)
