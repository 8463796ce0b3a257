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

from rerankforge.data.groups import Group


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, help="input file (or dataset directory for st-hardneg)")
    p.add_argument("--out", required=True, help="output groups JSONL, or a directory with --arrow")
    p.add_argument("--arrow", action="store_true", help="write a datasets save_to_disk directory instead of JSONL")


def _sorted(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sorted", action="store_true", dest="sorted_input",
                   help="input is sorted by query: stream one group at a time instead of holding all in memory")


def add_parser(sub):
    p = sub.add_parser("convert", help="convert MS MARCO triples, FlagEmbedding or sentence-transformers data to groups",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = p.add_subparsers(dest="format", metavar="FORMAT", required=True)

    m = kinds.add_parser("msmarco-triples", help="query<TAB>positive<TAB>negative lines (or qid<TAB>pid<TAB>pid)")
    _common(m)
    m.add_argument("--queries", help="qid<TAB>text file: read the input as qid<TAB>pid<TAB>pid")
    m.add_argument("--collection", help="pid<TAB>passage file for the id form (else candidates carry ids only)")
    _sorted(m)

    f = kinds.add_parser("flagembedding", help='JSONL {"query", "pos", "neg", "pos_scores", "neg_scores"}')
    _common(f)

    s = kinds.add_parser("st-hardneg", help="sentence-transformers query/anchor, positive, negative_1..n columns")
    _common(s)
    s.add_argument("--query-column", dest="query_column", help="query column (default: query or anchor)")
    s.add_argument("--positive-column", dest="positive_column", default="positive", help="positive column (positive)")
    _sorted(s)
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
    from rerankforge.data.convert import convert
    from rerankforge.data.groups import write_groups

    options = {k: getattr(args, k) for k in ("queries", "collection", "sorted_input", "query_column",
                                             "positive_column") if getattr(args, k, None) not in (None, False)}
    counter = _Counter(convert(args.format, args.input, **options))
    if args.arrow:
        from rerankforge.data.hf import save_groups_dataset

        save_groups_dataset(counter, args.out)
    else:
        write_groups(args.out, counter)
    print(f"wrote {counter.groups} groups, {counter.candidates} candidates ({counter.positives} positives, "
          f"{counter.teacher} with teacher scores) to {args.out}")
    if not counter.groups:
        print(f"rerankforge convert: warning: {args.input} held no data lines", file=sys.stderr)
        return 1
    return 0
