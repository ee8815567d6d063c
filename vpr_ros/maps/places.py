"""The place table: one row per map place, stored as places.csv."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np


@dataclass
class Place:
    place_id: int
    stamp_ns: int
    x: float = math.nan  # map-frame position (UTM easting/northing when from GPS)
    y: float = math.nan
    z: float = math.nan
    qx: float = math.nan  # orientation quaternion; NaN when unknown
    qy: float = math.nan
    qz: float = math.nan
    qw: float = math.nan
    lat: float = math.nan
    lon: float = math.nan
    utm_zone: str = ""
    source: str = ""
    topic: str = ""

    @property
    def position(self) -> tuple[float, float, float] | None:
        return (
            None if math.isnan(self.x) else (self.x, self.y, 0.0 if math.isnan(self.z) else self.z)
        )

    @property
    def orientation(self) -> tuple[float, float, float, float] | None:
        return None if math.isnan(self.qw) else (self.qx, self.qy, self.qz, self.qw)


_FIELDS = [f.name for f in fields(Place)]
_NUMERIC = _FIELDS[:11]  # place_id, stamp_ns, then nine floats; the three text columns follow
_TEXT = _FIELDS[11:]
_NUMERIC_DTYPE = np.dtype(
    [(name, "i8") for name in _NUMERIC[:2]] + [(name, "f8") for name in _NUMERIC[2:]]
)


class PlaceTable(Sequence[Place]):
    """
    The places of a loaded map, held by column.

    A million ``Place`` objects would take about a gigabyte and most of a large map's load time;
    a ``Place`` is built only for the rows asked for (the candidates of a query).
    """

    def __init__(self, numeric: np.ndarray, text_codes: np.ndarray, texts: list[tuple]):
        self._numeric = numeric  # structured, _NUMERIC_DTYPE
        self._text_codes = text_codes  # row -> index into texts
        self._texts = texts  # distinct (utm_zone, source, topic), few per map

    def __len__(self) -> int:
        return len(self._numeric)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return Place(*self._numeric[i].tolist(), *self._texts[self._text_codes[i]])

    @property
    def place_ids(self) -> np.ndarray:
        return self._numeric["place_id"]

    def positions(self) -> np.ndarray:
        """(n, 3) map-frame positions, NaN rows where unknown, z 0 where only x, y are known."""
        xyz = np.stack([self._numeric[k] for k in ("x", "y", "z")], axis=1)
        known = ~np.isnan(xyz[:, 0])
        xyz[known & np.isnan(xyz[:, 2]), 2] = 0.0
        xyz[~known] = np.nan
        return xyz


def write_places(path: Path, places: Sequence[Place]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(_FIELDS)
        # str(float) is the shortest text that reads back to the same float
        w.writerows(tuple(getattr(p, k) for k in _FIELDS) for p in places)


def read_places(path: Path) -> PlaceTable:
    """
    Read places.csv; raises ValueError (or numpy's errors) on a damaged file.

    The numeric columns go through numpy's C parser; the three text columns repeat (a few
    bags and topics per map), so each distinct text tail is parsed once.
    """
    text = Path(path).read_text()
    lines = text.splitlines()
    header = next(csv.reader(lines[:1]), None)
    if header != _FIELDS:
        raise ValueError(f"{path}: columns {header} differ from {_FIELDS}")
    rows = lines[1:]
    if not rows:
        return PlaceTable(np.empty(0, _NUMERIC_DTYPE), np.empty(0, np.int32), [])
    numeric = np.loadtxt(
        io.StringIO(text),
        delimiter=",",
        skiprows=1,
        usecols=range(len(_NUMERIC)),
        dtype=_NUMERIC_DTYPE,
        ndmin=1,
    )
    codes: dict[str, int] = {}
    texts: list[tuple] = []
    text_codes = np.empty(len(rows), np.int32)
    for i, line in enumerate(rows):
        # numeric fields never hold a comma, so the text columns are what follows the 11th
        tail = line.split(",", len(_NUMERIC))[-1]
        code = codes.get(tail)
        if code is None:
            values = next(csv.reader([tail]))
            if len(values) != len(_TEXT):
                raise ValueError(f"{path}: row {i + 1} has text columns {values!r}")
            code = codes[tail] = len(texts)
            texts.append(tuple(values))
        text_codes[i] = code
    if len(numeric) != len(rows):
        raise ValueError(f"{path}: {len(rows)} rows but {len(numeric)} parsed")
    return PlaceTable(numeric, text_codes, texts)
