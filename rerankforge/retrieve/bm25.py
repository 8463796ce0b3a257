"""BM25 first stage: a streaming bm25s index with a batched sparse scorer, or rank-bm25.

``backend="bm25s"`` (default) builds exactly the index ``bm25s.BM25.index`` builds (same analyzer:
lower-case, ``\\b\\w\\w+\\b``, stopwords, Snowball stemmer; same idf/tf formulas and float32 CSC
layout) but from the corpus in batches, holding per batch only numpy arrays of term ids instead of
bm25s' Python list of token lists for the whole corpus. The result is a real ``bm25s.BM25`` object
(``.bm25s``) that bm25s can save, load and search. Searching batches queries into one sparse
``queries x terms`` matrix and multiplies it with the ``terms x docs`` index (scipy SpGEMM), so each
query costs its posting lists instead of a dense pass over the corpus; ``scorer="bm25s"`` calls
``bm25s.BM25.retrieve`` instead (same scores).

``backend="rank_bm25"`` uses ``rank_bm25.BM25Okapi`` (``method="robertson"``), ``BM25L`` or
``BM25Plus`` on the same tokens. It keeps a Python dict per document and scores every document per
query term, so it is for small corpora and cross-checks. ``BM25Okapi(epsilon=0)`` ranks exactly like
bm25s ``method="robertson"``: both clamp negative idf to 0 and differ only by the constant factor
``k1 + 1``.

Why a streaming index around bm25s rather than ``bm25s.BM25.index`` itself: measured on this
project's 2-core machine (``scripts/bench_mining.py``, 1M MS MARCO-style passages x 10k queries),
the streaming build and batched sparse search took 68 s + 58 s at 1.8 GB peak RSS, against 104 s +
494 s for bm25s on its own (whose tokenised corpus is a Python list of lists). The scores are
bm25s' (tests compare them).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from rerankforge.data.trec import Run
from rerankforge.errors import ConfigError
from rerankforge.retrieve.base import Retriever, register_retriever
from rerankforge.retrieve.corpus import CorpusLike, DocIds, corpus_batches, corpus_ids

log = logging.getLogger(__name__)

METHODS = ("robertson", "lucene", "atire", "bm25l", "bm25+")
TOKEN_PATTERN = r"(?u)\b\w\w+\b"
_STOPWORD = -1
_UNSEEN = -2


def _stopword_list(stopwords) -> tuple[str, ...]:
    from bm25s.tokenization import _infer_stopwords

    try:
        return tuple(_infer_stopwords(stopwords))
    except ValueError as err:
        raise ConfigError(f"BM25 stopwords: {err}") from None


class Analyzer:
    """The bm25s analyzer with a growing term vocabulary.

    Each surface word is analysed once (stopword check, then stem) and cached, so the per-token cost
    is one dict lookup. Term ids are assigned in order of first appearance.
    """

    def __init__(self, stemmer: str | None = "english", stopwords: str | Sequence[str] | None = "en",
                 pattern: str = TOKEN_PATTERN):
        self._findall = re.compile(pattern).findall
        self._stop = frozenset(_stopword_list(stopwords))
        self._stem = None
        if stemmer:
            import Stemmer

            try:
                self._stem = Stemmer.Stemmer(stemmer).stemWord
            except KeyError:
                raise ConfigError(f"unknown Snowball stemmer {stemmer!r}; available: "
                                  f"{', '.join(Stemmer.algorithms())}") from None
        self.word_ids: dict[str, int] = {}
        self.term_ids: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.term_ids)

    def _analyse(self, word: str, grow: bool) -> int:
        if word in self._stop:
            tid = _STOPWORD
        else:
            term = self._stem(word) if self._stem else word
            tid = self.term_ids.get(term, _UNSEEN)
            if tid == _UNSEEN:
                if not grow:
                    return _UNSEEN  # unknown at query time: not cached, the vocabulary is frozen
                tid = len(self.term_ids)
                self.term_ids[term] = tid
        self.word_ids[word] = tid
        return tid

    def terms(self, text: str) -> list[str]:
        """The analysed terms of ``text`` (for rank-bm25 and debugging)."""
        out = []
        for word in self._findall(text.lower()):
            if word in self._stop:
                continue
            out.append(self._stem(word) if self._stem else word)
        return out

    def encode_batch(self, texts: Sequence[str], grow: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``(tokens_per_text, term_ids)``: flat int32 term ids of all texts, stopwords and (when not
        growing) unknown terms removed."""
        get = self.word_ids.get
        findall = self._findall
        flat: list[int] = []
        counts = np.empty(len(texts), dtype=np.int64)
        for i, text in enumerate(texts):
            words = findall(text.lower())
            ids = [get(w, _UNSEEN) for w in words]
            if _UNSEEN in ids:
                for w in words:
                    if w not in self.word_ids:
                        self._analyse(w, grow)
                ids = [get(w, _UNSEEN) for w in words]
            flat += ids
            counts[i] = len(ids)
        arr = np.fromiter(flat, dtype=np.int32, count=len(flat))
        doc = np.repeat(np.arange(len(texts), dtype=np.int32), counts)
        keep = arr >= 0
        arr, doc = arr[keep], doc[keep]
        return np.bincount(doc, minlength=len(texts)).astype(np.int32), arr


def _idf(method: str, df: np.ndarray, n: int) -> np.ndarray:
    df = df.astype(np.float64)
    if method == "robertson":
        inner = np.maximum((n - df + 0.5) / (df + 0.5), 1.0)  # bm25s clamps negative idf to 0
        return np.log(inner)
    if method == "lucene":
        return np.log(1 + (n - df + 0.5) / (df + 0.5))
    if method == "atire":
        return np.log(n / np.maximum(df, 1))
    if method == "bm25l":
        return np.log((n + 1) / (df + 0.5))
    if method == "bm25+":
        return np.log((n + 1) / np.maximum(df, 1))
    raise ConfigError(f"unknown BM25 method {method!r}; choose from {', '.join(METHODS)}")


def _tfc(method: str, tf: np.ndarray, l_d, l_avg: float, k1: float, b: float, delta: float) -> np.ndarray:
    if method in ("robertson", "lucene"):
        return tf / (k1 * ((1 - b) + b * l_d / l_avg) + tf)
    if method == "atire":
        return (tf * (k1 + 1)) / (tf + k1 * (1 - b + b * l_d / l_avg))
    if method == "bm25l":
        c = tf / (1 - b + b * l_d / l_avg)
        return ((k1 + 1) * (c + delta)) / (k1 + c + delta)
    if method == "bm25+":
        return ((k1 + 1) * tf) / (k1 * (1 - b + b * l_d / l_avg) + tf) + delta
    raise ConfigError(f"unknown BM25 method {method!r}")


class SparseIndex:
    """Term-major BM25 impact matrix (bm25s' CSC ``docs x terms`` = CSR ``terms x docs``)."""

    def __init__(self, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, n_docs: int,
                 nonoccurrence: np.ndarray | None):
        import scipy.sparse as sp

        self.data, self.indices, self.indptr, self.n_docs = data, indices, indptr, n_docs
        self.nonoccurrence = nonoccurrence
        self.matrix = sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, n_docs), copy=False)

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + self.indices.nbytes + self.indptr.nbytes

    def topk(self, queries: Sequence[np.ndarray], k: int, max_postings: int = 32_000_000) -> list[tuple[np.ndarray, np.ndarray]]:
        """Top-``k`` ``(doc rows, scores)`` per query (term-id arrays; repeats count repeatedly), best
        first, ties by row. Only documents sharing a term with the query are returned.

        Queries are multiplied in groups whose posting lists total at most ``max_postings``, which
        bounds the sparse product's memory (about 8 bytes per posting) on any corpus size."""
        out: list[tuple[np.ndarray, np.ndarray]] = []
        sizes = [int((self.indptr[q + 1] - self.indptr[q]).sum()) for q in queries]
        start, total = 0, 0
        for i, size in enumerate(sizes):
            if total + size > max_postings and i > start:
                out += self._topk(queries[start:i], k)
                start, total = i, 0
            total += size
        if start < len(queries):
            out += self._topk(queries[start:], k)
        return out

    def _topk(self, queries: Sequence[np.ndarray], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
        import scipy.sparse as sp

        n_terms = self.matrix.shape[0]
        lengths = np.fromiter((len(q) for q in queries), dtype=np.int64, count=len(queries))
        rows = np.repeat(np.arange(len(queries)), lengths)
        cols = np.concatenate(queries) if len(queries) else np.zeros(0, np.int32)
        q = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(queries), n_terms))
        q.sum_duplicates()
        scores = (q @ self.matrix).tocsr()
        out = []
        for i in range(len(queries)):
            lo, hi = scores.indptr[i], scores.indptr[i + 1]
            docs, vals = scores.indices[lo:hi], scores.data[lo:hi]
            if self.nonoccurrence is not None:
                vals = vals + self.nonoccurrence[queries[i]].sum(dtype=np.float32)
            else:
                pos = vals > 0
                docs, vals = docs[pos], vals[pos]
            if len(vals) > k:
                part = np.argpartition(-vals, k - 1)[:k]
                docs, vals = docs[part], vals[part]
            order = np.lexsort((docs, -vals))
            out.append((docs[order], vals[order]))
        return out

    def score(self, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """BM25 scores of given document rows for one query (0 for no shared term)."""
        sub = self.matrix[query][:, rows]
        vals = np.asarray(sub.sum(axis=0)).ravel().astype(np.float32)
        if self.nonoccurrence is not None:
            vals += self.nonoccurrence[query].sum(dtype=np.float32)
        return vals


@register_retriever("bm25")
class BM25Retriever(Retriever):
    """BM25 with bm25s' defaults (k1=1.5, b=0.75, Lucene idf, English Snowball stemmer, "en" stopwords)."""

    def __init__(self, k1: float = 1.5, b: float = 0.75, method: str = "lucene", delta: float = 0.5,
                 stemmer: str | None = "english", stopwords: str | Sequence[str] | None = "en",
                 backend: str = "bm25s", scorer: str = "sparse", epsilon: float = 0.25,
                 batch_size: int = 256, index_batch_size: int = 50_000, show_progress: bool = False):
        if method not in METHODS:
            raise ConfigError(f"unknown BM25 method {method!r}; choose from {', '.join(METHODS)}")
        if backend not in ("bm25s", "rank_bm25"):
            raise ConfigError(f"unknown BM25 backend {backend!r}; choose bm25s or rank_bm25")
        if backend == "rank_bm25" and method not in ("robertson", "bm25l", "bm25+"):
            raise ConfigError(f"rank_bm25 implements methods robertson (BM25Okapi), bm25l and bm25+, not {method!r}")
        if scorer not in ("sparse", "bm25s"):
            raise ConfigError(f"unknown BM25 scorer {scorer!r}; choose sparse or bm25s")
        if k1 < 0 or not 0 <= b <= 1:
            raise ConfigError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.k1, self.b, self.method, self.delta = float(k1), float(b), method, float(delta)
        self.stemmer, self.stopwords = stemmer or None, stopwords or None
        self.backend, self.scorer, self.epsilon = backend, scorer, float(epsilon)
        self.batch_size, self.index_batch_size = batch_size, index_batch_size
        self.show_progress = show_progress
        self.analyzer: Analyzer | None = None
        self.sparse: SparseIndex | None = None
        self.bm25s = None
        self._rank_bm25 = None
        self.ids: DocIds = DocIds.from_list([])

    def config(self) -> dict:
        return {"name": self.name, "k1": self.k1, "b": self.b, "method": self.method, "delta": self.delta,
                "stemmer": self.stemmer, "stopwords": self.stopwords, "backend": self.backend}

    # ------------------------------------------------------------------ indexing
    def index(self, corpus: CorpusLike) -> None:
        self.analyzer = Analyzer(self.stemmer, self.stopwords)
        if self.backend == "rank_bm25":
            self._index_rank_bm25(corpus)
        else:
            self._index_bm25s(corpus)
        self.ids = corpus_ids(corpus)

    def _index_rank_bm25(self, corpus: CorpusLike) -> None:
        import rank_bm25

        tokens = []
        for _, texts in corpus_batches(corpus, self.index_batch_size):
            tokens += [self.analyzer.terms(t) for t in texts]
        cls = {"robertson": rank_bm25.BM25Okapi, "bm25l": rank_bm25.BM25L, "bm25+": rank_bm25.BM25Plus}[self.method]
        kwargs = {"epsilon": self.epsilon} if self.method == "robertson" else {"delta": self.delta}
        self._rank_bm25 = cls(tokens, k1=self.k1, b=self.b, **kwargs)

    def _index_bm25s(self, corpus: CorpusLike) -> None:
        import bm25s

        n_docs = 0
        docs_parts, terms_parts, tf_parts, len_parts = [], [], [], []
        batches = corpus_batches(corpus, self.index_batch_size)
        if self.show_progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc="BM25 index", unit="batch", leave=False)
        for batch_ids, texts in batches:
            lengths, term_ids = self.analyzer.encode_batch(texts, grow=True)
            local = np.repeat(np.arange(len(texts), dtype=np.int64), lengths)
            key, tf = np.unique((local << 32) | term_ids.astype(np.int64), return_counts=True)
            docs_parts.append((key >> 32).astype(np.int32) + n_docs)
            terms_parts.append((key & 0xFFFFFFFF).astype(np.int32))
            tf_parts.append(tf.astype(np.int32))
            len_parts.append(lengths)
            n_docs += len(batch_ids)
        if not n_docs:
            raise ConfigError("cannot index an empty corpus")
        n_terms = len(self.analyzer)
        doc_len = np.concatenate(len_parts)
        docs = np.concatenate(docs_parts)
        del docs_parts
        terms = np.concatenate(terms_parts)
        del terms_parts
        tf = np.concatenate(tf_parts)
        del tf_parts
        # bm25s: float32 idf from float64 math, tf-component in float64, impact stored as float32
        df = np.bincount(terms, minlength=n_terms)
        idf64 = _idf(self.method, df, n_docs)
        idf = idf64.astype(np.float32)
        l_avg = float(doc_len.mean()) if n_docs else 0.0
        nonocc = None
        if self.method in ("bm25l", "bm25+"):
            nonocc = (idf64 * _tfc(self.method, np.zeros(1), l_avg, l_avg, self.k1, self.b, self.delta)).astype(np.float32)
            nonocc[df == 0] = 0
        data = np.empty(len(terms), dtype=np.float32)
        step = 4_000_000  # bounded float64 temporaries
        for s in range(0, len(terms), step):
            t = terms[s : s + step]
            tfc = _tfc(self.method, tf[s : s + step].astype(np.float64), doc_len[docs[s : s + step]].astype(np.float64),
                       l_avg, self.k1, self.b, self.delta)
            impact = idf[t].astype(np.float64) * tfc
            if nonocc is not None:
                impact -= nonocc[t]
            data[s : s + step] = impact
        del tf
        order = np.argsort(terms, kind="stable")  # doc order within each term, as bm25s
        del terms
        indices = docs[order]
        del docs
        data = data[order]
        del order
        indptr = np.zeros(n_terms + 1, dtype=np.int64)
        np.cumsum(df, out=indptr[1:])
        if indptr[-1] < np.iinfo(np.int32).max:
            indptr = indptr.astype(np.int32)
        self.sparse = SparseIndex(data, indices, indptr, n_docs, nonocc)
        model = bm25s.BM25(k1=self.k1, b=self.b, delta=self.delta, method=self.method)
        model.scores = {"data": data, "indices": indices, "indptr": indptr, "num_docs": n_docs}
        model.vocab_dict = dict(self.analyzer.term_ids)
        model.vocab_dict.setdefault("", n_terms)  # bm25s' empty token (no postings)
        model.nonoccurrence_array = nonocc
        model.unique_token_ids_set = set(model.vocab_dict.values())
        self.bm25s = model
        log.info("BM25 index: %d docs, %d terms, %d postings, %.1f MB", n_docs, n_terms, len(data),
                 self.sparse.nbytes / 1e6)

    # ------------------------------------------------------------------ search
    def _require_index(self) -> None:
        if self.sparse is None and self._rank_bm25 is None:
            raise RuntimeError("call index() before search()")

    def search_batch(self, queries: Mapping[str, str], k: int) -> Run:
        self._require_index()
        qids = list(queries)
        k = min(k, len(self.ids))
        if self._rank_bm25 is not None:
            return self._search_rank_bm25(qids, queries, k)
        if self.scorer == "bm25s":
            return self._search_bm25s(qids, queries, k)
        lengths, flat = self.analyzer.encode_batch([queries[q] for q in qids], grow=False)
        parts = np.split(flat, np.cumsum(lengths)[:-1]) if len(qids) else []
        run: Run = {}
        for qid, (rows, scores) in zip(qids, self.sparse.topk(parts, k)):
            run[qid] = list(zip(self.ids.take(rows), scores.tolist()))
        return run

    def _search_bm25s(self, qids, queries, k) -> Run:
        tokens = [[t for t in self.analyzer.terms(queries[q]) if t in self.analyzer.term_ids] for q in qids]
        docs, scores = self.bm25s.retrieve(tokens, k=k, show_progress=False, n_threads=0)
        run: Run = {}
        for row, qid in enumerate(qids):
            keep = scores[row] > 0  # bm25s pads with zero-score docs when fewer match
            run[qid] = list(zip(self.ids.take(np.asarray(docs[row])[keep]), scores[row][keep].astype(float).tolist()))
        return run

    def _search_rank_bm25(self, qids, queries, k) -> Run:
        run: Run = {}
        for qid in qids:
            scores = np.asarray(self._rank_bm25.get_scores(self.analyzer.terms(queries[qid])), dtype=np.float64)
            top = np.argpartition(-scores, k - 1)[:k] if len(scores) > k else np.arange(len(scores))
            top = top[np.lexsort((top, -scores[top]))]
            top = top[scores[top] > 0]
            run[qid] = list(zip(self.ids.take(top), scores[top].tolist()))
        return run

    def score(self, query: str, doc_ids: Sequence[str]) -> np.ndarray:
        """BM25 scores of specific documents (unknown ids score NaN)."""
        self._require_index()
        rows = self.ids.rows(doc_ids)
        out = np.full(len(doc_ids), math.nan, dtype=np.float64)
        known = rows >= 0
        if not known.any():
            return out
        if self._rank_bm25 is not None:
            out[known] = self._rank_bm25.get_batch_scores(self.analyzer.terms(query), rows[known].tolist())
            return out
        _, terms = self.analyzer.encode_batch([query], grow=False)
        if len(terms) == 0:
            out[known] = 0.0
            return out
        out[known] = self.sparse.score(terms, rows[known])
        return out


def bm25s_reference(texts: Iterable[str], k1=1.5, b=0.75, method="lucene", stemmer="english", stopwords="en"):
    """Index ``texts`` with plain bm25s (its own tokenizer); for tests and the benchmark."""
    import bm25s
    import Stemmer

    tokens = bm25s.tokenize(list(texts), stopwords=stopwords, stemmer=Stemmer.Stemmer(stemmer) if stemmer else None,
                            show_progress=False)
    model = bm25s.BM25(k1=k1, b=b, method=method)
    model.index(tokens, show_progress=False)
    return model, tokens
