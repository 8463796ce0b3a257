"""``rerankforge mine --collection DIR --split SPLIT [--run RUN.trec] --negatives N --out GROUPS.jsonl``."""

from __future__ import annotations


def add_parser(sub):
    from rerankforge.mining.options import add_policy_args, add_retriever_args

    p = sub.add_parser("mine", help="mine hard negatives into training groups",
                       description="Build rerankforge.group/1 training groups: judged positives plus negatives "
                                   "sampled from a first-stage run (given with --run, or retrieved with "
                                   "--retriever), with false-negative filters. Writes GROUPS.jsonl and "
                                   "GROUPS.report.json. Options come from --config YAML; flags override it.")
    p.add_argument("--collection", metavar="DIR", help="BEIR collection directory")
    p.add_argument("--split", metavar="SPLIT", help="qrels split to mine (its judged queries)")
    p.add_argument("--run", metavar="RUN.trec", help="first-stage TREC run (default: retrieve with --retriever)")
    p.add_argument("--out", metavar="GROUPS.jsonl", help="output groups JSONL")
    p.add_argument("--config", metavar="YAML", help="YAML mining config (see rerankforge.mining.options)")
    p.add_argument("--save-run", metavar="RUN.trec", help="also write the retrieved run here (when --run is not given)")
    p.add_argument("--report", metavar="JSON", help="report path (default <out>.report.json)")
    p.add_argument("--no-text", dest="text", action="store_const", const=False, default=None,
                   help="write doc ids only, no texts")
    add_policy_args(p)
    add_retriever_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run(args) -> int:
    from rerankforge.mining.options import MineConfig, load_config, overrides_from_args
    from rerankforge.mining.pipeline import mine_collection
    from rerankforge.mining.report import print_report

    plain = {k: k for k in ("collection", "split", "run", "out", "save_run", "report", "text")}
    cfg = load_config(MineConfig, args.config, overrides_from_args(args, plain))
    report = mine_collection(cfg, progress=not args.no_progress)
    print_report(report)
    t = report["timings"]
    print(f"wrote {report['groups_written']} groups to {cfg.out} (report: {report['report_path']}) "
          f"in {t.get('total_s', 0):.1f}s")
    return 0
