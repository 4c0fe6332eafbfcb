"""segpcl's own exception types: errors a user can cause, each with a message that says what to do.

The CLI prints these without a traceback; anything else is a bug and keeps its traceback.
"""


class SegpclError(Exception):
    """Base class of every error a user can cause and fix."""


class ConfigError(SegpclError):
    """An unknown option, benchmark, method or preset key, or an invalid value."""


class DataError(SegpclError):
    """A data set folder is missing, has the wrong layout, or holds unreadable files (with --strict)."""


class WeightsError(SegpclError):
    """A weights file is missing, corrupt, or belongs to another architecture."""


class TrainingError(SegpclError):
    """Training cannot go on (for example a non-finite loss); finished tasks are kept on disk."""
