"""``rerankforge label graded|teacher|llm|llm-api --groups IN.jsonl --out OUT.jsonl [...]``.

Every flag is also a YAML key (``--config``; dashes become underscores); flags win over the YAML.
Jobs are resumable: rerun the same command after an interruption and only the unfinished
queries are computed (``--restart`` discards saved progress).
"""

from __future__ import annotations

import argparse

S = argparse.SUPPRESS


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML with any of this job's settings (flags override it)")
    p.add_argument("--groups", default=S, help="input groups JSONL")
    p.add_argument("--out", default=S, help="output groups JSONL (written atomically at the end)")
    p.add_argument("--collection", default=S, help="BEIR collection for candidates stored without text")
    p.add_argument("--batch-queries", type=int, default=S, dest="batch_queries",
                   help="queries per batch; progress is saved after each (default 16)")
    p.add_argument("--restart", action="store_true", default=S, help="discard saved progress and start over")
    p.add_argument("--no-progress", action="store_false", dest="progress", default=S, help="no progress bar")


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_parser(sub):
    p = sub.add_parser("label", help="add labels to mined groups (graded qrels, teacher, local LLM, LLM API)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)

    g = kinds.add_parser("graded", help="labels from qrels through a gain map")
    _common(g)
    g.add_argument("--qrels", default=S, help="qrels file (BEIR TSV or TREC); or --collection + --split")
    g.add_argument("--split", default=S, help="qrels split of --collection")
    g.add_argument("--gain", default=S, help="grade:gain map, e.g. '1:1,2:3' (unmapped grades pass through)")
    g.add_argument("--unjudged", choices=["zero", "none"], default=S,
                   help="label of candidates without a judgment: 0 (default) or none (unlabelled)")

    t = kinds.add_parser("teacher", help="teacher scores from any exported rerankforge model")
    _common(t)
    t.add_argument("--model", default=S, help="exported model directory")
    t.add_argument("--batch-size", type=int, default=S, dest="batch_size", help="pairs per forward pass (64)")
    t.add_argument("--no-bf16", action="store_false", dest="bf16", default=S, help="score in float32")
    t.add_argument("--max-length", type=int, default=S, dest="max_length", help="override the model's max length")

    m = kinds.add_parser("llm", help="local causal LM: pointwise P(yes) or listwise sliding-window permutations")
    _common(m)
    m.add_argument("--model", default=S, help="local Hugging Face causal LM directory")
    m.add_argument("--mode", choices=["pointwise", "listwise"], default=S)
    m.add_argument("--prompt", default=S, help="pointwise prompt with {query} and {document}")
    m.add_argument("--listwise-prompt", default=S, dest="listwise_prompt",
                   help="listwise prompt with {query}, {passages} and {num}")
    m.add_argument("--field", choices=["teacher", "label"], default=S, help="field receiving P(yes) (teacher)")
    m.add_argument("--window", type=int, default=S, help="listwise window size (20)")
    m.add_argument("--step", type=int, default=S, help="listwise window step (10)")
    m.add_argument("--rank-score", choices=["neg_rank", "reciprocal"], default=S, dest="rank_score",
                   help="teacher target from the final rank (neg_rank: -rank)")
    m.add_argument("--rank-grades", type=_ints, default=S, dest="rank_grades",
                   help="rank cutoffs for graded labels, e.g. 1,3,10 -> grades 3,2,1,0")
    m.add_argument("--batch-size", type=int, default=S, dest="batch_size")
    m.add_argument("--chat-template", action="store_true", default=S, dest="chat_template")
    m.add_argument("--no-bf16", action="store_false", dest="bf16", default=S)
    m.add_argument("--device", default=S, help="auto (default), cpu, cuda, cuda:1 ...")

    a = kinds.add_parser("llm-api", help="graded 0-3 judgments from an OpenAI-compatible endpoint (UMBRELA prompt)")
    _common(a)
    a.add_argument("--base-url", default=S, dest="base_url", help="e.g. http://localhost:8000/v1 ($OPENAI_BASE_URL)")
    a.add_argument("--model", default=S, help="model name at the endpoint ($OPENAI_MODEL)")
    a.add_argument("--api-key-env", default=S, dest="api_key_env", help="env variable with the key (OPENAI_API_KEY)")
    a.add_argument("--concurrency", type=int, default=S, help="requests in flight (8)")
    a.add_argument("--timeout", type=float, default=S, help="seconds per request (60)")
    a.add_argument("--max-retries", type=int, default=S, dest="max_retries", help="retries per request (5)")
    a.add_argument("--cache", default=S, help="SQLite cache of answers (default OUT.cache.sqlite)")
    a.add_argument("--field", choices=["teacher", "label"], default=S, help="field receiving the grade (label)")
    return p


def run(args) -> int:
    from rerankforge.data.labels import parse_gain_map
    from rerankforge.labels import run_label_job
    from rerankforge.labels.config import build_labeler, load_label_config

    values = {k: v for k, v in vars(args).items() if k not in ("config", "kind", "command", "verbose", "_run")}
    if "gain" in values:
        values["gain"] = parse_gain_map(values["gain"])
    cfg = load_label_config(args.kind, args.config, values)
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
