#!/usr/bin/env python
"""Benchmark (not a test): rerankforge against sentence-transformers, per pair, on one machine.

Both run in this one process on the same weights (a MiniLM-L6 cross-encoder saved once and loaded
by both), the same SciFact groups (``bundled:scifact`` train, BM25 top-100 negatives via
``mine_cached``, as configs/scifact_listwise.yaml), the same max length, batch and precision,
alternating A/B/A/B so drift and other load hit both alike. Sections:

* ``ceiling``          square matmul GFLOP/s in float32 and bf16 on the same device (the roof);
* ``train``            listwise: groups of 16, ``batch`` pairs a step; rerankforge's ``Trainer``
                       (listwise_ce) vs a plain loop over sentence-transformers' ``CrossEncoder`` and
                       its ``ListNetLoss`` (a plain loop is generous to sentence-transformers: no
                       HF-Trainer or data-loader overhead);
* ``train_pointwise``  the same pairs with rerankforge's bce vs ``BinaryCrossEntropyLoss``;
                       both training sections also time rerankforge with ``model.fast_dropout=false``
                       (torch's dropout) in the same alternation: ``ratio_torch_dropout``;
* ``inference``        ``predict`` on (query, document) pairs of a real BM25 run of SciFact test:
                       rerankforge vs ``CrossEncoder.predict``, plus rerankforge's switches
                       (float32, bf16, ``bf16="auto"``, int8 dynamic, ``fast``: ``optimize_inference()``,
                       ``fast_autotune``: the same with mode="max-autotune"; compile time reported
                       apart and excluded), each with its score agreement;
                       sentence-transformers also with its weights in bf16 (``st_bf16_weights``),
                       the faster way to run it, so the ratio is also given against its best;
* ``quality``          nDCG@10 on SciFact test (BM25 top-k reranked) of the bundled bi-encoder
                       (a trained model; the cross-encoder's head is untrained here) in float vs
                       int8: the bar for a lossy switch is 0.005; with ``--quality-ce DIR`` also a
                       trained cross-encoder's nDCG@10 plain (bf16 autocast) vs ``optimize_inference()``;
* ``colbert``          rerankforge ColBERT training and scoring rates (PyLate is not installed:
                       its install downgrades torch/transformers/sentence-transformers).

Rates: pairs/s (min and median over repetitions; steady state, warm-up steps excluded),
tokens/s (non-pad tokens), achieved GFLOP/s (executed FLOPs, padding included; a training step is
3x the forward) and its fraction of the measured matmul ceiling, ratio to sentence-transformers.

    python scripts/bench_speed.py --sections ceiling,train --out bench_speed.json   # on an otherwise idle machine
    python scripts/bench_speed.py --quick --model TINY_DIR --collection TINY_COLLECTION   # CI smoke

``--merge`` keeps the other sections of an existing output file; ``--device cuda`` (see
scripts/gpu_bench.sh) writes everything under the file's "gpu" key.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

SECTIONS = ("ceiling", "train", "train_pointwise", "inference", "quality", "colbert")
PYLATE_SKIP = ("PyLate not installed: `pip install pylate` would downgrade torch, transformers and "
               "sentence-transformers in this environment, so it is not measured side by side")


# ------------------------------------------------------------------------------------------ facts
def cpu_info() -> dict:
    info: dict = {"threads": torch.get_num_threads(), "cpus": os.cpu_count(), "machine": platform.machine(),
                  "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "Thread(s) per core", "Core(s) per socket", "CPU(s)"):
                info[key.strip()] = value.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        flags = next((x for x in open("/proc/cpuinfo") if x.startswith("flags")), "").split()
    except OSError:
        flags = []
    info["flags"] = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8")
                     if f in flags]
    from rerankforge.models.precision import cpu_native_bf16

    info["native_bf16"] = cpu_native_bf16()
    return info


def versions() -> dict:
    import sentence_transformers
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__, "python": platform.python_version()}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_ceiling(device: str, n: int, reps: int) -> dict:
    out = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        sync(device)
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            a @ b
            sync(device)
            best = min(best, time.perf_counter() - t0)
        out[f"{name}_gflops"] = round(2 * n ** 3 / best / 1e9, 1)
    out["n"] = n
    return out


def encoder_flops(config, shapes: list[tuple[int, int]]) -> float:
    """Forward FLOPs of a BERT-style encoder over padded batches ``[(rows, length), ...]``:
    per token and layer 2·(4h² + 2h·ff) for the projections and FFN, plus 4·L·h for QKᵀ and AV."""
    h, ff, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    total = 0.0
    for rows, length in shapes:
        tokens = rows * length
        total += layers * (tokens * 2 * (4 * h * h + 2 * h * ff) + rows * 4 * length * length * h)
    return total


def summary(rates: list[float]) -> dict:
    return {"min": round(min(rates), 3), "median": round(statistics.median(rates), 3),
            "runs": [round(r, 3) for r in rates]}


# ------------------------------------------------------------------------------------------- data
def training_groups(collection: str, group_size: int, n_groups: int, seed: int = 0):
    """The listwise recipe's mined groups (cached), each cut to 1 positive + group_size-1 negatives."""
    from rerankforge.data.groups import Group, read_groups
    from rerankforge.mining.config import MineConfig
    from rerankforge.mining.negatives import NegativePolicy
    from rerankforge.pipelines.steps import mine_cached

    cfg = MineConfig(collection=collection, split="train", retriever="bm25", depth=100, progress=False,
                     policy=NegativePolicy(negatives=99, rank_min=1, rank_max=100, seed=0))
    groups = read_groups(mine_cached(cfg).path)
    out = []
    for g in groups:
        pos = [c for c in g.candidates if c.label and c.label > 0][:1]
        neg = [c for c in g.candidates if not (c.label and c.label > 0)][: group_size - 1]
        if pos and len(neg) == group_size - 1 and all(c.text for c in pos + neg):
            out.append(Group(g.query_id, g.query, pos + neg))
        if len(out) == n_groups:
            break
    if len(out) < n_groups:
        raise SystemExit(f"only {len(out)} groups of {group_size} candidates with text in {collection}; "
                         f"lower --group-size or --steps")
    # the order rerankforge's EpochShuffle gives epoch 0, so both frameworks see the same batches
    perm = torch.randperm(len(out), generator=torch.Generator().manual_seed(seed * 1_000_003)).tolist()
    return out, [out[i] for i in perm]


def test_pairs(collection: str, n_queries: int, depth: int):
    """(query, doc) pairs of BM25 top-``depth`` for the first ``n_queries`` judged test queries."""
    from rerankforge.data.beir import Collection
    from rerankforge.pipelines.steps import first_stage

    coll = Collection(collection)
    queries = dict(list(coll.split_queries("test").items())[:n_queries])
    run = first_stage(coll, queries, "bm25", depth)
    keys = [(q, d) for q, docs in run.items() for d, _ in docs[:depth]]
    return coll, queries, run, keys


def batch_shapes(tokenizer, pairs: list[tuple[str, str]], batch: int, max_length: int, sort: bool):
    """(rows, padded length, non-pad tokens) of each batch as a length-sorted scorer forms them."""
    lengths = [len(x) for x in tokenizer([q for q, _ in pairs], [d for _, d in pairs], truncation=True,
                                         max_length=max_length)["input_ids"]]
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1])) if sort else range(len(pairs))
    order = list(order)
    out = []
    for s in range(0, len(order), batch):
        ls = [lengths[i] for i in order[s : s + batch]]
        out.append((len(ls), max(ls), sum(ls)))
    return out, lengths


# -------------------------------------------------------------------------------------- training
def rf_train(model_dir: str, loss: str, groups, args, bf16: bool, attention_dropout: float | None,
             device: str, fast_dropout: bool = True) -> dict:
    from rerankforge.models.cross_encoder import CrossEncoder
    from rerankforge.models.dropout import set_attention_dropout
    from rerankforge.train.config import TrainConfig
    from rerankforge.train.trainer import Trainer

    model = CrossEncoder(model_dir, max_length=args.max_length)
    if attention_dropout is not None:
        set_attention_dropout(model, attention_dropout)
    gps = args.batch // args.group_size
    with tempfile.TemporaryDirectory(prefix="bench-rf-") as tmp:
        cfg = TrainConfig(output_dir=tmp, seed=0, bf16=bf16, progress=False, log_every=1)
        cfg.model.fast_dropout = fast_dropout
        cfg.data.group_size = args.group_size
        cfg.optim.batch_size = gps
        cfg.optim.max_steps = args.warmup + args.steps
        cfg.optim.lr, cfg.optim.head_lr = 3e-5, 1e-3
        trainer = Trainer(model=model, loss=[{"name": loss}], train_data=groups, args=cfg)
        trainer.train()
        hist = json.loads(Path(tmp, "train_summary.json").read_text())["history"]
    # rate is cumulative from the loop's start: time at step s = pairs(s) / rate(s)
    t = {h["step"]: h["step"] * args.batch / h["pairs_per_s"] for h in hist}
    last, first = args.warmup + args.steps, args.warmup
    seconds = t[last] - t[first] if first else t[last]
    return {"seconds": seconds, "pairs_per_s": args.steps * args.batch / seconds}


def st_train(model_dir: str, loss: str, groups, args, bf16: bool, attention_dropout: float | None,
             device: str) -> dict:
    from sentence_transformers.cross_encoder import CrossEncoder as STCrossEncoder
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss, ListNetLoss

    from rerankforge.models.dropout import set_attention_dropout

    torch.manual_seed(0)
    model = STCrossEncoder(model_dir, max_length=args.max_length, device=device)
    if attention_dropout is not None:
        set_attention_dropout(model, attention_dropout)
    loss_fn = ListNetLoss(model) if loss == "listwise_ce" else BinaryCrossEntropyLoss(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-5, weight_decay=0.01)
    model.train()
    gps = args.batch // args.group_size
    stamps = []
    for step in range(args.warmup + args.steps):
        part = groups[step * gps : (step + 1) * gps]
        queries = [g.query for g in part]
        docs = [[c.text for c in g.candidates] for g in part]
        labels = [[float(bool(c.label and c.label > 0)) for c in g.candidates] for g in part]
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            if loss == "listwise_ce":
                value = loss_fn([queries, docs], [torch.tensor(x, device=device) for x in labels])
            else:
                value = loss_fn([[q for q, ds in zip(queries, docs) for _ in ds], [d for ds in docs for d in ds]],
                                torch.tensor([x for xs in labels for x in xs], device=device))
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        stamps.append(time.perf_counter())
    seconds = stamps[-1] - stamps[args.warmup - 1] if args.warmup else stamps[-1] - stamps[0]
    steps = args.steps if args.warmup else args.steps - 1
    return {"seconds": seconds, "pairs_per_s": steps * args.batch / seconds}


def bench_train(model_dir: str, loss: str, ordered_groups, all_groups, args, ceiling: dict, device: str) -> dict:
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    gps = args.batch // args.group_size
    timed = ordered_groups[args.warmup * gps : (args.warmup + args.steps) * gps]
    shapes, tokens = [], 0
    for s in range(0, len(timed), gps):
        pairs = [(g.query, c.text) for g in timed[s : s + gps] for c in g.candidates]
        sh, lengths = batch_shapes(tok, pairs, len(pairs), args.max_length, sort=False)
        shapes += [(r, L) for r, L, _ in sh]
        tokens += sum(lengths)
    flops = 3 * encoder_flops(config, shapes)
    truncated = sum(1 for r, L in shapes if L >= args.max_length) / max(len(shapes), 1)
    out: dict = {"loss": {"rerankforge": loss, "sentence_transformers": "ListNetLoss" if loss == "listwise_ce"
                          else "BinaryCrossEntropyLoss"},
                 "pairs_per_step": args.batch, "group_size": args.group_size, "timed_steps": args.steps,
                 "warmup_steps": args.warmup, "bf16": args.bf16, "batches_at_max_length": round(truncated, 3),
                 "variants": {}}
    peak = ceiling.get("bfloat16_gflops" if args.bf16 else "float32_gflops")
    dropouts = [("checkpoint_dropout", None)] + ([("attention_dropout_0", 0.0)] if args.attention_dropout0 else [])
    for name, ad in dropouts:
        runs: dict[str, list[float]] = {"rerankforge": [], "sentence_transformers": [],
                                        "rerankforge_torch_dropout": []}
        torch_dropout = functools.partial(rf_train, fast_dropout=False)
        for rep in range(args.reps):
            order = (("rerankforge", rf_train), ("sentence_transformers", st_train),
                     ("rerankforge_torch_dropout", torch_dropout))
            for fw, fn in (order if rep % 2 == 0 else order[::-1]):
                r = fn(model_dir, loss, all_groups, args, args.bf16, ad, device)
                runs[fw].append(r["pairs_per_s"])
                print(f"  train[{loss}/{name}] {fw}: {r['pairs_per_s']:.2f} pairs/s", flush=True)
        v: dict = {}
        for fw, rates in runs.items():
            med = statistics.median(rates)
            sec_per_pair = 1 / med
            v[fw] = {"pairs_per_s": summary(rates),
                     "tokens_per_s": round(tokens / (args.steps * args.batch) / sec_per_pair, 1),
                     "gflops": round(flops / (args.steps * args.batch) / sec_per_pair / 1e9, 2)}
            if peak:
                v[fw]["fraction_of_ceiling"] = round(v[fw]["gflops"] / peak, 4)
        st_rate = v["sentence_transformers"]["pairs_per_s"]["median"]
        v["ratio"] = round(v["rerankforge"]["pairs_per_s"]["median"] / st_rate, 3)
        # model.fast_dropout=false: torch's dropout and attention, the rest of rerankforge unchanged
        v["ratio_torch_dropout"] = round(v["rerankforge_torch_dropout"]["pairs_per_s"]["median"] / st_rate, 3)
        out["variants"][name] = v
    head = out["variants"]["checkpoint_dropout"]
    out.update(rerankforge=head["rerankforge"]["pairs_per_s"]["median"],
               sentence_transformers=head["sentence_transformers"]["pairs_per_s"]["median"], ratio=head["ratio"])
    return out


# ------------------------------------------------------------------------------------- inference
def rank_agreement(a: np.ndarray, b: np.ndarray) -> dict:
    from scipy.stats import spearmanr

    return {"max_abs_diff": float(np.max(np.abs(a - b))), "spearman": round(float(spearmanr(a, b)[0]), 6)}


def bench_inference(model_dir: str, args, ceiling: dict, device: str) -> dict:
    from sentence_transformers.cross_encoder import CrossEncoder as STCrossEncoder
    from transformers import AutoConfig

    from rerankforge.models.cross_encoder import CrossEncoder

    coll, queries, run, keys = test_pairs(args.collection, args.queries, args.depth)
    pairs = [(queries[q], coll.corpus.text(d)) for q, d in keys]
    config = AutoConfig.from_pretrained(model_dir)
    rf = CrossEncoder(model_dir, max_length=args.max_length).to(device)
    st = STCrossEncoder(model_dir, max_length=args.max_length, device=device)
    shapes, lengths = batch_shapes(rf.tokenizer, pairs, args.infer_batch, args.max_length, sort=True)
    tokens = sum(lengths)
    flops = encoder_flops(config, [(r, L) for r, L, _ in shapes])
    dev = device.split(":")[0]

    def st_predict(bf16: bool):
        def fn(items):
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=bf16), torch.no_grad():
                return np.asarray(st.predict(items, batch_size=args.infer_batch, activation_fn=torch.nn.Identity(),
                                             show_progress_bar=False), dtype=np.float32)
        return fn

    def rf_predict(model, bf16):
        return lambda items: model.predict(items, batch_size=args.infer_batch, bf16=bf16)

    variants = {"rerankforge": rf_predict(rf, args.bf16), "sentence_transformers": st_predict(args.bf16)}
    extra = {}
    if "fp32" in args.infer_variants and args.bf16:
        extra["rerankforge_fp32"] = rf_predict(rf, False)
        extra["sentence_transformers_fp32"] = st_predict(False)
    if "bf16" in args.infer_variants and not args.bf16:
        extra["rerankforge_bf16"] = rf_predict(rf, True)
        extra["sentence_transformers_bf16"] = st_predict(True)
    if "auto" in args.infer_variants:
        extra["rerankforge_bf16_auto"] = rf_predict(rf, "auto")
    if "int8" in args.infer_variants and dev == "cpu":
        q8 = CrossEncoder(model_dir, max_length=args.max_length).quantize_int8()
        extra["rerankforge_int8"] = rf_predict(q8, False)
    compile_seconds = {}
    for variant, mode in (("fast", "default"), ("fast_autotune", "max-autotune")):
        if variant in args.infer_variants:
            fast = CrossEncoder(model_dir, max_length=args.max_length).to(device).optimize_inference(mode=mode)
            t0 = time.perf_counter()
            fast.predict(pairs, batch_size=args.infer_batch, bf16=args.bf16)  # compiles: timed apart, not in pairs/s
            compile_seconds[f"rerankforge_{variant}"] = round(time.perf_counter() - t0, 2)
            extra[f"rerankforge_{variant}"] = rf_predict(fast, args.bf16)
    if "st_bf16_weights" in args.infer_variants and args.bf16:
        st16 = STCrossEncoder(model_dir, max_length=args.max_length, device=device,
                              model_kwargs={"dtype": torch.bfloat16})

        def st16_predict(items):
            with torch.no_grad():
                return np.asarray(st16.predict(items, batch_size=args.infer_batch, activation_fn=torch.nn.Identity(),
                                               show_progress_bar=False), dtype=np.float32)
        extra["sentence_transformers_bf16_weights"] = st16_predict
    if {"onnx", "onnx_int8"} & set(args.infer_variants) and dev == "cpu":
        extra.update(onnx_variants(model_dir, args, Path(tempfile.mkdtemp(prefix="bench-onnx-"))))
    variants.update(extra)
    runs: dict[str, list[float]] = {k: [] for k in variants}
    scores: dict[str, np.ndarray] = {}
    names = list(variants)
    for rep in range(args.reps):
        for name in (names if rep % 2 == 0 else names[::-1]):
            variants[name](pairs[: args.infer_batch])  # not timed: one batch warms kernels and allocators
            sync(device)
            t0 = time.perf_counter()
            s = variants[name](pairs)
            sync(device)
            runs[name].append(len(pairs) / (time.perf_counter() - t0))
            scores[name] = np.asarray(s, dtype=np.float32)
            print(f"  inference {name}: {runs[name][-1]:.2f} pairs/s", flush=True)
    peak_bf16, peak_fp32 = ceiling.get("bfloat16_gflops"), ceiling.get("float32_gflops")
    out: dict = {"pairs": len(pairs), "queries": len(queries), "depth": args.depth, "batch": args.infer_batch,
                 "max_length": args.max_length, "bf16": args.bf16,
                 "pairs_at_max_length": round(sum(1 for x in lengths if x >= args.max_length) / len(lengths), 3),
                 "pad_fraction": round(1 - tokens / sum(r * L for r, L, _ in shapes), 4), "variants": {}}
    if compile_seconds:
        out["fast_first_pass_seconds"] = compile_seconds  # torch.compile + one pass, excluded from pairs/s
    ref = scores["rerankforge_fp32"] if "rerankforge_fp32" in scores else scores["rerankforge"]
    for name, rates in runs.items():
        med = statistics.median(rates)
        v = {"pairs_per_s": summary(rates), "tokens_per_s": round(tokens / len(pairs) * med, 1),
             "gflops": round(flops / len(pairs) * med / 1e9, 2), "agreement_vs_float": rank_agreement(scores[name], ref)}
        bf = (args.bf16 and "fp32" not in name and "int8" not in name) or "_bf16" in name
        bf = bf and not name.startswith("onnx")
        peak = peak_bf16 if bf else peak_fp32
        if peak and "int8" not in name:
            v["fraction_of_ceiling"] = round(v["gflops"] / peak, 4)
        out["variants"][name] = v
    st_med = out["variants"]["sentence_transformers"]["pairs_per_s"]["median"]
    out["rerankforge"] = out["variants"]["rerankforge"]["pairs_per_s"]["median"]
    out["sentence_transformers"] = st_med
    out["ratio"] = round(out["rerankforge"] / st_med, 3)
    best_st = max(v["pairs_per_s"]["median"] for k, v in out["variants"].items() if k.startswith("sentence"))
    out["ratio_vs_best_sentence_transformers"] = {
        k: round(v["pairs_per_s"]["median"] / best_st, 3) for k, v in out["variants"].items() if k.startswith("rerank")}
    return out


def onnx_variants(model_dir: str, args, tmp: Path) -> dict:
    """ONNX Runtime float32 and (dynamic, per-channel) int8 scorers of the same weights at --max-length."""
    from rerankforge.export.onnx import ONNX_FILE, OnnxCrossEncoder, export_cross_encoder_onnx
    from rerankforge.models.cross_encoder import CrossEncoder

    src = tmp / "ce"
    CrossEncoder(model_dir, max_length=args.max_length).save_pretrained(src)
    export_cross_encoder_onnx(src, tmp / "onnx")
    out = {}
    if "onnx" in args.infer_variants:
        sc = OnnxCrossEncoder(tmp / "onnx")
        out["onnx_fp32"] = lambda items: sc.score_pairs([q for q, _ in items], [d for _, d in items], args.infer_batch)
    if "onnx_int8" in args.infer_variants:
        import shutil

        from onnxruntime.quantization import QuantType, quantize_dynamic

        shutil.copytree(tmp / "onnx", tmp / "onnx8")
        quantize_dynamic(str(tmp / "onnx" / ONNX_FILE), str(tmp / "onnx8" / ONNX_FILE), weight_type=QuantType.QInt8,
                         per_channel=True)
        sc8 = OnnxCrossEncoder(tmp / "onnx8")
        out["onnx_int8"] = lambda items: sc8.score_pairs([q for q, _ in items], [d for _, d in items],
                                                         args.infer_batch)
    return out


# --------------------------------------------------------------------------------------- quality
def scored_ndcg(model, qs, ds, keys, judged, batch: int, bf16) -> tuple[np.ndarray, dict]:
    """Scores of the (query, doc) ``keys`` and ``{"nDCG@10", "pairs_per_s"}`` of the run they rank."""
    from rerankforge.eval.metrics import evaluate

    t0 = time.perf_counter()
    s = model.score_pairs(qs, ds, batch_size=batch, bf16=bf16)
    seconds = time.perf_counter() - t0
    reranked: dict = {}
    for (q, d), x in zip(keys, s.tolist()):
        reranked.setdefault(q, []).append((d, x))
    m = evaluate(judged, reranked, ["nDCG@10"])
    return s, {"nDCG@10": round(float(m["nDCG@10"]), 4), "pairs_per_s": round(len(keys) / seconds, 2)}


def bench_quality(args, device: str) -> dict:
    """nDCG@10 of float vs int8 scoring on BM25 top-``depth`` of SciFact test (bi-encoder "default")."""
    from rerankforge.eval.metrics import evaluate
    from rerankforge.models.bi_encoder import BiEncoder

    coll, queries, run, keys = test_pairs(args.collection, args.quality_queries, args.quality_depth)
    qs, ds = [queries[q] for q, _ in keys], [coll.corpus.text(d) for _, d in keys]
    qrels = coll.qrels("test")
    judged = {q: qrels[q] for q in run}
    out: dict = {"model": f"bi_encoder {args.quality_model}", "queries": len(run), "depth": args.quality_depth,
                 "pairs": len(keys), "variants": {}}
    scores = {}
    for name in ("float32", "int8"):
        model = BiEncoder(args.quality_model, max_length=args.max_length)
        if name == "int8":
            model.quantize_int8()
        scores[name], out["variants"][name] = scored_ndcg(model, qs, ds, keys, judged, args.infer_batch, bf16=False)
        print(f"  quality {name}: nDCG@10 {out['variants'][name]['nDCG@10']:.4f}", flush=True)
    out["first_stage_nDCG@10"] = round(float(evaluate(judged, run, ["nDCG@10"])["nDCG@10"]), 4)
    out["int8_minus_float32"] = round(out["variants"]["int8"]["nDCG@10"] - out["variants"]["float32"]["nDCG@10"], 4)
    out["within_0.005"] = abs(out["int8_minus_float32"]) <= 0.005
    out["agreement"] = rank_agreement(scores["int8"], scores["float32"])
    if args.quality_ce:
        out["cross_encoder_fast"] = quality_fast(args, qs, ds, keys, judged)
    return out


def quality_fast(args, qs, ds, keys, judged) -> dict:
    """nDCG@10 of a trained cross-encoder scored plainly (bf16 autocast, as ``rerankforge rerank``)
    and through ``optimize_inference()`` (bf16 weights, [CLS]-pruned last layer, torch.compile)."""
    from rerankforge.models.cross_encoder import CrossEncoder

    out: dict = {"model": args.quality_ce, "max_length": args.max_length, "variants": {}}
    scores = {}
    for name in ("plain_bf16", "fast_bf16", "plain_float32"):
        model = CrossEncoder(args.quality_ce, max_length=args.max_length)
        if name.startswith("fast"):
            model.optimize_inference()
            model.score_pairs(qs, ds, batch_size=args.infer_batch)  # compiles every shape: not in pairs/s
        scores[name], out["variants"][name] = scored_ndcg(model, qs, ds, keys, judged, args.infer_batch,
                                                          bf16=not name.endswith("float32"))
        v = out["variants"][name]
        print(f"  quality cross-encoder {name}: nDCG@10 {v['nDCG@10']:.4f}, {v['pairs_per_s']:.1f} pairs/s", flush=True)
    for name in out["variants"]:
        out["variants"][name]["agreement_vs_float32"] = rank_agreement(scores[name], scores["plain_float32"])
    out["fast_minus_plain_bf16"] = round(out["variants"]["fast_bf16"]["nDCG@10"] - out["variants"]["plain_bf16"]["nDCG@10"], 4)
    out["within_0.005"] = abs(out["fast_minus_plain_bf16"]) <= 0.005
    return out


# ---------------------------------------------------------------------------------------- colbert
def bench_colbert(model_dir: str, groups, args, device: str) -> dict:
    from rerankforge.models.colbert import ColBERT
    from rerankforge.train.config import TrainConfig
    from rerankforge.train.trainer import Trainer

    rates = []
    for _ in range(args.reps):
        model = ColBERT.from_base(model_dir, max_length=args.max_length, dim=128, query_length=32)
        with tempfile.TemporaryDirectory(prefix="bench-colbert-") as tmp:
            cfg = TrainConfig(output_dir=tmp, seed=0, bf16=args.bf16, progress=False, log_every=1,
                              in_batch_negatives=True)
            cfg.data.group_size = args.group_size
            cfg.optim.batch_size = args.batch // args.group_size
            cfg.optim.max_steps = args.warmup + args.steps
            Trainer(model=model, loss=[{"name": "listwise_ce"}], train_data=groups, args=cfg).train()
            hist = json.loads(Path(tmp, "train_summary.json").read_text())["history"]
        t = {h["step"]: h["step"] * args.batch / h["pairs_per_s"] for h in hist}
        last = args.warmup + args.steps
        rates.append(args.steps * args.batch / (t[last] - (t[args.warmup] if args.warmup else 0)))
        print(f"  colbert train: {rates[-1]:.2f} pairs/s", flush=True)
    coll, queries, run, keys = test_pairs(args.collection, args.queries, args.depth)
    qs, ds = [queries[q] for q, _ in keys], [coll.corpus.text(d) for _, d in keys]
    model.to(device)
    model.score_pairs(qs[: args.infer_batch], ds[: args.infer_batch], batch_size=args.infer_batch, bf16=args.bf16)
    score_rates = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        model.score_pairs(qs, ds, batch_size=args.infer_batch, bf16=args.bf16)
        score_rates.append(len(keys) / (time.perf_counter() - t0))
    return {"rerankforge": {"train_pairs_per_s": summary(rates), "score_pairs_per_s": summary(score_rates)},
            "pylate": {"skipped": PYLATE_SKIP}, "ratio": None, "pairs_scored": len(keys)}


# ------------------------------------------------------------------------------------------ main
def shared_model_dir(name: str, tmp: Path) -> str:
    """One cross-encoder (seeded head) saved once, so both frameworks load the same weights."""
    from rerankforge.models.cross_encoder import CrossEncoder

    torch.manual_seed(0)
    model = CrossEncoder(name, max_length=512)
    out = tmp / "ce"
    model.save_pretrained(out)
    return str(out)


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench_speed.json")
    p.add_argument("--merge", action="store_true", help="keep the other sections of an existing --out file")
    p.add_argument("--nest", default=None, help="write the results under this key of --out (default: 'gpu' "
                   "for CUDA runs, the top level on CPU)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="default", help="cross-encoder base (default: bundled MiniLM-L6)")
    p.add_argument("--quality-model", default="default", help="bi-encoder scored for the int8 quality check")
    p.add_argument("--colbert-model", default="default", help="ColBERT base encoder")
    p.add_argument("--collection", default="bundled:scifact")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch", type=int, default=32, help="pairs per training step")
    p.add_argument("--group-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=4, help="timed training steps per run")
    p.add_argument("--warmup", type=int, default=1, help="untimed first steps per run")
    p.add_argument("--reps", type=int, default=2, help="A/B repetitions (alternating order)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                   help="bf16 autocast for both frameworks (--no-bf16: float32 for both)")
    p.add_argument("--attention-dropout0", action=argparse.BooleanOptionalAction, default=True,
                   help="also train both with attention dropout 0")
    p.add_argument("--queries", type=int, default=30, help="SciFact test queries whose BM25 pairs are scored")
    p.add_argument("--depth", type=int, default=10)
    p.add_argument("--infer-batch", type=int, default=32)
    p.add_argument("--infer-variants", default="fp32,bf16,auto,int8,fast,st_bf16_weights,onnx,onnx_int8")
    p.add_argument("--quality-queries", type=int, default=50)
    p.add_argument("--quality-depth", type=int, default=10)
    p.add_argument("--quality-ce", default=None, help="a trained cross-encoder directory: nDCG@10 plain vs "
                   "optimize_inference() in the quality section")
    p.add_argument("--ceiling-n", type=int, default=1024)
    p.add_argument("--quick", action="store_true", help="CI smoke: tiny sizes, one repetition (not a timing)")
    args = p.parse_args(argv)
    if args.quick:
        args.max_length, args.batch, args.group_size, args.steps, args.warmup, args.reps = 32, 4, 2, 1, 1, 1
        args.queries, args.depth, args.quality_queries, args.quality_depth, args.ceiling_n = 2, 2, 2, 2, 128
        args.infer_batch, args.attention_dropout0 = 4, False
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = set(args.sections) - set(SECTIONS)
    if bad:
        p.error(f"unknown sections {sorted(bad)}; choose from {SECTIONS}")
    if args.batch % args.group_size:
        p.error("--batch must be a multiple of --group-size")
    args.infer_variants = [v.strip() for v in args.infer_variants.split(",") if v.strip()]
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible")
    out_path = Path(args.out)
    result: dict = {"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "device": device, "quick": args.quick,
                    "cpu": cpu_info(), "versions": versions(),
                    "settings": {"model": args.model, "collection": args.collection, "max_length": args.max_length,
                                 "batch": args.batch, "group_size": args.group_size, "bf16": args.bf16,
                                 "reps": args.reps, "steps": args.steps, "warmup": args.warmup},
                    "note": "CPU timings on a shared machine: other sessions' light processes may run concurrently; "
                            "A/B alternation spreads that load over both frameworks"}
    if device.startswith("cuda"):
        result["gpu_name"] = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory(prefix="bench-speed-") as tmp:
        model_dir = shared_model_dir(args.model, Path(tmp))
        ceiling = matmul_ceiling(device, args.ceiling_n, 3 if args.quick else 5) if "ceiling" in args.sections else {}
        if ceiling:
            result["ceiling"] = ceiling
            print(f"ceiling: {ceiling}", flush=True)
        need_groups = {"train", "train_pointwise", "colbert"} & set(args.sections)
        if need_groups:
            n = (args.warmup + args.steps) * (args.batch // args.group_size)
            all_groups, ordered = training_groups(args.collection, args.group_size, n)
        for section, loss in (("train", "listwise_ce"), ("train_pointwise", "bce")):
            if section in args.sections:
                result[section] = bench_train(model_dir, loss, ordered, all_groups, args, ceiling, device)
        if "inference" in args.sections:
            result["inference"] = bench_inference(model_dir, args, ceiling, device)
        if "quality" in args.sections and device == "cpu":
            result["quality"] = bench_quality(args, device)
        if "colbert" in args.sections:
            result["colbert"] = bench_colbert(args.colbert_model, all_groups, args, device)
    for section in SECTIONS:  # each section records the command and settings it was measured with
        if isinstance(result.get(section), dict):
            result[section].update(command=result["command"], settings=result["settings"], date=result["date"])
    write(out_path, result, args.merge, nest=args.nest or ("gpu" if device.startswith("cuda") else None))
    return result


def write(path: Path, result: dict, merge: bool, nest: str | None = None) -> None:
    old = json.loads(path.read_text()) if merge and path.exists() else {}
    if nest:
        old[nest] = {**old.get(nest, {}), **result} if merge else result
        new = old
    else:
        new = {**old, **result}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(new, indent=2) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
