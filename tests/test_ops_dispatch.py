"""Backend dispatch: CPU tensors use the reference, the reference can be forced, and a missing
CUDA toolchain/device is a clear error - never a silent fallback."""
import pytest
import torch

from r1_core.geometry.dispatch import backend, reference_ops, use_kernel


def test_backend_selection(monkeypatch):
    monkeypatch.delenv("R1_OPS_BACKEND", raising=False)
    assert backend() == "auto"
    with reference_ops():
        assert backend() == "reference"
        with reference_ops():
            assert backend() == "reference"
        assert backend() == "reference"
    assert backend() == "auto"
    monkeypatch.setenv("R1_OPS_BACKEND", "reference")
    assert backend() == "reference"
    monkeypatch.setenv("R1_OPS_BACKEND", "triton")
    with pytest.raises(ValueError, match=r"unknown R1_OPS_BACKEND='triton'; choose one of \['auto', 'reference'\]"):
        backend()


def test_cpu_tensors_never_use_the_kernel(monkeypatch):
    monkeypatch.delenv("R1_OPS_BACKEND", raising=False)
    assert not use_kernel(torch.zeros(3))
    assert not use_kernel()


def test_missing_cuda_is_a_clear_error(monkeypatch):
    import r1_core.cuda as rc
    from r1_core.geometry.fusion import FusionConfig, FusionMap

    monkeypatch.setattr(rc, "_ext", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(rc.CudaExtensionError, match="torch sees no CUDA device"):
        rc.load_extension()
    with pytest.raises(RuntimeError, match="torch sees no CUDA device"):
        FusionMap(FusionConfig(device="cuda"))


def test_build_dir_tracks_sources_and_env(monkeypatch, tmp_path):
    import r1_core.cuda as rc

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    d = rc.build_dir()
    assert d.parent == tmp_path and d.name.startswith("r1_geometry_")
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    assert ".cache/r1/torch_extensions" in str(rc.build_dir())
    assert all((rc.CSRC / s).is_file() for s in rc.SOURCES)
