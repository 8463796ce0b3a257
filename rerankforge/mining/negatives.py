"""Build training groups: judged positives plus hard negatives sampled from a first-stage run.

For each judged query with at least one positive (grade > 0) the miner looks at the run's
candidates with 1-based rank in ``[rank_min, rank_max]`` and removes, in this order (each removed
candidate is counted once, under the first rule that removed it):

1. ``judged_positive`` -- a judged positive is never a negative;
2. ``not_in_corpus`` -- the run names a document the corpus does not have;
3. ``duplicate_of_positive`` -- same normalised text as a positive (:func:`~rerankforge.retrieve.corpus.text_key`);
4. ``margin_abs`` -- first-stage score > ``ref - margin_abs`` (NV-Retriever "TopK-MarginPos");
5. ``margin_rel`` -- first-stage score > ``ref - (1 - margin_rel) * |ref|``, i.e. above
   ``margin_rel`` x the positive's score for positive scores (NV-Retriever "TopK-PercPos",
   Moreira et al. 2024, with 0.95); ``ref`` is the lowest (``margin_ref="min"``) or highest
   positive first-stage score. Positives the run missed are scored by the retriever when it can
   (``Retriever.score``); if no positive has a score the margin rules are skipped for that query
   and the report counts it.

The remaining candidates are put in the strategy's order -- ``top`` (rank order), ``uniform``
(random permutation) or ``stratified`` (the window split into ``strata`` equal rank ranges, visited
round-robin, random within each) -- and the first ``negatives`` that also pass the optional
cross-encoder check are taken. With ``rescore_model`` set, candidates are scored lazily in that
order (batched across queries) and dropped when the cross-encoder score exceeds
``rescore_max_score`` (``rescore_max_score``) or the positives' lowest cross-encoder score minus
``rescore_margin`` (``rescore_margin``); the cross-encoder score is stored as ``teacher`` on every
candidate of the group. Judged non-relevant documents may be negatives (their grade, at most 0,
becomes 0). Groups with fewer than ``min_negatives`` negatives are not written. Every candidate
keeps its first-stage rank and score.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np

from rerankforge.data.beir import Corpus
from rerankforge.data.groups import Candidate, Group
from rerankforge.data.trec import Run
from rerankforge.config import option
from rerankforge.errors import ConfigError
from rerankforge.retrieve.corpus import CorpusLike, CorpusStream, fetch_texts, text_key

STRATEGIES = ("top", "uniform", "stratified")
RULES = ("judged_positive", "not_in_corpus", "duplicate_of_positive", "margin_abs", "margin_rel",
         "rescore_max_score", "rescore_margin")


@dataclass
class NegativePolicy:
    """How negatives are drawn and filtered (see the module docstring for the exact rules)."""

    negatives: int = option(15, flag="--negatives", help="negatives per query")
    rank_min: int = option(1, flag="--rank-min", help="first rank negatives may come from")
    rank_max: int = option(100, flag="--rank-max", help="last rank negatives may come from")
    seed: int = option(0, flag="--seed", help="sampling seed")
    strategy: str = option("uniform", flag="--strategy", choices=STRATEGIES, help="sampling in the rank window")
    strata: int = option(5, flag="--strata", help="rank strata for --strategy stratified")
    margin_abs: Optional[float] = option(None, flag="--margin-abs",
                                         help="drop negatives scoring above (positive score - MARGIN)")
    margin_rel: Optional[float] = option(None, flag="--margin-rel",
                                         help="drop negatives scoring above REL x positive score (e.g. 0.95)")
    margin_ref: str = option("min", flag="--margin-ref", choices=("min", "max"),
                             help="which positive's score the margins use")
    dedup: bool = option(True, flag="--no-dedup", help="keep negatives whose normalised text equals a positive's")
    rescore_model: Optional[str] = option(None, flag="--rescore-model",
                                          help="cross-encoder checkpoint to rescore candidates")
    rescore_max_score: Optional[float] = option(None, flag="--rescore-max-score",
                                                help="drop negatives the cross-encoder scores above this")
    rescore_margin: Optional[float] = option(None, flag="--rescore-margin",
                                             help="drop negatives within MARGIN of the positives' CE score")
    rescore_batch_size: int = option(64, flag="--rescore-batch-size", help="cross-encoder batch size")
    rescore_bf16: bool = True
    min_negatives: int = option(1, flag="--min-negatives", help="skip queries with fewer negatives")

    def validate(self) -> NegativePolicy:
        if self.negatives < 1:
            # 0 writes groups of positives only: nothing for a ranking loss to learn from
            raise ConfigError(f"negatives (--negatives) must be >= 1, got {self.negatives}")
        if self.rank_min < 1 or self.rank_max < self.rank_min:
            raise ConfigError(f"need 1 <= rank_min <= rank_max, got [{self.rank_min}, {self.rank_max}]")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; choose from {', '.join(STRATEGIES)}")
        if self.strata < 1:
            raise ConfigError(f"strata must be >= 1, got {self.strata}")
        if self.margin_abs is not None and self.margin_abs < 0:
            raise ConfigError(f"margin_abs must be >= 0, got {self.margin_abs}")
        if self.margin_rel is not None and not self.margin_rel > 0:
            raise ConfigError(f"margin_rel must be > 0 (e.g. 0.95 keeps negatives below 95% of the positive), "
                              f"got {self.margin_rel}")
        if self.margin_ref not in ("min", "max"):
            raise ConfigError(f"margin_ref must be min or max, got {self.margin_ref!r}")
        if self.min_negatives < 0:
            raise ConfigError(f"min_negatives must be >= 0, got {self.min_negatives}")
        return self

    @property
    def uses_margin(self) -> bool:
        return self.margin_abs is not None or self.margin_rel is not None


@dataclass
class MiningStats:
    """Counters behind the mining report (see :mod:`rerankforge.mining.report`)."""

    judged_queries: int = 0
    queries_without_positives: int = 0
    queries_missing_text: int = 0
    queries_not_in_run: int = 0
    queries_written: int = 0
    queries_dropped: int = 0
    queries_short: int = 0
    margin_skipped_queries: int = 0
    positives: int = 0
    positives_scored_by_retriever: int = 0
    positives_without_text: int = 0
    in_window: int = 0
    eligible: int = 0
    selected: int = 0
    judged_negatives_selected: int = 0
    rescored_pairs: int = 0
    rescore_seconds: float = 0.0
    removed: Counter = field(default_factory=lambda: Counter({r: 0 for r in RULES}))
    negatives_per_query: Counter = field(default_factory=Counter)
    negative_ranks: list[int] = field(default_factory=list)
    positive_ranks: list[list[int | None]] = field(default_factory=list)
    run_depth: int = 0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["removed"] = dict(self.removed)
        d["negatives_per_query"] = {str(k): v for k, v in sorted(self.negatives_per_query.items())}
        return d


@dataclass
class _Pending:
    qid: str
    query: str
    positives: dict[str, float]
    pos_info: dict[str, tuple[int | None, float | None]]
    judged: Mapping[str, int]
    ranked: list[tuple[str, float]]
    order: list[tuple[int, str, float]] = field(default_factory=list)  # eligible candidates, strategy order
    cursor: int = 0
    chosen: list[tuple[int, str, float]] = field(default_factory=list)
    teacher: dict[str, float] = field(default_factory=dict)
    pos_ce_ref: float | None = None
    usable: list[str] = field(default_factory=list)


class NegativeMiner:
    """Mine groups query batch by query batch; ``stats`` accumulates over all batches.

    ``corpus`` gives texts (a :class:`Corpus`, or a :class:`CorpusStream` read once per batch for
    the documents a step needs); ``retriever`` (optional) scores positives the run missed for the
    margin rules; ``reranker`` (optional) overrides ``policy.rescore_model`` with a loaded object
    that has ``score_pairs(queries, docs)``.
    """

    def __init__(self, policy: NegativePolicy, corpus: CorpusLike, retriever=None, reranker=None,
                 with_text: bool = True):
        self.policy = policy.validate()
        p = self.policy
        if (p.rescore_max_score is not None or p.rescore_margin is not None) and not p.rescore_model and reranker is None:
            raise ConfigError("rescore_max_score / rescore_margin need rescore_model (a cross-encoder checkpoint)")
        self.corpus = corpus
        self.retriever = retriever if retriever is not None and getattr(retriever, "can_score", False) else None
        self.with_text = with_text
        self._reranker = reranker
        self.stats = MiningStats()
        self._stream = isinstance(corpus, CorpusStream)
        self._keys: dict[str, int] = {}
        self._known: set[str] = set()

    @property
    def reranker(self):
        if self._reranker is None and self.policy.rescore_model:
            from rerankforge.models import load_reranker

            self._reranker = load_reranker(self.policy.rescore_model)
        return self._reranker

    # ------------------------------------------------------------------ public
    def mine(self, queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]],
             runs: Run | Iterable[Run], chunk: int = 4096) -> Iterator[Group]:
        """Yield groups. ``runs`` is one run or an iterable of partial runs (e.g.
        ``Retriever.iter_search``); queries are processed in qrels order within each part."""
        if self._stream:
            # A stream is read once per part (rescoring texts), so parts are large here; output
            # texts are attached at the end in one more pass.
            chunk = max(chunk, 50_000)
        groups = (g for qids, run in self._parts(queries, qrels, runs, chunk)
                  for g in self._mine_part(qids, queries, qrels, run))
        if not (self._stream and self.with_text):
            yield from groups
            return
        held = list(groups)
        texts = fetch_texts(self.corpus, {c.doc_id for g in held for c in g.candidates})
        for g in held:
            for c in g.candidates:
                c.text = texts.get(c.doc_id)  # every candidate was checked to be in the corpus
            yield g

    def _parts(self, queries, qrels, runs, chunk) -> Iterator[tuple[list[str], Mapping]]:
        if isinstance(runs, Mapping):
            qids = [q for q in qrels if q in queries]
            for s in range(0, len(qids), chunk):
                yield qids[s : s + chunk], runs
            return
        seen: set[str] = set()
        buf_q: list[str] = []
        buf_run: dict = {}
        for run in runs:
            qids = [q for q in run if q in qrels and q in queries]
            seen.update(qids)
            buf_q += qids
            buf_run.update({q: run[q] for q in qids})
            if len(buf_q) >= chunk:
                yield buf_q, buf_run
                buf_q, buf_run = [], {}
        rest = [q for q in qrels if q in queries and q not in seen]
        buf_q += rest  # judged queries the retriever returned nothing for
        if buf_q:
            yield buf_q, buf_run

    # ------------------------------------------------------------------ one batch
    def _mine_part(self, qids: list[str], queries, qrels, run: Mapping) -> Iterator[Group]:
        p, st = self.policy, self.stats
        pending: list[_Pending] = []
        for qid in qids:
            st.judged_queries += 1
            judged = qrels[qid]
            positives = {d: float(g) for d, g in judged.items() if g > 0}
            if not positives:
                st.queries_without_positives += 1
                continue
            ranked = run.get(qid)
            if ranked is None:
                st.queries_not_in_run += 1
                ranked = []
            st.run_depth = max(st.run_depth, len(ranked))
            st.positives += len(positives)
            pos_info = {d: (None, None) for d in positives}
            for r, (d, s) in enumerate(ranked, start=1):
                if d in pos_info:
                    pos_info[d] = (r, float(s))
            st.positive_ranks.append([pos_info[d][0] for d in positives])
            pending.append(_Pending(qid, queries[qid], positives, pos_info, judged, ranked))
        if not pending:
            return
        self._score_missing_positives(pending)
        self._lookup(pending)
        usable = []
        for item in pending:
            # a positive without text (unknown id, or an empty document the corpus skipped) cannot be trained on
            item.usable = [d for d in item.positives if d in self._known]
            st.positives_without_text += len(item.positives) - len(item.usable)
            if item.usable:
                usable.append(item)
            else:
                st.queries_missing_text += 1
                st.queries_dropped += 1
        pending = usable
        for item in pending:
            item.order = self._filter(item)
        if self._reranker is not None or p.rescore_model:
            self._select_with_rescoring(pending)
        else:
            for item in pending:
                item.chosen = item.order[: p.negatives]
        texts = self._texts(pending) if self.with_text else {}
        for item in pending:
            group = self._group(item, texts)
            if group is not None:
                yield group

    def _score_missing_positives(self, pending: list[_Pending]) -> None:
        if not self.policy.uses_margin or self.retriever is None:
            return
        for item in pending:
            missing = [d for d, (r, s) in item.pos_info.items() if s is None]
            if not missing:
                continue
            scores = self.retriever.score(item.query, missing)
            for d, s in zip(missing, scores):
                if not math.isnan(s):
                    item.pos_info[d] = (None, float(s))
                    self.stats.positives_scored_by_retriever += 1

    def _lookup(self, pending: list[_Pending]) -> None:
        """Which window candidates exist in the corpus, and (for dedup) their text keys."""
        p = self.policy
        need: set[str] = set()
        for item in pending:
            need.update(item.positives)
            for r, (d, _) in enumerate(item.ranked, start=1):
                if r > p.rank_max:
                    break
                if r >= p.rank_min:
                    need.add(d)
        if isinstance(self.corpus, Corpus):
            index = self.corpus.index
            self._known = {d for d in need if d in index}
            if p.dedup:
                for d in self._known - self._keys.keys():
                    self._keys[d] = text_key(self.corpus.texts[index[d]])
            return
        ids = list(need)
        rows = self.corpus.require_ids().rows(ids)
        self._known = {d for d, r in zip(ids, rows.tolist()) if r >= 0}
        if p.dedup:
            keys = self.corpus.text_keys()
            self._keys = {d: int(keys[r]) for d, r in zip(ids, rows.tolist()) if r >= 0}

    def _filter(self, item: _Pending) -> list[tuple[int, str, float]]:
        p, st = self.policy, self.stats
        removed = st.removed
        pos_keys = {self._keys[d] for d in item.positives if d in self._keys} if p.dedup else set()
        ref = None
        if p.uses_margin:
            scores = [s for _, s in item.pos_info.values() if s is not None]
            if scores:
                ref = min(scores) if p.margin_ref == "min" else max(scores)
            else:
                st.margin_skipped_queries += 1
        abs_cut = ref - p.margin_abs if ref is not None and p.margin_abs is not None else None
        rel_cut = ref - (1.0 - p.margin_rel) * abs(ref) if ref is not None and p.margin_rel is not None else None
        window = []
        for r, (d, s) in enumerate(item.ranked, start=1):
            if r < p.rank_min:
                continue
            if r > p.rank_max:
                break
            st.in_window += 1
            if d in item.positives:
                removed["judged_positive"] += 1
            elif d not in self._known:
                removed["not_in_corpus"] += 1
            elif pos_keys and self._keys.get(d) in pos_keys:
                removed["duplicate_of_positive"] += 1
            elif abs_cut is not None and s > abs_cut:
                removed["margin_abs"] += 1
            elif rel_cut is not None and s > rel_cut:
                removed["margin_rel"] += 1
            else:
                window.append((r, d, float(s)))
        st.eligible += len(window)
        return self._order(window, item.qid, len(item.ranked))

    def _order(self, window: list[tuple[int, str, float]], qid: str, run_len: int) -> list[tuple[int, str, float]]:
        p = self.policy
        if p.strategy == "top" or not window:
            return window
        rng = random.Random(f"{p.seed}-{qid}")
        if p.strategy == "uniform":
            out = list(window)
            rng.shuffle(out)
            return out
        hi = min(p.rank_max, run_len)
        width = (hi - p.rank_min + 1) / p.strata
        strata: list[list[tuple[int, str, float]]] = [[] for _ in range(p.strata)]
        for cand in window:
            strata[min(int((cand[0] - p.rank_min) / width), p.strata - 1)].append(cand)
        for s in strata:
            rng.shuffle(s)
        out = []
        depth = 0
        while len(out) < len(window):
            for s in strata:
                if depth < len(s):
                    out.append(s[depth])
            depth += 1
        return out

    # ------------------------------------------------------------------ cross-encoder
    def _select_with_rescoring(self, pending: list[_Pending]) -> None:
        p, st = self.policy, self.stats
        model = self.reranker
        need_ids = set()
        for item in pending:
            need_ids.update(item.positives)
            need_ids.update(d for _, d, _ in item.order)
        texts = fetch_texts(self.corpus, need_ids)
        # positives first: their scores are the teacher targets and the rescore margin reference
        pairs = [(item, d) for item in pending for d in item.usable if d in texts]
        self._score(model, pairs, texts)
        for item in pending:
            scored = [item.teacher[d] for d in item.usable if d in item.teacher]
            item.pos_ce_ref = min(scored) if scored else None
        active = [it for it in pending if p.negatives > 0]
        while active:
            pairs = []
            for item in active:
                need = p.negatives - len(item.chosen)
                take = item.order[item.cursor : item.cursor + need + max(2, need // 2)]
                pairs += [(item, d) for _, d, _ in take if d in texts]
            self._score(model, pairs, texts)
            still = []
            for item in active:
                while len(item.chosen) < p.negatives and item.cursor < len(item.order):
                    cand = item.order[item.cursor]
                    if cand[1] not in item.teacher:
                        if cand[1] in texts:
                            break  # not scored yet: next round
                        item.cursor += 1  # no text: cannot be scored, cannot be a negative
                        st.removed["not_in_corpus"] += 1
                        continue
                    item.cursor += 1
                    ce = item.teacher[cand[1]]
                    if p.rescore_max_score is not None and ce > p.rescore_max_score:
                        st.removed["rescore_max_score"] += 1
                    elif p.rescore_margin is not None and item.pos_ce_ref is not None and ce > item.pos_ce_ref - p.rescore_margin:
                        st.removed["rescore_margin"] += 1
                    else:
                        item.chosen.append(cand)
                if len(item.chosen) < p.negatives and item.cursor < len(item.order):
                    still.append(item)
            active = still

    def _score(self, model, pairs, texts) -> None:
        todo = [(item, d) for item, d in pairs if d not in item.teacher]
        if not todo:
            return
        t0 = time.perf_counter()
        scores = model.score_pairs([item.query for item, _ in todo], [texts[d] for _, d in todo],
                                   batch_size=self.policy.rescore_batch_size, bf16=self.policy.rescore_bf16)
        for (item, d), s in zip(todo, np.asarray(scores, dtype=np.float64).tolist()):
            item.teacher[d] = s
        self.stats.rescored_pairs += len(todo)
        self.stats.rescore_seconds += time.perf_counter() - t0

    # ------------------------------------------------------------------ output
    def _texts(self, pending: list[_Pending]) -> dict[str, str]:
        if self._stream:
            return {}  # attached after all parts, in one pass (see mine)
        index, texts = self.corpus.index, self.corpus.texts
        need = set()
        for item in pending:
            need.update(item.usable)
            need.update(d for _, d, _ in item.chosen)
        return {d: texts[index[d]] for d in need if d in index}

    def _group(self, item: _Pending, texts: dict[str, str]) -> Group | None:
        p, st = self.policy, self.stats
        n = len(item.chosen)
        st.negatives_per_query[n] += 1
        if n < p.negatives:
            st.queries_short += 1
        if n < p.min_negatives:
            st.queries_dropped += 1
            return None
        cands = []
        for d in item.usable:
            g = item.positives[d]
            r, s = item.pos_info[d]
            cands.append(Candidate(d, texts.get(d) if self.with_text else None, g, teacher=item.teacher.get(d),
                                   rank=r, score=s))
        for r, d, s in sorted(item.chosen):
            judged = item.judged.get(d)
            if judged is not None:
                st.judged_negatives_selected += 1
            cands.append(Candidate(d, texts.get(d) if self.with_text else None, 0.0, teacher=item.teacher.get(d),
                                   rank=r, score=s))
            st.negative_ranks.append(r)
        st.selected += n
        st.queries_written += 1
        meta = {"negatives": n}
        return Group(item.qid, item.query, cands, meta)


def mine_groups(queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]], run: Run,
                corpus: Corpus | CorpusStream, policy: NegativePolicy, with_text: bool = True,
                retriever=None, miner: NegativeMiner | None = None) -> Iterator[Group]:
    """Groups for every judged query with a positive (see the module docstring for the rules).
    Pass ``miner`` to read its ``stats`` afterwards."""
    miner = miner or NegativeMiner(policy, corpus, retriever=retriever, with_text=with_text)
    yield from miner.mine(queries, qrels, run)
