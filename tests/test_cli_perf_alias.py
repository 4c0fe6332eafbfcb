"""`segpcl perf` and its older name `segpcl bench`: the same commands, the same options."""

from __future__ import annotations

from click.testing import CliRunner

from segpcl.cli import main


def test_perf_and_bench_overhead_are_the_same_command():
    runner = CliRunner()
    perf = runner.invoke(main, ["perf", "overhead", "--help"])
    bench = runner.invoke(main, ["bench", "overhead", "--help"])
    assert perf.exit_code == 0, perf.output
    assert bench.exit_code == 0, bench.output
    assert "Usage: main perf overhead [OPTIONS]" in perf.output
    assert perf.output.replace("main perf", "main bench") == bench.output
    assert "--sweep-anchors" in perf.output


def test_help_lists_bench_as_alias_of_perf():
    out = CliRunner().invoke(main, ["--help"]).output
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.split()}
    assert "Alias of perf" in lines["bench"]
    assert "Performance measurements" in lines["perf"]
