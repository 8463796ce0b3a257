"""ColBERT late interaction (Khattab & Zaharia, SIGIR 2020; ColBERTv2, Santhanam et al., NAACL 2022).

    s(q, d) = Σ_i max_j  q_i · d_j

q_i, d_j are the encoder's contextual token vectors, projected to ``dim`` (linear, no bias) and
L2-normalised, so each product is a cosine. Inputs:

    query     [CLS] [Q] q_1 .. q_n [SEP] [MASK] .. [MASK]    exactly ``query_length`` tokens
    document  [CLS] [D] d_1 .. d_m [SEP]                     at most ``max_length`` tokens

Query augmentation: the [MASK] padding is not attended to (``attend_to_mask_tokens=False``, as in
ColBERT and PyLate) but its output vectors join the MaxSim sum, acting as learned soft query
expansion. Document padding and punctuation tokens (the ColBERT skiplist) never win the max.

Markers: like Stanford ColBERT, [Q]/[D] reuse the vocabulary entries "[unused0]"/"[unused1]" when
the vocabulary has them (BERT family: no embedding resize). Otherwise new special tokens "[Q]"/"[D]"
are added and the embeddings resized, as PyLate does. Marker ids are inserted after the tokenizer's
leading special tokens instead of being typed into the text, because BERT would split the text
"[unused0]" into four word pieces.

Saved directory: the encoder in HF format (``config.json``, ``model.safetensors``; or a LoRA adapter
with ``merge_lora=False``), the tokenizer, ``colbert_linear.safetensors`` (the projection) and
``rerankforge.json`` holding ``ColBERTConfig``. A merged export is also a PyLate / sentence-transformers
multi-vector model (see :func:`write_multivector_layout`): ``modules.json`` (the encoder at the root,
then ``1_Dense``: the trained projection as a token-level Dense module), ``sentence_bert_config.json``
and ``config_sentence_transformers.json`` with PyLate's keys (markers as ``query_prefix`` /
``document_prefix``, ``query_length``, ``document_length``, ``do_query_expansion``,
``attend_to_expansion_tokens``, ``skiplist_words``), so ``pylate.models.ColBERT(dir)`` and
``sentence_transformers.MultiVectorEncoder(dir)`` load the trained projection and score like this class.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoTokenizer

from rerankforge.errors import ConfigError
from rerankforge.models.precision import use_bf16 as resolve_bf16
from rerankforge.models.base import (META_FILE, Reranker, check_model_type, register_model, resolve_model_path,
                                     scatter_scores)
from rerankforge.models.peft_utils import is_peft, load_backbone, save_backbone, unwrap_peft
from rerankforge.models.tokens import leading_special_ids, vocab_token_id

PROJECTION_FILE = "colbert_linear.safetensors"
#: a gather function takes a tensor with the same shape on every process and returns the
#: concatenation over processes along dim 0, in rank order (``accelerate.utils.gather`` qualifies)
GatherFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class ColBERTConfig:
    dim: int = 128
    query_length: int = 32
    #: document length in tokens, special tokens and marker included (ColBERT's doc_maxlen)
    max_length: int = 180
    #: marker tokens; None picks "[unused0]"/"[unused1]" if in the vocabulary, else adds "[Q]"/"[D]"
    query_marker: str | None = None
    doc_marker: str | None = None
    query_augmentation: bool = True
    attend_to_mask_tokens: bool = False
    mask_punctuation: bool = True
    #: True when the markers were added to the vocabulary (embeddings resized)
    added_markers: bool = False


def maxsim(q: torch.Tensor, q_mask: torch.Tensor, d: torch.Tensor, d_mask: torch.Tensor,
           max_elements: int = 1 << 26) -> torch.Tensor:
    """Every query against every document: ``[B, Lq, h] x [N, Ld, h] -> [B, N]``.

    Documents are processed in chunks so the ``B x n x Lq x Ld`` similarity tensor stays under
    ``max_elements``; ``.max().values`` keeps only indices for the backward, not the similarities."""
    B, Lq, _ = q.shape
    N, Ld, _ = d.shape
    step = max(1, max_elements // max(1, B * Lq * Ld))
    out = []
    with torch.autocast(q.device.type, enabled=False):  # bf16 sums of 32 maxima would blur rankings
        q, d = q.float(), d.float()
        for s in range(0, N, step):
            sim = torch.einsum("bqh,nkh->bnqk", q, d[s : s + step])
            sim = sim.masked_fill(~d_mask[None, s : s + step, None, :], float("-inf"))
            best = sim.max(dim=-1).values
            out.append(torch.where(q_mask[:, None, :], best, best.new_zeros(())).sum(-1))
    return torch.cat(out, dim=1) if out else q.new_zeros(B, 0)


def maxsim_paired(q: torch.Tensor, q_mask: torch.Tensor, d: torch.Tensor, d_mask: torch.Tensor) -> torch.Tensor:
    """Row ``n`` of ``q`` against row ``n`` of ``d``: ``[N, Lq, h] x [N, Ld, h] -> [N]``."""
    with torch.autocast(q.device.type, enabled=False):
        sim = torch.einsum("nqh,nkh->nqk", q.float(), d.float()).masked_fill(~d_mask[:, None, :], float("-inf"))
        best = sim.max(dim=-1).values
        return torch.where(q_mask, best, best.new_zeros(())).sum(-1)


def _pad_to(x: torch.Tensor, n: int, length: int, value=0) -> torch.Tensor:
    """Pad dim 0 to ``n`` and dim 1 to ``length`` (vectors ``[n, L, h]`` or masks ``[n, L]``)."""
    pad_len, pad_n = length - x.shape[1], n - x.shape[0]
    if x.dim() == 3:
        return F.pad(x, (0, 0, 0, pad_len, 0, pad_n), value=value)
    return F.pad(x, (0, pad_len, 0, pad_n), value=value)


def _cat_padded(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(v.shape[1] for v, _ in parts)
    vecs = torch.cat([_pad_to(v, v.shape[0], length) for v, _ in parts])
    masks = torch.cat([_pad_to(m, m.shape[0], length, value=False) for _, m in parts])
    return vecs, masks


def distributed_gather(t: torch.Tensor) -> torch.Tensor:
    """``torch.distributed.all_gather`` concatenated along dim 0 (no gradient flows through it)."""
    import torch.distributed as dist

    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t.contiguous())
    return torch.cat(out)


def gather_documents(d: torch.Tensor, d_mask: torch.Tensor, gather_fn: GatherFn, rank: int
                     ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """All processes' document vectors ``[N_total, L, h]``, masks and this process' column offset.

    Every process has its own number of documents and its own padded length, so sizes are
    exchanged first and both dims padded to the maximum (all_gather needs equal shapes). The other
    processes' vectors arrive without gradient; the local block is the autograd-connected tensor,
    so this process' loss back-propagates into its own documents (the DPR/Tevatron scheme: each
    document gets the gradient from the queries on its own process)."""
    sizes = gather_fn(torch.tensor([[d.shape[0], d.shape[1]]], device=d.device, dtype=torch.long)).view(-1, 2)
    world = sizes.shape[0]
    n_max, l_max = (int(x) for x in sizes.max(dim=0).values.tolist())
    local = _pad_to(d, n_max, l_max)
    local_mask = _pad_to(d_mask, n_max, l_max, value=False)
    # bool all_gather is not supported by every backend; uint8 is.
    all_vecs = gather_fn(local.detach().contiguous()).view(world, n_max, l_max, d.shape[-1])
    all_masks = gather_fn(local_mask.to(torch.uint8)).view(world, n_max, l_max).bool()
    vecs, masks = [], []
    for r in range(world):
        n_r = int(sizes[r, 0])
        vecs.append((local if r == rank else all_vecs[r])[:n_r])
        masks.append((local_mask if r == rank else all_masks[r])[:n_r])
    offset = int(sizes[:rank, 0].sum())
    return torch.cat(vecs), torch.cat(masks), offset


def gather_batch_documents(d: torch.Tensor, d_mask: torch.Tensor, gather_fn: GatherFn | None, rank: int | None
                           ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``gather_documents`` when there is more than one process (or a ``gather_fn`` is given),
    else the local documents at column offset 0."""
    dist = torch.distributed
    running = dist.is_available() and dist.is_initialized()
    if gather_fn is None and running and dist.get_world_size() > 1:
        gather_fn = distributed_gather
    if gather_fn is None:
        return d, d_mask, 0
    if rank is None:
        rank = dist.get_rank() if running else 0
    return gather_documents(d, d_mask, gather_fn, rank)


def own_columns(mask: torch.Tensor, offset: int) -> torch.Tensor:
    """``[B, G]``: the in-batch column of each real candidate (row-major order of ``mask``), -1 on padding."""
    own = torch.full(mask.shape, -1, dtype=torch.long, device=mask.device)
    own[mask] = offset + torch.arange(int(mask.sum()), device=mask.device)
    return own


class InBatchScores(NamedTuple):
    """Local queries against all documents of the (gathered) batch.

    ``scores[b, c]``: query ``b`` vs global document column ``c``. Columns are the real documents of
    every process in rank order, each process' block in the row-major order of its ``mask``.
    ``own_columns[b, g]``: the column of query ``b``'s ``g``-th candidate (-1 on padded slots)."""

    scores: torch.Tensor
    own_columns: torch.Tensor
    doc_offset: int

    def expand(self, values: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """Spread ``[B, G]`` targets over the ``[B, N_total]`` columns; other queries' documents get
        ``fill`` (0 = non-relevant for label targets; NaN for missing teacher scores)."""
        out = values.new_full(self.scores.shape, fill)
        rows, slots = (self.own_columns >= 0).nonzero(as_tuple=True)
        out[rows, self.own_columns[rows, slots]] = values[rows, slots]
        return out

    def mask(self) -> torch.Tensor:
        return torch.ones_like(self.scores, dtype=torch.bool)


@register_model("colbert")
class ColBERT(Reranker):
    """``ColBERT("default")`` (MiniLM-L6 + a fresh projection), any HF encoder, or an exported
    rerankforge ColBERT (its trained projection); options are ``ColBERTConfig`` fields
    (``dim``, ``query_length``, ``max_length``, ...) and ``AutoModel.from_pretrained`` kwargs.
    Or ``ColBERT(encoder, tokenizer, projection, config)`` from parts."""

    head_prefixes = ("projection",)

    def __init__(self, model: str | Path | nn.Module = "default", tokenizer=None, projection: nn.Linear | None = None,
                 config: ColBERTConfig | None = None, **options):
        super().__init__()
        if isinstance(model, (str, Path)):
            path = resolve_model_path(str(model))
            check_model_type(path, self.model_type)
            saved = Path(path, META_FILE).exists()
            model, tokenizer, projection, config = (_saved_parts if saved else _fresh_parts)(path, **options)
            self.restore_calibration(path)
        elif tokenizer is None or projection is None or config is None or options:
            raise TypeError("ColBERT(encoder, tokenizer, projection, config) needs all four parts (or give a path)")
        self.model = model
        self.tokenizer = tokenizer
        self.projection = projection
        self.colbert_config = config
        # Padding must follow the text so the marker can be inserted at a fixed position.
        tokenizer.padding_side = "right"
        tokenizer.truncation_side = "right"
        if tokenizer.pad_token_id is None:
            raise ConfigError(f"{type(tokenizer).__name__} has no pad token; ColBERT needs one")
        if config.query_augmentation and tokenizer.mask_token_id is None:
            raise ConfigError("query_augmentation needs a [MASK] token and this tokenizer has none; "
                              "set query_augmentation: false")
        room = tokenizer.num_special_tokens_to_add() + 2  # specials, marker and one text token
        if min(config.query_length, config.max_length) < room:
            raise ConfigError(f"ColBERT query_length={config.query_length} / max_length={config.max_length}: "
                              f"both need at least {room} tokens")
        # ColBERT reads token vectors only; a pooler would get no gradient, which DDP rejects
        # (unused parameters), so it is frozen rather than trained on nothing.
        pooler = getattr(unwrap_peft(model), "pooler", None)
        if isinstance(pooler, nn.Module):
            pooler.requires_grad_(False)
        self.query_marker_id = self._marker(config.query_marker)
        self.doc_marker_id = self._marker(config.doc_marker)
        self._lead = leading_special_ids(tokenizer)
        skip = []
        if config.mask_punctuation:
            for symbol in string.punctuation:
                ids = tokenizer(symbol, add_special_tokens=False)["input_ids"]
                if len(ids) == 1:
                    skip.append(ids[0])
        # A CPU tensor, not a buffer: documents are tokenized on the CPU (possibly in loader workers).
        self.skiplist = torch.tensor(sorted(set(skip)), dtype=torch.long)

    def _marker(self, token: str | None) -> int:
        tid = vocab_token_id(self.tokenizer, token) if token else None
        if tid is None:
            raise ConfigError(f"ColBERT marker {token!r} is not in the tokenizer's vocabulary")
        return tid

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_base(cls, name_or_path: str | None = None, max_length: int = 180, **options) -> ColBERT:
        """A ColBERT on any HF encoder (a fresh projection), or a saved ColBERT to train further."""
        return cls(name_or_path or "default", max_length=max_length, **options)

    def save_pretrained(self, path: str | Path, merge_lora: bool = True) -> None:
        """Encoder (merged with its LoRA adapter unless ``merge_lora=False``), tokenizer, projection."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if is_peft(self.model) and not merge_lora and self.colbert_config.added_markers:
            # New marker embeddings live in the frozen base and are not part of the adapter.
            raise ConfigError("this ColBERT added its marker tokens to the vocabulary; save it with merge_lora=True")
        extra = save_backbone(self.model, path, merge_lora)
        self.tokenizer.save_pretrained(path)
        save_file({"weight": self.projection.weight.detach().cpu().contiguous()}, str(path / PROJECTION_FILE))
        if not extra.get("adapter"):  # an adapter alone is no encoder the other libraries could load
            write_multivector_layout(self, path)
        self.write_meta(path, **asdict(self.colbert_config), **extra)

    @classmethod
    def from_pretrained(cls, path: str | Path, is_trainable: bool = False, **kwargs) -> ColBERT:
        """Reload a saved ColBERT; ``max_length``/``query_length`` may be overridden (None keeps the
        saved value), other ``kwargs`` go to ``AutoModel.from_pretrained``."""
        return cls(str(path), is_trainable=is_trainable, **kwargs)

    # ----------------------------------------------------------------- tokenization
    def _insert_marker(self, ids: torch.Tensor, att: torch.Tensor, marker: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self._lead)
        col = torch.full((ids.shape[0], 1), marker, dtype=ids.dtype)
        return (torch.cat([ids[:, :n], col, ids[:, n:]], dim=1),
                torch.cat([att[:, :n], torch.ones_like(col), att[:, n:]], dim=1))

    def tokenize_queries(self, queries: list[str]) -> dict[str, torch.Tensor]:
        """``input_ids``/``attention_mask`` for the encoder and ``mask``: the tokens that score."""
        cfg = self.colbert_config
        enc = self.tokenizer(list(queries), truncation=True, max_length=cfg.query_length - 1,
                             padding="max_length" if cfg.query_augmentation else "longest", return_tensors="pt")
        ids, att = self._insert_marker(enc["input_ids"], enc["attention_mask"], self.query_marker_id)
        if not cfg.query_augmentation:
            return {"input_ids": ids, "attention_mask": att, "mask": att.bool()}
        ids = ids.masked_fill(att == 0, self.tokenizer.mask_token_id)
        score_mask = torch.ones_like(ids, dtype=torch.bool)
        if cfg.attend_to_mask_tokens:
            att = torch.ones_like(att)
        return {"input_ids": ids, "attention_mask": att, "mask": score_mask}

    def tokenize_docs(self, docs: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(list(docs), truncation=True, max_length=self.colbert_config.max_length - 1,
                             padding="longest", return_tensors="pt")
        ids, att = self._insert_marker(enc["input_ids"], enc["attention_mask"], self.doc_marker_id)
        mask = att.bool() & ~torch.isin(ids, self.skiplist)
        return {"input_ids": ids, "attention_mask": att, "mask": mask}

    def tokenize(self, queries: list[str], docs: list[list[str]]) -> dict[str, Any]:
        """Queries once each (``q_*``, B rows) and the flat real documents (``d_*``, N rows)."""
        q = self.tokenize_queries(queries)
        d = self.tokenize_docs([t for ds in docs for t in ds])
        return {f"q_{k}": v for k, v in q.items()} | {f"d_{k}": v for k, v in d.items()}

    # ----------------------------------------------------------------- encoding
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """L2-normalised projected token vectors ``[n, L, dim]`` (float32)."""
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        vecs = self.projection(hidden.to(self.projection.weight.dtype))
        return F.normalize(vecs.float(), p=2, dim=-1)

    def embed_queries(self, features: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed(features["q_input_ids"], features["q_attention_mask"]), features["q_mask"].bool()

    def embed_docs(self, features: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed(features["d_input_ids"], features["d_attention_mask"]), features["d_mask"].bool()

    def _encode_texts(self, texts: list[str], tokenize, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        parts = []
        for s in range(0, len(texts), batch_size):
            feats = {k: v.to(self.device) for k, v in tokenize(texts[s : s + batch_size]).items()}
            parts.append((self.embed(feats["input_ids"], feats["attention_mask"]), feats["mask"]))
        if not parts:
            return torch.zeros(0, 0, self.colbert_config.dim, device=self.device), torch.zeros(0, 0, dtype=torch.bool,
                                                                                       device=self.device)
        return _cat_padded(parts)

    def encode_queries(self, queries: list[str], batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """Query token vectors ``[B, Lq, dim]`` and the mask of tokens that score ``[B, Lq]``.
        Gradients flow unless the caller disables them."""
        return self._encode_texts(list(queries), self.tokenize_queries, batch_size)

    def encode_docs(self, docs: list[str], batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """Document token vectors ``[N, Ld, dim]`` padded to the longest, and their MaxSim mask."""
        return self._encode_texts(list(docs), self.tokenize_docs, batch_size)

    # ----------------------------------------------------------------- scoring
    def forward(self, features: dict[str, Any], mask: torch.Tensor, in_batch: bool = False,
                gather_fn: GatherFn | None = None, rank: int | None = None):
        """``scores[B, G]`` for each query's own candidates; with ``in_batch=True`` the
        ``InBatchScores`` of ``forward_in_batch`` (routing through ``forward`` keeps DDP's hooks)."""
        if in_batch:
            return self.forward_in_batch(features, mask, gather_fn=gather_fn, rank=rank)
        q, q_mask = self.embed_queries(features)
        d, d_mask = self.embed_docs(features)
        rows = mask.nonzero(as_tuple=True)[0]
        if rows.numel() != d.shape[0]:
            raise ValueError(f"mask has {rows.numel()} real pairs but the features hold {d.shape[0]} documents")
        return scatter_scores(maxsim_paired(q[rows], q_mask[rows], d, d_mask), mask)

    def forward_in_batch(self, features: dict[str, Any], mask: torch.Tensor, gather_fn: GatherFn | None = None,
                         rank: int | None = None) -> InBatchScores:
        """Every local query against every document of the batch, across processes when
        ``torch.distributed`` is initialised with several ranks (or when ``gather_fn`` is given).

        ``gather_fn``: see ``GatherFn``; ``rank``: this process' index in the gathered order
        (default: ``torch.distributed.get_rank()``, else 0)."""
        q, q_mask = self.embed_queries(features)
        d, d_mask = self.embed_docs(features)
        d, d_mask, offset = gather_batch_documents(d, d_mask, gather_fn, rank)
        return InBatchScores(maxsim(q, q_mask, d, d_mask), own_columns(mask, offset), offset)

    @torch.no_grad()
    def score_pairs(self, queries: list[str], docs: list[str], batch_size: int = 64, bf16: bool | str = True,
                    sort_by_length: bool = True, progress: bool = False) -> np.ndarray:
        """Flat pairs. Late interaction lets each distinct query and each distinct document be
        encoded once (a document retrieved for several queries is not re-encoded); documents go
        in length-sorted batches and every pair that uses them is scored from the cached vectors."""
        was_training = self.training
        self.eval()
        device = self.device
        use_bf16 = resolve_bf16(bf16, device, self)
        uq = {q: i for i, q in enumerate(dict.fromkeys(queries))}
        ud = {d: i for i, d in enumerate(dict.fromkeys(docs))}
        q_index = torch.tensor([uq[q] for q in queries], dtype=torch.long, device=device)
        pairs_of_doc: list[list[int]] = [[] for _ in ud]
        for i, d in enumerate(docs):
            pairs_of_doc[ud[d]].append(i)
        unique_docs = list(ud)
        order = (sorted(range(len(unique_docs)), key=lambda j: len(unique_docs[j])) if sort_by_length
                 else list(range(len(unique_docs))))
        out = np.zeros(len(docs), dtype=np.float32)
        starts = range(0, len(order), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="scoring", unit="batch", leave=False)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            q_vecs, q_mask = self.encode_queries(list(uq), batch_size=batch_size)
            for s in starts:
                batch = order[s : s + batch_size]
                feats = {k: v.to(device) for k, v in self.tokenize_docs([unique_docs[j] for j in batch]).items()}
                d = self.embed(feats["input_ids"], feats["attention_mask"])
                pair_ids = [p for j in batch for p in pairs_of_doc[j]]
                local = torch.tensor([k for k, j in enumerate(batch) for _ in pairs_of_doc[j]], device=device)
                rows = q_index[pair_ids]
                out[pair_ids] = maxsim_paired(q_vecs[rows], q_mask[rows], d[local], feats["mask"][local]).cpu().numpy()
        self.train(was_training)
        return out


def write_multivector_layout(model: ColBERT, path: Path) -> None:
    """The files that make ``path`` a PyLate ColBERT and a sentence-transformers multi-vector model.

    The format is PyLate's (a SentenceTransformer whose modules are the encoder and a bias-free,
    identity-activation Dense over token embeddings, with the ColBERT settings as top-level keys of
    ``config_sentence_transformers.json``, ``model_type: ColBERT``); sentence-transformers >= 6.2
    reads it as a legacy PyLate save (adding its MultiVectorMask and Normalize modules). Both
    libraries tokenize like this class: the marker id inserted after [CLS] (PyLate), or the marker
    as a prompt registered as one special token (sentence-transformers), queries padded with [MASK]
    to ``query_length`` and scored but not attended to, documents cut at ``max_length``. The
    skiplist is written as the tokens of this model's own skiplist ids, so both resolve the same ids."""
    cfg = model.colbert_config
    weight = model.projection.weight.detach().cpu().float().contiguous()
    dense = path / "1_Dense"
    dense.mkdir(exist_ok=True)
    (dense / "config.json").write_text(json.dumps({"in_features": weight.shape[1], "out_features": weight.shape[0],
                                                   "bias": False,
                                                   "activation_function": "torch.nn.modules.linear.Identity"},
                                                  indent=2))
    save_file({"linear.weight": weight}, str(dense / "model.safetensors"))
    (path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Dense", "type": "sentence_transformers.models.Dense"}], indent=2))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": cfg.max_length,
                                                                "do_lower_case": False}, indent=2))
    tok = model.tokenizer
    config = {
        "model_type": "ColBERT",
        "prompts": {},
        "default_prompt_name": None,
        "similarity_fn_name": "MaxSim",
        "query_prefix": tok.convert_ids_to_tokens(model.query_marker_id),
        "document_prefix": tok.convert_ids_to_tokens(model.doc_marker_id),
        "query_length": cfg.query_length,
        "document_length": cfg.max_length,
        "do_query_expansion": cfg.query_augmentation,
        "attend_to_expansion_tokens": cfg.attend_to_mask_tokens,
        "skiplist_words": tok.convert_ids_to_tokens(model.skiplist.tolist()),
    }
    (path / "config_sentence_transformers.json").write_text(json.dumps(config, indent=2))


def _fresh_parts(path: str, max_length: int = 180, dim: int = 128, query_length: int = 32,
                 query_marker: str | None = None, doc_marker: str | None = None, query_augmentation: bool = True,
                 attend_to_mask_tokens: bool = False, mask_punctuation: bool = True, is_trainable: bool = False,
                 **kwargs):
    """Encoder, tokenizer, a fresh projection and the config of a new ColBERT on ``path``."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, **kwargs)
    defaults = (("[unused0]", "[unused1]") if vocab_token_id(tokenizer, "[unused0]") is not None
                and vocab_token_id(tokenizer, "[unused1]") is not None else ("[Q]", "[D]"))
    query_marker = query_marker or defaults[0]
    doc_marker = doc_marker or defaults[1]
    missing = [t for t in (query_marker, doc_marker) if vocab_token_id(tokenizer, t) is None]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
        model.resize_token_embeddings(len(tokenizer))
    config = ColBERTConfig(dim=dim, query_length=query_length, max_length=max_length,
                           query_marker=query_marker, doc_marker=doc_marker,
                           query_augmentation=query_augmentation, attend_to_mask_tokens=attend_to_mask_tokens,
                           mask_punctuation=mask_punctuation, added_markers=bool(missing))
    hidden = getattr(model.config, "hidden_size", None) or model.config.d_model
    dtype = next(model.parameters()).dtype
    projection = nn.Linear(hidden, dim, bias=False, dtype=dtype)
    return model, tokenizer, projection, config


def _saved_parts(path: str, is_trainable: bool = False, **kwargs):
    """The parts of an exported ColBERT; ``max_length``/``query_length`` override the saved
    values (None keeps them), other ``kwargs`` go to ``AutoModel.from_pretrained``."""
    path = Path(path)
    meta = json.loads((path / META_FILE).read_text())
    known = {f.name for f in fields(ColBERTConfig)}
    config = ColBERTConfig(**{k: v for k, v in meta.items() if k in known})
    for key in ("max_length", "query_length"):
        value = kwargs.pop(key, None)
        if value is not None:
            setattr(config, key, int(value))
    for key in known & set(kwargs):  # fixed by the saved model (dim, markers, ...): a fresh value would not fit
        if kwargs[key] is not None and kwargs.pop(key) != getattr(config, key):
            raise ConfigError(f"{path}: {key} is fixed by the saved ColBERT ({getattr(config, key)!r})")
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = load_backbone(AutoModel, path, meta, is_trainable=is_trainable, **kwargs)
    weight = load_file(str(path / PROJECTION_FILE))["weight"]
    if weight.shape[0] != config.dim:
        raise ConfigError(f"{path / PROJECTION_FILE}: projection has {weight.shape[0]} outputs, "
                          f"{META_FILE} says dim={config.dim}")
    projection = nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=weight.dtype)
    with torch.no_grad():
        projection.weight.copy_(weight)
    return model, tokenizer, projection, config
