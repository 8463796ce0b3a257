"""Dense first stage: any bi-encoder checkpoint, cached document embeddings, a faiss index.

The encoder follows the checkpoint's sentence-transformers layout when there is one: pooling
from ``<Pooling module>/config.json`` (``pooling_mode`` or the legacy ``pooling_mode_*_token``
flags), L2 normalisation when ``modules.json`` lists a ``Normalize`` module, ``max_seq_length``
from ``sentence_bert_config.json`` and query/document prompts from
``config_sentence_transformers.json``. A plain transformers checkpoint gets mean pooling and L2
normalisation (the all-MiniLM-L6-v2 recipe). Defaults reproduce ``SentenceTransformer.encode``.

Documents are encoded in chunks (``chunk_size`` rows, sorted by length inside the chunk so batches
carry little padding) under bf16 autocast where the hardware supports it, and each finished chunk
is saved as ``.npy`` under ``<cache_dir>/<model key>-<corpus key>/``. The cache key covers the
model files and every encoding option, and the corpus' (id, text) fingerprint, so an interrupted
encode resumes and any later run on the same corpus and model reuses the vectors without encoding.
The cache root is ``cache_dir``, else ``$RERANKFORGE_CACHE/embeddings``, else
``~/.cache/rerankforge/embeddings``.

Search uses faiss inner product: ``index="flat"`` (exact, default), ``"ivf"`` (IVF-Flat; ``nlist``
lists, ``nprobe`` probed) or ``"hnsw"`` (HNSW-Flat; ``hnsw_m``, ``ef_construction``,
``ef_search``). With ``gpu="auto"`` flat and IVF indexes move to GPU 0 when faiss was built with GPU
support and a GPU is visible.

Why an encoder of our own rather than ``SentenceTransformer.encode``: sentence-transformers is not a
runtime dependency, and mining needs what ``encode`` does not do: documents read from a stream in
chunks (a 10M-passage corpus never sits in memory), each chunk saved as it finishes so an
interrupted encode resumes, and a cache keyed by model files and corpus fingerprint. The vectors
match ``SentenceTransformer.encode`` (tests compare them on the bundled MiniLM-L6).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from rerankforge.data.trec import Run
from rerankforge.errors import ConfigError
from rerankforge.retrieve.base import Retriever, register_retriever
from rerankforge.retrieve.corpus import CorpusLike, CorpusStream, DocIds, corpus_batches, corpus_fingerprint, corpus_ids

log = logging.getLogger(__name__)

POOLINGS = ("mean", "cls", "max", "mean_sqrt_len_tokens", "lasttoken")
INDEXES = ("flat", "ivf", "hnsw")
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    root = os.environ.get("RERANKFORGE_CACHE")
    return Path(root) / "embeddings" if root else Path.home() / ".cache" / "rerankforge" / "embeddings"


def _read_json(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: invalid JSON ({err.msg}, line {err.lineno})") from None


def sentence_transformers_layout(path: Path) -> dict:
    """Pooling, normalisation, max length, prompts and the transformer sub-folder of a checkpoint."""
    layout = {"pooling": None, "normalize": None, "max_length": None, "prompts": {}, "transformer_dir": path}
    modules = _read_json(path / "modules.json")
    if isinstance(modules, list):
        layout["normalize"] = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
        for m in modules:
            kind = str(m.get("type", ""))
            if kind.endswith("Transformer"):
                layout["transformer_dir"] = path / m.get("path", "")
            elif kind.endswith("Pooling"):
                cfg = _read_json(path / m.get("path", "") / "config.json") or {}
                layout["pooling"] = _pooling_from_config(cfg, path / m.get("path", "") / "config.json")
    st_cfg = _read_json(layout["transformer_dir"] / "sentence_bert_config.json") or {}
    if st_cfg.get("max_seq_length"):
        layout["max_length"] = int(st_cfg["max_seq_length"])
    prompts = (_read_json(path / "config_sentence_transformers.json") or {}).get("prompts") or {}
    layout["prompts"] = {k: v for k, v in prompts.items() if isinstance(v, str)}
    return layout


def _pooling_from_config(cfg: dict, where: Path) -> str:
    mode = cfg.get("pooling_mode")
    if mode is None:
        legacy = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean",
                  "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                  "pooling_mode_lasttoken": "lasttoken", "pooling_mode_weightedmean_tokens": "weightedmean"}
        active = [v for k, v in legacy.items() if cfg.get(k)]
        mode = active[0] if len(active) == 1 else active
    if isinstance(mode, list):
        mode = mode[0] if len(mode) == 1 else mode
    if mode not in POOLINGS:
        raise ConfigError(f"{where}: pooling {mode!r} is not supported (supported: {', '.join(POOLINGS)})")
    return mode


def _file_digest(path: Path) -> str:
    """Name, size and the first and last MiB: identifies a weights file without reading gigabytes."""
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(f"{path.name}:{size}".encode())
    with open(path, "rb") as fh:
        h.update(fh.read(1 << 20))
        if size > 2 << 20:
            fh.seek(-(1 << 20), os.SEEK_END)
            h.update(fh.read(1 << 20))
    return h.hexdigest()


def bf16_supported(device: str) -> bool:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    from rerankforge.models.precision import cpu_native_bf16

    # Without native bf16 (AMX / AVX512-BF16) autocast emulates it and is slower than fp32.
    return cpu_native_bf16()


def pool(hidden, mask, mode: str):
    """Sentence embeddings ``[n, h]`` from token states ``[n, L, h]`` (sentence-transformers' poolings)."""
    import torch

    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":
        return hidden[:, 0]
    if mode in ("mean", "mean_sqrt_len_tokens"):
        summed = (hidden * m).sum(1)
        n = m.sum(1).clamp(min=1e-9)
        return summed / (n if mode == "mean" else n.sqrt())
    if mode == "max":
        return hidden.masked_fill(m == 0, -1e9).max(1).values
    # lasttoken: last non-padding position, for left or right padding
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = (positions * mask).argmax(1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class Encoder:
    """Bi-encoder: transformer + pooling (+ L2 normalisation), batched and length-sorted."""

    def __init__(self, model: str | None = None, pooling: str | None = None, normalize: bool | None = None,
                 max_length: int | None = None, query_prefix: str | None = None, doc_prefix: str | None = None,
                 device: str | None = None, bf16: bool | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from rerankforge.models.base import resolve_model_path

        self.path = Path(resolve_model_path(model))
        if not self.path.is_dir():
            raise FileNotFoundError(f"bi-encoder checkpoint {self.path} is not a directory")
        layout = sentence_transformers_layout(self.path)
        self.pooling = pooling or layout["pooling"] or "mean"
        if self.pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling {self.pooling!r}; choose from {', '.join(POOLINGS)}")
        self.normalize = layout["normalize"] if normalize is None else bool(normalize)
        if self.normalize is None:
            self.normalize = True
        tdir = layout["transformer_dir"]
        self.tokenizer = AutoTokenizer.from_pretrained(tdir)
        self.model = AutoModel.from_pretrained(tdir)
        limit = min(int(getattr(self.model.config, "max_position_embeddings", 512) or 512),
                    int(self.tokenizer.model_max_length) if self.tokenizer.model_max_length < 1e6 else 512)
        self.max_length = int(max_length or layout["max_length"] or limit)
        prompts = layout["prompts"]
        self.query_prefix = query_prefix if query_prefix is not None else prompts.get("query", "")
        self.doc_prefix = doc_prefix if doc_prefix is not None else (
            prompts.get("document") or prompts.get("passage") or prompts.get("doc") or "")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        self.bf16 = bf16_supported(self.device) if bf16 is None else bool(bf16)
        self.dim = int(self.model.config.hidden_size)

    def options(self) -> dict:
        return {"pooling": self.pooling, "normalize": self.normalize, "max_length": self.max_length,
                "doc_prefix": self.doc_prefix, "bf16": self.bf16}

    def fingerprint(self) -> str:
        """Key for cached document embeddings: model files plus the options that change vectors."""
        h = hashlib.sha256(f"rerankforge-embeddings/{CACHE_VERSION}".encode())
        tdir = sentence_transformers_layout(self.path)["transformer_dir"]
        for name in sorted(os.listdir(tdir)):
            p = tdir / name
            if p.is_file() and (name.endswith((".json", ".txt", ".model")) or name.endswith((".safetensors", ".bin"))):
                h.update(_file_digest(p).encode())
        h.update(json.dumps(self.options(), sort_keys=True).encode())
        return h.hexdigest()

    def _pool(self, hidden, mask):
        return pool(hidden, mask, self.pooling)

    def encode(self, texts: Sequence[str], batch_size: int = 64, prefix: str = "", progress: bool = False) -> np.ndarray:
        """Float32 embeddings in input order; batches are formed from length-sorted texts."""
        import torch

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        starts = range(0, len(order), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="encoding", unit="batch", leave=False)
        dev = torch.device(self.device)
        with torch.inference_mode():
            for s in starts:
                idx = order[s : s + batch_size]
                feats = self.tokenizer([prefix + texts[i] for i in idx], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt").to(dev)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.bf16):
                    hidden = self.model(**feats).last_hidden_state
                emb = self._pool(hidden.float(), feats["attention_mask"])
                if self.normalize:
                    emb = torch.nn.functional.normalize(emb, p=2, dim=-1)
                out[idx] = emb.cpu().numpy()
        return out

    def encode_queries(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self.encode(texts, batch_size, prefix=self.query_prefix)


class EmbeddingCache:
    """Chunked on-disk document embeddings: ``rows-<start>-<end>.npy`` files plus ``meta.json``
    written last (its presence marks the set complete)."""

    def __init__(self, root: Path, model_key: str, corpus_key: str):
        self.dir = Path(root) / f"{model_key[:20]}-{corpus_key[:20]}"

    def chunk_path(self, start: int, end: int) -> Path:
        return self.dir / f"rows-{start:010d}-{end:010d}.npy"

    def has_chunk(self, start: int, end: int, dim: int) -> bool:
        p = self.chunk_path(start, end)
        if not p.exists():
            return False
        try:
            arr = np.load(p, mmap_mode="r")
        except (ValueError, OSError):
            return False
        return arr.shape == (end - start, dim) and arr.dtype == np.float32

    def save_chunk(self, start: int, end: int, emb: np.ndarray) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        p = self.chunk_path(start, end)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, emb.astype(np.float32, copy=False))
        os.replace(tmp, p)

    def complete_meta(self) -> dict | None:
        meta = _read_json(self.dir / "meta.json")
        return meta if isinstance(meta, dict) else None

    def finish(self, meta: dict) -> None:
        from rerankforge.utils.io import write_json

        write_json(self.dir / "meta.json", meta)

    def load(self, meta: dict) -> list[tuple[int, int, np.ndarray]]:
        chunks = []
        for start, end in meta["chunks"]:
            chunks.append((start, end, np.load(self.chunk_path(start, end), mmap_mode="r")))
        return chunks


@register_retriever("dense")
class DenseRetriever(Retriever):
    """Bi-encoder retrieval over a faiss inner-product index (see module docstring)."""

    def __init__(self, model: str | None = None, pooling: str | None = None, normalize: bool | None = None,
                 max_length: int | None = None, query_prefix: str | None = None, doc_prefix: str | None = None,
                 encode_batch_size: int = 64, batch_size: int = 512, bf16: bool | None = None,
                 device: str | None = None, cache_dir: str | Path | None = None, cache: bool = True,
                 chunk_size: int = 16384, index: str = "flat", nlist: int | None = None, nprobe: int = 32,
                 hnsw_m: int = 32, ef_construction: int = 200, ef_search: int = 128, gpu: str | bool = "auto",
                 show_progress: bool = False):
        if index not in INDEXES:
            raise ConfigError(f"unknown faiss index {index!r}; choose from {', '.join(INDEXES)}")
        if gpu not in ("auto", True, False, "yes", "no", "true", "false"):
            raise ConfigError(f"gpu must be auto, true or false, got {gpu!r}")
        self.model_name = model
        self.encoder_args = dict(model=model, pooling=pooling, normalize=normalize, max_length=max_length,
                                 query_prefix=query_prefix, doc_prefix=doc_prefix, device=device, bf16=bf16)
        self.encode_batch_size, self.batch_size = encode_batch_size, batch_size
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.use_cache = cache
        self.chunk_size = chunk_size
        self.index_type, self.nlist, self.nprobe = index, nlist, nprobe
        self.hnsw_m, self.ef_construction, self.ef_search = hnsw_m, ef_construction, ef_search
        self.gpu = {"yes": True, "true": True, "no": False, "false": False}.get(gpu, gpu) if isinstance(gpu, str) else gpu
        self.show_progress = show_progress
        self._encoder: Encoder | None = None
        self.faiss_index = None
        self.ids: DocIds = DocIds.from_list([])
        self._chunks: list[tuple[int, int, np.ndarray]] = []
        self.encoded_docs = 0  # documents encoded (not read from cache) by the last index() call
        self.cache_path: Path | None = None
        self.stats: dict = {}

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = Encoder(**self.encoder_args)
        return self._encoder

    def config(self) -> dict:
        enc = self.encoder
        return {"name": self.name, "model": str(enc.path), **enc.options(), "query_prefix": enc.query_prefix,
                "index": self.index_type, "nlist": self.nlist, "nprobe": self.nprobe, "hnsw_m": self.hnsw_m,
                "ef_search": self.ef_search}

    # ------------------------------------------------------------------ indexing
    def index(self, corpus: CorpusLike) -> None:
        enc = self.encoder
        t0 = time.perf_counter()
        self.encoded_docs = 0
        if isinstance(corpus, CorpusStream) and corpus.ids is None:
            corpus.require_ids()  # the fingerprint (cache key) needs one pass first
        n_docs = len(corpus_ids(corpus)) if isinstance(corpus, CorpusStream) else len(corpus)
        spans = [(s, min(s + self.chunk_size, n_docs)) for s in range(0, n_docs, self.chunk_size)]
        cache = EmbeddingCache(self.cache_dir, enc.fingerprint(), corpus_fingerprint(corpus)) if self.use_cache else None
        self.cache_path = cache.dir if cache else None
        meta = cache.complete_meta() if cache else None
        if meta is not None and meta.get("n_docs") == n_docs and [tuple(c) for c in meta.get("chunks", [])] == spans:
            chunks = cache.load(meta)
            log.info("dense: reusing %d cached embeddings from %s", n_docs, cache.dir)
        else:
            chunks = self._encode_corpus(corpus, spans, cache)
            if cache is not None:
                cache.finish({"version": CACHE_VERSION, "model": str(enc.path), "n_docs": n_docs, "dim": enc.dim,
                              "chunks": spans, "options": enc.options(), "corpus_fingerprint": corpus_fingerprint(corpus),
                              "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
                chunks = cache.load({"chunks": spans})  # memory-mapped: vectors live in the page cache
        encode_s = time.perf_counter() - t0
        self.ids = corpus_ids(corpus)
        self._chunks = chunks
        t1 = time.perf_counter()
        self.faiss_index = self._build_index(chunks, enc.dim, n_docs)
        self.stats = {"encoded_docs": self.encoded_docs, "encode_seconds": round(encode_s, 2),
                      "index_seconds": round(time.perf_counter() - t1, 2), "cache": str(self.cache_path or "")}

    def _encode_corpus(self, corpus: CorpusLike, spans, cache: EmbeddingCache | None):
        enc = self.encoder
        chunks = []
        bar = None
        if self.show_progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=spans[-1][1] if spans else 0, desc="dense encode", unit="doc", leave=False)
        for (s, e), (_, texts) in zip(spans, corpus_batches(corpus, self.chunk_size)):
            if e - s != len(texts):
                raise RuntimeError(f"corpus changed while encoding: expected {e - s} documents at row {s}")
            if cache is not None and cache.has_chunk(s, e, enc.dim):
                emb = None
            else:
                emb = enc.encode(texts, self.encode_batch_size, prefix=enc.doc_prefix)
                self.encoded_docs += len(texts)
                if cache is not None:
                    cache.save_chunk(s, e, emb)
            chunks.append((s, e, emb))
            if bar is not None:
                bar.update(len(texts))
        if bar is not None:
            bar.close()
        return chunks  # with a cache, chunks found there are None here; the caller reloads all from disk

    def _faiss(self):
        import faiss

        return faiss

    def _use_gpu(self) -> bool:
        faiss = self._faiss()
        available = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
        if self.gpu is True and not available:
            raise ConfigError("gpu=true but faiss has no GPU support here (install faiss-gpu and check CUDA)")
        return bool(self.gpu) and available and self.index_type != "hnsw"

    def _build_index(self, chunks, dim: int, n_docs: int):
        faiss = self._faiss()
        if self.index_type == "flat":
            index = faiss.IndexFlatIP(dim)
        elif self.index_type == "hnsw":
            index = faiss.IndexHNSWFlat(dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.ef_construction
            index.hnsw.efSearch = self.ef_search
        else:
            nlist = self.nlist or max(1, min(int(4 * math.sqrt(n_docs)), n_docs // 39 or 1))
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            train = self._sample(chunks, min(n_docs, max(nlist * 64, 10_000)))
            index.train(train)
            index.nprobe = min(self.nprobe, nlist)
        if self._use_gpu():
            res = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(res, 0, index)
            self._gpu_res = res  # keep the resources alive as long as the index
        for _, _, emb in chunks:
            index.add(np.ascontiguousarray(emb, dtype=np.float32))
        return index

    @staticmethod
    def _sample(chunks, n: int) -> np.ndarray:
        total = chunks[-1][1] if chunks else 0
        rows = np.sort(np.random.default_rng(0).choice(total, size=n, replace=False))
        parts = []
        for s, e, emb in chunks:
            sel = rows[(rows >= s) & (rows < e)] - s
            if len(sel):
                parts.append(np.asarray(emb[sel], dtype=np.float32))
        return np.ascontiguousarray(np.concatenate(parts))

    # ------------------------------------------------------------------ search
    def search_batch(self, queries: Mapping[str, str], k: int) -> Run:
        if self.faiss_index is None:
            raise RuntimeError("call index() before search()")
        qids = list(queries)
        if not qids:
            return {}
        k = min(k, len(self.ids))
        q = self.encoder.encode_queries([queries[x] for x in qids], self.encode_batch_size)
        scores, rows = self.faiss_index.search(q, k)
        run: Run = {}
        for i, qid in enumerate(qids):
            keep = rows[i] >= 0  # IVF/HNSW may return fewer than k
            run[qid] = list(zip(self.ids.take(rows[i][keep]), scores[i][keep].astype(float).tolist()))
        return run

    def embeddings(self, rows: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), self.encoder.dim), dtype=np.float32)
        for s, e, emb in self._chunks:
            sel = np.flatnonzero((rows >= s) & (rows < e))
            if len(sel):
                out[sel] = emb[rows[sel] - s]
        return out

    def score(self, query: str, doc_ids: Sequence[str]) -> np.ndarray:
        rows = self.ids.rows(doc_ids)
        out = np.full(len(doc_ids), math.nan, dtype=np.float64)
        known = rows >= 0
        if known.any():
            q = self.encoder.encode_queries([query])[0]
            out[known] = self.embeddings(rows[known]) @ q
        return out
