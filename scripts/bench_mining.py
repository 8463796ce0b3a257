#!/usr/bin/env python
"""Benchmark (not a test): hard-negative mining at scale on a synthetic corpus.

Builds a synthetic BEIR collection (default 1M passages, 10k queries): a Zipf(1) vocabulary whose
most frequent words are bm25s' English stopwords followed by pronounceable pseudo-words, passages of
~60 tokens, and queries made from 3-7 content words of one passage (its positive), a quarter of them
replaced by random words, plus a stopword. Then, each phase in its own process so peak RSS is its own:

* ``raw``   -- plain bm25s: ``bm25s.tokenize`` + ``BM25.index`` over the texts in memory, then
               ``BM25.retrieve(k=depth)`` on all queries (the reference time);
* ``mine``  -- rerankforge: streaming BM25 index over corpus.jsonl, ``search`` alone, then full mining
               (retrieve + sample 15 negatives from ranks 1..100 + dedup + texts + groups JSONL + report);
* ``dense`` -- faiss search timing on random unit vectors (dim 384) standing in for embeddings (encoding
               1M passages on 2 CPU cores takes hours): exact flat, IVF, and HNSW on a subset;
* ``encode``-- measured MiniLM-L6 encoding rate on synthetic passages (extrapolated to the corpus).

    nice -n 10 .venv/bin/python scripts/bench_mining.py --workdir /tmp/rf-bench --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux


class Clock:
    """Wall and CPU seconds (CPU = this process, all threads): on a shared machine CPU time shows
    the work done, wall time what a user waited."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self, out: dict, name: str) -> float:
        wall = time.perf_counter() - self.wall
        out[f"{name}_s"] = round(wall, 2)
        out[f"{name}_cpu_s"] = round(time.process_time() - self.cpu, 2)
        return wall


# ---------------------------------------------------------------------------------------- data
def pseudo_words(n: int, rng: np.random.Generator, avoid: set[str]) -> list[str]:
    syllables = [c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou"]
    out: list[str] = []
    seen = set(avoid)
    while len(out) < n:
        k = rng.integers(2, 5, size=n)
        idx = rng.integers(0, len(syllables), size=(n, 4))
        for row in range(n):
            w = "".join(syllables[j] for j in idx[row, : k[row]])
            if w not in seen:
                seen.add(w)
                out.append(w)
                if len(out) == n:
                    break
    return out


def generate(root: Path, n_docs: int, n_queries: int, vocab_size: int, mean_len: int, seed: int) -> dict:
    from bm25s.stopwords import STOPWORDS_EN

    meta = {"docs": n_docs, "queries": n_queries, "vocab": vocab_size, "mean_len": mean_len, "seed": seed, "v": 1}
    if (root / "meta.json").exists() and json.loads((root / "meta.json").read_text()) == meta:
        return meta
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    stop = list(STOPWORDS_EN)
    vocab = np.array(stop + pseudo_words(vocab_size - len(stop), rng, set(stop)))
    cdf = np.cumsum(1.0 / np.arange(1, vocab_size + 1))
    cdf /= cdf[-1]
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    lens = np.clip(rng.normal(mean_len, 15, size=n_docs).round().astype(np.int64), 10, 150)
    offsets = np.concatenate([[0], np.cumsum(lens)])
    positives = np.sort(rng.choice(n_docs, size=n_queries, replace=False))
    pos_tokens: dict[int, np.ndarray] = {}
    block = 100_000
    with open(root / "corpus.jsonl", "w") as fh:
        for s in range(0, n_docs, block):
            e = min(s + block, n_docs)
            toks = np.searchsorted(cdf, rng.random(offsets[e] - offsets[s]))
            for i in range(s, e):
                t = toks[offsets[i] - offsets[s] : offsets[i + 1] - offsets[s]]
                fh.write(json.dumps({"_id": f"p{i}", "title": "", "text": " ".join(vocab[t])}) + "\n")
            for i in positives[(positives >= s) & (positives < e)]:
                pos_tokens[int(i)] = toks[offsets[i] - offsets[s] : offsets[i + 1] - offsets[s]]
    n_stop = len(stop)
    with open(root / "queries.jsonl", "w") as qf, open(root / "qrels" / "train.tsv", "w") as rf:
        rf.write("query-id\tcorpus-id\tscore\n")
        for qi, doc in enumerate(rng.permutation(positives)):
            content = np.unique(pos_tokens[int(doc)][pos_tokens[int(doc)] >= n_stop])
            words = rng.choice(content, size=min(len(content), int(rng.integers(3, 8))), replace=False)
            noise = rng.random(len(words)) < 0.25
            words[noise] = np.searchsorted(cdf, rng.random(int(noise.sum())))
            text = list(vocab[words]) + [stop[int(rng.integers(0, n_stop))]]
            rng.shuffle(text)
            qf.write(json.dumps({"_id": f"q{qi}", "text": " ".join(text)}) + "\n")
            rf.write(f"q{qi}\tp{doc}\t1\n")
    (root / "meta.json").write_text(json.dumps(meta))
    print(f"generated {n_docs} passages / {n_queries} queries in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    return meta


def load_queries_qrels(root: Path):
    from rerankforge.data.beir import load_qrels, load_queries

    return load_queries(root / "queries.jsonl"), load_qrels(root / "qrels" / "train.tsv")


def recall(run_docs: dict[str, list[str]], qrels) -> float:
    hits = [any(d in qrels[q] for d in docs) for q, docs in run_docs.items()]
    return float(np.mean(hits)) if hits else 0.0


# ---------------------------------------------------------------------------------------- phases
def phase_raw(root: Path, args) -> dict:
    import bm25s
    import Stemmer

    queries, qrels = load_queries_qrels(root)
    qids = list(queries)[: args.raw_queries or None]
    out: dict = {"queries": len(qids)}
    c = Clock()
    ids, texts = [], []
    with open(root / "corpus.jsonl") as fh:
        for line in fh:
            obj = json.loads(line)
            ids.append(obj["_id"])
            texts.append(obj["text"])
    c.stop(out, "load")
    stemmer = Stemmer.Stemmer("english")
    c = Clock()
    tokens = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False)
    model = bm25s.BM25()
    model.index(tokens, show_progress=False)
    c.stop(out, "index")
    del tokens
    c = Clock()
    qt = bm25s.tokenize([queries[q] for q in qids], stopwords="en", stemmer=stemmer, show_progress=False)
    docs, _ = model.retrieve(qt, k=args.depth, show_progress=True, n_threads=args.raw_threads)
    wall = c.stop(out, "retrieve")
    run = {q: [ids[j] for j in docs[i]] for i, q in enumerate(qids)}
    out.update({"queries_per_s": len(qids) / wall, f"success@{args.depth}": recall(run, qrels),
                "peak_rss_gb": peak_rss_gb()})
    return out


def phase_mine(root: Path, args) -> dict:
    from rerankforge.data.groups import write_groups
    from rerankforge.retrieve.bm25 import BM25Retriever
    from rerankforge.retrieve.corpus import CorpusStream
    from rerankforge.mining.negatives import NegativeMiner, NegativePolicy
    from rerankforge.mining.report import build_report
    from rerankforge.utils.io import write_json

    queries, qrels = load_queries_qrels(root)
    stream = CorpusStream(root / "corpus.jsonl")
    out: dict = {"queries": len(queries)}
    c = Clock()
    retriever = BM25Retriever(show_progress=False, batch_size=256)
    retriever.index(stream)
    c.stop(out, "index")
    out["index_peak_rss_gb"] = peak_rss_gb()
    c = Clock()
    run = retriever.search(queries, args.depth)
    wall = c.stop(out, "search")
    out["search_queries_per_s"] = len(queries) / wall
    out[f"success@{args.depth}"] = recall({q: [d for d, _ in docs] for q, docs in run.items()}, qrels)
    del run
    policy = NegativePolicy(negatives=args.negatives, rank_min=1, rank_max=args.depth, strategy="uniform")
    path = root / "groups.jsonl"
    c = Clock()
    miner = NegativeMiner(policy, stream, retriever=retriever)
    n = write_groups(path, miner.mine(queries, qrels, retriever.iter_search(queries, args.depth, progress=True)))
    wall = c.stop(out, "mine")
    report = build_report(miner.stats, policy, source={"bench": str(root)}, out=path)
    write_json(root / "groups.report.json", report)
    out.update({"mine_queries_per_s": len(queries) / wall, "groups": n,
                "index_mb": retriever.sparse.nbytes / 1e6, "ids_mb": retriever.ids.nbytes / 1e6,
                "report_recall": report["recall"], "report_no_negatives": report["queries"]["no_negatives"],
                "index_plus_mine_s": out["index_s"] + out["mine_s"],
                "index_plus_mine_cpu_s": out["index_cpu_s"] + out["mine_cpu_s"], "peak_rss_gb": peak_rss_gb()})
    return out


def phase_dense(root: Path, args) -> dict:
    from rerankforge.retrieve.dense import DenseRetriever

    n, d, nq, k = args.docs, 384, args.queries, args.depth
    rng = np.random.default_rng(0)
    chunks = []
    for s in range(0, n, 100_000):
        e = min(s + 100_000, n)
        x = rng.standard_normal((e - s, d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        chunks.append((s, e, x))
    targets = rng.choice(n, size=nq, replace=False)
    q = np.concatenate([chunks[t // 100_000][2][t % 100_000][None] for t in targets])
    q = q + rng.standard_normal(q.shape, dtype=np.float32) * 0.08  # a query is a noisy copy of its passage
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    out = {"docs": n, "dim": d, "queries": nq, "note": "random unit vectors stand in for embeddings"}

    def timed(kind: str, subset: int | None = None, **kw) -> dict:
        r = DenseRetriever(index=kind, **kw)
        use = chunks if subset is None else [(s, min(e, subset), x[: max(0, min(e, subset) - s)])
                                             for s, e, x in chunks if s < subset]
        res: dict = {"docs": use[-1][1]}
        c = Clock()
        index = r._build_index(use, d, use[-1][1])
        c.stop(res, "build")
        qq = q if subset is None else q[targets < subset]
        tt = targets if subset is None else targets[targets < subset]
        c = Clock()
        _, rows = index.search(qq, k)
        wall = c.stop(res, "search")
        res.update({"queries": len(qq), "queries_per_s": len(qq) / wall,
                    f"success@{k}": float(np.mean([t in row for t, row in zip(tt, rows)])), "peak_rss_gb": peak_rss_gb()})
        return res

    out["flat"] = timed("flat")
    out["ivf"] = timed("ivf", nprobe=args.nprobe)
    out["hnsw"] = timed("hnsw", subset=args.hnsw_docs, ef_search=128)
    out["peak_rss_gb"] = peak_rss_gb()
    return out


def phase_encode(root: Path, args) -> dict:
    import torch

    from rerankforge.retrieve.dense import Encoder

    texts = []
    with open(root / "corpus.jsonl") as fh:
        for line in fh:
            texts.append(json.loads(line)["text"])
            if len(texts) >= args.encode_docs:
                break
    enc = Encoder()
    n_tok = np.mean([min(len(enc.tokenizer(t)["input_ids"]), enc.max_length) for t in texts[:200]])
    enc.encode(texts[:64], batch_size=64)  # warm-up
    out: dict = {"docs": len(texts)}
    c = Clock()
    enc.encode(texts, batch_size=64)
    dt = c.stop(out, "encode")
    out.update({"docs_per_s": len(texts) / dt, "bf16": enc.bf16, "torch_threads": torch.get_num_threads(),
                "mean_tokens": float(n_tok), "extrapolated_corpus_hours": args.docs / (len(texts) / dt) / 3600})
    return out


PHASES = {"raw": phase_raw, "mine": phase_mine, "dense": phase_dense, "encode": phase_encode}


def run_phase(name: str, args, root: Path) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, "--workdir", str(args.workdir)] + [
        f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
        if k not in ("phase", "workdir", "phases", "json") and v is not None]
    print(f"== {name}: {' '.join(cmd[1:])}", file=sys.stderr)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}"}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall_s"] = time.perf_counter() - t0
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/rerankforge-bench"))
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=10_000)
    ap.add_argument("--vocab", type=int, default=300_000)
    ap.add_argument("--mean-len", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--negatives", type=int, default=15)
    ap.add_argument("--raw-queries", type=int, default=0, help="limit raw bm25s retrieve to N queries (0 = all)")
    ap.add_argument("--raw-threads", type=int, default=0, help="bm25s retrieve n_threads (0 = its default)")
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--hnsw-docs", type=int, default=200_000, help="HNSW is built on the first N vectors")
    ap.add_argument("--encode-docs", type=int, default=1000)
    ap.add_argument("--phases", default="raw,mine,dense,encode")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help="write all results here")
    args = ap.parse_args()
    root = args.workdir / f"synth-{args.docs}-{args.queries}-{args.vocab}-{args.seed}"
    if args.phase:
        res = PHASES[args.phase](root, args)
        print(json.dumps(res))
        return 0
    results = {"config": {k: str(v) for k, v in vars(args).items() if k != "phase"},
               "generate": generate(root, args.docs, args.queries, args.vocab, args.mean_len, args.seed),
               "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()}}
    for name in args.phases.split(","):
        results[name] = run_phase(name, args, root)
        print(json.dumps({name: results[name]}, indent=1), file=sys.stderr)
    results["machine"]["loadavg_end"] = os.getloadavg()
    raw, mine = results.get("raw", {}), results.get("mine", {})
    if "retrieve_s" in raw and "mine_s" in mine:
        scale = args.queries / raw["queries"]  # raw may have run on a subset of the queries
        results["summary"] = {
            "mining_vs_raw_retrieve_wall": mine["mine_s"] / (raw["retrieve_s"] * scale),
            "mining_vs_raw_retrieve_cpu": mine["mine_cpu_s"] / (raw["retrieve_cpu_s"] * scale),
            "search_vs_raw_retrieve_cpu": mine["search_cpu_s"] / (raw["retrieve_cpu_s"] * scale),
            "index_plus_mine_s": mine["index_plus_mine_s"], "index_plus_mine_cpu_s": mine["index_plus_mine_cpu_s"],
            "mine_peak_rss_gb": mine["peak_rss_gb"], "raw_peak_rss_gb": raw["peak_rss_gb"],
        }
    text = json.dumps(results, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
