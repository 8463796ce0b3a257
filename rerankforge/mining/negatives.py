"""Build training groups: judged positives plus negatives sampled from a first-stage run."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from rerankforge.data.beir import Corpus
from rerankforge.data.groups import Candidate, Group
from rerankforge.data.trec import Run


@dataclass
class NegativePolicy:
    """``negatives`` per query drawn uniformly from first-stage ranks [rank_min, rank_max]
    (1-based, inclusive). Judged positives (grade > 0) are never negatives."""

    negatives: int = 15
    rank_min: int = 1
    rank_max: int = 100
    seed: int = 0


def mine_groups(queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]], run: Run,
                corpus: Corpus, policy: NegativePolicy, with_text: bool = True) -> Iterator[Group]:
    for qid, judged in qrels.items():
        if qid not in queries:
            continue
        positives = {d: g for d, g in judged.items() if g > 0}
        if not positives:
            continue
        ranked = run.get(qid, [])
        position = {d: (r, s) for r, (d, s) in enumerate(ranked, start=1)}
        window = [(r, d, s) for r, (d, s) in enumerate(ranked, start=1)
                  if policy.rank_min <= r <= policy.rank_max and d not in positives and d in corpus]
        rng = random.Random(f"{policy.seed}-{qid}")
        picked = sorted(rng.sample(window, min(policy.negatives, len(window))))
        cands = []
        for d, g in positives.items():
            r, s = position.get(d, (None, None))
            cands.append(Candidate(d, corpus.text(d) if with_text else None, float(g), rank=r, score=s))
        for r, d, s in picked:
            label = float(judged[d]) if d in judged else 0.0
            cands.append(Candidate(d, corpus.text(d) if with_text else None, label, rank=r, score=s))
        yield Group(qid, queries[qid], cands)
