"""
Descriptor extraction behind one interface.

On torch, torch-compile, ONNX Runtime, OpenVINO or TensorRT.

The backend and precision names live here (no heavy imports) so the CLI, the node's
parameter table and the factory share one list.
"""

BACKENDS = ("auto", "torch", "torch-compile", "onnxruntime", "openvino", "tensorrt")
# auto: chosen by measurement, with backend auto only (vpr_ros.inference.auto)
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "auto")
