"""What this machine can do, asked without side effects: CUDA, native bf16 (GPU, or a CPU with AVX512-BF16/AMX)."""

from __future__ import annotations

from pathlib import Path


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def cpu_supports_bf16() -> bool:
    """True on CPUs with native bf16 matmul (AVX512-BF16 or AMX), where autocast is a real speed-up."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_available() -> bool:
    """Native bf16 on the device training would use (the GPU when there is one, else the CPU)."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_supports_bf16()


def resolve_mixed_precision(setting: str) -> str:
    """Turn 'auto' into what Accelerate takes: bf16 where supported, else 'no'."""
    if setting != "auto":
        return setting
    return "bf16" if bf16_available() else "no"
