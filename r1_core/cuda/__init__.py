"""CUDA kernels of the geometry ops, JIT-built with torch.utils.cpp_extension at first use.

    from r1_core.cuda import load_extension
    ext = load_extension()          # builds once (~1 min), then loads from the cache in ~1 s

Users never call this directly: r1_core.geometry.{points,boxes,fusion} dispatch CUDA tensors
here (r1_core.geometry.dispatch). Sources: r1_core/cuda/csrc/*.cu. The build is cached under
$TORCH_EXTENSIONS_DIR, else ~/.cache/r1/torch_extensions, in a directory named after a hash
of the sources, the torch version and the CUDA version (stale builds are never reused).
Builds target the visible GPU's architecture (TORCH_CUDA_ARCH_LIST overrides). CPU-only
machines never import the toolchain: nothing here runs unless a CUDA tensor arrives, and if
the extension cannot be built the op raises CudaExtensionError (no silent CPU fallback).
"""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from types import ModuleType

CSRC = Path(__file__).parent / "csrc"
SOURCES = ("bindings.cpp", "points.cu", "boxes.cu", "voxel.cu")
_lock = threading.Lock()
_ext: ModuleType | None = None


class CudaExtensionError(RuntimeError):
    """The CUDA extension could not be built or loaded (message says why and where)."""


def build_dir() -> Path:
    """Where the extension is built: a source/torch/CUDA-specific directory under the cache root."""
    import torch

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or str(Path.home() / ".cache" / "r1" / "torch_extensions")
    h = hashlib.sha256()
    for name in SOURCES + ("common.cuh",):
        h.update((CSRC / name).read_bytes())
    h.update(f"{torch.__version__}|{torch.version.cuda}".encode())
    return Path(root) / f"r1_geometry_{h.hexdigest()[:16]}"


def load_extension(verbose: bool = False) -> ModuleType:
    """Build (once) and import the extension; CudaExtensionError on any failure."""
    global _ext
    if _ext is not None:
        return _ext
    with _lock:
        if _ext is not None:
            return _ext
        import torch

        if not torch.cuda.is_available():
            raise CudaExtensionError("r1 CUDA ops: a CUDA tensor was given but torch sees no CUDA device")
        if torch.version.cuda is None:
            raise CudaExtensionError(f"r1 CUDA ops: torch {torch.__version__} is a CPU build; install a CUDA build")
        from torch.utils import cpp_extension

        if cpp_extension.CUDA_HOME is None:
            raise CudaExtensionError("r1 CUDA ops: no CUDA toolkit found (set CUDA_HOME to a directory with bin/nvcc)")
        out = build_dir()
        out.mkdir(parents=True, exist_ok=True)
        try:
            _ext = cpp_extension.load(
                name="r1_geometry_ops",
                sources=[str(CSRC / s) for s in SOURCES],
                build_directory=str(out),
                extra_cflags=["-O3"],
                # no --use_fast_math: index-deciding arithmetic must be IEEE (see csrc/common.cuh)
                extra_cuda_cflags=["-O3", "--expt-relaxed-constexpr", "-lineinfo"],
                verbose=verbose,
            )
        except Exception as e:  # the build's own error text is the useful part: re-raise with it
            raise CudaExtensionError(f"r1 CUDA ops: building the extension in {out} failed: {e}") from e
        return _ext
