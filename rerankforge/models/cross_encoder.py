"""Cross-encoder: [CLS] query [SEP] document [SEP] -> one relevance logit.

Stored as a plain ``AutoModelForSequenceClassification`` directory (num_labels=1), so the export
loads unchanged in transformers and in ``sentence_transformers.CrossEncoder``. Tokenisation
matches sentence-transformers (``truncation=True``, i.e. longest-first) so scores agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rerankforge.models.pair_tokens import PairEncoder
from rerankforge.models.base import Reranker, check_model_type, register_model, resolve_model_path, scatter_scores
from rerankforge.models.precision import float32_head


@register_model("cross_encoder")
class CrossEncoder(Reranker):
    """``CrossEncoder("default")`` (the bundled MiniLM-L6 with a new head), any HF checkpoint or
    an exported rerankforge cross-encoder; or ``CrossEncoder(hf_model, tokenizer)``.

    ``max_length`` defaults to the one the checkpoint was exported with, else the tokenizer's
    (at most 512). Other keyword arguments go to ``AutoModelForSequenceClassification.from_pretrained``."""

    head_prefixes = ("classifier", "score")

    def __init__(self, model: str | Path | Any = "default", tokenizer=None, max_length: int | None = None,
                 **hf_kwargs):
        super().__init__()
        saved = None
        if isinstance(model, (str, Path)):
            path = resolve_model_path(str(model))
            check_model_type(path, self.model_type)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **hf_kwargs)
            if model.config.pad_token_id is None and tokenizer.pad_token_id is not None:
                model.config.pad_token_id = tokenizer.pad_token_id
            saved = int(getattr(model.config, "rerankforge_max_length", 0)) or min(tokenizer.model_max_length, 512)
            self.restore_calibration(path)
        elif tokenizer is None:
            raise TypeError("CrossEncoder(model, tokenizer): a model object needs its tokenizer")
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = int(max_length or saved or 256)
        float32_head(model, self.head_prefixes)

    @classmethod
    def from_base(cls, name_or_path: str | None = None, max_length: int = 256, **kwargs) -> CrossEncoder:
        return cls(name_or_path or "default", max_length=max_length, **kwargs)

    @classmethod
    def from_pretrained(cls, path, max_length: int | None = None, **kwargs) -> CrossEncoder:
        return cls(str(path), max_length=max_length, **kwargs)

    def tokenize(self, queries: list[str], docs: list[list[str]]) -> dict[str, Any]:
        q_flat = [q for q, ds in zip(queries, docs) for _ in ds]
        d_flat = [d for ds in docs for d in ds]
        pairs = self._pair_encoder()
        if pairs.enabled:
            return pairs.encode(q_flat, d_flat, self.max_length)
        return dict(self.tokenizer(q_flat, d_flat, padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt"))

    def _pair_encoder(self) -> PairEncoder:
        # Built lazily and rebuilt if the tokenizer is swapped; the same ids as the tokenizer, faster.
        enc = self.__dict__.get("_pairs")
        if enc is None or enc.tokenizer is not self.tokenizer:
            enc = self.__dict__["_pairs"] = PairEncoder(self.tokenizer)
        return enc

    def optimize_inference(self, compile: bool = True, prune: bool = True, mode: str = "default",
                           length_bucket: int = 64) -> CrossEncoder:
        """Score through the fast path of ``models/fast_inference.py`` from now on: encoder weights
        in the scoring dtype, the last layer for the [CLS] row only (BERT), ``torch.compile``.
        Scores equal the plain forward's up to rounding; training is unaffected (the fast path is
        used only without gradients, in eval mode, and rebuilt when a weight changes). ``mode``:
        "default" or "max-autotune" (slower compiles, faster scoring); ``length_bucket``: batches are
        padded to a multiple of it so few shapes are compiled. In place; returns ``self``."""
        from rerankforge.models.fast_inference import FastScorer

        if getattr(self, "quantized", None):
            raise ValueError("optimize_inference() and quantize_int8() are alternatives; this model is int8")
        self.__dict__["_fast"] = FastScorer(self.model, compile=compile, prune=prune, mode=mode,
                                            length_bucket=length_bucket)
        return self

    def quantize_int8(self) -> CrossEncoder:
        if self.fast_inference is not None:
            raise ValueError("quantize_int8() and optimize_inference() are alternatives; this model is optimized")
        return super().quantize_int8()

    @property
    def fast_inference(self):
        """The ``FastScorer`` set by ``optimize_inference()``, or None."""
        return self.__dict__.get("_fast")

    def forward(self, features: dict[str, Any], mask: torch.Tensor) -> torch.Tensor:
        fast = self.__dict__.get("_fast")
        if fast is not None and not self.training and not torch.is_grad_enabled():
            device = features["input_ids"].device.type
            dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.float32
            logits = fast(features, dtype).view(-1)
        else:
            logits = self.model(**features).logits.view(-1)
        return scatter_scores(logits, mask)

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        # LoRA (peft) models are exported with the adapter merged, so the directory stays a plain
        # HF sequence-classification checkpoint; ``merged_copy`` returns other models unchanged.
        from rerankforge.models.peft_utils import merged_copy

        model = merged_copy(self.model)
        model.config.rerankforge_max_length = self.max_length
        model.save_pretrained(path, safe_serialization=True)
        # model_max_length makes sentence-transformers truncate where we do.
        self.tokenizer.model_max_length = self.max_length
        self.tokenizer.save_pretrained(path)
        self.write_meta(path, max_length=self.max_length)
