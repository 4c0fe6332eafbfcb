"""Benchmarks: a registry of named data sets (see `base`).

Importing the package imports every benchmark module (through `_all`), so that each registers itself
before anyone asks the registry: `from segpcl.benchmarks.base import list_benchmarks` runs this first.
`base` itself imports no benchmark module, so nothing here imports back into its importer.
"""

from . import _all  # noqa: F401
