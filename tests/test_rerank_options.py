"""`rerank` post-processing on hand-made cases: passages (MaxP/FirstP/sum), MMR, threshold,
score fusion and RRF, and the CLI wiring of each."""

import numpy as np
import pytest
from scipy.special import expit

from rerankforge.cli import main
from rerankforge.data.beir import Collection, Corpus
from rerankforge.data.trec import read_run
from rerankforge.errors import ConfigError
from rerankforge.retrieve.fusion import rrf as reciprocal_rank_fusion
from rerankforge.rerank.mmr import mmr_order, mmr_rerank, tfidf_similarity
from rerankforge.rerank.passages import aggregate, rerank_passages, split_passages
from rerankforge.models.base import load_reranker


class KeywordModel:
    """Scores a passage by how often it says 'gene' (a stand-in with known answers)."""

    def __init__(self):
        self.seen: list[str] = []

    def score_pairs(self, queries, docs, batch_size=64, bf16=True, progress=False):
        self.seen += docs
        return np.array([float(d.split().count("gene")) for d in docs], dtype=np.float32)


DOC = "gene a b c d e f g gene gene h i"  # 12 words


# --- passages ----------------------------------------------------------------------------------

def test_split_passages_windows():
    assert split_passages(DOC, 4, 4) == ["gene a b c", "d e f g", "gene gene h i"]
    assert split_passages(DOC, 4, 2) == ["gene a b c", "b c d e", "d e f g", "f g gene gene", "gene gene h i"]
    assert split_passages(DOC, 5, 4) == ["gene a b c d", "d e f g gene", "gene gene h i"]  # last one shorter
    assert split_passages("short text", 4, 2) == ["short text"]
    with pytest.raises(ConfigError):
        split_passages(DOC, 4, 5)


def test_aggregations():
    assert aggregate([1.0, 0.0, 2.0], "maxp") == 2.0
    assert aggregate([1.0, 0.0, 2.0], "firstp") == 1.0
    assert aggregate([1.0, 0.0, 2.0], "sum") == 3.0
    with pytest.raises(ConfigError):
        aggregate([1.0], "meanp")


def test_rerank_passages_known_answers():
    corpus = Corpus(["long", "short"], [DOC, "gene x"])
    run = {"q": [("short", 2.0), ("long", 1.0)]}
    expect = {"maxp": {"long": 2.0, "short": 1.0}, "firstp": {"long": 1.0, "short": 1.0},
              "sum": {"long": 3.0, "short": 1.0}}
    for how, want in expect.items():
        model = KeywordModel()
        out, stats = rerank_passages(model, {"q": "genes"}, corpus, run, depth=2, words=4, stride=4, how=how)
        assert dict(out["q"]) == want, how
        assert stats.pairs == (2 if how == "firstp" else 4)  # FirstP scores only first passages
    model = KeywordModel()
    out, _ = rerank_passages(model, {"q": "genes"}, corpus, run, depth=1, words=4, stride=4, how="maxp")
    assert out == {"q": [("short", 1.0)]} and model.seen == ["gene x"]


# --- MMR ---------------------------------------------------------------------------------------

def test_mmr_order_hand_case():
    rel = [1.0, 0.9, 0.6]
    sim = np.array([[1.0, 0.95, 0.0], [0.95, 1.0, 0.1], [0.0, 0.1, 1.0]])
    # λ=.5: pick 0; then doc 1: .45 − .475 < 0 while doc 2: .3 − 0 → doc 2, then doc 1
    assert mmr_order(rel, sim, 0.5) == [0, 2, 1]
    assert mmr_order(rel, sim, 1.0) == [0, 1, 2]
    assert mmr_order(rel, sim, 0.5, k=2) == [0, 2]
    with pytest.raises(ConfigError):
        mmr_order(rel, sim, 1.5)


def test_tfidf_similarity():
    sim = tfidf_similarity(["gene protein cell", "gene protein cell", "heart blood dose", "gene heart"])
    assert sim[0, 1] == pytest.approx(1.0) and sim[0, 2] == pytest.approx(0.0)
    assert 0.0 < sim[0, 3] < 1.0 and np.allclose(np.diag(sim), 1.0)


def test_mmr_rerank_pushes_near_duplicates_down():
    texts = {"a": "gene protein cell receptor", "b": "gene protein cell receptor", "c": "heart blood dose trial",
             "d": "tail document"}
    run = {"q": [("a", 3.0), ("b", 2.9), ("c", 2.0), ("d", 1.0)]}
    out = mmr_rerank(run, texts.__getitem__, lam=0.5, depth=3)
    assert [d for d, _ in out["q"]] == ["a", "c", "b", "d"]
    assert [s for _, s in out["q"]] == sorted((s for _, s in out["q"]), reverse=True)
    assert [d for d, _ in mmr_rerank(run, texts.__getitem__, lam=1.0)["q"]] == ["a", "b", "c", "d"]


# --- CLI wiring --------------------------------------------------------------------------------

class Cli:
    """Runs `rerankforge rerank` on the tiny collection; ``plain`` is the run without options."""

    def __init__(self, tmp_path, model_dir, root, run_path):
        self.tmp, self.model_dir, self.root, self.run_path = tmp_path, model_dir, root, run_path
        self.plain = self("plain")
        self.first = {q: d for q, d in read_run(run_path).items() if q in self.plain}

    def __call__(self, name, *extra):
        out = self.tmp / f"{name}.trec"
        rc = main(["rerank", "--model", str(self.model_dir), "--collection", str(self.root), "--split", "test",
                   "--run", str(self.run_path), "--depth", "6", "--out", str(out), "--no-bf16", *extra])
        assert rc == 0
        return read_run(out)


@pytest.fixture
def cli(tmp_path, tiny_ce_dir, tiny_collection):
    return Cli(tmp_path, tiny_ce_dir, *tiny_collection)


def test_fusion_alpha_extremes(cli):
    plain, first = cli.plain, cli.first
    only_first = cli("a1", "--fusion-alpha", "1.0")
    only_model = cli("a0", "--fusion-alpha", "0.0", "--fusion-norm", "zscore")
    for q in plain:
        assert [d for d, _ in only_first[q]] == [d for d, _ in first[q]]
        assert [d for d, _ in only_model[q]] == [d for d, _ in plain[q]]


def test_quantize_int8_cli_keeps_the_ranking_close(cli):
    from scipy.stats import spearmanr

    q8 = cli("q8", "--quantize", "int8")
    assert set(q8) == set(cli.plain)
    for q in cli.plain:
        ref = dict(cli.plain[q])
        got = dict(q8[q])
        assert set(got) == set(ref)
        docs = sorted(ref)
        assert spearmanr([ref[d] for d in docs], [got[d] for d in docs])[0] > 0.6


def test_rrf_matches_formula(cli):
    plain, first = cli.plain, cli.first
    fused = cli("rrf", "--rrf", str(cli.run_path), "--rrf-k", "10")
    want = reciprocal_rank_fusion([plain, first], k=10)
    assert set(fused) == set(plain)
    for q in fused:
        assert dict(fused[q]) == pytest.approx(dict(want[q]), abs=1e-6)
    d0, _ = first[next(iter(fused))][0]
    q0 = next(iter(fused))
    r_plain = [d for d, _ in plain[q0]].index(d0) + 1
    assert dict(fused[q0])[d0] == pytest.approx(1 / (10 + 1) + 1 / (10 + r_plain), abs=1e-6)


def test_threshold_keeps_confident_candidates(cli):
    plain = cli.plain
    probs = sorted(expit(s) for docs in plain.values() for _, s in docs)
    p = float((probs[len(probs) // 2] + probs[len(probs) // 2 - 1]) / 2)
    kept = cli("thr", "--threshold", str(p))
    want = {q: [d for d, s in docs if expit(s) >= p] for q, docs in plain.items()}
    assert {q: [d for d, _ in docs] for q, docs in kept.items()} == {q: d for q, d in want.items() if d}
    assert 0 < sum(len(d) for d in kept.values()) < sum(len(d) for d in plain.values())


def test_mmr_and_passages_cli(cli):
    plain = cli.plain
    same = cli("mmr1", "--mmr-lambda", "1.0")
    assert {q: [d for d, _ in docs] for q, docs in same.items()} == {q: [d for d, _ in docs] for q, docs in plain.items()}
    div = cli("mmr", "--mmr-lambda", "0.3", "--mmr-depth", "4")
    assert all(sorted(d for d, _ in div[q]) == sorted(d for d, _ in plain[q]) for q in plain)

    firstp = cli("fp", "--passage-words", "5", "--passage-agg", "firstp")
    coll = Collection(cli.root)
    model = load_reranker(cli.model_dir)
    q = next(iter(firstp))
    docs = [d for d, _ in firstp[q]]
    want = model.score_pairs([coll.queries[q]] * len(docs), [" ".join(coll.corpus.text(d).split()[:5]) for d in docs],
                             bf16=False)
    np.testing.assert_allclose([s for _, s in firstp[q]], want, atol=1e-5)


def test_invalid_option_combinations(tmp_path, tiny_ce_dir, tiny_collection):
    root, run_path = tiny_collection
    base = ["rerank", "--model", str(tiny_ce_dir), "--collection", str(root), "--split", "test", "--run",
            str(run_path), "--out", str(tmp_path / "x.trec")]
    assert main(base + ["--passage-words", "8", "--passage-agg", "sum", "--threshold", "0.5"]) == 2
    assert main(base + ["--fusion-alpha", "1.5"]) == 2
    assert main(base + ["--passage-words", "4", "--passage-stride", "9"]) == 2
