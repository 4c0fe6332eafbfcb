"""segpcl's own exception types: errors a user can cause, each with a message that says what to do.

The CLI prints these without a traceback; anything else is a bug and keeps its traceback.
"""


class SegpclError(Exception):
    """Base class of every error a user can cause and fix."""

    def __init__(self, *args):
        # Raised in a DataLoader worker (a bad image with --strict), the error is rebuilt in the main process from
        # "Caught DataError in DataLoader worker process 0. Original Traceback ...": keep the original message only
        if len(args) == 1 and isinstance(args[0], str) and args[0].startswith("Caught "):
            head = f"\n{type(self).__module__}.{type(self).__qualname__}: "
            at = args[0].rfind(head)
            if at >= 0:
                args = (args[0][at + len(head) :].strip(),)
        super().__init__(*args)


class ConfigError(SegpclError):
    """An unknown option, benchmark, method or preset key, or an invalid value."""


class DataError(SegpclError):
    """A data set folder is missing, has the wrong layout, or holds unreadable files (with --strict)."""


class WeightsError(SegpclError):
    """A weights file is missing, corrupt, or belongs to another architecture."""


class TrainingError(SegpclError):
    """Training cannot go on (for example a non-finite loss); finished tasks are kept on disk."""
