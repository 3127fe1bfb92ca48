"""GPU memory: an optional cap (to rehearse a smaller card on a big one) and the peak a run used.

``AIDETECT_GPU_MEMORY_GB=15`` (GiB) makes every process that imports the package cap PyTorch's
CUDA allocator at that size, through ``torch.cuda.set_per_process_memory_fraction``, as soon as
the process first uses CUDA (it never initialises CUDA itself, so the papermill runner holds no
GPU memory). An allocation beyond the cap raises ``torch.OutOfMemoryError`` as on a card of that
size. The CUDA context itself (a few hundred MB) is outside the cap, as it is outside what a
smaller card leaves to PyTorch.
"""
from __future__ import annotations

import os

CAP_ENV = "AIDETECT_GPU_MEMORY_GB"
GIB = 2 ** 30


def memory_cap_gib() -> float | None:
    value = os.environ.get(CAP_ENV)
    return float(value) if value else None


def cap_memory_at_cuda_init() -> None:
    """Apply :data:`CAP_ENV`'s cap when this process initialises CUDA (at once if it already has)."""
    import torch
    cap = memory_cap_gib()
    if cap is None:
        return

    def _cap():
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap * GIB / total), 0)

    torch.cuda._lazy_call(_cap)   # torch's own hook for work that must wait for CUDA's initialisation


def peak_memory() -> dict:
    """Peak GPU memory of this process so far, in GiB: allocated by tensors and reserved by
    PyTorch's caching allocator (what the card must hold), and the cap if one is set. Empty
    when CUDA was not used."""
    import torch
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return {}
    return {"gpu_peak_allocated_gib": round(torch.cuda.max_memory_allocated() / GIB, 3),
            "gpu_peak_reserved_gib": round(torch.cuda.max_memory_reserved() / GIB, 3),
            "gpu_memory_cap_gib": memory_cap_gib()}
