"""Exports beyond the trainer's checkpoint: calibrated checkpoints (``calibrated``), ONNX
(``onnx``) and auto-generated model cards (``card``)."""
