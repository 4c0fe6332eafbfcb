"""Fused Triton kernels of SeGP-CL's hot loops, each beside the pure-torch reference it must match.

- :func:`pgd_step` / :func:`pgd_step_`: the DPGD update (signed step, L-inf projection, [0, 1] clamp).
- :func:`anchor_kl`: the ACGD loss, batch-mean KL(softmax(teacher / tau) || softmax(student / tau)), with
  its backward.

Every entry point dispatches through :mod:`segpcl.kernels.dispatch`: CUDA tensors with a working Triton run
the kernels, anything else runs the reference; ``SEGPCL_KERNELS=torch|triton|auto`` forces a choice.
:func:`backend` and :func:`triton_status` say what would run. Importing this package never requires Triton.
"""

from segpcl.kernels.anchor_kl import anchor_kl, anchor_kl_reference
from segpcl.kernels.dispatch import backend, triton_status
from segpcl.kernels.pgd_step import pgd_step, pgd_step_, pgd_step_reference

__all__ = [
    "anchor_kl",
    "anchor_kl_reference",
    "backend",
    "pgd_step",
    "pgd_step_",
    "pgd_step_reference",
    "triton_status",
]
