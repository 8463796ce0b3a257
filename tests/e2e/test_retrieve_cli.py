import json
import shutil

import pytest

from rerankforge.cli import main
from rerankforge.data.groups import read_groups
from rerankforge.data.trec import read_run


@pytest.fixture(scope="module")
def cran(shared_datasets, tmp_path_factory):
    """Cranfield (1,400 docs; two judged documents are empty) copied so tests can add files."""
    root = tmp_path_factory.mktemp("cran") / "cranfield"
    shutil.copytree(shared_datasets / "cranfield", root)
    return root


def test_retrieve_bm25_writes_run_and_prints_metrics(cran, tmp_path, capsys):
    out = tmp_path / "bm25.trec"
    assert main(["retrieve", "--collection", str(cran), "--split", "test", "--retriever", "bm25", "--depth", "50",
                 "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "nDCG@10" in text and "R@100" in text
    run = read_run(out)
    assert len(run) == 225 and all(len(d) <= 50 for d in run.values())
    ndcg = float(next(line for line in text.splitlines() if "nDCG@10" in line).split("│")[2])
    assert 0.3 < ndcg < 0.6  # BM25 on Cranfield is about 0.4


def test_retrieve_split_without_qrels_searches_all_queries(cran, tmp_path, capsys):
    out = tmp_path / "all.trec"
    assert main(["retrieve", "--collection", str(cran), "--split", "dev", "--depth", "5", "--out", str(out),
                 "--no-progress", "--k1", "1.2", "--stemmer", "none"]) == 0
    assert "no qrels" in capsys.readouterr().out
    assert len(read_run(out)) == 225


def test_retrieve_errors_are_reported(cran, tmp_path, capsys):
    assert main(["retrieve", "--collection", str(tmp_path / "nope"), "--split", "test", "--out", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("bm25: {k1: fast}\n")
    assert main(["retrieve", "--collection", str(cran), "--split", "test", "--out", str(tmp_path / "r"),
                 "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "k1" in err


def test_retrieve_dense_and_hybrid_with_a_tiny_encoder(cran, tmp_path, tiny_bert_dir, capsys):
    cache = tmp_path / "cache"
    for name in ("dense", "hybrid"):
        out = tmp_path / f"{name}.trec"
        assert main(["retrieve", "--collection", str(cran), "--split", "test", "--retriever", name,
                     "--model", str(tiny_bert_dir), "--cache-dir", str(cache), "--depth", "20", "--out", str(out),
                     "--no-progress"]) == 0
        assert len(read_run(out)) == 225
    text = capsys.readouterr().out
    # the hybrid run reused the embeddings the dense run cached
    encoded = [line for line in text.splitlines() if "documents encoded" in line]
    assert "1398" in encoded[0] and " 0 in" in encoded[1]


def test_mine_with_retrieval_yaml_and_flag_override(cran, tmp_path, capsys):
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("retriever: bm25\ndepth: 60\nbm25: {k1: 1.2}\n"
                   "policy: {negatives: 3, rank_min: 2, rank_max: 40, strategy: stratified, strata: 3}\n")
    out = tmp_path / "groups.jsonl"
    assert main(["mine", "--collection", str(cran), "--split", "test", "--config", str(cfg), "--negatives", "5",
                 "--margin-rel", "0.95", "--out", str(out), "--save-run", str(tmp_path / "first.trec"),
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "groups written" in text and "negatives per query" in text
    groups = read_groups(out)
    report = json.loads((tmp_path / "groups.report.json").read_text())
    assert report["policy"]["negatives"] == 5 and report["policy"]["strategy"] == "stratified"  # flag beats YAML
    assert report["source"]["retriever"]["k1"] == 1.2 and report["source"]["depth"] == 60
    q = report["queries"]
    assert q["written"] == len(groups) > 0
    assert q["written"] + q["dropped"] == q["with_positives"] == 225
    assert q["no_negatives"] > 0  # the margin against the weakest of ~8 positives empties some queries
    assert report["removed"]["margin_rel"] > 0
    assert set(report["recall"]) >= {"R@10", "R@40", "R@60"}
    run = read_run(tmp_path / "first.trec")
    for g in groups:
        negs = [c for c in g.candidates if not c.label]
        assert 1 <= len(negs) <= 5 and all(2 <= c.rank <= 40 and c.text for c in negs)
        assert all(dict(run[g.query_id])[c.doc_id] == pytest.approx(c.score, abs=1e-5) for c in negs)
    # the two empty judged documents are left out of the groups, never written without text
    assert all(c.doc_id not in ("471", "995") for g in groups for c in g.candidates)


def test_mine_from_a_run_file(cran, tmp_path, capsys):
    run_path = tmp_path / "run.trec"
    assert main(["retrieve", "--collection", str(cran), "--split", "test", "--depth", "30", "--out", str(run_path),
                 "--no-progress"]) == 0
    out = tmp_path / "g.jsonl"
    assert main(["mine", "--collection", str(cran), "--split", "test", "--run", str(run_path), "--negatives", "4",
                 "--strategy", "top", "--no-text", "--out", str(out), "--report", str(tmp_path / "rep.json")]) == 0
    groups = read_groups(out)
    assert groups and all(c.text is None for g in groups for c in g.candidates)
    rep = json.loads((tmp_path / "rep.json").read_text())
    assert rep["source"]["run"] == str(run_path) and rep["queries"]["written"] == len(groups)
    run = read_run(run_path)
    for g in groups[:20]:
        pos = {c.doc_id for c in g.candidates if c.label}
        expected = [d for d, _ in run[g.query_id] if d not in pos][:4]
        assert [c.doc_id for c in g.candidates if not c.label] == expected
    capsys.readouterr()
    assert main(["mine", "--collection", str(cran), "--split", "nosplit", "--run", str(run_path),
                 "--out", str(out)]) == 2
    assert "nosplit" in capsys.readouterr().err


def test_mine_drops_reformatted_copies_of_positives(shared_datasets, tmp_path, capsys):
    """Real data: a Cranfield copy where 10 positives that BM25 ranks in the top 10 are re-added under new
    ids with changed case and punctuation; the copies land in the window and the dedup rule must remove them."""
    root = tmp_path / "cran-dup"
    shutil.copytree(shared_datasets / "cranfield", root)
    assert main(["retrieve", "--collection", str(root), "--split", "test", "--depth", "10",
                 "--out", str(tmp_path / "before.trec"), "--no-progress"]) == 0
    before = read_run(tmp_path / "before.trec")
    positives = {}
    for line in (root / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        q, d, s = line.split("\t")
        if int(s) > 0:
            positives.setdefault(q, set()).add(d)
    docs = {json.loads(x)["_id"]: json.loads(x) for x in (root / "corpus.jsonl").read_text().splitlines()}
    copies = {}
    for q, ranked in before.items():
        hit = next((d for d, _ in ranked if d in positives.get(q, ())), None)
        if hit and hit not in {c.split("copy-of-")[1] for c in copies}:
            copies[f"copy-of-{hit}"] = q
        if len(copies) == 10:
            break
    with open(root / "corpus.jsonl", "a") as fh:
        for copy in copies:
            src = docs[copy.split("copy-of-")[1]]
            fh.write(json.dumps({"_id": copy, "title": src["title"].upper() + " !",
                                 "text": src["text"].replace(",", " ;")}) + "\n")
    out = tmp_path / "g.jsonl"
    assert main(["mine", "--collection", str(root), "--split", "test", "--negatives", "20", "--strategy", "top",
                 "--rank-max", "30", "--out", str(out), "--save-run", str(tmp_path / "r.trec"), "--no-progress"]) == 0
    run = read_run(tmp_path / "r.trec")
    assert all(copy in [d for d, _ in run[q][:30]] for copy, q in copies.items())  # the copies reach the window
    rep = json.loads((tmp_path / "g.report.json").read_text())
    assert rep["removed"]["duplicate_of_positive"] >= len(copies) == 10
    groups = {g.query_id: g for g in read_groups(out)}
    for copy, q in copies.items():  # ...and never become negatives of the query whose positive they copy
        assert copy not in {c.doc_id for c in groups[q].candidates}
