"""The quickstart's dev protocol: choose its settings without looking at SciFact test.

    python scripts/quickstart_dev.py --out runs/qs_dev [--dev-queries 120] [key=value ...]

Builds a copy of the bundled SciFact (corpus and queries linked, not copied) in which ``N``
train queries, drawn reproducibly, become the ``test`` split and the rest stay ``train``, then
runs the unchanged quickstart on it with the given overrides (the same keys as
``rerankforge quickstart``). Its ``report.json`` is then a dev figure: the model never trained on
those queries and the fusion weight is still chosen on the quickstart's own held-out train
queries. Compare candidate settings by these figures; run the real quickstart on test once.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
from pathlib import Path


def dev_collection(dst: Path, n_dev: int, seed: int) -> Path:
    from rerankforge.data.beir import Collection, collection_file

    src = Collection("bundled:scifact")
    rows = list(csv.reader(open(src.qrels_path("train"), newline=""), delimiter="\t"))
    header, rows = (rows[0], rows[1:]) if rows and not rows[0][-1].strip().lstrip("-").isdigit() else (None, rows)
    qids = sorted({r[0] for r in rows})
    random.Random(seed).shuffle(qids)
    dev = set(qids[:n_dev])
    (dst / "qrels").mkdir(parents=True, exist_ok=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        target = collection_file(src.root, name)  # may be NAME.gz: the link keeps its name
        link = dst / target.name
        if not link.exists():
            os.symlink(target.resolve(), link)
    for split, keep in (("train", lambda q: q not in dev), ("test", lambda q: q in dev)):
        with open(dst / "qrels" / f"{split}.tsv", "w", newline="") as fh:
            w = csv.writer(fh, delimiter="\t", lineterminator="\n")
            if header:
                w.writerow(header)
            w.writerows(r for r in rows if keep(r[0]))
    return dst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--dev-queries", type=int, default=120)
    ap.add_argument("--dev-seed", type=int, default=2024)
    ap.add_argument("overrides", nargs="*", help="quickstart config keys, key=value")
    args = ap.parse_args(argv)
    from rerankforge.config import load_config
    from rerankforge.pipelines.quickstart import QuickstartConfig, run_quickstart

    out = Path(args.out)
    coll = dev_collection(out / "dev_collection", args.dev_queries, args.dev_seed)
    cfg = load_config(QuickstartConfig, None, [*args.overrides, f"collection={coll}", f"output_dir={out}"])
    report = run_quickstart(cfg)
    print(f"DEV {args.dev_queries} held-out train queries: BM25 {report['first_stage']['nDCG@10']:.4f}  "
          f"pure {report['pure_reranker']['nDCG@10']:.4f}  fused {report['reranked']['nDCG@10']:.4f} "
          f"(alpha {report['fusion']['alpha']})  total {report['total_seconds']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
