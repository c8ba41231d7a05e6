"""Hardware efficiency: model FLOPs per token and this machine's measured matmul peak (for MFU).

The peak is measured once per machine, device, dtype and thread count and kept in HUBTUNE_CACHE_DIR (default
~/.cache/hubtune)/matmul_peak.json: measuring it takes a 0.5 s burst of every core, which every run paid at its start
before. Delete the file to measure again (after a change of hardware the key changes by itself).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def flop_terms(model) -> tuple[float, float]:
    """(dense, attention) training FLOPs per token: dense + attention x sequence length is the whole count.

    Dense: 6 x non-embedding parameters (forward + backward matmuls); embedding lookups are not matmuls, so their
    parameters are left out. Attention: 12 x layers x hidden per token per position attended (scores and weighted
    sum, forward and backward), as in the PaLM/Chinchilla accounting; 0 for models without that config.
    """
    cfg = getattr(model, "config", None)
    params = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    layers = getattr(cfg, "num_hidden_layers", 0) or 0
    hidden = getattr(cfg, "hidden_size", 0) or 0
    return 6.0 * params, 12.0 * layers * hidden


def flops_per_token(model, seq_len: int) -> float:
    """Training FLOPs per token at sequence length `seq_len` (see flop_terms)."""
    dense, attention = flop_terms(model)
    return dense + attention * seq_len


def matmul_peak(device: str = "cpu", dtype: str = "float32", size: int = 1024, seconds: float = 0.3) -> float:
    """Measured FLOP/s of a square matmul in `dtype` on `device` (best of a short burst)."""
    import torch

    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    # a private generator: measuring must not move the global RNG (exact resume depends on it)
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dt, generator=g)
    b = torch.randn(size, size, device=device, dtype=dt, generator=g)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        for _ in range(4):
            a @ b
        sync()
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - t))
    return best


def cache_dir() -> Path:
    """Where hubtune keeps what it measured about this machine: HUBTUNE_CACHE_DIR, else ~/.cache/hubtune."""
    base = os.environ.get("HUBTUNE_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / \
        "hubtune"
    return Path(base)


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_peak(device: str = "cpu", dtype: str = "float32", seconds: float = 0.5) -> float:
    """`matmul_peak` of this machine, measured on first use and then read from the cache (see the module doc). The
    key names the device model, dtype, torch version and thread count, so another machine or setting measures anew."""
    import torch

    from engine.rundir import atomic_write_json, read_json

    key = f"{_device_name(device)} | {dtype} | torch {torch.__version__} | {torch.get_num_threads()} threads"
    path = cache_dir() / "matmul_peak.json"
    known = read_json(path, {}) or {}
    if isinstance(known.get(key), (int, float)) and known[key] > 0:
        return float(known[key])
    peak = matmul_peak(device, dtype, seconds=seconds)
    try:  # processes of one launch may measure at once: each writes whole files, the last one stays
        atomic_write_json(path, {**(read_json(path, {}) or {}), key: peak})
    except OSError:
        pass  # a read-only home: measured again next time
    return peak
