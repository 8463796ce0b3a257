"""First-stage retrievers behind one interface: index a corpus once, search query batches.

A retriever indexes a :class:`~rerankforge.data.beir.Corpus` or a
:class:`~rerankforge.retrieve.corpus.CorpusStream` (batches; texts are not kept) and answers
``search(queries, k) -> Run`` in query batches of ``batch_size`` (with a progress bar when
``show_progress``). Retrievers that can score arbitrary documents (BM25, dense) implement
``score(query, doc_ids)``, which mining uses for positives the first stage did not retrieve.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from rerankforge.data.trec import Run
from rerankforge.errors import ConfigError
from rerankforge.registry import Registry
from rerankforge.retrieve.corpus import CorpusLike, CorpusStream, corpus_batches

__all__ = ["RETRIEVERS", "CorpusLike", "CorpusStream", "Retriever", "build_retriever", "corpus_batches",
           "register_retriever"]



class Retriever(ABC):
    name: str = ""
    batch_size: int = 256
    show_progress: bool = False

    @abstractmethod
    def index(self, corpus: CorpusLike) -> None:
        """Build the index over ``corpus`` (texts are not copied)."""

    @abstractmethod
    def search_batch(self, queries: Mapping[str, str], k: int) -> Run:
        """Top-``k`` documents for one batch of queries, best first."""

    def iter_search(self, queries: Mapping[str, str], k: int, batch_size: int | None = None,
                    progress: bool | None = None) -> Iterator[Run]:
        """Search in batches, yielding one partial run per batch (for streaming consumers)."""
        if k < 1:
            raise ConfigError(f"search depth must be >= 1, got {k}")
        qids = list(queries)
        size = batch_size or self.batch_size
        starts = range(0, len(qids), size)
        show = self.show_progress if progress is None else progress
        bar = None
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(qids), desc=f"{self.name} search", unit="q", leave=False)
        try:
            for s in starts:
                chunk = qids[s : s + size]
                yield self.search_batch({q: queries[q] for q in chunk}, k)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()

    def search(self, queries: Mapping[str, str], k: int) -> Run:
        """Top-``k`` documents per query, best first."""
        run: Run = {}
        for part in self.iter_search(queries, k):
            run.update(part)
        return run

    def score(self, query: str, doc_ids: Sequence[str]) -> np.ndarray:
        """First-stage scores of specific documents (NaN for unknown ids)."""
        raise NotImplementedError(f"retriever {self.name!r} cannot score arbitrary documents")

    @property
    def can_score(self) -> bool:
        return type(self).score is not Retriever.score

    def config(self) -> dict:
        """Parameters that define this retriever (recorded in reports and run metadata)."""
        return {"name": self.name}


RETRIEVERS: Registry[Retriever] = Registry("retriever", Retriever)
register_retriever = RETRIEVERS.register


def build_retriever(name: str, **params) -> Retriever:
    """A retriever by registry name (``bm25``, ``dense``, ``hybrid``) or ``module:Class``."""
    return RETRIEVERS.build(name, **params)
