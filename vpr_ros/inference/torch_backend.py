"""PyTorch backend: CPU (fp32 or bf16 autocast) and CUDA where present."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vpr_ros.inference.extractor import DescriptorExtractor
from vpr_ros.models.registry import ModelSpec


class TorchExtractor(DescriptorExtractor):
    backend = "torch"

    def __init__(self, model: nn.Module, spec: ModelSpec, fingerprint: str, precision: str = "fp32", device: str | None = None):
        super().__init__(spec, fingerprint, precision)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.eval().to(self.device)
        if precision == "fp16" and self.device.type == "cuda":
            self.model.half()
        elif precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"torch backend supports fp32, bf16 and fp16 (CUDA), not {precision!r}; use backend onnxruntime for int8")

    @torch.inference_mode()
    def _run(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self.device)
        if self.precision == "bf16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                return self.model(x).float().cpu().numpy()
        if self.precision == "fp16" and self.device.type == "cuda":
            x = x.half()
        return self.model(x).float().cpu().numpy()
