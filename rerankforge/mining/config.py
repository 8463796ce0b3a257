"""The one mining configuration: used by ``rerankforge mine``, a training recipe's ``data.mine``,
``distill`` and ``adapt``.

    collection: bundled:scifact
    split: train
    retriever: bm25            # + every first-stage option of retrieve.config.RetrieverConfig
    depth: 100
    policy: {negatives: 15, rank_min: 1, rank_max: 100, strategy: uniform, margin_rel: 0.95}
    pseudo: {titles: 4000, sentences: 0}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rerankforge.config import option
from rerankforge.errors import ConfigError
from rerankforge.mining.negatives import NegativePolicy
from rerankforge.retrieve.config import RetrieverConfig


@dataclass
class PseudoQueryConfig:
    """Queries made from the corpus itself (mining/pseudo_queries.py): no judgments needed."""

    #: this many title queries (documents whose title has >= title_min_words words and a body)
    titles: int = 0
    title_min_words: int = 4
    #: this many sentence queries (body sentences of sentence_min_words..sentence_max_words words)
    sentences: int = 0
    sentence_min_words: int = 6
    sentence_max_words: int = 40
    seed: int = 0

    def validate(self) -> None:
        if self.titles < 0 or self.sentences < 0:
            raise ConfigError(f"pseudo-query counts must be >= 0, got titles={self.titles}, "
                              f"sentences={self.sentences}")
        if not 0 < self.sentence_min_words <= self.sentence_max_words:
            raise ConfigError("need 0 < sentence_min_words <= sentence_max_words")


@dataclass
class MineConfig(RetrieverConfig):
    collection: Optional[str] = option(None, flag="--collection", metavar="DIR", help="BEIR collection directory")
    split: Optional[str] = option(None, flag="--split", metavar="SPLIT", help="qrels split to mine (its judged queries)")
    #: a first-stage TREC run to mine from instead of retrieving
    run: Optional[str] = option(None, flag="--run", metavar="RUN.trec",
                                help="first-stage TREC run (default: retrieve with --retriever)")
    out: Optional[str] = option(None, flag="--out", metavar="GROUPS.jsonl", help="output groups JSONL")
    save_run: Optional[str] = option(None, flag="--save-run", metavar="RUN.trec",
                                     help="also write the retrieved run here (when --run is not given)")
    report: Optional[str] = option(None, flag="--report", metavar="JSON",
                                   help="report path (default <out>.report.json)")
    #: store candidate texts in the groups (false: doc ids only; training then reads texts from the collection)
    text: bool = option(True, flag="--no-text", help="write doc ids only, no texts")
    #: mine only the first N judged queries of the split (quick runs)
    max_queries: Optional[int] = None
    #: leave this many judged queries out of the groups (drawn with policy.seed), e.g. to choose a
    #: fusion weight or a checkpoint on them; their ids are listed in the report
    holdout_queries: int = 0
    policy: NegativePolicy = option(factory=NegativePolicy)
    pseudo: PseudoQueryConfig = option(factory=PseudoQueryConfig)
    progress: bool = option(True, flag="--no-progress", help="no progress bars")

    def validate(self) -> None:
        super().validate()
        if self.max_queries is not None and self.max_queries < 1:
            raise ConfigError(f"max_queries must be >= 1 (or null for all), got {self.max_queries}")
        if self.holdout_queries < 0:
            raise ConfigError(f"holdout_queries must be >= 0, got {self.holdout_queries}")
        if self.run and (self.pseudo.titles or self.pseudo.sentences):
            raise ConfigError("pseudo-queries need a retriever to find their candidates; they cannot be mined "
                              "from a fixed --run")

    @property
    def search_depth(self) -> int:
        return self.depth if self.depth is not None else max(100, self.policy.rank_max)
