"""``rerankforge mine --collection DIR --split SPLIT [--run RUN.trec] --negatives N --out GROUPS.jsonl``."""

from __future__ import annotations


def add_parser(sub):
    from rerankforge.config import add_config_args
    from rerankforge.mining.config import MineConfig

    p = sub.add_parser("mine", help="mine hard negatives into training groups",
                       description="Build rerankforge.group/1 training groups: judged positives plus negatives "
                                   "sampled from a first-stage run (given with --run, or retrieved with "
                                   "--retriever), with false-negative filters. Writes GROUPS.jsonl and "
                                   "GROUPS.report.json. Options come from --config YAML; flags and key=value "
                                   "overrides win over it.")
    add_config_args(p, MineConfig, example="policy.strategy=stratified")
    return p


def run(args) -> int:
    from rerankforge.config import config_from_args
    from rerankforge.mining.config import MineConfig
    from rerankforge.mining.report import print_report
    from rerankforge.pipelines.steps import mine

    cfg = config_from_args(MineConfig, args)
    result = mine(cfg)
    print_report(result.report)
    t = result.report["timings"]
    print(f"wrote {result.groups_written} groups to {cfg.out} (report: {result.report['report_path']}) "
          f"in {t.get('total_s', 0):.1f}s")
    return 0
