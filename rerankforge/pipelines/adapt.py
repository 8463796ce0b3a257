"""``rerankforge adapt``: a reranker for one corpus, built without relevance judgments.

    rerankforge adapt --collection DIR --out OUT [--teacher MODEL_DIR] [--queries Q.jsonl] [--minutes M]

1. **Pseudo-queries** from the corpus (``pseudo.kinds``: document titles, body sentences, random
   word spans; one query per source document, whose one relevant document is that source), plus
   the user's own unlabelled queries (``--queries``). The query text is cut out of its source
   document (the inverse cloze task, Lee et al. 2019), so neither training nor the held-out
   queries reward copying words: without the cut BM25 finds a verbatim span at rank 1 and every
   choice made on such queries would favour it. The altered corpus, the queries and their
   pseudo-qrels (splits ``pseudo_train`` / ``pseudo_dev``) form a BEIR collection under
   ``OUT/work`` that every shared step reads.
2. **Negatives** mined with hybrid retrieval (BM25 + the MiniLM bi-encoder, RRF) by the shared
   ``mine`` step and its false-negative filters (positives and their duplicates never become
   negatives; the top ``negatives.rank_min - 1`` ranks are skipped, where unjudged relevant
   documents of a pseudo-query crowd).
3. **Training** by the project trainer within ``--minutes`` (``optim.max_minutes``): with
   ``--teacher``, the teacher's scores on every candidate (the ``label_teacher`` step) and a KL
   distillation loss beside listwise CE; otherwise listwise CE on pseudo-query -> source document.
   The student starts from MiniLM-L6. The default type is its bi-encoder: untrained, it already
   beat BM25 on three of the four judged collections and the SciFact-trained ColBERT on four of
   five other ones (issue 14), so the guard starts from a strong model, whereas a cross-encoder or
   ColBERT head needs thousands of steps before it ranks at all -- more than a CPU budget of minutes
   gives (a MiniLM step of 8 groups x 8 documents takes ~15 s on 2 cores). ``train.model.type``
   selects another type; the guard then compares against that type's untrained start.
4. **Guard**: the untrained start and the trained model rerank the BM25 top-``depth`` of the
   held-out pseudo-queries; the better one is exported (``chosen.model``), so adapt never ends
   below its start.
5. **Fusion**: α of ``α·norm(BM25) + (1 − α)·norm(reranker)`` chosen on the same held-out
   pseudo-queries (α = 0 is the pure reranker, α = 1 BM25 itself): ``output`` is the fused run
   when α > 0.
6. **Report**: when the collection has a judged ``test_split``, its BM25 top-``depth`` is reranked
   by ``rerankforge rerank`` with the chosen settings (``rerank_command`` in the report runs that
   exact step again) -- for reporting only: every choice above is written to the report before the
   test judgments are read.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from rerankforge.config import option, require
from rerankforge.errors import ConfigError
from rerankforge.mining.negatives import NegativePolicy
from rerankforge.train.config import TrainConfig

log = logging.getLogger(__name__)

KINDS = ("titles", "sentences", "spans")
TRAIN_SPLIT, DEV_SPLIT = "pseudo_train", "pseudo_dev"
USER_PREFIX = "user:"


@dataclass
class AdaptPseudoConfig:
    """Pseudo-queries made from the corpus (``mining.pseudo_queries``); one per source document."""

    #: generators, drawn round-robin; one the corpus cannot feed (no titles, no punctuation) is
    #: skipped and the report says why
    kinds: list[str] = option(factory=lambda: ["titles", "spans"], flag="--pseudo-kinds", choices=KINDS,
                              help="pseudo-query generators (titles, sentences, spans)")
    train_queries: int = option(4000, flag="--pseudo-queries", help="pseudo-queries to train on (at most)")
    #: held out from training: the guard and the fusion weight are chosen on them
    dev_queries: int = option(200, flag="--dev-queries", help="held-out pseudo-queries for the guard and α")
    #: cut the query's words out of its source document (inverse cloze task)
    remove_from_doc: bool = True
    title_min_words: int = 4
    sentence_min_words: int = 6
    sentence_max_words: int = 30
    span_min_words: int = 5
    span_max_words: int = 12
    #: words a document must keep after its query is cut out
    min_doc_words: int = 5

    def validate(self) -> None:
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ConfigError(f"pseudo.kinds must be a non-empty list of {', '.join(KINDS)}; got {self.kinds}")
        if self.train_queries < 1 or self.dev_queries < 1:
            raise ConfigError(f"pseudo.train_queries and pseudo.dev_queries must be >= 1, got "
                              f"{self.train_queries}, {self.dev_queries}")


def _adapt_train() -> TrainConfig:
    cfg = TrainConfig()
    cfg.model.type = "bi_encoder"
    cfg.model.max_length = 256
    # 0 keeps PyTorch's fused attention kernel on CPU (~1.6x faster steps for MiniLM-L6)
    cfg.model.attention_dropout = 0.0
    cfg.data.group_size = 8
    cfg.optim.lr = 2e-5
    cfg.optim.batch_size = 8
    cfg.optim.epochs = 1
    cfg.optim.warmup_ratio = 0.1
    cfg.log_every = 5
    return cfg


def _adapt_negatives() -> NegativePolicy:
    return NegativePolicy(negatives=15, rank_min=3, rank_max=100, strategy="uniform")


@dataclass
class AdaptConfig:
    collection: Optional[str] = option(None, flag="--collection", metavar="DIR", help="BEIR collection directory")
    out: Optional[str] = option(None, flag="--out", metavar="DIR",
                                help="output directory (model/, adapt_report.json, runs)")
    teacher: Optional[str] = option(None, flag="--teacher", metavar="MODEL_DIR",
                                    help="a reranker whose scores the student distils (default: self-supervised)")
    queries: Optional[str] = option(None, flag="--queries", metavar="Q.jsonl",
                                    help="your own unlabelled queries (BEIR queries.jsonl) to train on as well")
    #: the training loop's wall-clock budget; indexing, mining and evaluation come on top
    #: (a 5k-document corpus: about 10 minutes more on 2 CPU cores)
    minutes: float = option(20.0, flag="--minutes", help="training time budget in minutes")
    #: seed of pseudo-query sampling and training (negatives.seed, flag --seed, draws the negatives)
    seed: int = 13
    pseudo: AdaptPseudoConfig = field(default_factory=AdaptPseudoConfig)
    #: the mining retriever (a RetrieverConfig name): hybrid = BM25 + bi-encoder, RRF
    mine_retriever: str = "hybrid"
    #: the bi-encoder of hybrid mining and of the zero-shot baseline in the report (null: MiniLM-L6)
    dense_model: Optional[str] = None
    negatives: NegativePolicy = field(default_factory=_adapt_negatives)
    #: the student and its training (output_dir, data and optim.max_minutes are set by adapt);
    #: e.g. train.model.type=colbert
    train: TrainConfig = field(default_factory=_adapt_train)
    #: null: listwise CE, plus KL distillation with a teacher
    loss: Optional[list[Any]] = None
    #: BM25 candidates reranked per query (held-out pseudo-queries and the test split alike)
    depth: int = option(100, flag="--depth", help="BM25 candidates reranked per query")
    fusion_norm: str = option("zscore", flag="--fusion-norm", choices=("minmax", "zscore"),
                              help="per-query score normalisation for fusion with BM25")
    #: the split reported on when it exists (never used for a choice)
    test_split: str = "test"
    #: a judged non-test split to report the held-out pseudo-queries' choices against (how well
    #: they stand in for real queries: base vs adapted, the α curve); never used for a choice
    validation_split: Optional[str] = None
    measures: list[str] = field(default_factory=lambda: ["nDCG@10", "RR@10", "R@100", "AP@100"])
    batch_size: int = 64
    #: bf16 training and scoring; null: where the CPU has native bf16 (AMX / AVX512-BF16) or on a
    #: GPU. Emulated bf16 was 5x slower than float32 for MiniLM-L6 scoring and 10x for its backward
    #: pass on an AVX2-only CPU
    bf16: Optional[bool] = None
    progress: bool = option(True, flag="--no-progress", help="no progress bars")

    def validate(self) -> None:
        require(self, "collection", "out")
        if not self.minutes > 0:
            raise ConfigError(f"--minutes must be > 0, got {self.minutes}")
        if self.depth < 1:
            raise ConfigError(f"--depth must be >= 1, got {self.depth}")


# ------------------------------------------------------------------------------ pseudo-queries
def _generate(kind: str, root: Path, n: int, p: AdaptPseudoConfig, seed: int, exclude) -> tuple[dict, dict]:
    from rerankforge.mining import pseudo_queries as pq

    if kind == "titles":
        return pq.title_queries(root, n, seed, p.title_min_words, exclude=exclude)
    if kind == "sentences":
        return pq.sentence_queries(root, n, seed, p.sentence_min_words, p.sentence_max_words, exclude=exclude)
    return pq.span_queries(root, n, seed, p.span_min_words, p.span_max_words, exclude=exclude)


def _cut(text: str, query: str) -> str:
    """``text`` without the words of ``query`` where they occur as one run (every occurrence)."""
    words, q = text.split(), query.split()
    out, i, k = [], 0, len(q)
    while i < len(words):
        if words[i : i + k] == q:
            i += k
        else:
            out.append(words[i])
            i += 1
    return " ".join(out)


def build_work_collection(cfg: AdaptConfig, work: Path) -> dict[str, Any]:
    """Write ``work`` as a BEIR collection: the corpus with each pseudo-query cut out of its
    source document, the pseudo-queries (and user queries), and qrels ``pseudo_train`` /
    ``pseudo_dev`` (source document = the one positive). Returns what was made, for the report."""
    from rerankforge.data.beir import Collection, collection_file, doc_text, iter_corpus_documents, load_queries
    from rerankforge.utils.io import atomic_write

    p = cfg.pseudo
    source = Collection(cfg.collection)
    root = source.root
    empty = frozenset(source.documents.empty_ids)
    want = p.train_queries + p.dev_queries
    per_kind: dict[str, list[tuple[str, str, str]]] = {}
    skipped: dict[str, str] = {}
    for kind in dict.fromkeys(p.kinds):
        try:
            queries, qrels = _generate(kind, root, want, p, cfg.seed, empty)
        except ConfigError as err:
            skipped[kind] = str(err)
            log.warning("adapt: no %s pseudo-queries: %s", kind, err)
            continue
        per_kind[kind] = [(qid, text, next(iter(qrels[qid]))) for qid, text in queries.items()]
    if not per_kind:
        raise ConfigError(f"{root}: no pseudo-query generator of {p.kinds} works on this corpus: "
                          + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    texts = {doc_id: " ".join(doc_text(title, body).split())
             for _, doc_id, title, body in iter_corpus_documents(collection_file(root, "corpus.jsonl"))
             if doc_id not in empty}
    # Round-robin over the generators, one query per source document (its text is cut out of it).
    chosen: list[tuple[str, str, str, str]] = []
    used: set[str] = set()
    too_short = 0
    lists = list(per_kind.items())
    for i in range(max(len(v) for v in per_kind.values())):
        for kind, items in lists:
            if i >= len(items) or len(chosen) >= want:
                continue
            qid, text, doc = items[i]
            if doc in used or doc not in texts:
                continue
            if p.remove_from_doc:
                rest = _cut(texts[doc], text)
                if len(rest.split()) < p.min_doc_words:
                    too_short += 1
                    continue
            used.add(doc)
            chosen.append((kind, qid, text, doc))
    rng = random.Random(cfg.seed)
    rng.shuffle(chosen)
    n_dev = min(p.dev_queries, max(1, len(chosen) // 5))  # a small corpus still keeps most for training
    dev, train = chosen[:n_dev], chosen[n_dev:]
    if not train:
        raise ConfigError(f"{root}: only {len(chosen)} pseudo-queries could be made; too few to train on")
    altered = dict(texts)
    if p.remove_from_doc:
        for _, _, text, doc in chosen:
            altered[doc] = _cut(texts[doc], text)
    queries = {qid: text for _, qid, text, _ in chosen}
    qrels = {TRAIN_SPLIT: {qid: doc for _, qid, _, doc in train}, DEV_SPLIT: {qid: doc for _, qid, _, doc in dev}}
    user = {"given": 0, "labelled": 0}
    if cfg.queries:
        own = load_queries(cfg.queries)
        user["given"] = len(own)
        queries.update({USER_PREFIX + q: t for q, t in own.items()})
    work.mkdir(parents=True, exist_ok=True)
    (work / "qrels").mkdir(exist_ok=True)
    with atomic_write(work / "corpus.jsonl") as fh:
        for doc, text in altered.items():
            fh.write(json.dumps({"_id": doc, "title": "", "text": text}) + "\n")
    with atomic_write(work / "queries.jsonl") as fh:
        for qid, text in queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    if cfg.queries:
        labelled = _label_user_queries(work, {q: t for q, t in queries.items() if q.startswith(USER_PREFIX)},
                                       cfg.dense_model)
        qrels[TRAIN_SPLIT].update(labelled)
        user["labelled"] = len(labelled)
    for split, pairs in qrels.items():
        with atomic_write(work / "qrels" / f"{split}.tsv") as fh:
            fh.write("query-id\tcorpus-id\tscore\n")
            fh.writelines(f"{q}\t{d}\t1\n" for q, d in pairs.items())
    counts = {kind: {"train": sum(1 for k, *_ in train if k == kind), "dev": sum(1 for k, *_ in dev if k == kind)}
              for kind in per_kind}
    return {"kinds": counts, "skipped_kinds": skipped, "train": len(train), "dev": len(dev),
            "remove_from_doc": p.remove_from_doc, "dropped_doc_too_short": too_short, "user_queries": user,
            "examples": [{"kind": k, "query": t, "doc": d} for k, _, t, d in chosen[:5]]}


def _label_user_queries(work: Path, queries: dict[str, str], dense_model: str | None) -> dict[str, str]:
    """A user query's pseudo-positive: the document BM25 and the bi-encoder both rank first
    (queries on which they disagree are left out: their top document is too uncertain)."""
    from rerankforge.data.beir import Collection
    from rerankforge.pipelines.steps import first_stage
    from rerankforge.retrieve.config import RetrieverConfig

    coll = Collection(work)
    dense_cfg = RetrieverConfig(retriever="dense")
    dense_cfg.dense.model = dense_model
    bm25 = first_stage(coll, queries, "bm25", 1)
    dense = first_stage(coll, queries, dense_cfg, 1)
    return {q: bm25[q][0][0] for q in queries
            if bm25.get(q) and dense.get(q) and bm25[q][0][0] == dense[q][0][0]}


def _zero_shot_rerank(coll, first, dense_model: str | None, depth: int, temperature: float = 0.05):
    """The untrained bi-encoder reranking ``first``, from the dense retriever's document embeddings
    (encoded once per corpus and model, cached on disk, shared with hybrid mining): the same
    cosine / temperature as ``BiEncoder(dense_model)``, at the cost of one corpus encoding ever."""
    import numpy as np

    from rerankforge.pipelines.steps import index
    from rerankforge.retrieve.config import RetrieverConfig

    rcfg = RetrieverConfig(retriever="dense")
    rcfg.dense.model = dense_model
    dense = index(coll, rcfg)
    qids = [q for q in first if q in coll.queries]
    qvecs = dense.encoder.encode_queries([coll.queries[q] for q in qids])
    out = {}
    for qid, qv in zip(qids, qvecs):
        docs = [d for d, _ in first[qid][:depth]]
        scores = dense.embeddings(dense.ids.rows(docs)) @ qv / temperature
        out[qid] = sorted(zip(docs, np.asarray(scores, dtype=np.float64).tolist()), key=lambda e: -e[1])
    return out


def _same_config(path: Path, text: str) -> bool:
    return path.exists() and path.read_text() == text


# ------------------------------------------------------------------------------------ pipeline
def adapt(cfg: AdaptConfig | None = None, **overrides: Any) -> dict[str, Any]:
    """Build a reranker for ``cfg.collection`` without judgments; returns (and writes) the report
    ``<out>/adapt_report.json``. ``adapt(collection=..., out=..., minutes=...)`` works too."""
    from rerankforge.config import config_from_dict, to_dict, to_yaml
    from rerankforge.data.beir import Collection
    from rerankforge.eval import evaluate
    from rerankforge.mining.config import MineConfig
    from rerankforge.models import load_reranker
    from rerankforge.pipelines import steps
    from rerankforge.rerank import rerank
    from rerankforge.rerank.fusion import choose_alpha
    from rerankforge.train import train
    from rerankforge.train.build import build_model
    from rerankforge.utils.io import atomic_save_pretrained, atomic_write, write_json

    if cfg is None or overrides:
        base = to_dict(cfg) if cfg is not None else {}
        cfg = config_from_dict(AdaptConfig, {**base, **overrides}, "adapt()")
    if cfg.bf16 is None:
        import torch

        from rerankforge.retrieve.dense import bf16_supported

        cfg = copy.deepcopy(cfg)
        cfg.bf16 = bf16_supported("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    # Re-running the same command resumes: finished steps of an identical config are reused.
    settings = to_yaml(cfg)
    resume = _same_config(out / "adapt_config.yaml", settings)
    if not resume:
        for stale in ("work", "train", "model", "adapt_report.json"):
            if (out / stale).is_dir():
                shutil.rmtree(out / stale)
            elif (out / stale).exists():
                (out / stale).unlink()
    with atomic_write(out / "adapt_config.yaml") as fh:
        fh.write(settings)
    done = json.loads((out / "adapt_report.json").read_text()) if resume and (out / "adapt_report.json").exists() else {}
    t0 = t = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(name: str, what: str) -> None:
        nonlocal t
        timings[name] = round(time.perf_counter() - t, 2)
        print(f"[{timings[name]:7.1f}s] {what}", flush=True)
        t = time.perf_counter()

    # 1. pseudo-queries -> the work collection
    work = out / "work"
    if done.get("pseudo_queries"):
        pseudo = done["pseudo_queries"]
    else:
        pseudo = build_work_collection(cfg, work)
    wcoll = Collection(work)
    lap("pseudo_queries_s", f"{pseudo['train']} training + {pseudo['dev']} held-out pseudo-queries "
                            f"({', '.join(pseudo['kinds'])}) -> {work}")

    # 2. negatives
    policy = cfg.negatives  # its own seed (--seed) draws the negatives
    mcfg = MineConfig(collection=str(work), split=TRAIN_SPLIT, retriever=cfg.mine_retriever,
                      depth=max(100, policy.rank_max), out=str(work / "groups.jsonl"), progress=cfg.progress,
                      policy=policy)
    mcfg.dense.model = cfg.dense_model
    from rerankforge.mining.report import report_path

    if resume and report_path(mcfg.out).exists():
        mined = steps.MineResult(Path(mcfg.out), json.loads(report_path(mcfg.out).read_text()), reused=True)
    else:
        mined = steps.mine(mcfg, wcoll)
    groups = mined.path
    lap("mine_s", f"mined {mined.groups_written} groups with {cfg.mine_retriever} retrieval -> {groups}")
    teacher_info = None
    if cfg.teacher:
        labelled = work / "groups.teacher.jsonl"
        summary = steps.label_teacher(groups, cfg.teacher, labelled, collection=wcoll, batch_size=cfg.batch_size,
                                      bf16=cfg.bf16, progress=cfg.progress)
        teacher_info = {"model": str(cfg.teacher), **summary.to_json()}
        groups = labelled
        lap("teacher_s", f"teacher {cfg.teacher} scored {summary.pairs} pairs")

    # 3. training
    tcfg = copy.deepcopy(cfg.train)  # cfg itself stays what the user gave (its command line goes in the card)
    tcfg.output_dir = str(out / "train")
    tcfg.data.train_groups = str(groups)
    tcfg.data.collection = str(work)
    tcfg.optim.max_minutes = cfg.minutes
    tcfg.seed = cfg.seed
    tcfg.bf16 = cfg.bf16
    tcfg.progress = cfg.progress
    tcfg.eval.collection = None
    if cfg.loss is not None:
        tcfg.loss = list(cfg.loss)
    elif cfg.teacher:
        tcfg.loss = [{"name": "kl", "weight": 1.0}, {"name": "listwise_ce", "weight": 1.0}]
    else:
        tcfg.loss = [{"name": "listwise_ce"}]
    trained_dir = Path(tcfg.output_dir) / "model"
    if not (resume and (Path(tcfg.output_dir) / "train_summary.json").exists() and trained_dir.exists()):
        trained_dir = train(tcfg)
    train_summary = json.loads((Path(tcfg.output_dir) / "train_summary.json").read_text())
    lap("train_s", f"trained {tcfg.model.type} for {train_summary['global_step']} steps -> {trained_dir}")

    # 4. guard + 5. fusion, on the held-out pseudo-queries only
    model_dir = out / "model"
    resumed_choice = bool(done.get("chosen")) and (model_dir / "rerankforge.json").exists()
    if resumed_choice:
        report = {k: v for k, v in done.items() if k not in ("seconds", "timings_s")}
        model_choice, alpha = report["chosen"]["model"], report["fusion"]["alpha"]
        print(f"resuming: {report['chosen']['why']}")
    else:
        dev_qrels = wcoll.qrels(DEV_SPLIT)
        dev_first = steps.first_stage(wcoll, DEV_SPLIT, "bm25", cfg.depth)

        def ndcg(run) -> float:
            return evaluate(dev_qrels, run, ["nDCG@10"])["nDCG@10"]

        dev: dict[str, Any] = {"queries": len(dev_first), "first_stage": evaluate(dev_qrels, dev_first, cfg.measures)}
        dev_runs = {}
        for name in ("base", "adapted"):
            if name == "base" and _starts_from_dense(cfg, tcfg):
                dev_runs[name] = _zero_shot_rerank(wcoll, dev_first, cfg.dense_model, cfg.depth)
            else:
                model = build_model(tcfg.model) if name == "base" else load_reranker(trained_dir)
                dev_runs[name], _ = rerank(model, wcoll.queries, wcoll.corpus, dev_first, cfg.depth, cfg.batch_size,
                                           cfg.bf16)
                del model
            dev[name] = evaluate(dev_qrels, dev_runs[name], cfg.measures)
        # ties keep the start: training has to earn its place
        model_choice = "adapted" if dev["adapted"]["nDCG@10"] > dev["base"]["nDCG@10"] else "base"
        alpha, curve = choose_alpha(dev_first, dev_runs[model_choice], ndcg, norm=cfg.fusion_norm)
        dev["fused"] = {"nDCG@10": curve[alpha]}
        dev["alpha_curve"] = curve
        other = "base" if model_choice == "adapted" else "adapted"
        dev[f"{other}_alpha_curve"] = choose_alpha(dev_first, dev_runs[other], ndcg, norm=cfg.fusion_norm)[1]
        output_kind = "pure" if alpha == 0.0 else "fused"
        if model_choice == "adapted":
            if model_dir.exists():
                shutil.rmtree(model_dir)
            shutil.copytree(trained_dir, model_dir)
        else:
            atomic_save_pretrained(build_model(tcfg.model), model_dir)
        chosen = {"model": model_choice, "output": output_kind, "alpha": alpha,
                  "why": f"held-out pseudo-queries ({len(dev_first)}): nDCG@10 base {dev['base']['nDCG@10']:.4f}, "
                         f"adapted {dev['adapted']['nDCG@10']:.4f}; fused with BM25 at alpha={alpha}: {curve[alpha]:.4f}"}
        lap("guard_fusion_s", chosen["why"])

        report: dict[str, Any] = {
            "collection": str(Collection(cfg.collection).root),
            "chosen": chosen,
            "fusion": {"alpha": alpha, "norm": cfg.fusion_norm,
                       "chosen_on": f"{len(dev_first)} held-out pseudo-queries (split {DEV_SPLIT} of {work})"},
            "pseudo_dev": dev,
            "pseudo_queries": pseudo,
            "mining": {k: mined.report.get(k) for k in ("groups_written", "source", "removed", "timings")
                       if k in mined.report},
            "teacher": teacher_info,
            "train": {k: v for k, v in train_summary.items() if k != "history"},
            "model_dir": str(model_dir),
            "model_type": tcfg.model.type,
            "minutes": cfg.minutes,
        }
        # Every choice is fixed (and on disk) before a test judgment is read.
        write_json(out / "adapt_report.json", report | {"seconds": round(time.perf_counter() - t0, 1),
                                                        "timings_s": timings})

    coll = Collection(cfg.collection)
    if cfg.validation_split:
        report["validation"] = _validation(cfg, coll, out, model_choice, trained_dir, tcfg)
        lap("validation_s", f"validation on {cfg.validation_split}: {report['validation']['summary']}")

    # 6. reporting on the judged test split
    if coll.has_split(cfg.test_split):
        report.update(_report_test(cfg, coll, out, model_dir, alpha))
        lap("test_s", f"reranked {cfg.test_split}: nDCG@10 BM25 {report['first_stage']['nDCG@10']:.4f}, pure "
                      f"{report['pure']['nDCG@10']:.4f}, output {report['output']['nDCG@10']:.4f} "
                      f"(p={report['p_vs_bm25']:.4g})")
    else:
        report["rerank_command"] = _rerank_line(cfg, "SPLIT", "RUN.trec", model_dir, alpha, out / "output.trec")
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["timings_s"] = timings
    if resume and done.get("seconds"):
        report["seconds_before_resume"] = done.get("seconds_before_resume", 0) + done["seconds"]
    write_json(out / "adapt_report.json", report)
    _write_card(model_dir, report, cfg, Path(tcfg.output_dir))
    print(f"report -> {out / 'adapt_report.json'}  (total {report['seconds']}s)")
    return report


def rerank_settings(cfg: AdaptConfig, split: str, run: str | Path, model_dir: str | Path, alpha: float,
                    out: str | Path):
    """The :class:`RerankConfig` that produces adapt's ``output`` run."""
    from rerankforge.rerank.apply import RerankConfig

    return RerankConfig(model=str(model_dir), collection=str(cfg.collection), split=split, run=str(run),
                        depth=cfg.depth, out=str(out), batch_size=cfg.batch_size, bf16=cfg.bf16,
                        fusion_alpha=alpha if alpha > 0 else None, fusion_norm=cfg.fusion_norm, progress=False)


def _rerank_line(cfg, split, run, model_dir, alpha, out) -> str:
    from rerankforge.config import command_line

    return command_line("rerank", rerank_settings(cfg, split, run, model_dir, alpha, out))


def _starts_from_dense(cfg: AdaptConfig, tcfg) -> bool:
    """Whether the untrained start is the dense retriever's bi-encoder (its embeddings are cached)."""
    return tcfg.model.type == "bi_encoder" and str(tcfg.model.name_or_path or "default") == str(
        cfg.dense_model or "default")


def _report_test(cfg: AdaptConfig, coll, out: Path, model_dir: Path, alpha: float) -> dict[str, Any]:
    from rerankforge.data.trec import read_run, write_run
    from rerankforge.eval import evaluate
    from rerankforge.eval.metrics import per_query
    from rerankforge.eval.significance import randomization_test
    from rerankforge.pipelines import steps
    from rerankforge.rerank.apply import rerank_collection

    split = cfg.test_split
    qrels = coll.qrels(split)
    run_path = out / f"first_stage_{split}.trec"
    write_run(run_path, steps.first_stage(coll, split, "bm25", cfg.depth), tag="bm25")
    first = read_run(run_path, coll.queries, coll.corpus)  # what `rerankforge rerank --run` reads
    rcfg = rerank_settings(cfg, split, run_path, model_dir, alpha, out / f"output_{split}.trec")
    result = rerank_collection(rcfg)
    write_run(rcfg.out, result.final)
    write_run(out / f"pure_{split}.trec", result.reranked)
    zero_run = _zero_shot_rerank(coll, first, cfg.dense_model, cfg.depth)
    base_q = per_query(qrels, first)
    return {
        "split": split,
        "queries": len(first),
        "depth": cfg.depth,
        "first_stage": evaluate(qrels, first, cfg.measures),
        "pure": evaluate(qrels, result.reranked, cfg.measures),
        "output": evaluate(qrels, result.final, cfg.measures),
        "bi_encoder_zero_shot": evaluate(qrels, zero_run, cfg.measures),
        "p_vs_bm25": randomization_test(list(base_q.values()), [per_query(qrels, result.final)[q] for q in base_q]),
        "p_pure_vs_bm25": randomization_test(list(base_q.values()),
                                             [per_query(qrels, result.reranked)[q] for q in base_q]),
        "pairs_per_s": round(result.stats.pairs_per_s, 1),
        "rerank_seconds": round(result.stats.seconds, 2),
        "rerank_command": _rerank_line(cfg, split, run_path, model_dir, alpha, rcfg.out),
        "note": "test judgments are used for this report only; every choice was made on pseudo-queries",
    }


def _validation(cfg: AdaptConfig, coll, out: Path, model_choice: str, trained_dir: Path, tcfg) -> dict[str, Any]:
    """The held-out pseudo-queries' decisions replayed on real judged queries of a non-test split
    (reported only: how far pseudo-queries stand in for real ones)."""
    from rerankforge.eval import evaluate
    from rerankforge.models import load_reranker
    from rerankforge.pipelines import steps
    from rerankforge.rerank import rerank
    from rerankforge.rerank.fusion import choose_alpha
    from rerankforge.train.build import build_model

    split = cfg.validation_split
    qrels = coll.qrels(split)
    first = steps.first_stage(coll, split, "bm25", cfg.depth)
    res: dict[str, Any] = {"split": split, "queries": len(first), "first_stage": evaluate(qrels, first, ["nDCG@10"])}
    runs = {}
    for name, model in (("base", build_model(tcfg.model)), ("adapted", load_reranker(trained_dir))):
        runs[name], _ = rerank(model, coll.queries, coll.corpus, first, cfg.depth, cfg.batch_size, cfg.bf16)
        res[name] = evaluate(qrels, runs[name], ["nDCG@10"])
        best, curve = choose_alpha(first, runs[name], lambda r: evaluate(qrels, r, ["nDCG@10"])["nDCG@10"],
                                   norm=cfg.fusion_norm)
        res[f"{name}_alpha_curve"] = curve
        res[f"{name}_best_alpha"] = best
    res["summary"] = (f"BM25 {res['first_stage']['nDCG@10']:.4f}, base {res['base']['nDCG@10']:.4f}, adapted "
                      f"{res['adapted']['nDCG@10']:.4f}; best alpha there: base {res['base_best_alpha']} "
                      f"({res['base_alpha_curve'][res['base_best_alpha']]:.4f}), adapted {res['adapted_best_alpha']} "
                      f"({res['adapted_alpha_curve'][res['adapted_best_alpha']]:.4f})")
    return res


def _write_card(model_dir: Path, report: dict[str, Any], cfg: AdaptConfig, train_dir: Path) -> None:
    from rerankforge.config import command_line
    from rerankforge.export.card import card_info_from_output_dir, describe_base_model, write_model_card

    info: dict[str, Any] = card_info_from_output_dir(train_dir) if report["chosen"]["model"] == "adapted" else {
        "model_type": report["model_type"], "base_model": describe_base_model(cfg.train.model.name_or_path)}
    info["adapt"] = {k: report[k] for k in ("chosen", "fusion", "pseudo_dev") if k in report}
    if "first_stage" in report:
        info["evaluation"] = {"collection": report["collection"], "split": report["split"], "depth": report["depth"],
                              "first_stage": report["first_stage"], "reranked": report["pure"],
                              "rerank_speed": {"pairs_per_s": report["pairs_per_s"]}}
    info["commands"] = [command_line("adapt", cfg), report["rerank_command"]]
    write_model_card(model_dir, info)
