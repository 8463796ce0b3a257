"""ONNX export of cross-encoders, with a parity check and a CPU speed comparison.

Exporter: torch 2.13's ``torch.onnx.export`` defaults to the dynamo (``torch.export``) path, which
needs the ``onnxscript`` package (not a rerankforge dependency). The default here is the
TorchScript exporter (``dynamo=False``, deprecated but shipped in 2.13) with ``dynamic_axes`` for
batch and sequence length; a BERT-style encoder has no data-dependent control flow, so tracing is
exact. ``exporter="dynamo"`` uses ``torch.export`` with ``dynamic_shapes`` (``torch.export.Dim``)
when onnxscript is installed. Either way the parity check below runs on every export.

Layout of ``out_dir``: a full copy of the PyTorch checkpoint (so it still loads in rerankforge and
sentence-transformers) plus ``onnx/model.onnx`` (the path sentence-transformers' ONNX backend
looks for), ``onnx_report.json`` and an updated model card.
"""

from __future__ import annotations

import json
import random
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rerankforge.errors import ConfigError
from rerankforge.models.base import load_reranker
from rerankforge.utils.io import write_json

ONNX_FILE = "onnx/model.onnx"


class _Logits(torch.nn.Module):
    """Token tensors -> ``logits[batch, 1]`` (the graph ONNX sees); named arguments so the dynamo
    exporter can match ``dynamic_shapes`` by name."""

    def __init__(self, hf_model):
        super().__init__()
        self.model = hf_model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits


EXPORTERS = ("torchscript", "dynamo")


def export_cross_encoder_onnx(model_dir: str | Path, out_dir: str | Path, opset: int = 17,
                              exporter: str = "torchscript") -> Path:
    """Write ``out_dir`` (checkpoint copy + ``onnx/model.onnx``); returns the ONNX file path."""
    if exporter not in EXPORTERS:
        raise ConfigError(f"unknown ONNX exporter {exporter!r} ({', '.join(EXPORTERS)})")
    if exporter == "dynamo":
        try:
            import onnxscript  # noqa: F401
        except ImportError:
            raise ConfigError("the dynamo ONNX exporter needs `pip install onnxscript`; "
                              "or use the default TorchScript exporter") from None
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if model_dir.resolve() == out_dir.resolve():
        raise ConfigError("--out must differ from --model (the export copies the checkpoint)")
    reranker = load_reranker(model_dir)
    if reranker.model_type != "cross_encoder":
        raise ConfigError(f"{model_dir}: ONNX export supports cross-encoders, not {reranker.model_type!r}")
    if reranker.calibration and not reranker.calibration.get("folded_into_head"):
        raise ConfigError(f"{model_dir}: its calibration is applied at scoring time, not folded into the head; "
                          "the ONNX graph would output uncalibrated logits")
    tmp = out_dir.parent / f".tmp-{out_dir.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    reranker.save_pretrained(tmp)
    for extra in ("model_card.json", "README.md"):
        if (model_dir / extra).exists():
            shutil.copy2(model_dir / extra, tmp / extra)

    tok = reranker.tokenizer
    hf = reranker.model.float().eval()
    example = tok(["what is the export example", "a query"],
                  ["a short document", "a somewhat longer document for the export example"],
                  padding=True, truncation=True, max_length=reranker.max_length, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in example]
    wrapper = _Logits(hf).eval()  # the exporter traces in the wrapper's mode: must be eval
    (tmp / "onnx").mkdir()
    onnx_path = tmp / ONNX_FILE
    args = tuple(example[n] for n in names)
    with warnings.catch_warnings():
        # the TorchScript exporter warns that dynamo is the new default and about traced shape checks
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(wrapper, args, str(onnx_path), input_names=names, output_names=["logits"],
                              opset_version=opset, dynamo=False,
                              dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}})
        else:
            batch = torch.export.Dim("batch")
            seq = torch.export.Dim("sequence", max=reranker.max_length)
            torch.onnx.export(wrapper, args, str(onnx_path), input_names=names, output_names=["logits"],
                              opset_version=opset, dynamo=True, external_data=False,
                              dynamic_shapes={n: {0: batch, 1: seq} for n in names})
    import onnx

    onnx.checker.check_model(str(onnx_path))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir / ONNX_FILE


class OnnxCrossEncoder:
    """Scores (query, document) pairs with onnxruntime, tokenised exactly like the PyTorch model."""

    def __init__(self, export_dir: str | Path, threads: int | None = None):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        export_dir = Path(export_dir)
        meta = json.loads((export_dir / "rerankforge.json").read_text())
        self.max_length = int(meta.get("max_length", 512))
        self.tokenizer = AutoTokenizer.from_pretrained(export_dir)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        self.session = ort.InferenceSession(str(export_dir / ONNX_FILE), opts, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    def score_pairs(self, queries: list[str], docs: list[str], batch_size: int = 32) -> np.ndarray:
        n = len(queries)
        order = sorted(range(n), key=lambda i: len(docs[i]) + len(queries[i]))
        out = np.zeros(n, dtype=np.float32)
        for s in range(0, n, batch_size):
            idx = order[s : s + batch_size]
            feats = self.tokenizer([queries[i] for i in idx], [docs[i] for i in idx], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="np")
            logits = self.session.run(["logits"], {k: feats[k].astype(np.int64) for k in self.input_names})[0]
            out[idx] = logits.reshape(-1)
        return out


def sample_pairs(n: int, collection=None, seed: int = 0) -> tuple[list[str], list[str]]:
    """``n`` (query, document) pairs of varied lengths: random queries x random documents of
    ``collection`` (default: the SciFact copy bundled with the package)."""
    from rerankforge.data.beir import Collection
    from rerankforge.resources import bundled_collection

    collection = collection if isinstance(collection, Collection) else Collection(collection or bundled_collection())
    rng = random.Random(seed)
    qids = list(collection.queries)
    return ([collection.queries[rng.choice(qids)] for _ in range(n)],
            [collection.corpus.texts[rng.randrange(len(collection.corpus))] for _ in range(n)])


def _pairs_per_s(fn: Callable[[], Any], n_pairs: int, repeats: int) -> float:
    fn()  # warm-up: first calls allocate and (ORT) finish graph optimisation
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n_pairs / best


def export_onnx(model_dir: str | Path, out_dir: str | Path, opset: int = 17, collection=None,
                parity_pairs: int = 64, speed_pairs: int = 256, batch_size: int = 32, repeats: int = 3,
                tolerance: float = 1e-4, command: str | None = None, exporter: str = "torchscript") -> dict[str, Any]:
    """Export, check parity against PyTorch fp32 on ``parity_pairs`` real pairs and time both on CPU
    (best of ``repeats``, same threads and batch size). Raises if parity exceeds ``tolerance``."""
    t0 = time.perf_counter()
    onnx_path = export_cross_encoder_onnx(model_dir, out_dir, opset, exporter)
    export_seconds = time.perf_counter() - t0
    out_dir = Path(out_dir)
    torch_model = load_reranker(out_dir)
    ort_model = OnnxCrossEncoder(out_dir)
    q, d = sample_pairs(max(parity_pairs, speed_pairs), collection)
    ref = torch_model.score_pairs(q[:parity_pairs], d[:parity_pairs], batch_size=batch_size, bf16=False)
    got = ort_model.score_pairs(q[:parity_pairs], d[:parity_pairs], batch_size=batch_size)
    max_diff = float(np.max(np.abs(ref - got)))
    speed: dict[str, float] = {}
    if speed_pairs:
        qs, ds = q[:speed_pairs], d[:speed_pairs]
        speed["torch_fp32"] = _pairs_per_s(
            lambda: torch_model.score_pairs(qs, ds, batch_size=batch_size, bf16=False), speed_pairs, repeats)
        speed["onnxruntime_fp32"] = _pairs_per_s(lambda: ort_model.score_pairs(qs, ds, batch_size), speed_pairs, repeats)
        speed["speedup"] = speed["onnxruntime_fp32"] / speed["torch_fp32"]
    report = {
        "onnx_file": str(onnx_path), "opset": opset, "exporter": f"torch.onnx.export(dynamo={exporter == 'dynamo'})",
        "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
        "inputs": ort_model.input_names, "dynamic_axes": ["batch", "sequence"],
        "max_length": ort_model.max_length, "parity_pairs": parity_pairs, "parity_max_abs_diff": max_diff,
        "parity_tolerance": tolerance, "speed_pairs": speed_pairs, "batch_size": batch_size,
        "threads": torch.get_num_threads(), "speed": speed, "export_seconds": round(export_seconds, 2),
        "file_mb": round(onnx_path.stat().st_size / 2**20, 1),
    }
    write_json(out_dir / "onnx_report.json", report)
    from rerankforge.export.card import read_card_info, write_model_card

    info = read_card_info(out_dir)
    info.setdefault("base_model", f"rerankforge cross-encoder at {model_dir}")
    info["onnx"] = report
    if command:
        info["commands"] = list(info.get("commands", [])) + [command]
    write_model_card(out_dir, info)
    if max_diff > tolerance:
        raise ConfigError(f"ONNX parity check failed: max |onnx - torch| = {max_diff:.3g} > {tolerance:g} "
                          f"(export kept at {out_dir} for inspection)")
    return report
