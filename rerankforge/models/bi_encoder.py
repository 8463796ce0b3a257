"""A bi-encoder (dual encoder) as a reranker: s(q, d) = cos(E(q), E(d)) / temperature.

E is a transformer with the checkpoint's sentence-transformers pooling and normalisation (the
layout rules of ``retrieve.dense``), so ``BiEncoder("default")`` scores exactly as the bundled
all-MiniLM-L6-v2 does in ``SentenceTransformer.encode`` + cosine. It is the zero-shot baseline a
trained reranker must beat, a fusion component, and trainable like any other model (the
temperature turns cosines into logits for the listwise losses; 0.05 as in contrastive bi-encoder
training, e.g. Wang et al. 2022, E5).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from rerankforge.models.precision import use_bf16 as resolve_bf16
from rerankforge.models.base import (META_FILE, Reranker, check_model_type, register_model, resolve_model_path,
                                     scatter_scores)


@register_model("bi_encoder")
class BiEncoder(Reranker):
    def __init__(self, model: str | Path | Any = "default", tokenizer=None, max_length: int | None = None,
                 pooling: str | None = None, normalize: bool | None = None, temperature: float = 0.05,
                 query_prefix: str | None = None, doc_prefix: str | None = None, **hf_kwargs):
        super().__init__()
        layout: dict[str, Any] = {"pooling": None, "normalize": None, "max_length": None, "prompts": {}}
        if isinstance(model, (str, Path)):
            from rerankforge.retrieve.dense import sentence_transformers_layout

            path = resolve_model_path(str(model))
            check_model_type(path, self.model_type)
            meta_path = Path(path, META_FILE)
            if meta_path.exists():
                meta = json.loads(meta_path.read_text())
                layout = {"pooling": meta["pooling"], "normalize": meta["normalize"], "max_length": meta["max_length"],
                          "prompts": {"query": meta["query_prefix"], "document": meta["doc_prefix"]}}
                temperature = meta.get("temperature", temperature)
                tdir = path
            else:
                layout = sentence_transformers_layout(Path(path))
                tdir = layout["transformer_dir"]
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(tdir)
            model = AutoModel.from_pretrained(tdir, **hf_kwargs)
        elif tokenizer is None:
            raise TypeError("BiEncoder(model, tokenizer): a model object needs its tokenizer")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.model, self.tokenizer = model, tokenizer
        self.pooling = pooling or layout["pooling"] or "mean"
        self.normalize = layout["normalize"] if normalize is None else bool(normalize)
        self.normalize = True if self.normalize is None else self.normalize
        self.max_length = int(max_length or layout["max_length"] or min(tokenizer.model_max_length, 512))
        prompts = layout["prompts"] or {}
        self.query_prefix = query_prefix if query_prefix is not None else prompts.get("query", "") or ""
        self.doc_prefix = doc_prefix if doc_prefix is not None else prompts.get("document", "") or ""
        self.temperature = float(temperature)

    @classmethod
    def from_base(cls, name_or_path: str | None = None, max_length: int | None = None, **kwargs) -> BiEncoder:
        return cls(name_or_path or "default", max_length=max_length, **kwargs)

    @classmethod
    def from_pretrained(cls, path, **kwargs) -> BiEncoder:
        return cls(str(path), **kwargs)

    def meta(self) -> dict[str, Any]:
        return super().meta() | {"pooling": self.pooling, "normalize": self.normalize, "max_length": self.max_length,
                                 "query_prefix": self.query_prefix, "doc_prefix": self.doc_prefix,
                                 "temperature": self.temperature}

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
        self.write_meta(path)

    # ----------------------------------------------------------------------------- encoding
    def _features(self, texts: list[str], prefix: str) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer([prefix + t for t in texts], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt"))

    def embed(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        from rerankforge.retrieve.dense import pool

        hidden = self.model(**features).last_hidden_state
        emb = pool(hidden.float(), features["attention_mask"], self.pooling)
        return F.normalize(emb, p=2, dim=-1) if self.normalize else emb

    def tokenize(self, queries: list[str], docs: list[list[str]]) -> dict[str, Any]:
        q = self._features(list(queries), self.query_prefix)
        d = self._features([t for ds in docs for t in ds], self.doc_prefix)
        return {f"q_{k}": v for k, v in q.items()} | {f"d_{k}": v for k, v in d.items()}

    def forward(self, features: dict[str, Any], mask: torch.Tensor, in_batch: bool = False,
                gather_fn=None, rank: int | None = None):
        """``scores[B, G]``; with ``in_batch=True`` every query against every document of the
        (cross-process) batch as ``InBatchScores``: the documents are encoded anyway, so in-batch
        negatives cost one ``[B, N]`` matrix product."""
        q = self.embed({k[2:]: v for k, v in features.items() if k.startswith("q_")})
        d = self.embed({k[2:]: v for k, v in features.items() if k.startswith("d_")})
        if in_batch:
            return self._in_batch(q, d, mask, gather_fn, rank)
        rows = mask.nonzero(as_tuple=True)[0]
        return scatter_scores((q[rows] * d).sum(-1) / self.temperature, mask)

    def _in_batch(self, q: torch.Tensor, d: torch.Tensor, mask: torch.Tensor, gather_fn, rank: int | None):
        from rerankforge.models.colbert import InBatchScores, gather_batch_documents, own_columns

        # One "token" per document: the late-interaction gather then serves single vectors too.
        ones = torch.ones(d.shape[0], 1, dtype=torch.bool, device=d.device)
        d3, _, offset = gather_batch_documents(d.unsqueeze(1), ones, gather_fn, rank)
        return InBatchScores(q @ d3.squeeze(1).T / self.temperature, own_columns(mask, offset), offset)

    @torch.no_grad()
    def score_pairs(self, queries: list[str], docs: list[str], batch_size: int = 64, bf16: bool | str = True,
                    sort_by_length: bool = True, progress: bool = False) -> np.ndarray:
        """Each distinct query and document is encoded once; scores are cosine / temperature."""
        was_training = self.training
        self.eval()
        device = self.device
        use_bf16 = resolve_bf16(bf16, device, self)
        uq, ud = list(dict.fromkeys(queries)), list(dict.fromkeys(docs))

        def encode(texts: list[str], prefix: str) -> torch.Tensor:
            order = sorted(range(len(texts)), key=lambda i: len(texts[i])) if sort_by_length else list(range(len(texts)))
            out = torch.zeros(len(texts), self.model.config.hidden_size)
            starts = range(0, len(order), batch_size)
            if progress:
                from tqdm.auto import tqdm

                starts = tqdm(starts, desc="encoding", unit="batch", leave=False)
            for s in starts:
                idx = order[s : s + batch_size]
                feats = {k: v.to(device) for k, v in self._features([texts[i] for i in idx], prefix).items()}
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    out[idx] = self.embed(feats).float().cpu()
            return out

        q, d = encode(uq, self.query_prefix), encode(ud, self.doc_prefix)
        q_of = {t: i for i, t in enumerate(uq)}
        d_of = {t: i for i, t in enumerate(ud)}
        qi = torch.tensor([q_of[t] for t in queries], dtype=torch.long)
        di = torch.tensor([d_of[t] for t in docs], dtype=torch.long)
        self.train(was_training)
        return ((q[qi] * d[di]).sum(-1) / self.temperature).numpy().astype(np.float32)
