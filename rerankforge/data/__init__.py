"""Data formats: BEIR collections, TREC runs and qrels, training groups, click logs."""

from rerankforge.data.beir import Collection, Corpus, load_corpus, load_qrels, load_queries
from rerankforge.data.groups import Candidate, Group, read_groups, write_groups
from rerankforge.data.trec import Run, read_run, write_run

__all__ = [
    "Candidate",
    "Collection",
    "Corpus",
    "Group",
    "Run",
    "load_corpus",
    "load_qrels",
    "load_queries",
    "read_groups",
    "read_run",
    "write_groups",
    "write_run",
]
