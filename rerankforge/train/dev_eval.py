"""Evaluation during training and the best checkpoint (the ``dev:`` section of a training config).

    dev: {every: 50, split: dev, metric: nDCG@10, depth: 30, max_queries: 50, keep_best: true}
    dev: {every: 50, holdout: true}     # the train queries data.mine.holdout_queries kept out

Every ``every`` optimizer steps (and after the last step) the main process reranks the first stage
of the dev queries with the model being trained, through the same ``evaluate_reranker`` step as the
final evaluation. The first stage is retrieved once, before training. The metrics go to the
trackers as ``dev/<measure>`` and to ``<output_dir>/dev_history.json``; with ``keep_best`` the
model with the best ``metric`` so far is exported to ``<output_dir>/best`` (a loadable model
directory, ``best.json`` beside it says which step), and with ``export_best`` it also becomes
``<output_dir>/model``. Test judgments are never read here: a dev split named ``test`` is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rerankforge.errors import ConfigError
from rerankforge.utils.io import atomic_save_pretrained, write_json


class DevEvaluator:
    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.dev = cfg.dev
        self.out = Path(cfg.output_dir)
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self._run = None
        self._collection = None
        previous = self.out / "dev_history.json"
        if cfg.resume and previous.exists():  # a resumed run keeps the best it had found
            import json

            saved = json.loads(previous.read_text())
            self.history, self.best = saved.get("history", []), saved.get("best")

    @classmethod
    def from_config(cls, cfg) -> DevEvaluator | None:
        return cls(cfg) if cfg.dev.every else None

    def prepare(self) -> None:
        """Open the collection and retrieve the first stage of the dev queries (main process)."""
        from rerankforge.data.beir import Collection
        from rerankforge.data.trec import read_run, truncate
        from rerankforge.pipelines.steps import first_stage, holdout_ids

        dev, data = self.dev, self.cfg.data
        name = dev.collection or data.collection or (data.mine.collection if data.mine else None)
        if not name:
            raise ConfigError("dev.every is set but no collection: set dev.collection (or data.collection)")
        collection = Collection(name)
        if dev.holdout:
            mine = data.mine
            if mine is None or not mine.holdout_queries:
                raise ConfigError("dev.holdout: true needs data.mine with holdout_queries > 0 (the queries mining "
                                  "leaves out)")
            self.split = mine.split
            qrels = collection.qrels(mine.split)
            if mine.max_queries:
                qrels = dict(list(qrels.items())[: mine.max_queries])
            qids = sorted(holdout_ids(qrels, mine.holdout_queries, mine.policy.seed))
        else:
            if not collection.has_split(dev.split):
                raise ConfigError(f"dev.split: {collection.root} has no qrels/{dev.split}.tsv")
            self.split = dev.split
            qids = list(collection.qrels(dev.split))
        if dev.max_queries:
            qids = qids[: dev.max_queries]
        if dev.run:
            run = read_run(dev.run, collection.queries, collection.documents)
            run = {q: run[q] for q in qids if q in run}
        else:
            run = first_stage(collection, {q: collection.queries[q] for q in qids}, "bm25", dev.depth)
        self._run, self._collection = truncate(run, dev.depth), collection

    def __call__(self, model, step: int) -> dict[str, float]:
        """Evaluate ``model`` (unwrapped) at ``step``; keeps the best model; returns the metrics."""
        from rerankforge.pipelines.steps import evaluate_reranker

        import torch

        if self._run is None:
            self.prepare()
        dev = self.dev
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                report = evaluate_reranker(model, self._collection, self.split, self._run, dev.depth, dev.measures,
                                           dev.batch_size, self.cfg.bf16, progress=False, max_queries=len(self._run))
        finally:
            model.train(was_training)
        metrics = dict(report["reranked"])
        record = {"step": step, **metrics}
        self.history.append(record)
        improved = self.best is None or metrics[dev.metric] > self.best[dev.metric]
        if improved:
            self.best = record
            if dev.keep_best:
                atomic_save_pretrained(model, self.out / "best")
        write_json(self.out / "dev_history.json", {
            "split": self.split, "holdout": dev.holdout, "queries": len(self._run), "depth": dev.depth,
            "metric": dev.metric, "first_stage": report["first_stage"], "best": self.best, "history": self.history})
        if improved and dev.keep_best:
            write_json(self.out / "best" / "best.json", {"step": step, "metric": dev.metric, **metrics,
                                                          "split": self.split, "queries": len(self._run)})
        return metrics

    def summary(self) -> dict[str, Any]:
        return {"metric": self.dev.metric, "split": self.split, "best": self.best, "evaluations": len(self.history)}
