"""
Image message fuzzing over the conversion layer (`vpr_ros.imaging.image_msg_to_rgb`).

    python -m vpr_harness.replay.fuzz_images --n 10000 --seed 0

hypothesis draws the structure of each message (kind, encoding, size, step, endianness, data
container, and one damage: truncation, extension, bit flips, a lying header field, a cut JPEG with
its end marker put back, a PNG or JPEG header declaring a huge size, random bytes); numpy fills the
bulk bytes from a drawn seed, which keeps 10,000 messages fast. `run_live_campaign` sends such
messages to a live node. Every outcome is one of: decoded (an [H, W, 3] uint8 image, of the sent
size when the message was valid), refused (ImageDecodeError with a reason), or a crash (anything
else, or a valid message refused or decoded to the wrong shape). The campaign passes with 0
crashes. `messages(n, seed)` gives the same kind of messages for feeding a live node.
"""

from __future__ import annotations

import argparse
import array
import json
import struct
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from vpr_ros.errors import ImageDecodeError
from vpr_ros.imaging import (
    SUPPORTED_ENCODINGS,
    image_msg_to_rgb,
    rgb_to_compressed,
    rgb_to_image_fields,
)
from vpr_ros.stamps import stamp_to_ns

# Small enough that a lying header cannot make the campaign allocate gigabytes, large enough for
# any sent image.
CAMPAIGN_MAX_PIXELS = 4_000_000
RAW_DAMAGES = (
    "none",
    "row padding",
    "truncate",
    "extend",
    "bit flips",
    "lie width",
    "lie height",
    "lie step",
    "huge header",
    "odd width",
    "big endian flag",
    "unsupported encoding",
    "empty",
)
COMPRESSED_DAMAGES = (
    "none",
    "padding",
    "truncate",
    "cut + end marker",
    "bit flips",
    "huge header",
    "random bytes",
    "empty",
    "depth format",
    "other format",
)
UNSUPPORTED = ("32FC1", "nv12", "", "RGB8", "bayer_rggb", "64FC3", "rgb8 ")


@dataclass(frozen=True)
class Case:
    """
    One generated message and what a correct decoder must give for it.

    None: anything but a crash.
    """

    msg: Any
    label: str  # "raw/<encoding>/<damage>" or "compressed/<format>/<damage>"
    expected_shape: tuple[int, int, int] | None


@st.composite
def cases(draw) -> Case:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        return _raw_case(draw, rng)
    return _compressed_case(draw, rng)


def _container(draw, data: np.ndarray) -> Any:
    """
    Return the data as each message flavour carries it.

    Bytes/array.array (rclpy) or a numpy array (rosbags).
    """
    kind = draw(st.sampled_from(("numpy", "bytes", "array")))
    if kind == "numpy":
        return data
    return data.tobytes() if kind == "bytes" else array.array("B", data.tobytes())


def _raw_case(draw, rng: np.random.Generator) -> Case:
    encoding = draw(st.sampled_from(SUPPORTED_ENCODINGS))
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 48))
    if encoding in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv"):
        # valid 4:2:2 needs an even width; "odd width" below breaks it on purpose
        width += width % 2
    fields = rgb_to_image_fields(
        rng.integers(0, 256, (height, width, 3), dtype=np.uint8), encoding
    )
    damage = draw(st.sampled_from(RAW_DAMAGES))
    data = fields["data"]
    expected: tuple[int, int, int] | None = None
    if damage == "none":
        expected = (height, width, 3)
    elif damage == "row padding":
        pad = draw(st.integers(1, 9))
        rows = data.reshape(height, fields["step"])
        data = np.concatenate(
            [rows, rng.integers(0, 256, (height, pad), dtype=np.uint8)], axis=1
        ).ravel()
        fields["step"] += pad
        expected = (height, width, 3)
    elif damage == "truncate":
        data = data[: draw(st.integers(0, max(0, data.size - 1)))]
    elif damage == "extend":
        data = np.concatenate(
            [data, rng.integers(0, 256, draw(st.integers(1, 64)), dtype=np.uint8)]
        )
    elif damage == "bit flips":
        data = _flip_bits(data, rng, draw(st.integers(1, 16)))
        # raw pixels carry no structure: flipped bits are still an image
        expected = (height, width, 3)
    elif damage == "lie width":
        fields["width"] = draw(st.integers(-3, 4 * width + 3))
    elif damage == "lie height":
        fields["height"] = draw(st.integers(-3, 4 * height + 3))
    elif damage == "lie step":
        fields["step"] = draw(st.integers(-8, 4 * fields["step"] + 8))
    elif damage == "huge header":
        sizes = [(100_000, 100_000), (2**31 - 1, 2), (65_535, 65_535)]
        fields["width"], fields["height"] = draw(st.sampled_from(sizes))
        fields["step"] = fields["width"] * 3
    elif damage == "odd width":
        fields["width"] = width - 1 if width > 1 else 3
    elif damage == "big endian flag":
        fields["is_bigendian"] = draw(st.integers(1, 255))
        expected = (height, width, 3)  # valid: 16-bit encodings read the other byte order
    elif damage == "unsupported encoding":
        fields["encoding"] = draw(st.sampled_from(UNSUPPORTED))
    elif damage == "empty":
        data = data[:0]
    fields["data"] = _container(draw, data)
    return Case(SimpleNamespace(**fields), f"raw/{encoding}/{damage}", expected)


def _compressed_case(draw, rng: np.random.Generator) -> Case:
    fmt = draw(st.sampled_from(("jpeg", "png")))
    height, width = draw(st.integers(1, 64)), draw(st.integers(1, 80))
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    fmt_field, data = rgb_to_compressed(rgb, fmt, quality=draw(st.integers(30, 100)))
    damage = draw(st.sampled_from(COMPRESSED_DAMAGES))
    expected: tuple[int, int, int] | None = None
    if damage == "none":
        expected = (height, width, 3)
    elif damage == "padding":
        data += rng.integers(0, 256, draw(st.integers(1, 256)), dtype=np.uint8).tobytes()
        expected = (height, width, 3)
    elif damage == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "cut + end marker":
        end_marker = b"\xff\xd9" if fmt == "jpeg" else _png_chunk(b"IEND", b"")
        data = data[: int(len(data) * draw(st.floats(0.05, 0.95)))] + end_marker
    elif damage == "bit flips":
        data = _flip_bits(np.frombuffer(data, np.uint8), rng, draw(st.integers(1, 8))).tobytes()
    elif damage == "huge header":
        data = _declare_size(
            data,
            fmt,
            draw(st.sampled_from([(15_000, 15_000), (65_535, 65_535), (1, 60_000)])),
            fix_crc=draw(st.booleans()),
        )
    elif damage == "random bytes":
        data = (
            draw(st.sampled_from((b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM")))
            + rng.integers(0, 256, draw(st.integers(0, 512)), dtype=np.uint8).tobytes()
        )
    elif damage == "empty":
        data = b""
    elif damage == "depth format":
        fmt_field = "16UC1; compressedDepth png"
    elif damage == "other format":
        fmt_field = draw(st.sampled_from(("", "bmp", "rgb8; tiff compressed", "jpeg")))
        expected = (height, width, 3)  # the format string is advisory: the data says what it is
    msg = SimpleNamespace(format=fmt_field, data=_container(draw, np.frombuffer(data, np.uint8)))
    return Case(msg, f"compressed/{fmt}/{damage}", expected)


def _flip_bits(data: np.ndarray, rng: np.random.Generator, flips: int) -> np.ndarray:
    out = data.copy()
    if out.size:
        positions = rng.integers(0, out.size, flips)
        out[positions] ^= (1 << rng.integers(0, 8, flips)).astype(np.uint8)
    return out


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _declare_size(data: bytes, fmt: str, size: tuple[int, int], fix_crc: bool) -> bytes:
    """Return the same image with a header that lies about its size (JPEG SOF0/SOF2, PNG IHDR)."""
    height, width = size
    out = bytearray(data)
    if fmt == "png":
        out[16:24] = struct.pack(">II", width, height)
        if fix_crc:
            out[29:33] = struct.pack(">I", zlib.crc32(bytes(out[12:29])))
        return bytes(out)
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0:
            out[at + 5: at + 9] = struct.pack(">HH", height, width)
            break
    return bytes(out)


class Tally:
    """
    Outcome counts of a campaign.

    `crash_examples` keeps the first few crashes for the report.
    """

    def __init__(self, max_pixels: int) -> None:
        self.max_pixels = max_pixels
        self.inputs = self.decoded = self.refused = self.crashes = 0
        self.reasons: Counter[str] = Counter()
        self.labels: Counter[str] = Counter()
        self.crash_examples: list[str] = []

    def check(self, case: Case) -> None:
        self.inputs += 1
        self.labels[case.label] += 1
        try:
            rgb = image_msg_to_rgb(case.msg, self.max_pixels)
        except ImageDecodeError as err:
            if case.expected_shape is not None or not err.reason:
                self._crash(case, f"valid message refused: {err.reason}: {err}")
            else:
                self.refused += 1
                self.reasons[err.reason] += 1
            return
        except Exception as err:  # noqa: BLE001 - counting these is the point of the campaign
            self._crash(case, f"{type(err).__name__}: {err}")
            return
        sane = (
            isinstance(rgb, np.ndarray)
            and rgb.dtype == np.uint8
            and rgb.ndim == 3
            and rgb.shape[2] == 3
        )
        if not sane or (case.expected_shape is not None and rgb.shape != case.expected_shape):
            self._crash(
                case,
                f"decoded to {getattr(rgb, 'shape', type(rgb))}, expected {case.expected_shape}",
            )
            return
        self.decoded += 1

    def _crash(self, case: Case, what: str) -> None:
        self.crashes += 1
        if len(self.crash_examples) < 10:
            self.crash_examples.append(f"{case.label}: {what}")

    def as_dict(self) -> dict:
        return {
            "inputs": self.inputs,
            "decoded": self.decoded,
            "refused": self.refused,
            "crashes": self.crashes,
            "reasons": self.reasons,
            "labels": self.labels,
            "crash_examples": self.crash_examples,
        }


def run_image_campaign(n: int, seed: int = 0, max_pixels: int = CAMPAIGN_MAX_PIXELS) -> dict:
    """
    `n` generated Image/CompressedImage messages through image_msg_to_rgb.

    Returns inputs, decoded, refused, crashes (must be 0), reasons (Counter of refusal reasons),
    labels (Counter of "kind/encoding/damage", to show coverage) and crash_examples.
    """
    tally = Tally(max_pixels)

    @hypothesis_seed(seed)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=cases())
    def run(case: Case) -> None:
        tally.check(case)

    run()
    return tally.as_dict()


def messages(n: int, seed: int = 0) -> Iterator[Case]:
    """
    Draw `n` cases like the campaign's (for publishing to a live node).

    Deterministic in `seed`.
    """
    out: list[Case] = []

    @hypothesis_seed(seed)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=cases())
    def collect(case: Case) -> None:
        out.append(case)

    collect()
    return iter(out)


def as_rclpy(case: Case, stamp_ns: int, frame_id: str = "fuzz"):
    """Convert the generated message to an rclpy message (uint32 fields wrap as on the wire)."""
    from sensor_msgs.msg import CompressedImage, Image

    m = case.msg
    data = m.data.tobytes() if hasattr(m.data, "tobytes") else bytes(m.data)
    if hasattr(m, "format"):
        msg = CompressedImage(format=m.format)
    else:
        msg = Image(height=m.height % 2**32, width=m.width % 2**32, encoding=m.encoding,
                    is_bigendian=m.is_bigendian % 256, step=m.step % 2**32)
    msg.data = data
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = frame_id
    return msg


def _refused(msg: Any) -> bool:
    try:
        image_msg_to_rgb(msg)
    except ImageDecodeError:
        return True
    return False


# Lines a decoder library writes itself (not the node's logger): none may reach the node's output.
# libjpeg, libpng, OpenCV
DECODER_LINE_STARTS = ("Corrupt JPEG", "Premature end", "libpng", "[ERROR:", "[ WARN:")


def run_live_campaign(
    workdir: str | Path,
    per_transport: int = 300,
    seed: int = 3,
    good_every: int = 50,
    model: str = "baseline",
) -> dict:
    """
    Send damaged messages from `messages(..)` through a live localize node.

    The node runs in its own process, DDS on loopback: `per_transport` on the raw topic and as
    many on the compressed one, with a valid frame of a mapped place after every `good_every`.
    Per transport: sent_bad, expected_refused (what the decoder refuses offline), the node's
    received/processed/dropped/bad/failed, good_sent, good_matched (matched to their own
    place), node_alive, bad_frame_warnings (throttled log lines), decoder_lines (lines a
    decoder printed itself) and seconds.
    """
    from vpr_harness.replay.dds_env import apply_loopback_dds_env

    apply_loopback_dds_env()
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image

    from vpr_harness.replay.collector import OutputCollector
    from vpr_harness.replay.processes import start_node, stop_process
    from vpr_harness.replay.scenes import build_scene_map, scene_images

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    n_good = max(1, per_transport // good_every)
    scenes = scene_images(n_good, 240, 320, seed=seed)
    map_dir = build_scene_map(workdir / "map", scenes, model)
    damaged = [c for c in messages(5 * per_transport, seed) if c.expected_shape is None]
    collector = OutputCollector()
    results: dict[str, dict] = {}
    try:
        transports = (
            ("raw", Image, "/fuzz/camera"),
            ("compressed", CompressedImage, "/fuzz/camera/compressed"),
        )
        for transport, cls, topic in transports:
            batch = [
                c for c in damaged if hasattr(c.msg, "format") == (transport == "compressed")
            ][:per_transport]
            good = [_good_message(scene, transport) for scene in scenes]
            log_path = workdir / f"node_{transport}.log"
            started = time.monotonic()
            # temporal none: the good frames show places in no route order, each must match on its
            # own
            node = start_node(
                map_dir,
                model,
                topic,
                log_path,
                extra=[
                    "-p",
                    "image_qos:=reliable",
                    "-p",
                    "log_throttle_s:=1.0",
                    "-p",
                    "temporal:=none",
                ],
            )
            qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
            pub = collector.node.create_publisher(cls, topic, qos)
            try:
                results[transport] = _live_phase(
                    collector, pub, node, log_path, batch, good, good_every
                )
            finally:
                alive = node.poll() is None
                stop_process(node)
                collector.node.destroy_publisher(pub)
            lines = log_path.read_text().splitlines()
            results[transport].update(
                node_alive=alive, seconds=round(time.monotonic() - started, 1),
                bad_frame_warnings=sum("skipped a bad frame" in line for line in lines),
                decoder_lines=sum(line.startswith(DECODER_LINE_STARTS) for line in lines))
    finally:
        collector.close()
    return results


def _good_message(rgb: np.ndarray, transport: str):
    from sensor_msgs.msg import CompressedImage

    from vpr_harness.replay.scenes import raw_image_msg

    if transport == "raw":
        msg = raw_image_msg(rgb)
    else:
        fmt, data = rgb_to_compressed(rgb, "jpeg", 95)
        msg = CompressedImage(format=fmt)
        msg.data = data
    msg.header.frame_id = "good"
    return msg


def _live_phase(
    collector, pub, node, log_path: Path, batch: list[Case], good: list, good_every: int
) -> dict:
    from vpr_harness.replay.processes import wait_for_subscriber

    wait_for_subscriber(pub, node, log_path)
    t0 = collector._now()
    good_stamps: dict[int, int] = {}  # stamp ns -> place
    expected_refused = 0
    for k, case in enumerate(batch):
        msg = as_rclpy(case, 10_000 * 1_000_000_000 + k)
        expected_refused += _refused(msg)
        pub.publish(msg)
        time.sleep(0.004)  # bad frames take the node well under this: none should be dropped
        if k % good_every == good_every - 1 and k // good_every < len(good):
            time.sleep(0.1)
            place = k // good_every
            msg = good[place]
            msg.header.stamp.sec, msg.header.stamp.nanosec = 20_000 + place, 0
            good_stamps[(20_000 + place) * 1_000_000_000] = place
            pub.publish(msg)
            time.sleep(0.4)  # let the node finish it before the next bad frame replaces it

    def matched() -> dict[int, dict]:
        return {
            stamp_to_ns(m["header"]["stamp"]): m
            for t, m in collector.matches
            if t >= t0 and m["header"]["frame_id"] == "good"
        }

    collector.wait_for(lambda: len(matched()) >= len(good_stamps), 30)
    time.sleep(1.5)  # one more diagnostics period after the last frame
    d = collector.diagnostics[-1] if collector.diagnostics else {}
    counts = {
        k: int(d.get(f"frames_{k}", -1))
        for k in ("received", "processed", "dropped", "bad", "failed")
    }
    right = [s for s, m in matched().items()
             if m["candidates"] and m["candidates"][0]["place_id"] == good_stamps.get(s)]
    return {"sent_bad": len(batch), "expected_refused": expected_refused, **counts,
            "good_sent": len(good_stamps), "good_matched": len(right)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument(
        "--n", type=int, default=10_000, help="messages to generate (default: %(default)s)"
    )
    ap.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    a = ap.parse_args(argv)
    result = run_image_campaign(a.n, a.seed)
    print(
        json.dumps(
            {
                k: dict(v.most_common()) if isinstance(v, Counter) else v
                for k, v in result.items()
                if k != "labels"
            },
            indent=1,
        )
    )
    print(" ".join(f"{k}={result[k]}" for k in ("inputs", "decoded", "refused", "crashes")))
    return 0 if result["crashes"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
