"""
FoL re-ranking cost per frame against the FoL global descriptor of the same frame.

And bytes per map place.

    .venv/bin/python bench/bench_rerank_fol.py --frames 5

FoL-B at 322 px with seeded random weights (speed does not depend on weight values) on
the torch backend (fp32), real images from ../shared/data/gardens_point_sample: the night
images are the map (local features precomputed into a packed ``local/`` store, fp16),
the day images are the query frames. Per frame:
- global_ms: ``extractor.extract`` (the plain descriptor pass, what runs without re-ranking);
- local head: what the local branch adds to the SAME pass, timed on that frame's backbone
  outputs as ``FoLNet.global_and_local_head`` minus ``FoLNet.global_descriptor`` (a
  difference of two end-to-end passes drowns in the noise of a busy machine; the end-to-end
  ``FolReranker.extract_query`` time is printed beside it as a check);
- match: ``rerank`` of the query's rows against the top 10 stored candidates (fp16 store).
rerank_ms = local head + match (medians over frames). Issue 10's goal: ratio <= 1.0.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import seeded_model, timed
from tqdm import tqdm

from vpr_ros.host import describe
from vpr_ros.imaging import image_files, read_rgb
from vpr_ros.rerank.fol import FolReranker
from vpr_ros.inference.preprocess import preprocess_batch
from vpr_ros.inference.torch_backend import TorchExtractor
from vpr_ros.maps.local_features import LocalFeatureStore, LocalFeatureWriter
from vpr_ros.models.fol import FoLNet

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# official layout: [3600, 128] float32 per image, zero padded
OFFICIAL_BYTES_PER_PLACE = 3600 * 128 * 4
TOP_K = 10


def local_head_cost(model: FoLNet, batch: np.ndarray, repeats: int = 3) -> float:
    """
    Time (ms) the local branch adds to the head on one frame's backbone outputs.

    The minimum over alternating repeats.
    """
    with torch.inference_mode():
        f, t, att = model.backbone(torch.from_numpy(batch))
        global_only = [timed(model.global_descriptor, f, t, att)[1] for _ in range(repeats)]
        with_local = [timed(model.global_and_local_head, f, t, att)[1] for _ in range(repeats)]
    return max(min(with_local) - min(global_only), 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="fol-b", choices=["fol-b", "fol-l"], help="default: %(default)s"
    )
    parser.add_argument(
        "--frames", type=int, default=5, help="query frames timed (default: %(default)s)"
    )
    args = parser.parse_args()

    gardens = SHARED_DATA / "gardens_point_sample"
    if not gardens.is_dir():
        raise SystemExit(
            f"{gardens} is absent: this benchmark needs the shared data beside the repository"
        )
    map_images = [read_rgb(p) for p in image_files(gardens / "night")]
    queries = [read_rgb(p) for p in image_files(gardens / "day")][: args.frames]
    if len(map_images) < TOP_K:
        raise SystemExit(
            f"need {TOP_K} map images in {gardens / 'night'}, found {len(map_images)}"
        )

    model, spec, fingerprint = seeded_model(args.model)
    extractor = TorchExtractor(model, spec, fingerprint, "fp32", device="cpu")
    reranker = FolReranker(extractor)
    print(f"CPU: {describe()}; {args.model} @ {spec.input_size[0]} px, torch fp32; "
          f"{len(map_images)} map places (night), {len(queries)} query frames (day), top {TOP_K}")

    with tempfile.TemporaryDirectory(prefix="bench_rerank_fol_") as tmp:
        with LocalFeatureWriter(tmp, reranker.describe()) as writer:
            map_descriptors = []
            for image in tqdm(map_images, desc="map features", unit="img"):
                descriptors, features = reranker.extract_map([image], extractor)
                map_descriptors.append(descriptors[0])
                writer.append(features[0])
        store = LocalFeatureStore.open(tmp, reranker.describe(), place_count=len(map_images))
        map_descriptors = np.stack(map_descriptors)

        extractor.extract([queries[0]])  # warm-up (allocator, first-call costs)
        global_ms, combined_ms, local_head_ms, match_ms, rows = [], [], [], [], []
        for image in tqdm(queries, desc="query frames", unit="frame"):
            _, t_global = timed(extractor.extract, [image])
            (descriptor, query), t_combined = timed(reranker.extract_query, image, extractor)
            local_head_ms.append(local_head_cost(model, preprocess_batch([image], spec)))
            scores = map_descriptors @ descriptor
            top = np.argsort(-scores)[:TOP_K]
            candidates = [store[int(i)] for i in top]
            _, t_match = timed(reranker.rerank, query, candidates, scores[top])
            global_ms.append(t_global)
            combined_ms.append(t_combined)
            match_ms.append(t_match)
            rows.append(len(query))

        g, c, local_ms, m = (
            float(np.median(v)) for v in (global_ms, combined_ms, local_head_ms, match_ms)
        )
        rerank_ms = local_ms + m
        bytes_per_place = store.bytes_per_place
        print(
            f"global descriptor pass  {g:8.1f} ms (median of {len(global_ms)}; all:"
            f" {', '.join(f'{x:.0f}' for x in global_ms)})"
        )
        print(
            f"global + local pass     {c:8.1f} ms end to end (difference {c - g:+.1f} ms: noise of"
            " this machine)"
        )
        print(
            f"local head              {local_ms:8.1f} ms (head-level difference on the same"
            " backbone outputs)"
        )
        print(f"matching top {TOP_K}         {m:8.1f} ms ({np.mean(rows):.0f} query rows, "
              f"{store.meta['rows'] / len(store):.0f} rows per map place)")
        print(
            f"re-ranking per frame    {rerank_ms:8.1f} ms = {rerank_ms / g:.2f}x the global"
            " descriptor"
        )
        print(
            f"local features per place: {bytes_per_place:,.0f} B packed fp16 vs"
            f" {OFFICIAL_BYTES_PER_PLACE:,} B official padded fp32"
            f" ({OFFICIAL_BYTES_PER_PLACE / bytes_per_place:.1f}x smaller)"
        )
    print(
        f"model={args.model} rerank_ms={rerank_ms:.1f} global_ms={g:.1f} ratio={rerank_ms / g:.3f}"
        f" bytes_per_place={bytes_per_place:.0f}"
    )


if __name__ == "__main__":
    main()
