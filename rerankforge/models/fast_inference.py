"""A faster scoring path for cross-encoders: ``CrossEncoder.optimize_inference()``.

Profiled on a 2-core AMX Xeon (MiniLM-L6, 32 pairs x 256 tokens, bf16 autocast, eager PyTorch), the
matrix multiplications are only ~30% of a scoring pass: CPU flash attention takes ~30%, the erf GELU
18%, autocast's per-call weight casts and other copies 11%, LayerNorm and residual adds 10%.
Three changes, each exact up to floating-point rounding, remove most of that:

1. **Weights in the scoring dtype.** A bf16 copy of the encoder (made once, on first use) instead
   of autocast re-casting every float32 weight at every call. The relevance head stays float32
   (see ``precision.py``: a bf16 logit ties neighbouring candidates).
2. **Only the [CLS] row of the last layer.** A BERT cross-encoder reads one vector, the last
   layer's [CLS] output, through its pooler. That layer still needs every token's keys and values,
   but its query, attention output, feed-forward block and LayerNorms are needed for one token
   only: 10 of the layer's 12 d^2-sized products per token are skipped (about 1/7 of MiniLM-L6's
   FLOPs). Applied to BERT-family classifiers (``bert``); other architectures keep their own forward.
3. **``torch.compile``** (inductor, weights frozen as constants, static shapes: batches are padded
   to 64-token lengths and power-of-two row counts, so a run compiles a handful of graphs) fuses
   the GELU, bias, residual and LayerNorm element-wise work into the matmuls' neighbours. It needs
   a C++ compiler on CPU; where compilation fails the eager forward of 1-2 is used, with a warning.

The parity tests (``tests/test_fast_inference.py``) check that 2 alone reproduces the Hugging Face
forward in float32 to 1e-5, and bound the bf16 and compiled paths' error; ``scripts/bench_speed.py``
(``--infer-variants fast``) measures pairs/s against ``sentence_transformers.CrossEncoder.predict``
and nDCG@10 on SciFact against the unoptimised scores.

The copy tracks its source: when a weight of the model changes in place (training, calibration
folded into the head) the next call rebuilds it, so a stale copy is never scored.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


def prunable(model: nn.Module) -> bool:
    """Whether ``model`` is a BERT sequence classifier whose score reads the last layer's [CLS] row."""
    bert = getattr(model, "bert", None)
    layers = getattr(getattr(bert, "encoder", None), "layer", None)
    if getattr(model.config, "model_type", None) != "bert" or layers is None or len(layers) == 0:
        return False
    if getattr(bert, "pooler", None) is None or not hasattr(model, "classifier"):
        return False
    if getattr(model.config, "is_decoder", False) or getattr(model.config, "add_cross_attention", False):
        return False
    if getattr(model.config, "problem_type", None) not in (None, "regression", "single_label_classification"):
        return False
    sa = layers[0].attention.self
    return all(hasattr(sa, k) for k in ("query", "key", "value", "num_attention_heads", "attention_head_size"))


def _bert_layer(layer: nn.Module, h: torch.Tensor, mask: torch.Tensor, cls_only: bool) -> torch.Tensor:
    sa = layer.attention.self
    b, n, _ = h.shape
    heads, width = sa.num_attention_heads, sa.attention_head_size
    hq = h[:, :1] if cls_only else h
    q = sa.query(hq).view(b, -1, heads, width).transpose(1, 2)
    k = sa.key(h).view(b, n, heads, width).transpose(1, 2)
    v = sa.value(h).view(b, n, heads, width).transpose(1, 2)
    # BERT's scaling is 1/sqrt(head width): SDPA's default
    a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    a = layer.attention.output(a.transpose(1, 2).reshape(b, -1, heads * width), hq)
    return layer.output(layer.intermediate(a), a)


def pruned_bert_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                       token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
    """``model(...).logits`` of a BERT sequence classifier in eval mode, computing the last layer
    for the [CLS] row only. ``[N, num_labels]``; the head runs in its own dtype."""
    bert = model.bert
    h = bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    # an additive mask in the activations' dtype: CPU flash attention ran ~20% faster with it
    # than with a boolean one (bf16, 32 x 12 heads x 256 tokens)
    mask = torch.zeros(attention_mask.shape, dtype=h.dtype, device=h.device)
    mask = mask.masked_fill(attention_mask == 0, float("-inf"))[:, None, None, :]
    layers = bert.encoder.layer
    for layer in layers[:-1]:
        h = _bert_layer(layer, h, mask, cls_only=False)
    h = _bert_layer(layers[-1], h, mask, cls_only=True)
    pooled = bert.pooler(h)
    head = model.classifier
    return head(pooled.to(head.weight.dtype))


def _weights_version(model: nn.Module) -> tuple:
    # tensor._version counts in-place writes: optimizer steps, load_state_dict, calibration folds
    return tuple((id(p), p._version) for p in model.parameters())


class FastScorer:
    """Scores tokenised pairs with ``model`` (an HF sequence classifier) through the fast path.

    ``dtype`` (per call): the encoder's scoring dtype (bf16 on CPUs with bf16 hardware and GPUs,
    float32 elsewhere: the caller decides, as for autocast). ``compile``: torch.compile the forward
    with static shapes and frozen weights; batches are padded to ``length_bucket`` tokens and a
    power-of-two number of rows so a handful of shapes cover a run (padding is masked out and the
    pad rows' scores dropped: real rows score as unpadded). ``mode="max-autotune"`` also
    benchmarks GEMM kernels while compiling (slower compiles, faster steady state)."""

    MODES = ("default", "max-autotune")

    def __init__(self, model: nn.Module, compile: bool = True, prune: bool = True, length_bucket: int = 64,
                 mode: str = "default"):
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        if length_bucket < 1:
            raise ValueError(f"length_bucket must be >= 1, got {length_bucket}")
        self.source = model
        self.compile = compile
        self.prune = prune and prunable(model)
        self.length_bucket = int(length_bucket)
        self.mode = mode
        self._copies: dict[torch.dtype, tuple[tuple, nn.Module, Any]] = {}
        self.compiled_ok: bool | None = None
        self.shapes: set[tuple[int, int]] = set()  # the padded shapes compiled so far

    def __deepcopy__(self, memo):
        # a copied model gets a fresh scorer over its own weights (compiled graphs are not copied)
        return FastScorer(copy.deepcopy(self.source, memo), compile=self.compile, prune=self.prune,
                          length_bucket=self.length_bucket, mode=self.mode)

    def _forward_fn(self, module: nn.Module):
        if self.prune:
            return lambda **f: pruned_bert_logits(module, f["input_ids"], f.get("attention_mask"),
                                                  f.get("token_type_ids"))
        return lambda **f: module(**f).logits

    def _build(self, dtype: torch.dtype):
        module = copy.deepcopy(self.source).eval()
        for p in module.parameters():
            p.requires_grad_(False)
        if self.prune:
            # the pruned forward controls every dtype: encoder in ``dtype``, head float32 (precision.py)
            head_state = {k: v.clone() for k, v in module.classifier.state_dict().items()}
            module.to(dtype)
            module.classifier.float()
            module.classifier.load_state_dict(head_state)
        fn = self._forward_fn(module)
        if self.compile and self.compiled_ok is not False:
            import torch._dynamo.config as dynamo_config

            # one graph per padded shape: (rows, length) buckets can exceed dynamo's default of 8
            dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 64)
            # static shapes + frozen weights measured 214 pairs/s against 183 with dynamic shapes
            # (MiniLM-L6, 32 x 256 tokens, bf16, 2-core AMX Xeon); max-autotune 243
            fn = torch.compile(fn, dynamic=False)
        return module, fn

    def _pad(self, feats: dict[str, torch.Tensor], max_positions: int | None) -> dict[str, torch.Tensor]:
        rows, length = feats["input_ids"].shape
        to_len = -(-length // self.length_bucket) * self.length_bucket
        if max_positions:
            to_len = max(length, min(to_len, max_positions))
        to_rows = 1 << max(0, rows - 1).bit_length()
        out = {}
        for k, v in feats.items():
            v = F.pad(v, (0, to_len - length), value=0)  # pad token, mask 0, segment 0: masked out
            if to_rows > rows:
                v = torch.cat([v, v[:1].expand(to_rows - rows, -1)])  # copies of a real row, dropped after
            out[k] = v
        self.shapes.add((to_rows, to_len))
        return out

    def __call__(self, features: dict[str, torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        """Logits ``[N, num_labels]`` in float32 of the tokenised pairs ``features``."""
        version = _weights_version(self.source)
        cached = self._copies.get(dtype)
        if cached is None or cached[0] != version:
            self._copies[dtype] = cached = (version, *self._build(dtype))
        _, module, fn = cached
        feats = {k: v for k, v in features.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        device = feats["input_ids"].device.type
        # other architectures keep float32 weights and run under autocast (frozen, compiled weights
        # fold the casts away); the pruned BERT path holds its weights in ``dtype`` already
        autocast = not self.prune and dtype != torch.float32
        with torch.inference_mode(), torch.autocast(device, dtype=dtype, enabled=autocast):
            if self.compile and self.compiled_ok is not False:
                try:
                    rows = feats["input_ids"].shape[0]
                    padded = self._pad(feats, getattr(module.config, "max_position_embeddings", None))
                    # inductor reads these while compiling (the first call of a shape); passed as
                    # torch.compile(options=...) freezing was not applied (aten addmm, 168 pairs/s;
                    # with it oneDNN linear with fused epilogues, 206 pairs/s)
                    from torch._inductor import config as inductor_config

                    with inductor_config.patch(freezing=True, max_autotune=self.mode == "max-autotune"):
                        out = fn(**padded)[:rows]
                    self.compiled_ok = True
                    return out.float()
                except Exception as exc:
                    if self.compiled_ok:  # it compiled before: a real error, not a missing toolchain
                        raise
                    self.compiled_ok = False
                    warnings.warn(f"torch.compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                                  "scoring with the eager fast path", RuntimeWarning, stacklevel=3)
                    fn = self._forward_fn(module)
                    self._copies[dtype] = (cached[0], module, fn)
            return fn(**feats).float()
