"""``rerankforge export-onnx --model M --out DIR``: ONNX export of a cross-encoder with parity check and CPU timing."""

from __future__ import annotations


def add_parser(sub):
    p = sub.add_parser(
        "export-onnx", help="export a cross-encoder to ONNX, check parity with PyTorch and time both on CPU",
        description="Writes DIR (a copy of the checkpoint, DIR/onnx/model.onnx, DIR/onnx_report.json, README.md). "
                    "Fails (exit 2) if the ONNX scores differ from PyTorch fp32 by more than --tolerance.")
    p.add_argument("--model", required=True, help="exported cross-encoder directory")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--exporter", choices=("torchscript", "dynamo"), default="torchscript",
                   help="torch.onnx.export path: TorchScript (dynamo=False, default) or torch.export "
                        "(dynamo=True; needs onnxscript)")
    p.add_argument("--collection", help="collection to sample parity/speed pairs from (default: bundled SciFact)")
    p.add_argument("--parity-pairs", type=int, default=64)
    p.add_argument("--speed-pairs", type=int, default=256, help="pairs timed per engine (0: skip timing)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--tolerance", type=float, default=1e-4, help="max |onnx - torch| logit difference")
    return p


def run(args) -> int:
    from rerankforge.export.card import cli_command
    from rerankforge.export.onnx import export_onnx

    rep = export_onnx(args.model, args.out, args.opset, args.collection, args.parity_pairs, args.speed_pairs,
                      args.batch_size, tolerance=args.tolerance, command=cli_command("export-onnx", args),
                      exporter=args.exporter)
    print(f"ONNX -> {rep['onnx_file']} ({rep['file_mb']} MB, opset {rep['opset']}, export {rep['export_seconds']}s)")
    print(f"parity on {rep['parity_pairs']} pairs: max |onnx - torch fp32| = {rep['parity_max_abs_diff']:.2e} "
          f"(tolerance {rep['parity_tolerance']:g})")
    if rep["speed"]:
        s = rep["speed"]
        print(f"CPU speed ({rep['speed_pairs']} pairs, batch {rep['batch_size']}, {rep['threads']} threads): "
              f"torch fp32 {s['torch_fp32']:.1f} pairs/s, onnxruntime {s['onnxruntime_fp32']:.1f} pairs/s "
              f"({s['speedup']:.2f}x)")
    return 0
