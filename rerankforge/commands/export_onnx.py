"""``rerankforge export-onnx --model M --out DIR``: ONNX export of a cross-encoder with parity check and CPU timing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rerankforge.config import option, require


@dataclass
class ExportOnnxConfig:
    model: Optional[str] = option(None, flag="--model", help="exported cross-encoder directory")
    out: Optional[str] = option(None, flag="--out", help="output directory")
    opset: int = option(17, flag="--opset", help="ONNX opset")
    exporter: str = option("torchscript", flag="--exporter", choices=("torchscript", "dynamo"),
                           help="torch.onnx.export path: TorchScript (dynamo=False) or torch.export "
                                "(dynamo=True; needs onnxscript)")
    collection: Optional[str] = option(None, flag="--collection",
                                       help="collection to sample parity/speed pairs from (default: bundled SciFact)")
    parity_pairs: int = option(64, flag="--parity-pairs", help="pairs compared with PyTorch")
    speed_pairs: int = option(256, flag="--speed-pairs", help="pairs timed per engine (0: skip timing)")
    batch_size: int = option(32, flag="--batch-size", help="pairs per batch")
    tolerance: float = option(1e-4, flag="--tolerance", help="max |onnx - torch| logit difference")

    def validate(self) -> None:
        from rerankforge.errors import ConfigError

        require(self, "model", "out")
        if self.parity_pairs < 1 or self.batch_size < 1 or self.speed_pairs < 0:
            raise ConfigError("parity_pairs and batch_size must be >= 1, speed_pairs >= 0")


def add_parser(sub):
    from rerankforge.config import add_config_args

    p = sub.add_parser(
        "export-onnx", help="export a cross-encoder to ONNX, check parity with PyTorch and time both on CPU",
        description="Writes DIR (a copy of the checkpoint, DIR/onnx/model.onnx, DIR/onnx_report.json, README.md). "
                    "Fails (exit 2) if the ONNX scores differ from PyTorch fp32 by more than --tolerance.")
    add_config_args(p, ExportOnnxConfig, example="opset=18")
    return p


def run(args) -> int:
    from rerankforge.config import command_line, config_from_args
    from rerankforge.export.onnx import export_onnx

    cfg = config_from_args(ExportOnnxConfig, args)
    rep = export_onnx(cfg.model, cfg.out, cfg.opset, cfg.collection, cfg.parity_pairs, cfg.speed_pairs,
                      cfg.batch_size, tolerance=cfg.tolerance, command=command_line("export-onnx", cfg),
                      exporter=cfg.exporter)
    print(f"ONNX -> {rep['onnx_file']} ({rep['file_mb']} MB, opset {rep['opset']}, export {rep['export_seconds']}s)")
    print(f"parity on {rep['parity_pairs']} pairs: max |onnx - torch fp32| = {rep['parity_max_abs_diff']:.2e} "
          f"(tolerance {rep['parity_tolerance']:g})")
    if rep["speed"]:
        s = rep["speed"]
        print(f"CPU speed ({rep['speed_pairs']} pairs, batch {rep['batch_size']}, {rep['threads']} threads): "
              f"torch fp32 {s['torch_fp32']:.1f} pairs/s, onnxruntime {s['onnxruntime_fp32']:.1f} pairs/s "
              f"({s['speedup']:.2f}x)")
    return 0
