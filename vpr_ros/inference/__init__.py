"""
Descriptor extraction on torch, torch-compile, ONNX Runtime or TensorRT behind one interface.

The backend and precision names live here (no heavy imports) so the CLI, the node's
parameter table and the factory share one list.
"""

BACKENDS = ("auto", "torch", "torch-compile", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
