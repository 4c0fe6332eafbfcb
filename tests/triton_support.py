"""Whether the Triton kernels can run in this test session, and on which device (shared by the kernel tests).

On the CPU they run under TRITON_INTERPRET=1 (set by conftest.py before triton is imported); on a CUDA machine
without the interpreter they run compiled. Without either, the tests marked ``needs_triton`` are skipped.
"""

from __future__ import annotations

import pytest
import torch

import segpcl.kernels as K

_STATUS = K.triton_status()
_CAN_RUN = _STATUS["interpreter"] or _STATUS["cuda"]
DEVICE = "cpu" if _STATUS["interpreter"] or not torch.cuda.is_available() else "cuda"
needs_triton = pytest.mark.skipif(
    not _CAN_RUN, reason=f"Triton kernels cannot run here (set TRITON_INTERPRET=1): {_STATUS['reason']}"
)
needs_compiled_triton = pytest.mark.skipif(
    not torch.cuda.is_available() or not _STATUS["cuda"], reason="needs CUDA and compiled Triton"
)
