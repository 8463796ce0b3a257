"""``rerankforge convert FORMAT --input IN --out OUT [--arrow] [...]``: other training-data
formats into training groups.

FORMAT is msmarco-triples (``query<TAB>positive<TAB>negative``, or ids with --queries),
flagembedding (reranker JSONL with pos/neg lists and optional teacher scores) or st-hardneg
(sentence-transformers columns query/anchor, positive, negative_1..n as JSONL, CSV, Parquet
or a save_to_disk directory). OUT is a groups JSONL, or with --arrow a datasets
``save_to_disk`` directory. Both are written atomically: an input error leaves no output.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Optional

from rerankforge.config import option, require
from rerankforge.data.groups import Group


@dataclass
class ConvertConfig:
    input: Optional[str] = option(None, flag="--input", help="input file (or dataset directory for st-hardneg)")
    out: Optional[str] = option(None, flag="--out", help="output groups JSONL, or a directory with --arrow")
    arrow: bool = option(False, flag="--arrow", help="write a datasets save_to_disk directory instead of JSONL")

    def validate(self) -> None:
        require(self, "input", "out")

    def options(self) -> dict:
        """The converter's keyword arguments (the fields beyond input/out/arrow that are set)."""
        base = {f.name for f in fields(ConvertConfig)}
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in base and getattr(self, f.name) not in (None, False)}


@dataclass
class MsmarcoConvertConfig(ConvertConfig):
    queries: Optional[str] = option(None, flag="--queries", help="qid<TAB>text file: read the input as qid<TAB>pid<TAB>pid")
    collection: Optional[str] = option(None, flag="--collection",
                                       help="pid<TAB>passage file for the id form (else candidates carry ids only)")
    sorted_input: bool = option(False, flag="--sorted",
                                help="input is sorted by query: stream one group at a time instead of holding all")


@dataclass
class STConvertConfig(ConvertConfig):
    query_column: Optional[str] = option(None, flag="--query-column", help="query column (default: query or anchor)")
    positive_column: str = option("positive", flag="--positive-column", help="positive column")
    sorted_input: bool = option(False, flag="--sorted",
                                help="input is sorted by query: stream one group at a time instead of holding all")


FORMATS = {
    "msmarco-triples": (MsmarcoConvertConfig, "query<TAB>positive<TAB>negative lines (or qid<TAB>pid<TAB>pid)"),
    "flagembedding": (ConvertConfig, 'JSONL {"query", "pos", "neg", "pos_scores", "neg_scores"}'),
    "st-hardneg": (STConvertConfig, "sentence-transformers query/anchor, positive, negative_1..n columns"),
}


def add_parser(sub):
    from rerankforge.config import add_config_args

    p = sub.add_parser("convert", help="convert MS MARCO triples, FlagEmbedding or sentence-transformers data to groups",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = p.add_subparsers(dest="format", metavar="FORMAT", required=True)
    for name, (schema, help_text) in FORMATS.items():
        add_config_args(kinds.add_parser(name, help=help_text), schema, example="arrow=true")
    return p


class _Counter:
    """Counts what passes through, so the summary needs no second pass over the output."""

    def __init__(self, groups: Iterable[Group]):
        self.groups, self.candidates, self.positives, self.teacher = 0, 0, 0, 0
        self._it = groups

    def __iter__(self) -> Iterator[Group]:
        for group in self._it:
            self.groups += 1
            self.candidates += len(group.candidates)
            self.positives += sum(1 for c in group.candidates if c.label is not None and c.label > 0)
            self.teacher += sum(1 for c in group.candidates if c.teacher is not None)
            yield group


def run(args) -> int:
    from rerankforge.config import config_from_args
    from rerankforge.data.convert import convert
    from rerankforge.data.groups import write_groups

    cfg = config_from_args(FORMATS[args.format][0], args)
    counter = _Counter(convert(args.format, cfg.input, **cfg.options()))
    if cfg.arrow:
        from rerankforge.data.hf import save_groups_dataset

        save_groups_dataset(counter, cfg.out)
    else:
        write_groups(cfg.out, counter)
    print(f"wrote {counter.groups} groups, {counter.candidates} candidates ({counter.positives} positives, "
          f"{counter.teacher} with teacher scores) to {cfg.out}")
    if not counter.groups:
        print(f"rerankforge convert: warning: {cfg.input} held no data lines", file=sys.stderr)
        return 1
    return 0
