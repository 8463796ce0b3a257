"""``rerankforge calibrate --model M --collection C --run RUN --fit-split S1 --eval-split S2 --method platt --out DIR``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rerankforge.config import option, require


@dataclass
class CalibrateConfig:
    model: Optional[str] = option(None, flag="--model", help="exported model directory")
    collection: Optional[str] = option(None, flag="--collection", help="BEIR collection directory")
    run: Optional[str] = option(None, flag="--run",
                                help="first-stage TREC run covering the eval split (and the fit split unless "
                                     "--fit-run); default: BM25 top-depth retrieved on the fly")
    fit_run: Optional[str] = option(None, flag="--fit-run", help="first-stage run for the fit split, if different")
    fit_split: Optional[str] = option(None, flag="--fit-split", help="qrels split the calibration is fitted on")
    eval_split: Optional[str] = option(None, flag="--eval-split", help="held-out qrels split it is measured on")
    method: str = option("platt", flag="--method", choices=("platt", "temperature"), help="calibration map")
    out: Optional[str] = option(None, flag="--out", help="output directory")
    depth: int = option(100, flag="--depth", help="candidates per query: the run's top K")
    rel_threshold: int = option(1, flag="--rel-threshold", help="grade >= this counts as relevant")
    max_fit_queries: Optional[int] = option(None, flag="--max-fit-queries",
                                            help="fit on a random sample of this many fit-split queries")
    bins: int = option(15, flag="--bins", help="ECE / reliability-diagram bins")
    batch_size: int = option(64, flag="--batch-size", help="pairs per forward pass")
    bf16: bool = option(False, flag="--bf16", help="score in bf16 autocast (default float32)")
    seed: int = option(0, flag="--seed", help="sampling seed")

    def validate(self) -> None:
        from rerankforge.errors import ConfigError

        require(self, "model", "collection", "fit_split", "eval_split", "out")
        if self.depth < 1 or self.bins < 1 or self.batch_size < 1:
            raise ConfigError("depth, bins and batch_size must be >= 1")


def add_parser(sub):
    from rerankforge.config import add_config_args

    p = sub.add_parser(
        "calibrate", help="fit Platt/temperature scaling on held-out queries and export a calibrated checkpoint",
        description="Fit p = sigmoid(a*s + b) on the fit split, report ECE/Brier/log-loss before and after on the "
                    "eval split, and write DIR/calibration.json, DIR/reliability.png and the calibrated model to "
                    "DIR/model (cross-encoders: folded into the head; other types: applied by load_reranker).")
    add_config_args(p, CalibrateConfig, example="bins=20")
    return p


def run(args) -> int:
    from rerankforge.calibration.export import calibrate_reranker
    from rerankforge.config import command_line, config_from_args
    from rerankforge.utils.table import metrics_table

    cfg = config_from_args(CalibrateConfig, args)
    rec = calibrate_reranker(cfg.model, cfg.collection, cfg.fit_split, cfg.eval_split, cfg.out, cfg.method,
                             run=cfg.run, fit_run=cfg.fit_run, depth=cfg.depth, rel_threshold=cfg.rel_threshold,
                             max_fit_queries=cfg.max_fit_queries, n_bins=cfg.bins, batch_size=cfg.batch_size,
                             bf16=cfg.bf16, seed=cfg.seed, command=command_line("calibrate", cfg))
    rows = {"before (sigmoid of raw score)": rec["before"], f"after ({rec['method']}, exported)": rec["after"]}
    rows.update({f"after ({m}, not exported)": alt["after"] for m, alt in rec.get("other_methods", {}).items()})
    metrics_table(rows,
                  title=f"{cfg.eval_split}: {rec['eval_pairs']} pairs from {rec['eval_queries']} queries "
                        f"(fit on {cfg.fit_split}: {rec['fit_pairs']} pairs)")
    where = "folded into the classification head" if rec["folded_into_head"] else "stored in rerankforge.json"
    print(f"a = {rec['a']:.6g}, b = {rec['b']:.6g} ({where}); export check max |diff| = "
          f"{rec['export_check_max_abs_diff']:.2g}")
    print(f"calibrated model -> {rec['model_dir']}; calibration.json, reliability.png -> {cfg.out}")
    return 0
