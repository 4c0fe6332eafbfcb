"""The user cache folder of segpcl (toy CLIP weights, rendered toy data): $SEGPCL_CACHE, else
$XDG_CACHE_HOME/segpcl, else ~/.cache/segpcl."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("SEGPCL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "segpcl"
    )
    return Path(root)
