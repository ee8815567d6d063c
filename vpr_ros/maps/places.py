"""The place table: one row per map place, stored as places.csv."""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path


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
_TYPES = {f.name: f.type for f in fields(Place)}


def write_places(path: Path, places: list[Place]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=_FIELDS)
        w.writeheader()
        for p in places:
            w.writerow({k: repr(v) if isinstance(v, float) else v for k, v in asdict(p).items()})


def read_places(path: Path) -> list[Place]:
    casts = {"int": int, "float": float, "str": str}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != _FIELDS:
            raise ValueError(f"{path}: columns {reader.fieldnames} differ from {_FIELDS}")
        return [Place(**{k: casts[_TYPES[k]](v) for k, v in row.items()}) for row in reader]
