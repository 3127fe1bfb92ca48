"""GPU facts the package decides with: the precision to compute in, an optional memory cap (to
rehearse a smaller card on a big one), and the peak memory a run used.

Precision (:func:`autocast_precision`, :func:`compute_dtype`): bf16 only where the GPU computes
in bf16 natively (CUDA compute capability 8.0, Ampere, or newer), fp16 on older GPUs such as
Colab's T4 (7.5), full float32 on a CPU. ``torch.cuda.is_bf16_supported()`` is not the test: it
says True on a T4, where PyTorch emulates bf16 slowly and cuDNN has no bf16 convolutions.

``AIDETECT_GPU_MEMORY_GB=15`` (GiB) makes every process that imports the package cap PyTorch's
CUDA allocator at that size, through ``torch.cuda.set_per_process_memory_fraction``, as soon as
the process first uses CUDA (it never initialises CUDA itself, so the papermill runner holds no
GPU memory). An allocation beyond the cap raises ``torch.OutOfMemoryError`` as on a card of that
size. The CUDA context itself (a few hundred MB) is outside the cap, as it is outside what a
smaller card leaves to PyTorch.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

CAP_ENV = "AIDETECT_GPU_MEMORY_GB"
GIB = 2 ** 30
NATIVE_BF16 = (8, 0)      # the first CUDA compute capability (Ampere) with bf16 tensor cores


def autocast_precision(device=None, capability: tuple[int, int] | None = None) -> str:
    """The mixed precision to train and score in: ``"bf16"``, ``"fp16"`` or ``"no"`` (float32).

    "bf16" on a CUDA GPU of compute capability 8.0 or newer (A100, H100, L4, RTX 30xx...): as
    fast as fp16 and with float32's range, so nothing overflows. "fp16" on older CUDA GPUs (a
    T4 is 7.5): bf16 would be emulated there; fp16's narrow range needs a gradient scaler, which
    Accelerate (``mixed_precision="fp16"``) and ``Trainer`` (``fp16=True``) add themselves.
    "no" on a CPU: full float32, as every published CPU result was computed.

    ``device``: where the model runs (default: the GPU when there is one, else the CPU).
    ``capability``: the (major, minor) CUDA compute capability to decide for, instead of
    asking the GPU; it lets the rule be checked for a T4 on a machine without one.
    """
    import torch
    if device is not None and torch.device(device).type != "cuda":
        return "no"
    if capability is None:
        if not torch.cuda.is_available():
            return "no"
        capability = torch.cuda.get_device_capability(device)
    return "bf16" if tuple(capability) >= NATIVE_BF16 else "fp16"


def compute_dtype(device=None, capability: tuple[int, int] | None = None):
    """:func:`autocast_precision` as a torch dtype: what a GPU loads a model's weights in and
    computes 4-bit layers in (``torch.bfloat16`` or ``torch.float16``), ``torch.float32`` on a CPU."""
    import torch
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "no": torch.float32}[
        autocast_precision(device, capability)]


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


def ensure_bitsandbytes(installed=lambda: importlib.util.find_spec("bitsandbytes") is not None) -> None:
    """On a CUDA GPU without bitsandbytes (Colab's image has none), install it and say so:
    notebooks 05/06 load Qwen2.5-VL-7B in 4 bits with it on a T4 (the ``colab`` profile), where
    16 bits would not fit. Nothing happens on a CPU (the ``smoke`` and ``cpu`` profiles need no
    4-bit model) or where bitsandbytes is already there. Returns nothing (the setup cell ends
    with this call, so a value would be shown under it). Unsloth is never installed here: its
    wheels replace the runtime's torch."""
    import torch
    if not torch.cuda.is_available() or installed():
        return
    print("installing bitsandbytes: notebooks 05/06 load Qwen2.5-VL-7B in 4 bits with it", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "bitsandbytes"], check=True)
    importlib.invalidate_caches()
