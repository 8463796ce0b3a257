"""BM25 through bm25s (fast, sparse matrices) with Snowball stemming and stopwords."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from rerankforge.data.beir import Corpus
from rerankforge.data.trec import Run
from rerankforge.mining.base import Retriever, register_retriever


@register_retriever("bm25")
class BM25Retriever(Retriever):
    def __init__(self, k1: float = 1.2, b: float = 0.75, method: str = "lucene",
                 stemmer: str | None = "english", stopwords: str | None = "en",
                 batch_size: int = 4096, show_progress: bool = False):
        self.k1, self.b, self.method = k1, b, method
        self.stemmer_name, self.stopwords = stemmer, stopwords
        self.batch_size = batch_size
        self.show_progress = show_progress
        self._bm25 = None
        self._ids: list[str] = []

    def _stemmer(self):
        if not self.stemmer_name:
            return None
        import Stemmer

        return Stemmer.Stemmer(self.stemmer_name)

    def _tokenize(self, texts):
        import bm25s

        return bm25s.tokenize(list(texts), stopwords=self.stopwords, stemmer=self._stemmer(),
                              show_progress=False)

    def index(self, corpus: Corpus) -> None:
        import bm25s

        self._ids = corpus.ids
        self._bm25 = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
        self._bm25.index(self._tokenize(corpus.texts), show_progress=self.show_progress)

    def search(self, queries: Mapping[str, str], k: int) -> Run:
        if self._bm25 is None:
            raise RuntimeError("call index() before search()")
        qids = list(queries)
        k = min(k, len(self._ids))
        run: Run = {}
        for s in range(0, len(qids), self.batch_size):
            chunk = qids[s : s + self.batch_size]
            tokens = self._tokenize(queries[q] for q in chunk)
            docs, scores = self._bm25.retrieve(tokens, k=k, show_progress=False, n_threads=1)
            for row, qid in enumerate(chunk):
                keep = scores[row] > 0  # bm25s pads with zero-score docs when fewer match
                run[qid] = [(self._ids[j], float(sc)) for j, sc in zip(np.asarray(docs[row])[keep], scores[row][keep])]
        return run
