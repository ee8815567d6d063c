"""
ROS image messages <-> RGB uint8 arrays: one path for live topics and rosbags.

Works on anything with the sensor_msgs field names: rclpy messages (`data` is
array.array) and rosbags-deserialised messages (`data` is a numpy uint8 array).
A CompressedImage is recognised by its `format` field.

Own implementation on numpy + OpenCV rather than rosbags-image, because that one
ignores `step` (row padding), asserts on undecodable JPEGs and cannot turn
grayscale or 16-bit generic encodings into RGB.

Compressed data is decoded header first, so an image's size is checked before any
pixel is allocated: JPEG with libjpeg-turbo through simplejpeg in strict mode (a
libjpeg warning such as "Corrupt JPEG data" becomes the refusal's reason instead of
a line on stderr and a half-grey image), PNG and the other file formats with Pillow
(errors are exceptions, never stderr lines). OpenCV only converts colours here.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import simplejpeg
from PIL import Image as PilImage

from vpr_ros.errors import ImageDecodeError

DEFAULT_MAX_PIXELS = 50_000_000
# Image files a folder source, the export parity check or int8 calibration read.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class _Layout:
    """
    How one raw encoding lays out a pixel.

    And the OpenCV code that turns it (as 8-bit) into RGB.
    """

    dtype: str
    channels: int
    to_rgb: int | None  # None: already RGB
    # inverse for rgb_to_image_fields (None: identity; mono/bayer handled apart)
    from_rgb: int | None


_GRAY = cv2.COLOR_GRAY2RGB
_BGR = (cv2.COLOR_BGR2RGB, cv2.COLOR_RGB2BGR)
_RGBA = (cv2.COLOR_RGBA2RGB, cv2.COLOR_RGB2RGBA)
_BGRA = (cv2.COLOR_BGRA2RGB, cv2.COLOR_RGB2BGRA)
# OpenCV names Bayer patterns after the second row's first two pixels, so ROS rggb is OpenCV "BG".
_BAYER_TO_RGB = {
    "rggb": cv2.COLOR_BayerBG2RGB,
    "bggr": cv2.COLOR_BayerRG2RGB,
    "gbrg": cv2.COLOR_BayerGR2RGB,
    "grbg": cv2.COLOR_BayerGB2RGB,
}

_LAYOUTS: dict[str, _Layout] = {
    "rgb8": _Layout("u1", 3, None, None),
    "bgr8": _Layout("u1", 3, *_BGR),
    "rgba8": _Layout("u1", 4, *_RGBA),
    "bgra8": _Layout("u1", 4, *_BGRA),
    "rgb16": _Layout("u2", 3, None, None),
    "bgr16": _Layout("u2", 3, *_BGR),
    "rgba16": _Layout("u2", 4, *_RGBA),
    "bgra16": _Layout("u2", 4, *_BGRA),
    "mono8": _Layout("u1", 1, _GRAY, None),
    "mono16": _Layout("u2", 1, _GRAY, None),
    # Generic encodings: 1 channel is gray; 3 and 4 channels follow OpenCV's BGR order,
    # which is what cv_bridge's "passthrough" publishes for an OpenCV image.
    "8UC1": _Layout("u1", 1, _GRAY, None),
    "8UC3": _Layout("u1", 3, *_BGR),
    "8UC4": _Layout("u1", 4, *_BGRA),
    "16UC1": _Layout("u2", 1, _GRAY, None),
    "16UC3": _Layout("u2", 3, *_BGR),
    "yuv422": _Layout("u1", 2, cv2.COLOR_YUV2RGB_UYVY, cv2.COLOR_RGB2YUV_UYVY),
    "uyvy": _Layout("u1", 2, cv2.COLOR_YUV2RGB_UYVY, cv2.COLOR_RGB2YUV_UYVY),
    "yuv422_yuy2": _Layout("u1", 2, cv2.COLOR_YUV2RGB_YUY2, cv2.COLOR_RGB2YUV_YUY2),
    "yuyv": _Layout("u1", 2, cv2.COLOR_YUV2RGB_YUY2, cv2.COLOR_RGB2YUV_YUY2),
    **{f"bayer_{p}8": _Layout("u1", 1, code, None) for p, code in _BAYER_TO_RGB.items()},
    **{f"bayer_{p}16": _Layout("u2", 1, code, None) for p, code in _BAYER_TO_RGB.items()},
}

SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_LAYOUTS)
COMPRESSED_FORMATS: tuple[str, ...] = ("jpeg", "png")


def image_msg_to_rgb(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """
    sensor_msgs Image or CompressedImage (rclpy or rosbags object) -> [H, W, 3] uint8 RGB.

    For rgb8 without row padding the result is a (possibly read-only) view of `msg.data`,
    so the per-frame cost is zero copies; every other encoding costs one conversion.
    Raises ImageDecodeError for anything that cannot be turned into a sane image.
    """
    if hasattr(msg, "format"):
        return _compressed_to_rgb(msg, max_pixels)
    return _raw_to_rgb(msg, max_pixels)


def _as_bytes_array(data: Any) -> np.ndarray:
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError):  # a plain list of ints
        return np.asarray(data, dtype=np.uint8)


def _check_size(width: int, height: int, max_pixels: int, what: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError(
            f"{what} has size {width}x{height}: the camera driver published an empty image; "
            "check the driver (it may not have started streaming yet)",
            reason="empty image",
        )
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"{what} is {width}x{height} = {width * height / 1e6:.1f} MP, over max_pixels "
            f"{max_pixels / 1e6:.1f} MP: resize on the camera driver or raise max_pixels",
            reason="too many pixels",
        )


def _raw_to_rgb(msg: Any, max_pixels: int) -> np.ndarray:
    encoding = str(msg.encoding)
    layout = _LAYOUTS.get(encoding)
    if layout is None:
        raise ImageDecodeError(
            f"unsupported image encoding {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
            " (or a CompressedImage in jpeg/png): set the camera driver to one of these",
            reason="unsupported encoding",
        )
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    _check_size(width, height, max_pixels, f"{encoding} image")
    if layout.channels == 2 and width % 2:
        # 4:2:2 shares one chroma pair between two pixels: an odd width has half a pair per row.
        raise ImageDecodeError(
            f"{encoding} image has odd width {width}: YUV 4:2:2 needs an even width; "
            "fix the camera driver's width (or its encoding)",
            reason="odd width for YUV 4:2:2",
        )
    itemsize = np.dtype(layout.dtype).itemsize
    row_bytes = width * layout.channels * itemsize
    if step < row_bytes:
        raise ImageDecodeError(
            f"{encoding} image {width}x{height} has step {step} < {row_bytes} bytes per row: "
            "the message header is inconsistent; fix the publisher's step field",
            reason="step smaller than a row",
        )
    buf = _as_bytes_array(msg.data)
    if buf.size != step * height:
        raise ImageDecodeError(
            f"{encoding} image {width}x{height} carries {buf.size} bytes but step*height = "
            f"{step}*{height} = {step * height}: the message is truncated or its header is wrong; "
            "fix the publisher (or the recording)",
            reason="data size differs from step*height",
        )
    dtype = np.dtype(layout.dtype).newbyteorder(">" if msg.is_bigendian else "<")
    # Views all the way: drop row padding, reinterpret bytes as pixels.
    pixels = (
        buf.reshape(height, step)[:, :row_bytes]
        .view(dtype)
        .reshape(height, width, layout.channels)
    )
    if itemsize == 2:
        pixels = (pixels >> 8).astype(np.uint8)  # 16-bit -> 8-bit keeps the top byte
    if layout.channels == 1 or layout.to_rgb is not None:
        plane = pixels[..., 0] if layout.channels == 1 else pixels
        try:
            return cv2.cvtColor(np.ascontiguousarray(plane), layout.to_rgb)
        # the checks above should leave none; a frame must never escape as cv2.error
        except cv2.error as err:
            raise ImageDecodeError(
                f"{encoding} image {width}x{height} could not be converted to RGB ({err}); check"
                " the camera driver",
                reason="colour conversion failed",
            ) from err
    return np.ascontiguousarray(pixels)


def _compressed_to_rgb(msg: Any, max_pixels: int) -> np.ndarray:
    fmt = str(msg.format)
    if "compresseddepth" in fmt.lower():
        raise ImageDecodeError(
            f"CompressedImage format {fmt!r} is a depth image, not a camera image: "
            "subscribe to the colour image topic instead",
            reason="depth image",
        )
    return decode_image_bytes(msg.data, f"CompressedImage ({fmt!r})", max_pixels, any_format=False)


_JPEG_START, _JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"
_PNG_START = b"\x89PNG\r\n\x1a\n"


def decode_image_bytes(
    data: Any, what: str, max_pixels: int = DEFAULT_MAX_PIXELS, any_format: bool = True
) -> np.ndarray:
    """
    Decode encoded image bytes -> [H, W, 3] uint8 RGB, refusing anything truncated or corrupt.

    JPEG and PNG always; with `any_format` also the other formats of IMAGE_SUFFIXES (image files;
    a CompressedImage carries only JPEG or PNG). The declared size is checked against
    `max_pixels` before decoding. Bytes after the end of a complete image are ignored.
    Shared by CompressedImage messages and image files; `what` names the source in errors.
    """
    buf = _as_bytes_array(data)
    if buf.size == 0:
        raise ImageDecodeError(
            f"{what} has empty data: the publisher or file wrote nothing; check the camera driver",
            reason="empty data",
        )
    raw = buf.tobytes()
    if raw.startswith(_JPEG_START):
        return _decode_jpeg(raw, what, max_pixels)
    if not (any_format or raw.startswith(_PNG_START)):
        raise ImageDecodeError(
            f"{what} ({len(raw)} bytes) could not be decoded: it is neither JPEG nor PNG (starts"
            f" with {raw[:8].hex(' ')}); the data is corrupt or in a format image_transport does"
            " not use; check the publisher or re-record",
            reason="neither JPEG nor PNG",
        )
    return _decode_with_pillow(raw, what, max_pixels)


def _decode_jpeg(raw: bytes, what: str, max_pixels: int) -> np.ndarray:
    # No end-of-image marker anywhere: the data was cut (libjpeg itself may only see a bad header).
    cut = _JPEG_END not in raw
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(raw)
    except ValueError as err:
        raise _undecodable(
            what, len(raw), "JPEG", err, "truncated JPEG" if cut else "corrupt JPEG header"
        ) from err
    _check_size(width, height, max_pixels, what)
    try:
        # strict: libjpeg's warnings (data cut short, corrupt entropy data) are errors, not grey
        # pixels.
        return simplejpeg.decode_jpeg(raw, colorspace="RGB", strict=True)
    except ValueError as err:
        truncated = cut or "premature end" in str(err).lower()
        raise _undecodable(
            what, len(raw), "JPEG", err, "truncated JPEG" if truncated else "corrupt JPEG data"
        ) from err


def _decode_with_pillow(raw: bytes, what: str, max_pixels: int) -> np.ndarray:
    kind = "PNG" if raw.startswith(_PNG_START) else "image"
    if kind == "PNG" and raw[12:16] == b"IHDR" and len(raw) >= 24:
        # Pillow would stop a PNG bomb only at 179 MP: check its declared size against max_pixels
        # first.
        _check_size(*struct.unpack(">II", raw[16:24]), max_pixels, what)
    try:
        image = PilImage.open(io.BytesIO(raw))  # reads the header only
    except PilImage.DecompressionBombError as err:
        raise ImageDecodeError(
            f"{what} declares {err}: resize on the camera driver", reason="too many pixels"
        ) from err
    # Pillow's format plugins raise many types (OSError, SyntaxError, ...) on bad headers
    except Exception as err:
        raise _undecodable(what, len(raw), kind, err, f"corrupt {kind} header") from err
    _check_size(image.width, image.height, max_pixels, what)
    try:
        image.load()
        # 16-bit gray: keep the top byte, as for raw 16-bit encodings
        if image.mode.startswith("I;16"):
            gray = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
            return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
        return np.asarray(image.convert("RGB"))
    # any failure of the decoder on these bytes is a bad image, never a crash
    except Exception as err:
        truncated = "truncated" in str(err).lower()
        reason = f"truncated {kind}" if truncated else f"corrupt {kind} data"
        raise _undecodable(what, len(raw), kind, err, reason) from err


def _undecodable(what: str, size: int, kind: str, err: Exception, reason: str) -> ImageDecodeError:
    return ImageDecodeError(
        f"{what} ({size} bytes) could not be decoded as {kind}: {reason} ({err}); the data was"
        " damaged in transit or recording: check the publisher, network bandwidth, or re-record",
        reason=reason,
    )


def read_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file -> [H, W, 3] uint8 RGB; ImageDecodeError names the file and problem."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ImageDecodeError(
            f"cannot read image file {path} ({err}); check the path", reason="unreadable file"
        ) from err
    return decode_image_bytes(data, f"image file {path}", max_pixels)


def _natural_key(path: Path) -> tuple[list, str]:
    # Runs of digits compare as numbers, so frame_2 comes before frame_10, as numbered frames
    # were taken; the path itself breaks ties (frame_02, frame_2).
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))], str(path)


def image_files(folder: str | Path, recursive: bool = False) -> list[Path]:
    """
    Return the image files (IMAGE_SUFFIXES, any case) in `folder`, in natural path order.

    Empty when there are none.
    """
    paths = Path(folder).rglob("*") if recursive else Path(folder).iterdir()
    return sorted(
        (p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()), key=_natural_key
    )


def rgb_to_image_fields(rgb: np.ndarray, encoding: str) -> dict[str, Any]:
    """
    Convert [H, W, 3] uint8 RGB -> sensor_msgs/Image fields.

    The fields: height, width, encoding, is_bigendian, step, data. `data` is a 1-D uint8 numpy
    array, which rosbags needs; for an rclpy message assign `data.tobytes()` (rclpy copies
    bytes fast but iterates a numpy array).
    """
    layout = _LAYOUTS.get(encoding)
    if layout is None:
        raise ImageDecodeError(
            f"cannot encode to {encoding!r}; supported: {', '.join(SUPPORTED_ENCODINGS)}"
        )
    rgb = _check_rgb(rgb)
    if encoding.startswith("bayer_"):
        pixels = _mosaic(rgb, encoding.split("_")[1].rstrip("0123456789"))
    elif layout.channels == 1:
        pixels = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    elif layout.from_rgb is not None:
        pixels = cv2.cvtColor(rgb, layout.from_rgb)
    else:
        pixels = rgb
    if layout.dtype == "u2":
        pixels = pixels.astype("<u2") * np.uint16(257)  # 255 -> 65535, and >> 8 recovers the byte
    pixels = np.ascontiguousarray(pixels)
    height, width = rgb.shape[:2]
    return {
        "height": height,
        "width": width,
        "encoding": encoding,
        "is_bigendian": 0,
        "step": width * layout.channels * pixels.dtype.itemsize,
        "data": pixels.reshape(-1).view(np.uint8),
    }


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Sample an RGB image through a Bayer filter; pattern names the 2x2 cell row by row."""
    mosaic = np.empty(rgb.shape[:2], np.uint8)
    for k, colour in enumerate(pattern):
        dy, dx = divmod(k, 2)
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, "rgb".index(colour)]
    return mosaic


def rgb_to_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> tuple[str, bytes]:
    """[H, W, 3] uint8 RGB -> (CompressedImage.format, data) as image_transport writes them."""
    if fmt not in COMPRESSED_FORMATS:
        raise ImageDecodeError(
            f"cannot compress to {fmt!r}; supported: {', '.join(COMPRESSED_FORMATS)}"
        )
    bgr = cv2.cvtColor(_check_rgb(rgb), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", bgr, params)
    if not ok:
        raise ImageDecodeError(f"OpenCV could not encode a {rgb.shape} image as {fmt}")
    return f"rgb8; {fmt} compressed bgr8", encoded.tobytes()


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageDecodeError(
            f"expected an [H, W, 3] uint8 RGB array, got {rgb.dtype} {rgb.shape}"
        )
    return np.ascontiguousarray(rgb)
