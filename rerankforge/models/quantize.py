"""int8 dynamic quantisation of a reranker for CPU inference.

``quantize_int8(model)`` replaces every plain ``nn.Linear`` of the encoder with PyTorch's dynamic
int8 linear (weights int8 per channel, activations quantised per batch on the fly; fbgemm/x86
kernels, which use VNNI where the CPU has it and AVX2 ``vpmaddubsw`` otherwise). The relevance head
(``Float32Linear``, a subclass, so not matched) stays float32 so close scores do not tie.
Scoring then runs without bf16 autocast (``precision.use_bf16``).

It is lossy: the switch is measured, not assumed. ``scripts/bench_speed.py`` reports its pairs/s
and its nDCG@10 on SciFact against the float model (the issue-15 bar: within 0.005); the parity
test (tests/test_speed_switches.py) bounds the score error on a tiny model. CPU only.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


def quantize_int8(model: nn.Module) -> nn.Module:
    """Quantise ``model``'s ``nn.Linear`` layers to dynamic int8, in place; returns ``model``.

    Inference only (the quantised layers have no gradients); the model must be on the CPU."""
    if getattr(model, "quantized", None) == "int8":
        return model
    device = next(model.parameters()).device
    if device.type != "cpu":
        raise ValueError(f"int8 dynamic quantisation runs on the CPU; the model is on {device}")
    from torch.ao.quantization import quantize_dynamic

    if "x86" in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = "x86"
    model.eval()
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; the eager dynamic path still works
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        # exact-type match: Float32Linear heads (a subclass) are left in float32
        quantize_dynamic(model, {nn.Linear: torch.ao.quantization.default_dynamic_qconfig}, dtype=torch.qint8,
                         inplace=True)
    model.quantized = "int8"
    return model
