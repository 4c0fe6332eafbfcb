"""Imports every benchmark module so that each registers itself."""

from . import toy  # noqa: F401
