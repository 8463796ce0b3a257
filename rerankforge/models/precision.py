"""A float32 relevance head under bf16 autocast.

Under bf16 autocast the final ``Linear(hidden, 1)`` returns a bf16 logit: 8 bits of mantissa, so
scores near -0.5 are rounded to steps of 0.002 and neighbouring candidates tie, and ties are then
broken by document order, not by the model. Measured on click-trained MiniLM-L6 rerankers scoring
NFCorpus BM25 top-100 (21,948 test pairs): with the bf16 head only 68% of the candidates had a
score distinct within their query; with this float32 head 98.6% (the rest are identical inputs
after truncation). Running just the head in float32 (a 384 x 1 matmul) costs nothing measurable;
the encoder still runs in bf16.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.nn import functional as F


class Float32Linear(nn.Linear):
    """``nn.Linear`` that computes in float32 whatever autocast says (same parameters and state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            bias = None if self.bias is None else self.bias.float()
            return F.linear(x.float(), self.weight.float(), bias)


def float32_head(model: nn.Module, names: tuple[str, ...]) -> list[str]:
    """Make the ``nn.Linear`` heads among ``model.<name>`` (or ``model.<name>.out_proj``) run in
    float32. The class swap keeps the parameters, state-dict keys and ``save_pretrained`` output
    unchanged, and survives ``copy.deepcopy``. Returns the dotted names changed."""
    changed = []
    for name in names:
        head = getattr(model, name, None)
        for sub, module in ((name, head), (f"{name}.out_proj", getattr(head, "out_proj", None))):
            if type(module) is nn.Linear:
                module.__class__ = Float32Linear
                changed.append(sub)
    return changed


# --- which precision scoring runs in ----------------------------------------------------------
@functools.lru_cache(maxsize=None)
def cpu_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX-BF16).

    Without it oneDNN has no bf16 matmul kernel and PyTorch falls back to a reference loop:
    measured on a 2-core AVX2 EPYC (no AVX-512), a 512x512 bf16 matmul ran at 1.1 GFLOP/s against
    16-44 GFLOP/s in float32, and MiniLM-L6 scoring under bf16 autocast several times slower than
    float32 (scripts/bench_speed.py)."""
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        if (probe is not None and probe()) or (amx is not None and amx()):
            return True
    except RuntimeError:  # pragma: no cover - probes that cannot run count as "no"
        pass
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(bf16: bool | str, device: torch.device, model: nn.Module | None = None) -> bool:
    """Whether scoring on ``device`` runs under bf16 autocast.

    ``bf16``: True (bf16 on CUDA and on CPUs with bf16 hardware and oneDNN; float32 elsewhere),
    False (float32), or "auto" (bf16 on CUDA and on CPUs with native bf16 only). An int8-quantised model (``quantize_int8``)
    always runs without autocast: its linear layers take float32 activations."""
    if model is not None and getattr(model, "quantized", None):
        return False
    if bf16 == "auto":
        return device.type == "cuda" or (device.type == "cpu" and cpu_native_bf16())
    if isinstance(bf16, str):
        raise ValueError(f"bf16 must be true, false or 'auto', got {bf16!r}")
    # True on a CPU without bf16 hardware means float32: oneDNN would only emulate bf16 there
    # (several times slower than float32, and less exact), which nobody asking for speed wants.
    return bool(bf16) and (device.type == "cuda" or (torch.backends.mkldnn.is_available() and cpu_native_bf16()))
