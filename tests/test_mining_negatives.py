import json
from collections import Counter

import numpy as np
import pytest

from rerankforge.data.beir import Collection, Corpus
from rerankforge.errors import ConfigError
from rerankforge.retrieve.corpus import CorpusStream
from rerankforge.mining.negatives import NegativeMiner, NegativePolicy, mine_groups
from rerankforge.mining.report import build_report, print_report, report_path

# 30 documents; the run ranks d0..d29 for q1 with score = 31 - rank (d0: rank 1, 30.0 ... d29: rank 30, 1.0)
IDS = [f"d{i}" for i in range(30)]
TEXTS = [f"document number {i} about topic {i * 7 % 11}" for i in range(30)]
CORPUS = Corpus(IDS, TEXTS)
RUN = {"q1": [(f"d{i}", float(30 - i)) for i in range(30)]}
QUERIES = {"q1": "what about topic three", "q2": "unjudged positive-less query"}
QRELS = {"q1": {"d3": 1, "d10": 2, "d5": 0}, "q2": {"d1": 0}}


def mine(policy, run=RUN, corpus=CORPUS, qrels=QRELS, **kw):
    miner = NegativeMiner(policy, corpus, **kw)
    groups = list(miner.mine(QUERIES, qrels, run))
    return groups, miner.stats


def negatives(group):
    return [c for c in group.candidates if not c.label]


def test_top_strategy_window_and_positives():
    groups, st = mine(NegativePolicy(negatives=4, rank_min=3, rank_max=10, strategy="top"))
    assert [g.query_id for g in groups] == ["q1"]  # q2 has no positive
    g = groups[0]
    pos = {c.doc_id: c for c in g.candidates if c.label}
    assert pos["d3"].label == 1.0 and pos["d3"].rank == 4 and pos["d3"].score == 27.0
    assert pos["d10"].label == 2.0 and pos["d10"].rank == 11 and pos["d10"].score == 20.0  # outside the window
    # window = ranks 3..10 = d2..d9, minus the positive d3
    assert [(c.doc_id, c.rank, c.score) for c in negatives(g)] == [("d2", 3, 28.0), ("d4", 5, 26.0),
                                                                    ("d5", 6, 25.0), ("d6", 7, 24.0)]
    assert all(c.label == 0.0 and c.text == CORPUS.text(c.doc_id) for c in g.candidates if not c.label)
    assert st.in_window == 8 and st.removed["judged_positive"] == 1 and st.selected == 4
    assert st.judged_negatives_selected == 1  # d5 is judged non-relevant: a sure negative
    assert st.queries_without_positives == 1


def test_uniform_is_seeded_and_uniform_over_the_window():
    p = NegativePolicy(negatives=3, rank_min=1, rank_max=12, strategy="uniform")
    a, _ = mine(p)
    b, _ = mine(p)
    assert [c.doc_id for c in a[0].candidates] == [c.doc_id for c in b[0].candidates]
    counts = Counter()
    trials = 1500
    for seed in range(trials):
        g, _ = mine(NegativePolicy(negatives=3, rank_min=1, rank_max=12, strategy="uniform", seed=seed))
        counts.update(c.doc_id for c in negatives(g[0]))
    eligible = [f"d{i}" for i in range(12) if i not in (3, 10)]  # d3 and d10 are positives
    assert set(counts) == set(eligible)
    expected = trials * 3 / len(eligible)
    for d in eligible:
        assert abs(counts[d] - expected) < 0.2 * expected, (d, counts[d], expected)


def test_stratified_takes_evenly_from_rank_strata():
    p = NegativePolicy(negatives=8, rank_min=1, rank_max=20, strategy="stratified", strata=4)
    g, _ = mine(p)
    ranks = [c.rank for c in negatives(g[0])]
    per_stratum = Counter((r - 1) // 5 for r in ranks)
    assert per_stratum == {0: 2, 1: 2, 2: 2, 3: 2}
    g, _ = mine(NegativePolicy(negatives=6, rank_min=1, rank_max=20, strategy="stratified", strata=4))
    per_stratum = Counter((c.rank - 1) // 5 for c in negatives(g[0]))
    assert sorted(per_stratum.values(), reverse=True) == [2, 2, 1, 1]  # the extra ones go to the top strata
    assert per_stratum[0] == 2 and per_stratum[1] == 2


@pytest.mark.parametrize("ref,margin,removed", [("max", 2.0, 4), ("min", 2.0, 10)])
def test_absolute_margin(ref, margin, removed):
    # positives d3 = 27.0, d10 = 20.0; max ref 27 -> drop scores > 25 (d0,d1,d2,d4); min ref 20 -> drop > 18
    g, st = mine(NegativePolicy(negatives=30, rank_min=1, rank_max=30, strategy="top", margin_abs=margin,
                                margin_ref=ref))
    assert st.removed["margin_abs"] == removed
    cut = (27.0 if ref == "max" else 20.0) - margin
    assert all(c.score <= cut for c in negatives(g[0]))
    assert len(negatives(g[0])) == 28 - removed


def test_relative_margin_topk_percpos():
    # keep below 80% of the positive's score: ref 27 (max) -> drop scores > 21.6 = ranks 1..9 minus d3
    g, st = mine(NegativePolicy(negatives=30, rank_max=30, strategy="top", margin_rel=0.8, margin_ref="max"))
    assert st.removed["margin_rel"] == 8
    assert max(c.score for c in negatives(g[0])) == 21.0
    # negative reference scores: ref - (1 - rel)|ref| keeps the margin below the positive
    run = {"q1": [(d, s - 40.0) for d, s in RUN["q1"]]}  # d3 -> -13, d10 -> -20
    g, st = mine(NegativePolicy(negatives=30, rank_max=30, strategy="top", margin_rel=0.9, margin_ref="max"), run=run)
    assert all(c.score <= -13.0 - 0.1 * 13.0 for c in negatives(g[0]))
    assert st.removed["margin_rel"] == 4  # cut -14.3 removes -10, -11, -12, -14 (d0, d1, d2, d4)


class FakeRetriever:
    can_score = True

    def __init__(self, scores):
        self.scores = scores
        self.calls = []

    def score(self, query, doc_ids):
        self.calls.append(list(doc_ids))
        return np.array([self.scores.get(d, np.nan) for d in doc_ids])


def test_positive_missing_from_run_is_scored_by_the_retriever():
    run = {"q1": [(d, s) for d, s in RUN["q1"] if d not in ("d3", "d10")]}
    p = NegativePolicy(negatives=30, rank_max=30, strategy="top", margin_abs=0.0, margin_ref="max")
    # without a scorer the margin has no reference: skipped, and counted
    g, st = mine(p, run=run)
    assert st.margin_skipped_queries == 1 and st.removed["margin_abs"] == 0
    fake = FakeRetriever({"d3": 24.5, "d10": 3.0})
    g, st = mine(p, run=run, retriever=fake)
    assert fake.calls == [["d3", "d10"]]
    assert st.positives_scored_by_retriever == 2
    assert all(c.score <= 24.5 for c in negatives(g[0]))
    assert st.removed["margin_abs"] == 5  # ref 24.5 removes 30, 29, 28, 26, 25
    pos = {c.doc_id: c for c in g[0].candidates if c.label}
    assert pos["d3"].rank is None and pos["d3"].score == 24.5


def test_duplicates_of_a_positive_and_unknown_docs_are_removed():
    texts = list(TEXTS)
    texts[7] = "  DOCUMENT number 3, about -- topic " + str(3 * 7 % 11) + "!"  # d3's text up to case/punctuation
    corpus = Corpus(IDS, texts)
    run = {"q1": RUN["q1"][:5] + [("ghost", 25.5)] + RUN["q1"][5:]}
    g, st = mine(NegativePolicy(negatives=30, rank_max=31, strategy="top"), run=run, corpus=corpus)
    ids = [c.doc_id for c in negatives(g[0])]
    assert "d7" not in ids and "ghost" not in ids
    assert st.removed["duplicate_of_positive"] == 1 and st.removed["not_in_corpus"] == 1
    g, st = mine(NegativePolicy(negatives=30, rank_max=31, strategy="top", dedup=False), run=run, corpus=corpus)
    assert "d7" in [c.doc_id for c in negatives(g[0])]


class FakeCrossEncoder:
    def __init__(self, scores):
        self.scores = scores
        self.pairs = 0

    def score_pairs(self, queries, docs, batch_size=64, bf16=True):
        self.pairs += len(docs)
        return np.array([self.scores[CORPUS.texts.index(d)] for d in docs], dtype=np.float32)


def test_cross_encoder_max_score_and_margin_filters_are_lazy():
    ce = {i: 0.0 for i in range(30)}
    ce.update({0: 5.0, 1: 0.5, 2: 3.0, 3: 2.0, 10: 4.0, 4: 1.9, 6: 0.1})
    fake = FakeCrossEncoder(ce)
    p = NegativePolicy(negatives=3, rank_max=30, strategy="top", rescore_max_score=1.0)
    g, st = mine(p, reranker=fake)
    negs = negatives(g[0])
    assert [c.doc_id for c in negs] == ["d1", "d5", "d6"]  # d0 (5.0), d2 (3.0), d4 (1.9) exceed 1.0
    assert st.removed["rescore_max_score"] == 3
    assert fake.pairs < 28  # only as many candidates as needed were scored
    assert {c.doc_id: c.teacher for c in g[0].candidates} == pytest.approx(
        {"d3": 2.0, "d10": 4.0, "d1": 0.5, "d5": 0.0, "d6": 0.1})
    # margin against the lowest positive CE score (2.0): drop > 2.0 - 0.5
    g, st = mine(NegativePolicy(negatives=3, rank_max=30, strategy="top", rescore_margin=0.5), reranker=FakeCrossEncoder(ce))
    assert [c.doc_id for c in negatives(g[0])] == ["d1", "d5", "d6"]
    assert st.removed["rescore_margin"] == 3
    with pytest.raises(ConfigError, match="rescore_model"):
        NegativeMiner(NegativePolicy(rescore_max_score=1.0), CORPUS)


def test_real_cross_encoder_checkpoint_rescoring(tmp_path, tiny_bert_dir):
    from rerankforge.models import load_reranker
    from rerankforge.models.cross_encoder import CrossEncoder

    path = tmp_path / "ce"
    CrossEncoder.from_base(str(tiny_bert_dir), max_length=64).save_pretrained(path)
    model = load_reranker(path)
    all_scores = model.score_pairs([QUERIES["q1"]] * 30, TEXTS, bf16=False)
    threshold = float(np.median(all_scores))
    p = NegativePolicy(negatives=5, rank_max=30, strategy="top", rescore_model=str(path), rescore_max_score=threshold,
                       rescore_bf16=False)
    g, st = mine(p)
    for c in g[0].candidates:
        assert c.teacher == pytest.approx(float(all_scores[IDS.index(c.doc_id)]), abs=1e-5)
    assert all(c.teacher <= threshold for c in negatives(g[0]))
    above = [i for i in range(30) if all_scores[i] > threshold and i not in (3, 10)]
    chosen_max_rank = max(c.rank for c in negatives(g[0]))
    assert st.removed["rescore_max_score"] == sum(1 for i in above if i + 1 < chosen_max_rank)


def test_min_negatives_and_report_counts():
    p = NegativePolicy(negatives=5, rank_max=30, margin_abs=0.0, margin_ref="min", min_negatives=1)
    qrels = {"q1": {"d29": 1}}  # the lowest-ranked document is the positive: every other candidate scores higher
    g, st = mine(p, qrels=qrels)
    assert g == [] and st.queries_dropped == 1 and st.negatives_per_query == {0: 1}
    rep = build_report(st, p, source={"run": "x"})
    assert rep["queries"]["no_negatives"] == 1 and rep["removed"]["margin_abs"] == 29
    g, _ = mine(NegativePolicy(negatives=5, rank_max=30, margin_abs=0.0, min_negatives=0), qrels=qrels)
    assert len(g) == 1 and negatives(g[0]) == []


def test_legacy_mine_groups_call():
    groups = list(mine_groups(QUERIES, QRELS, RUN, CORPUS, NegativePolicy(negatives=3, rank_min=2, rank_max=8),
                              with_text=False))
    assert len(groups) == 1
    g = groups[0]
    assert all(c.text is None for c in g.candidates)
    negs = negatives(g)
    assert len(negs) == 3 and all(2 <= c.rank <= 8 and c.doc_id not in ("d3", "d10") for c in negs)
    assert [c.rank for c in negs] == sorted(c.rank for c in negs)


def test_stream_corpus_and_streamed_runs_give_the_same_groups(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"_id": d, "text": t}) + "\n" for d, t in zip(IDS, TEXTS)))
    qrels = {"q1": QRELS["q1"], "q3": {"d20": 1}}
    queries = {**QUERIES, "q3": "topic two"}
    run = {**RUN, "q3": [(f"d{i}", float(i)) for i in range(29, -1, -1)]}
    p = NegativePolicy(negatives=4, rank_max=20, strategy="stratified", strata=2)
    ref = [x.to_json() for x in NegativeMiner(p, CORPUS).mine(queries, qrels, run)]
    stream = [x.to_json() for x in NegativeMiner(p, CorpusStream(path)).mine(queries, qrels, run)]
    parts = [{"q3": run["q3"]}, {"q1": run["q1"]}]
    by_parts = [x.to_json() for x in NegativeMiner(p, CORPUS).mine(queries, qrels, iter(parts))]
    assert ref == stream
    assert sorted(ref, key=lambda g: g["query_id"]) == sorted(by_parts, key=lambda g: g["query_id"])


def test_policy_validation():
    for bad in [dict(rank_min=0), dict(rank_min=5, rank_max=4), dict(strategy="hardest"), dict(negatives=-1),
                dict(margin_rel=0.0), dict(margin_ref="mean"), dict(strata=0), dict(margin_abs=-1.0)]:
        with pytest.raises(ConfigError):
            NegativePolicy(**bad).validate()


def test_report_path_and_printing(capsys):
    assert report_path("out/groups.jsonl").name == "groups.report.json"
    assert report_path("g.jsonl.gz").name == "g.report.json"
    g, st = mine(NegativePolicy(negatives=4, rank_max=10))
    rep = build_report(st, NegativePolicy(negatives=4, rank_max=10), source={}, out="x.jsonl")
    assert rep["recall"]["R@10"] == pytest.approx(0.5)  # d3 at rank 4, d10 at rank 11
    assert rep["success"]["success@10"] == 1.0
    assert rep["negatives_per_query"] == {"4": 1}
    c = rep["candidates"]
    assert c["in_window"] == sum(rep["removed"].values()) + c["selected"] + c["not_selected"]
    from rich.console import Console

    print_report(rep, Console(width=120))
    out = capsys.readouterr().out
    assert "groups written" in out and "negatives per query" in out


def test_scifact_bm25_mining_invariants(scifact_dir):
    from rerankforge.retrieve.bm25 import BM25Retriever
    from rerankforge.eval import evaluate as evaluate_run

    c = Collection(scifact_dir)
    qrels = c.qrels("train")
    qrels = dict(list(qrels.items())[:150])
    r = BM25Retriever()
    r.index(c.corpus)
    run = r.search({q: c.queries[q] for q in qrels}, 100)
    p = NegativePolicy(negatives=7, rank_min=5, rank_max=60, strategy="stratified", margin_rel=0.95)
    miner = NegativeMiner(p, c.corpus, retriever=r)
    groups = list(miner.mine(c.queries, qrels, run))
    st = miner.stats
    assert groups and st.queries_written == len(groups)
    for g in groups:
        judged_pos = {d for d, s in qrels[g.query_id].items() if s > 0}
        assert {x.doc_id for x in g.candidates if x.label} == judged_pos
        pos_score = min(x.score for x in g.candidates if x.label)
        for x in negatives(g):
            assert x.doc_id not in judged_pos and 5 <= x.rank <= 60
            assert dict(run[g.query_id])[x.doc_id] == x.score
            assert x.score <= 0.95 * pos_score + 1e-9
            assert x.text == c.corpus.text(x.doc_id)
    rep = build_report(st, p, source={})
    cand = rep["candidates"]
    assert cand["in_window"] == sum(rep["removed"].values()) + cand["selected"] + cand["not_selected"]
    assert sum(rep["negatives_per_query"].values()) == rep["queries"]["with_positives"]
    # recall of positives agrees with ir-measures R@100 on the same run
    assert rep["recall"]["R@100"] == pytest.approx(evaluate_run(qrels, run, ["R@100"])["R@100"], abs=1e-9)
