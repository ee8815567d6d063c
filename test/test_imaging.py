"""Image message <-> RGB conversion on real rclpy messages and real rosbags messages."""

from __future__ import annotations

import numpy as np
import pytest
from builtin_interfaces.msg import Time as RclpyTime
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CompressedImage as RclpyCompressedImage
from sensor_msgs.msg import Image as RclpyImage
from std_msgs.msg import Header as RclpyHeader

from vpr_ros.errors import ImageDecodeError
from vpr_ros.imaging import (
    SUPPORTED_ENCODINGS,
    image_msg_to_rgb,
    rgb_to_compressed,
    rgb_to_image_fields,
)

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
BagImage = TYPESTORE.types["sensor_msgs/msg/Image"]
BagCompressedImage = TYPESTORE.types["sensor_msgs/msg/CompressedImage"]
BagHeader = TYPESTORE.types["std_msgs/msg/Header"]
BagTime = TYPESTORE.types["builtin_interfaces/msg/Time"]

LOSSLESS = {
    "rgb8",
    "bgr8",
    "rgba8",
    "bgra8",
    "rgb16",
    "bgr16",
    "rgba16",
    "bgra16",
    "8UC3",
    "8UC4",
    "16UC3",
}
MONO = {"mono8", "mono16", "8UC1", "16UC1"}
YUV = {"yuv422", "uyvy", "yuv422_yuy2", "yuyv"}
BAYER = {e for e in SUPPORTED_ENCODINGS if e.startswith("bayer_")}


def _random_rgb(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _rclpy_image(fields: dict) -> RclpyImage:
    msg = RclpyImage(header=RclpyHeader(stamp=RclpyTime(sec=1, nanosec=5), frame_id="cam"))
    msg.height, msg.width, msg.encoding = fields["height"], fields["width"], fields["encoding"]
    msg.is_bigendian, msg.step = fields["is_bigendian"], fields["step"]
    msg.data = np.asarray(fields["data"], np.uint8).tobytes()
    return msg


def _bag_image(fields: dict):
    """Return a rosbags message as a bag reader returns it: serialised to CDR and back."""
    msg = BagImage(header=BagHeader(stamp=BagTime(sec=1, nanosec=5), frame_id="cam"), **fields)
    cdr = TYPESTORE.serialize_cdr(msg, BagImage.__msgtype__)
    return TYPESTORE.deserialize_cdr(cdr, BagImage.__msgtype__)


def _make_raw(kind: str, fields: dict):
    return _rclpy_image(fields) if kind == "rclpy" else _bag_image(fields)


def _make_compressed(kind: str, fmt: str, data: bytes):
    if kind == "rclpy":
        msg = RclpyCompressedImage(format=fmt)
        msg.data = data
        return msg
    header = BagHeader(stamp=BagTime(sec=0, nanosec=0), frame_id="cam")
    return BagCompressedImage(header=header, format=fmt, data=np.frombuffer(data, np.uint8))


def _expected(rgb: np.ndarray, encoding: str) -> tuple[np.ndarray, int]:
    """Return what the round trip must give back, and the largest per-pixel error allowed."""
    if encoding in MONO:
        gray = (
            (rgb.astype(np.float64) @ [0.299, 0.587, 0.114]).round().clip(0, 255).astype(np.uint8)
        )
        return np.repeat(gray[..., None], 3, axis=2), 1
    if encoding in YUV:
        return rgb, 2  # on a flat image 4:2:2 chroma subsampling loses nothing but rounding
    return rgb, 0


@pytest.mark.parametrize("kind", ["rclpy", "rosbags"])
@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_round_trip_every_encoding(kind: str, encoding: str) -> None:
    # Flat colour survives every encoding (even Bayer demosaicing and 4:2:2), so checks channel
    # order.
    flat = np.empty((32, 48, 3), np.uint8)
    flat[:] = (200, 100, 30)
    textured = _random_rgb()
    for rgb in (flat, textured) if encoding not in YUV | BAYER else (flat,):
        fields = rgb_to_image_fields(rgb, encoding)
        assert fields["step"] * fields["height"] == fields["data"].size
        out = image_msg_to_rgb(_make_raw(kind, fields))
        want, tolerance = _expected(rgb, encoding)
        assert out.shape == rgb.shape and out.dtype == np.uint8
        assert np.abs(out.astype(int) - want).max() <= tolerance, encoding


def test_bayer_pattern_puts_red_where_the_encoding_says() -> None:
    # A 2x2 rggb cell with R=255 at (0,0) only: demosaiced red must peak there.
    mosaic = np.zeros((8, 8), np.uint8)
    mosaic[0::2, 0::2] = 255
    fields = {
        "height": 8,
        "width": 8,
        "encoding": "bayer_rggb8",
        "is_bigendian": 0,
        "step": 8,
        "data": mosaic.ravel(),
    }
    out = image_msg_to_rgb(_bag_image(fields))
    assert out[2, 2, 0] == 255 and out[2, 2, 2] == 0


def test_row_padding_and_big_endian_are_honoured() -> None:
    rgb = _random_rgb(10, 7)
    padded = np.zeros((10, 7 * 3 + 5), np.uint8)
    padded[:, : 7 * 3] = rgb.reshape(10, -1)
    fields = {
        "height": 10,
        "width": 7,
        "encoding": "rgb8",
        "is_bigendian": 0,
        "step": 26,
        "data": padded.ravel(),
    }
    assert np.array_equal(image_msg_to_rgb(_rclpy_image(fields)), rgb)

    gray16 = (np.arange(12).reshape(3, 4) * 4096).astype(">u2")
    fields = {
        "height": 3,
        "width": 4,
        "encoding": "mono16",
        "is_bigendian": 1,
        "step": 8,
        "data": gray16.view(np.uint8).ravel(),
    }
    out = image_msg_to_rgb(_bag_image(fields))
    assert np.array_equal(out[..., 1], (gray16 >> 8).astype(np.uint8))


def test_rgb8_is_not_copied() -> None:
    fields = rgb_to_image_fields(_random_rgb(), "rgb8")
    msg = _bag_image(fields)
    assert np.shares_memory(image_msg_to_rgb(msg), msg.data)


@pytest.mark.parametrize("kind", ["rclpy", "rosbags"])
def test_compressed_round_trip(kind: str) -> None:
    rgb = np.empty((60, 80, 3), np.uint8)
    rgb[:, :40] = (250, 10, 10)  # red left, blue right: a channel swap would show
    rgb[:, 40:] = (10, 10, 250)
    fmt, data = rgb_to_compressed(rgb, "png")
    assert fmt == "rgb8; png compressed bgr8"
    assert np.array_equal(image_msg_to_rgb(_make_compressed(kind, fmt, data)), rgb)
    fmt, data = rgb_to_compressed(rgb, "jpeg", quality=95)
    out = image_msg_to_rgb(_make_compressed(kind, "jpeg", data))
    assert np.abs(out.astype(int) - rgb).mean() < 3
    assert out[30, 10, 0] > 200 and out[30, 70, 2] > 200


def _raw_fields(**overrides) -> dict:
    fields = rgb_to_image_fields(_random_rgb(4, 6), "rgb8")
    fields.update(overrides)
    return fields


@pytest.mark.parametrize(
    ("msg_factory", "expected_words"),
    [
        (
            lambda: _bag_image(_raw_fields(encoding="32FC1")),
            ["unsupported image encoding '32FC1'", "rgb8", "bayer_rggb8"],
        ),
        (
            lambda: _bag_image(_raw_fields(width=0, step=0, data=np.zeros(0, np.uint8))),
            ["0x4", "empty image"],
        ),
        (
            lambda: _rclpy_image(_raw_fields(data=np.zeros(10, np.uint8))),
            ["carries 10 bytes", "truncated"],
        ),
        (lambda: _bag_image(_raw_fields(step=3)), ["step 3", "18 bytes per row"]),
        (lambda: _make_compressed("rclpy", "jpeg", b""), ["empty data"]),
        (
            lambda: _make_compressed("rosbags", "jpeg", b"this is not an image"),
            ["could not be decoded", "corrupt"],
        ),
        (
            lambda: _make_compressed(
                "rclpy", "jpeg", rgb_to_compressed(_random_rgb(), "jpeg")[1][:700]
            ),
            ["truncated"],
        ),
        (
            lambda: _make_compressed(
                "rosbags", "png", rgb_to_compressed(_random_rgb(), "png")[1][:-30]
            ),
            ["truncated"],
        ),
        (
            lambda: _make_compressed("rclpy", "16UC1; compressedDepth png", b"\x00" * 20),
            ["depth image"],
        ),
    ],
)
def test_bad_input_raises_with_a_useful_message(msg_factory, expected_words: list[str]) -> None:
    with pytest.raises(ImageDecodeError) as err:
        image_msg_to_rgb(msg_factory())
    for words in expected_words:
        assert words in str(err.value)


def test_corrupt_jpeg_body_is_detected() -> None:
    # Markers intact, entropy-coded data replaced by junk: OpenCV returns None or we must not
    # crash.
    good = rgb_to_compressed(_random_rgb(), "jpeg")[1]
    junk = good[:20] + bytes(len(good) - 22) + good[-2:]
    with pytest.raises(ImageDecodeError, match="could not be decoded"):
        image_msg_to_rgb(_make_compressed("rosbags", "jpeg", junk))


def test_huge_image_is_refused_before_decoding_raw_and_after_decoding_compressed() -> None:
    fields = rgb_to_image_fields(_random_rgb(100, 100), "rgb8")
    with pytest.raises(ImageDecodeError, match="resize on the camera driver or raise max_pixels"):
        image_msg_to_rgb(_bag_image(fields), max_pixels=5000)
    _, data = rgb_to_compressed(_random_rgb(100, 100), "png")
    with pytest.raises(ImageDecodeError, match="raise max_pixels"):
        image_msg_to_rgb(_make_compressed("rclpy", "png", data), max_pixels=5000)
    assert image_msg_to_rgb(_bag_image(fields), max_pixels=10_000).shape == (100, 100, 3)


def test_reverse_conversion_rejects_bad_arguments() -> None:
    with pytest.raises(ImageDecodeError, match="supported"):
        rgb_to_image_fields(_random_rgb(), "nv12")
    with pytest.raises(ImageDecodeError, match="uint8 RGB"):
        rgb_to_image_fields(np.zeros((4, 4), np.uint8), "rgb8")
    with pytest.raises(ImageDecodeError, match="supported"):
        rgb_to_compressed(_random_rgb(), "webp")


# --- JPEGs that an OpenCV-only decoder got wrong --------------------------------------------

def _jpeg(h: int = 120, w: int = 160) -> bytes:
    return rgb_to_compressed(_random_rgb(h, w, seed=3), "jpeg", quality=90)[1]


@pytest.mark.parametrize("encoding", sorted(YUV))
def test_odd_width_yuv422_is_a_bad_frame_not_a_cv2_error(encoding: str) -> None:
    fields = {"height": 4, "width": 5, "encoding": encoding, "is_bigendian": 0, "step": 10,
              "data": np.zeros(40, np.uint8)}
    with pytest.raises(ImageDecodeError, match="odd width 5") as err:
        image_msg_to_rgb(_bag_image(fields))
    assert err.value.reason == "odd width for YUV 4:2:2"


def test_jpeg_cut_at_40_percent_with_an_end_marker_is_refused() -> None:
    # The old check only looked for FF D9 at the end; OpenCV then decoded the rest as grey.
    data = _jpeg()
    cut = data[: int(len(data) * 0.4)] + b"\xff\xd9"
    with pytest.raises(ImageDecodeError, match="Corrupt JPEG data") as err:
        image_msg_to_rgb(_make_compressed("rosbags", "jpeg", cut))
    assert err.value.reason == "truncated JPEG"  # libjpeg: "premature end of data segment"
    with pytest.raises(ImageDecodeError, match="truncated JPEG") as err:
        image_msg_to_rgb(_make_compressed("rclpy", "jpeg", data[: int(len(data) * 0.4)]))
    assert err.value.reason == "truncated JPEG"


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_valid_image_followed_by_padding_decodes(fmt: str) -> None:
    rgb = _random_rgb(40, 56, seed=4)
    _, data = rgb_to_compressed(rgb, fmt)
    expected = image_msg_to_rgb(_make_compressed("rclpy", fmt, data))
    for padding in (b"\x00" * 64, b"\xff" * 7, bytes(range(256))):
        assert np.array_equal(
            image_msg_to_rgb(_make_compressed("rosbags", fmt, data + padding)), expected
        )


def _huge_png(side: int) -> bytes:
    """Write a real gray PNG of side x side zeros (about 220 KB for 15000), row by row."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    compressor, row, parts = zlib.compressobj(9), bytes(side + 1), []
    for _ in range(side):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )


_CHILD = """
import resource, sys
import numpy as np
from vpr_ros.errors import ImageDecodeError
from vpr_ros.imaging import decode_image_bytes
data = np.fromfile(sys.argv[1], np.uint8)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    decode_image_bytes(data, "test image")
    print("decoded")
except ImageDecodeError as err:
    print("refused:", getattr(err, "reason", "(no reason)"), "|", err)
print("grew_mb", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def _decode_in_child(tmp_path, data: bytes):
    import subprocess
    import sys

    path = tmp_path / "image.bin"
    path.write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def test_png_declaring_15000x15000_is_refused_from_its_header(tmp_path) -> None:
    stdout, _ = _decode_in_child(tmp_path, _huge_png(15000))
    grew_mb = float(stdout.split("grew_mb")[1])
    assert (
        grew_mb < 50
    ), f"decoding grew the process by {grew_mb:.0f} MB: the pixels were allocated before the check"
    assert "refused: too many pixels" in stdout and "15000x15000" in stdout


def test_corrupt_jpeg_prints_nothing_on_stderr(tmp_path) -> None:
    data = _jpeg()
    stdout, stderr = _decode_in_child(tmp_path, data[: int(len(data) * 0.4)] + b"\xff\xd9")
    assert "refused: truncated JPEG" in stdout
    assert stderr == "", f"the decoder wrote to stderr: {stderr!r}"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xd8\xff" + bytes(30) + b"\xff\xd9", "corrupt JPEG header"),
        (b"\xff\xd8\xff" + bytes(30), "truncated JPEG"),
        (b"\x89PNG\r\n\x1a\n" + bytes(30), "corrupt PNG header"),
        (b"GIF89a" + bytes(30), "neither JPEG nor PNG"),
    ],
)
def test_every_refusal_names_its_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ImageDecodeError) as err:
        image_msg_to_rgb(_make_compressed("rclpy", "jpeg", data))
    assert err.value.reason == reason and reason in str(err.value)


def test_read_rgb_and_image_files(tmp_path) -> None:
    from vpr_ros.imaging import image_files, read_rgb

    rgb = _random_rgb(20, 30, seed=5)
    (tmp_path / "b.PNG").write_bytes(rgb_to_compressed(rgb, "png")[1])
    (tmp_path / "a.txt").write_text("not an image")
    (tmp_path / "c.jpg").write_bytes(b"\xff\xd8\xff junk")
    assert [p.name for p in image_files(tmp_path)] == ["b.PNG", "c.jpg"]
    assert np.array_equal(read_rgb(tmp_path / "b.PNG"), rgb)
    with pytest.raises(ImageDecodeError, match="c.jpg"):
        read_rgb(tmp_path / "c.jpg")
    with pytest.raises(ImageDecodeError, match="cannot read image file"):
        read_rgb(tmp_path / "missing.png")
