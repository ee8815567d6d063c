"""
Training data as places (groups of images of one spot), from four layouts.

- GSV-Cities: ``ROOT/Images/<City>/<city>_<place
  id>_<year>_<month>_<bearing>_<lat>_<lon>_<panoid>.jpg``;
  a place is one (city, place id).
- VPR folder layout (``@utm_east@utm_north@...@.jpg``, any depth below the root): images are
  grouped around place centres by position (see ``group_by_position``).
- Aligned traversals (Nordland-style): several folders where the same file name is the same place.
- rosbag2 recordings (several traversals of one site): images and poses read as ``build-map``
  reads them, then grouped by position like the VPR layout.

Grouping by position: place centres are picked greedily in recording order so that no two
are closer than ``spacing_m`` (default 15 m); every image within ``radius_m`` (default 5 m) of its
nearest centre belongs to that place, the rest are unused. The gap between places
(spacing - 2 * radius, 5 m by default) keeps look-alike neighbours out of each other's negatives.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import faiss
import numpy as np

from vpr_ros.errors import DatasetError, ImageDecodeError
from vpr_ros.imaging import decode_image_bytes, read_rgb, rgb_to_compressed
from vpr_ros.maps.sources import IMAGE_SUFFIXES, BagSource, parse_vpr_filename

log = logging.getLogger(__name__)

DEFAULT_SPACING_M = 15.0
DEFAULT_RADIUS_M = 5.0
# Bag frames are kept in memory as JPEG (about a tenth of the raw size), shrunk to this longer side
# (every model here eats <= 504 px).
BAG_MAX_SIDE = 640
BAG_JPEG_QUALITY = 95

ImageRef = Path | np.ndarray | bytes  # a file, a decoded RGB image, or an encoded one


@dataclass
class PlaceSet:
    """Images and the places they form. ``ordered``: places follow a route in index order."""

    images: list[ImageRef]
    places: list[np.ndarray]  # image indices of each place
    place_xy: np.ndarray | None  # [P, 2] metres, where positions are known
    ordered: bool
    source: str

    def __len__(self) -> int:
        return len(self.places)

    def image(self, index: int) -> np.ndarray:
        ref = self.images[index]
        if isinstance(ref, np.ndarray):
            return ref
        if isinstance(ref, bytes):
            return decode_image_bytes(ref, f"frame {index} of {self.source}")
        return read_rgb(ref)

    def subset(self, place_indices: Sequence[int]) -> PlaceSet:
        xy = self.place_xy[list(place_indices)] if self.place_xy is not None else None
        return replace(self, places=[self.places[i] for i in place_indices], place_xy=xy)

    def images_per_place(self) -> np.ndarray:
        return np.array([len(p) for p in self.places])


def require_images_per_place(
    places: PlaceSet, needed: int, option: str = "--images-per-place"
) -> PlaceSet:
    """Drop places with fewer than ``needed`` images; refuse when none is left."""
    counts = places.images_per_place()
    keep = np.flatnonzero(counts >= needed)
    if len(keep) == 0:
        raise DatasetError(
            f"no place in {places.source} has {needed} images (the most any place has is "
            f"{counts.max(initial=0)}); "
            f"the sampler takes {needed} images per place: pass {option} "
            f"{max(counts.max(initial=1), 1)} "
            "or add images (more traversals, a larger --place-radius-m)"
        )
    if len(keep) < len(counts):
        log.warning(
            "%s: %d of %d places have fewer than %d images and are left out",
            places.source,
            len(counts) - len(keep),
            len(counts),
            needed,
        )
    return places.subset(keep.tolist())


def merge_consecutive(places: PlaceSet, n: int) -> PlaceSet:
    """
    Along a route, every ``n`` consecutive places become one.

    E.g. CosPlace/MutualVPR-sized cells from Nordland frames.
    """
    if n <= 1:
        return places
    if not places.ordered:
        raise DatasetError(
            f"--merge-places {n} needs places along a route (--traversal or --bag); "
            f"{places.source} has none"
        )
    groups = [range(i, min(i + n, len(places))) for i in range(0, len(places), n)]
    merged = [np.concatenate([places.places[p] for p in g]) for g in groups]
    xy = (
        np.array([places.place_xy[list(g)].mean(0) for g in groups])
        if places.place_xy is not None
        else None
    )
    return replace(places, places=merged, place_xy=xy)


def split_places(places: PlaceSet, val_fraction: float) -> tuple[PlaceSet, PlaceSet]:
    """
    (train, validation).

    The last ``val_fraction`` of the places, held apart (a contiguous stretch of a route).
    """
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(
            f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}"
        )
    n_val = max(1, round(len(places) * val_fraction))
    if len(places) - n_val < 2:
        raise DatasetError(
            f"{places.source} has {len(places)} places: too few to hold {n_val} apart for "
            "validation "
            "and train on the rest; add data or lower --val-fraction"
        )
    return places.subset(range(len(places) - n_val)), places.subset(
        range(len(places) - n_val, len(places))
    )


def group_by_position(
    xy: np.ndarray, spacing_m: float, radius_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """(place of each point or -1, [P, 2] centres). Centres are picked in the points' order."""
    if radius_m <= 0 or spacing_m < 2 * radius_m:
        raise DatasetError(
            f"--place-spacing-m ({spacing_m}) must be at least twice --place-radius-m "
            f"({radius_m}) > 0, "
            "so that neighbouring places do not share images"
        )
    origin = xy.mean(axis=0)  # UTM ~1e6 m: float32 keeps centimetres only near an origin
    points = np.ascontiguousarray(xy - origin, dtype=np.float32)
    centres: list[np.ndarray] = []
    index = faiss.IndexFlatL2(2)
    for p in points:
        if index.ntotal == 0 or index.search(p[None], 1)[0][0, 0] >= spacing_m**2:
            index.add(p[None])
            centres.append(p)
    dist, nearest = index.search(points, 1)
    assignment = np.where(dist[:, 0] <= radius_m**2, nearest[:, 0], -1)
    return assignment, np.array(centres, dtype=np.float64) + origin


def _places_from_assignment(
    assignment: np.ndarray, centres: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray]:
    members = [np.flatnonzero(assignment == p) for p in range(len(centres))]
    used = [p for p, m in enumerate(members) if len(m)]
    return [members[p] for p in used], centres[used]


def gsv_cities(root: str | Path) -> PlaceSet:
    """
    GSV-Cities.

    Places are (city, place id) from the image file names under ``Images/<City>/``.
    """
    root = Path(root)
    image_root = root / "Images"
    if not image_root.is_dir():
        raise DatasetError(
            f"{root} is not a GSV-Cities root: it has no Images/ folder "
            "(expected ROOT/Images/<City>/<city>_<place id>_<year>_<month>_..._<panoid>.jpg)"
        )
    groups: dict[tuple[str, int], list[tuple[str, Path]]] = defaultdict(list)
    bad: list[str] = []
    for path in sorted(image_root.glob("*/*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        fields = path.stem.split("_", 7)  # the panoid itself may hold underscores
        try:
            city, place_id, year, month = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
        except (IndexError, ValueError):
            bad.append(path.name)
            continue
        groups[(city, place_id)].append((f"{year:04d}{month:02d}", path))
    if bad:
        log.warning(
            "%s: %d files do not follow the GSV-Cities name layout and are left out (e.g. %s)",
            root,
            len(bad),
            bad[0],
        )
    if not groups:
        raise DatasetError(
            f"no GSV-Cities images under {image_root} ({len(bad)} files with other names, e.g. "
            f"{bad[0] if bad else 'none'}); expected <city>_<place "
            "id>_<year>_<month>_<bearing>_<lat>_<lon>_<panoid>.jpg"
        )
    images: list[ImageRef] = []
    places = []
    for key in sorted(groups):
        members = sorted(
            groups[key], reverse=True
        )  # most recent first, as the official loader orders them
        places.append(np.arange(len(images), len(images) + len(members)))
        images += [path for _, path in members]
    return PlaceSet(images, places, None, ordered=False, source=f"GSV-Cities {root}")


def vpr_folder(
    root: str | Path, spacing_m: float = DEFAULT_SPACING_M, radius_m: float = DEFAULT_RADIUS_M
) -> PlaceSet:
    """
    Images named in the VPR layout (``@utm_east@utm_north@...@``) anywhere below ``root``.

    Grouped by position.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(
            f"image folder {root} does not exist or is not a directory: check the path"
        )
    files = sorted(
        p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not files:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) below {root}: check the path")
    posed = [
        (path, pose.position[:2])
        for path in files
        if (pose := parse_vpr_filename(path.name)) is not None
    ]
    if not posed:
        raise DatasetError(
            f"none of the {len(files)} images below {root} is named in the VPR layout "
            f"(e.g. {files[0].name}); name them @utm_east@utm_north@zone@letter@lat@lon@...@.jpg "
            "(gmberton's VPR-datasets-downloader does), or use --traversal for aligned folders"
        )
    if len(posed) < len(files):
        log.warning(
            "%s: %d of %d images are not named in the VPR layout and are left out",
            root,
            len(files) - len(posed),
            len(files),
        )
    paths = [p for p, _ in posed]
    assignment, centres = group_by_position(np.array([xy for _, xy in posed]), spacing_m, radius_m)
    places, xy = _places_from_assignment(assignment, centres)
    return PlaceSet(list(paths), places, xy, ordered=False, source=f"VPR folder {root}")


def traversals(folders: Sequence[str | Path]) -> PlaceSet:
    """Aligned traversals: the same file name in every folder is the same place, in name order."""
    folders = [Path(f) for f in folders]
    if len(folders) < 2:
        raise DatasetError(
            "aligned traversals need at least two folders (--traversal A --traversal B): "
            "the same file name in each is one place seen twice"
        )
    names = []
    for folder in folders:
        if not folder.is_dir():
            raise DatasetError(
                f"traversal folder {folder} does not exist or is not a directory: check the path"
            )
        names.append({p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES})
        if not names[-1]:
            raise DatasetError(
                f"no images ({', '.join(IMAGE_SUFFIXES)}) in traversal folder {folder}: check "
                "the path"
            )
    common = sorted(set.intersection(*names))
    if not common:
        raise DatasetError(
            f"the traversal folders share no file name (e.g. {sorted(names[0])[0]} is only in "
            f"{folders[0]}); "
            "name each place's images alike in every folder"
        )
    images: list[ImageRef] = [folder / name for name in common for folder in folders]
    places = [np.arange(i * len(folders), (i + 1) * len(folders)) for i in range(len(common))]
    return PlaceSet(
        images, places, None, ordered=True, source=f"traversals {', '.join(map(str, folders))}"
    )


def _shrunk_jpeg(rgb: np.ndarray, max_side: int) -> bytes:
    scale = max_side / max(rgb.shape[:2])
    if scale < 1.0:
        rgb = cv2.resize(
            rgb,
            (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)),
            interpolation=cv2.INTER_AREA,
        )
    return rgb_to_compressed(rgb, "jpeg", BAG_JPEG_QUALITY)[1]


def rosbags(
    bags: Sequence[str | Path],
    image_topic: str,
    pose_topic: str | None,
    spacing_m: float = DEFAULT_SPACING_M,
    radius_m: float = DEFAULT_RADIUS_M,
    frame_spacing_m: float = 1.0,
) -> PlaceSet:
    """
    Frames of several recordings of one site, grouped by UTM (GPS) or odometry position.

    Frames are read every ``frame_spacing_m`` of travel (as ``build-map --min-distance``) and kept
    in memory as JPEG. Centres follow the first bag's route, so places are in route order.
    """
    if not pose_topic:
        raise DatasetError(
            "training on bags needs --pose-topic (NavSatFix, Odometry, PoseStamped or "
            "PoseWithCovarianceStamped): positions tell which frames of different traversals "
            "show one place"
        )
    source = BagSource(bags, image_topic, pose_topic, min_distance_m=frame_spacing_m)
    from tqdm import tqdm

    images: list[ImageRef] = []
    xy = []
    for frame in tqdm(source, total=len(source), desc="reading bags", unit="frame", disable=None):
        if frame.position is None:
            continue
        images.append(_shrunk_jpeg(frame.image, BAG_MAX_SIDE))
        xy.append(frame.position[:2])
    if len(images) < 2:
        raise DatasetError(
            f"bags {', '.join(map(str, bags))} gave {len(images)} frames with a pose on "
            f"{pose_topic}; "
            "check that the pose topic covers the image stamps (without a fix, frames have no "
            "position)"
        )
    assignment, centres = group_by_position(np.array(xy), spacing_m, radius_m)
    places, place_xy = _places_from_assignment(assignment, centres)
    return PlaceSet(
        images, places, place_xy, ordered=True, source=f"bags {', '.join(map(str, bags))}"
    )


def check_readable(places: PlaceSet, sample: int = 8) -> None:
    """Decode a few images now, so a folder of broken files fails before training starts."""
    for place in places.places[:sample]:
        try:
            places.image(int(place[0]))
        except ImageDecodeError as err:
            raise DatasetError(f"{places.source}: {err}") from err
