"""Maximal Marginal Relevance (Carbonell & Goldstein, SIGIR 1998) over a reranked list:

    next = argmax_{d ∉ S}  λ · rel(d) − (1 − λ) · max_{s ∈ S} sim(d, s)

``rel`` is the query's reranker scores min-max normalised to [0, 1], so it lives on the same scale
as the cosine similarity. λ = 1 keeps the reranked order; smaller λ trades relevance for novelty.

Document-document similarity: TF-IDF cosine (lower-cased word tokens, ``1 + log tf``, smoothed
idf ``log((1 + N) / (1 + df)) + 1`` over the documents being diversified, L2-normalised). Chosen
over bi-encoder embeddings because it needs no second model, costs a sparse product per query,
is deterministic, and near-duplicate detection — what diversification mostly fixes on BEIR-style
corpora — is lexical. Any other similarity can be passed as a matrix to ``mmr_order``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
from scipy import sparse

from rerankforge.data.trec import Run
from rerankforge.errors import ConfigError
from rerankforge.retrieve.fusion import normalize_scores as normalize

_TOKEN = re.compile(r"\w+")


def tfidf_matrix(texts: Sequence[str], idf: dict[str, float] | None = None,
                 vocab: dict[str, int] | None = None) -> sparse.csr_matrix:
    """Rows: L2-normalised TF-IDF vectors of ``texts`` (idf from ``texts`` unless given)."""
    counts = [Counter(_TOKEN.findall(t.lower())) for t in texts]
    if idf is None:
        df = Counter(w for c in counts for w in c)
        n = len(texts)
        idf = {w: math.log((1 + n) / (1 + f)) + 1.0 for w, f in df.items()}
    if vocab is None:
        vocab = {w: i for i, w in enumerate(sorted(idf))}
    rows, cols, vals = [], [], []
    for r, c in enumerate(counts):
        for w, tf in c.items():
            if w in vocab:
                rows.append(r)
                cols.append(vocab[w])
                vals.append((1.0 + math.log(tf)) * idf.get(w, 0.0))
    m = sparse.csr_matrix((vals, (rows, cols)), shape=(len(texts), len(vocab)), dtype=np.float64)
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    return sparse.diags(1.0 / norms) @ m


def tfidf_similarity(texts: Sequence[str]) -> np.ndarray:
    """Cosine similarities ``[n, n]`` between ``texts``."""
    m = tfidf_matrix(texts)
    return np.asarray((m @ m.T).todense())


def mmr_order(relevance: Sequence[float], similarity: np.ndarray, lam: float, k: int | None = None) -> list[int]:
    """Indices in MMR selection order (the first ``k``; all by default). Ties go to the earlier index."""
    if not 0.0 <= lam <= 1.0:
        raise ConfigError(f"MMR lambda must be in [0, 1], got {lam}")
    rel = np.asarray(relevance, dtype=np.float64)
    n = rel.size
    k = n if k is None else min(k, n)
    sim = np.asarray(similarity, dtype=np.float64)
    chosen: list[int] = []
    max_sim = np.full(n, -np.inf)  # −inf until something is selected: the first pick is pure relevance
    free = np.ones(n, dtype=bool)
    for _ in range(k):
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        objective = np.where(free, lam * rel - (1.0 - lam) * penalty, -np.inf)
        i = int(np.argmax(objective))
        chosen.append(i)
        free[i] = False
        max_sim = np.maximum(max_sim, sim[i])
    return chosen


def mmr_rerank(run: Run, text_of: Callable[[str], str], lam: float, depth: int | None = None,
               similarity: Callable[[list[str]], np.ndarray] = tfidf_similarity) -> Run:
    """Diversify each query's top-``depth`` (default: all) by MMR; documents below stay after them in
    their order. Output scores are ``n − position`` (MMR yields an order, not calibrated scores)."""
    out: Run = {}
    for qid, docs in run.items():
        head = docs[:depth] if depth else docs
        tail = docs[len(head):]
        if len(head) > 1 and lam < 1.0:
            rel = normalize(np.array([s for _, s in head]), "minmax")
            order = mmr_order(rel, similarity([text_of(d) for d, _ in head]), lam)
            head = [head[i] for i in order]
        ranked = head + tail
        out[qid] = [(d, float(len(ranked) - i)) for i, (d, _) in enumerate(ranked)]
    return out
