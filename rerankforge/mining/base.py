"""First-stage retrievers behind one interface: index a corpus once, search query batches."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

from rerankforge.data.beir import Corpus
from rerankforge.data.trec import Run
from rerankforge.errors import ConfigError

RETRIEVERS: dict[str, type[Retriever]] = {}


def register_retriever(name: str):
    def wrap(cls):
        cls.name = name
        RETRIEVERS[name] = cls
        return cls

    return wrap


class Retriever(ABC):
    name: str = ""

    @abstractmethod
    def index(self, corpus: Corpus) -> None:
        """Build the index over ``corpus`` (kept by reference; texts are not copied)."""

    @abstractmethod
    def search(self, queries: Mapping[str, str], k: int) -> Run:
        """Top-``k`` documents per query, best first."""


def build_retriever(name: str, **params) -> Retriever:
    if name not in RETRIEVERS:
        raise ConfigError(f"unknown retriever {name!r}; available: {', '.join(sorted(RETRIEVERS))}")
    return RETRIEVERS[name](**params)
