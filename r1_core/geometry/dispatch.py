"""Which implementation an op runs: the CUDA kernel (CUDA tensors) or the torch reference.

    from r1_core.geometry.dispatch import reference_ops
    with reference_ops():          # force the torch reference, also for CUDA tensors
        idx = furthest_point_sample(xyz_cuda, 2048)

Rules: a CPU tensor always runs the reference. A CUDA tensor runs the kernel from
`r1_core.cuda` (JIT-built once); if that extension cannot be built the op raises
`r1_core.cuda.CudaExtensionError` - it never falls back silently. The reference can be
forced on CUDA for comparisons and benchmarks with `reference_ops()` or the environment
variable `R1_OPS_BACKEND=reference` (`auto`, the default, picks by device).
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator

import torch

BACKENDS = ("auto", "reference")
_local = threading.local()


def backend() -> str:
    """The active backend name: the innermost `reference_ops()` wins, then R1_OPS_BACKEND."""
    if getattr(_local, "forced", 0) > 0:
        return "reference"
    name = os.environ.get("R1_OPS_BACKEND", "auto").strip().lower() or "auto"
    if name not in BACKENDS:
        raise ValueError(f"unknown R1_OPS_BACKEND={name!r}; choose one of {list(BACKENDS)}")
    return name


@contextlib.contextmanager
def reference_ops() -> Iterator[None]:
    """Run the torch reference for every op inside the block, whatever the device."""
    _local.forced = getattr(_local, "forced", 0) + 1
    try:
        yield
    finally:
        _local.forced -= 1


def use_kernel(*tensors: torch.Tensor) -> bool:
    """True when the CUDA kernel should run: the tensors are on CUDA and the reference is not forced."""
    if not tensors or tensors[0].device.type != "cuda":
        return False
    return backend() == "auto"
