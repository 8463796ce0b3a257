"""``rerankforge label graded|teacher|llm|llm-api --groups IN.jsonl --out OUT.jsonl [...]``.

Every flag is also a YAML key (``--config``; dashes become underscores); flags and ``key=value``
overrides win over the YAML. Jobs are resumable: rerun the same command after an interruption and
only the unfinished queries are computed (``--restart`` discards saved progress). Each registered
label job (``rerankforge.labels.config.LABEL_JOBS``) is one KIND.
"""

from __future__ import annotations

import argparse


def add_parser(sub):
    from rerankforge.config import add_config_args
    from rerankforge.labels.config import LABEL_JOBS

    p = sub.add_parser("label", help="add labels to mined groups (graded qrels, teacher, local LLM, LLM API)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    for name, job in LABEL_JOBS.items():
        add_config_args(kinds.add_parser(name, help=job.help), job.config, example="batch_queries=32")
    return p


def run(args) -> int:
    from rerankforge.config import config_from_args
    from rerankforge.labels import run_label_job
    from rerankforge.labels.config import LABEL_JOBS, build_labeler

    cfg = config_from_args(LABEL_JOBS.get(args.kind).config, args)
    labeler, text_of = build_labeler(args.kind, cfg)
    summary = run_label_job(labeler, cfg.groups, cfg.out, text_of=text_of, batch_queries=cfg.batch_queries,
                            restart=cfg.restart, progress=cfg.progress)
    _print_summary(summary)
    if summary.failed_pairs:
        errors = getattr(labeler, "errors", [])
        for line in errors[:5]:
            print(f"  {line}")
        print(f"{summary.failed_pairs} pairs in {len(summary.failed_queries)} queries could not be labelled "
              f"(left unlabelled in {summary.out}); rerun the same command to retry only those")
        return 1
    return 0


def _print_summary(s) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"label {s.kind} -> {s.out}")
    for col in ("queries", "resumed", "computed", "pairs", "seconds", "pairs/s", "failed pairs"):
        table.add_column(col, justify="right")
    table.add_row(str(s.queries), str(s.resumed), str(s.computed), str(s.pairs), f"{s.seconds:.1f}",
                  f"{s.pairs_per_s:.1f}", str(s.failed_pairs))
    Console().print(table)
    if s.info:
        print("  " + ", ".join(f"{k}={v}" for k, v in sorted(s.info.items())))
