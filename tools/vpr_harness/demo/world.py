"""
A procedural city for the demo: streets on a grid, building facades, trees, parked cars.

Rendering is a vectorised 2.5D raycaster (one ray per image column against the
nearby block boxes, then the facade, ground and sky are shaded per pixel from
analytic textures), so a 640x480 frame costs a few tens of milliseconds in numpy.
Everything that makes a place recognisable (building widths, heights, colours,
window grids, shop signs, trees, lamp posts) is seeded by the world seed and the
position, so two renders of one place differ only by pose and `Appearance`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# Facade materials: index into a per-column palette.
_WALL, _TRIM, _GLASS, _LIT_GLASS, _SIGN, _SIGN_TEXT, _SHOP_GLASS, _DOOR = range(8)
_FACADE_MATERIALS = 8
# Ground materials: index into the shared palette after the facade entries.
_ROAD, _MARKING, _SIDEWALK, _CURB = range(4)
_GROUND_RGB = np.array(
    [[0.30, 0.30, 0.31], [0.85, 0.85, 0.80], [0.55, 0.53, 0.50], [0.42, 0.42, 0.42]], np.float32
)
_WALL_PALETTE = np.array(
    [
        [0.62, 0.30, 0.24],  # red brick
        [0.80, 0.72, 0.58],  # sandstone
        [0.70, 0.70, 0.70],  # concrete
        [0.88, 0.86, 0.80],  # white render
        [0.82, 0.70, 0.38],  # ochre
        [0.45, 0.52, 0.60],  # blue-grey
        [0.36, 0.33, 0.32],  # dark brick
        [0.60, 0.68, 0.52],  # sage
        [0.78, 0.55, 0.50],  # salmon
    ],
    np.float32,
)
_SIGN_PALETTE = np.array(
    [[0.80, 0.10, 0.10], [0.10, 0.25, 0.75], [0.10, 0.55, 0.20], [0.95, 0.75, 0.10],
     [0.10, 0.10, 0.12], [0.60, 0.15, 0.55], [0.95, 0.45, 0.05], [0.05, 0.55, 0.60]],
    np.float32,
)
_CAR_PALETTE = np.array(
    [[0.75, 0.08, 0.08], [0.90, 0.90, 0.92], [0.08, 0.08, 0.10], [0.15, 0.25, 0.60],
     [0.55, 0.57, 0.60], [0.20, 0.40, 0.22], [0.85, 0.70, 0.20]],
    np.float32,
)
_WARM_LIGHT = np.array([1.0, 0.85, 0.55], np.float32)  # lit windows and street lamps
_SHADOW_CASTER_HEIGHT_M = 14.0  # typical building height used for cast shadows
_MAX_VIEW_M = 220.0


def _hash01(*keys: np.ndarray | int) -> np.ndarray:
    """Deterministic uniform [0, 1) from integer keys (uint32 mixing, wraps by design)."""
    h = np.uint32(0x9E3779B9)
    with np.errstate(over="ignore"):
        for k in keys:
            h = (np.asarray(k).astype(np.uint32) + h) * np.uint32(0x85EBCA6B)
            h = h ^ (h >> np.uint32(13))
            h = h * np.uint32(0xC2B2AE35)
            h = h ^ (h >> np.uint32(16))
    return (h >> np.uint32(8)).astype(np.float32) / np.float32(1 << 24)


def _frac(a: np.ndarray, period: float) -> np.ndarray:
    """Compute a mod period in [0, period) (much faster than np.mod on float arrays)."""
    period = np.float32(period)
    return a - period * np.floor(a * (np.float32(1.0) / period))


@dataclass(frozen=True)
class CameraPose:
    """
    Camera on the ground plane.

    Position in local metres (x east, y north), yaw CCW from east.
    """

    x: float
    y: float
    yaw: float
    height: float = 1.6
    pitch: float = 0.0  # radians, positive looks up (a vertical shift of the horizon)


@dataclass(frozen=True)
class PinholeCamera:
    width: int = 640
    height: int = 480
    hfov_deg: float = 75.0

    @property
    def focal_px(self) -> float:
        return (self.width / 2) / math.tan(math.radians(self.hfov_deg) / 2)


@dataclass(frozen=True)
class Appearance:
    """Conditions of one traversal: light, weather, season and which cars are parked."""

    sun_azimuth: float  # radians, direction towards the sun, CCW from east
    sun_elevation: float  # radians
    sun_strength: float
    ambient: float
    light_rgb: tuple[float, float, float]  # colour temperature as channel gains
    sky_zenith_rgb: tuple[float, float, float]
    sky_horizon_rgb: tuple[float, float, float]
    cloud_cover: float  # 0 clear .. 1 overcast
    fog_distance_m: float  # e-folding distance; inf for none
    fog_rgb: tuple[float, float, float]
    foliage_rgb: tuple[float, float, float]
    foliage_density: float  # 1 full summer crowns .. 0 bare
    lit_window_fraction: float
    lamps_on: bool
    parked_car_seed: int
    parked_car_probability: float
    exposure: float
    gamma: float
    noise_sigma: float  # in 8-bit units

    @classmethod
    def sunny_summer(cls) -> Appearance:
        return cls(
            sun_azimuth=math.radians(200),
            sun_elevation=math.radians(50),
            sun_strength=0.5,
            ambient=0.55,
            light_rgb=(1.0, 0.98, 0.94),
            sky_zenith_rgb=(0.25, 0.45, 0.85),
            sky_horizon_rgb=(0.70, 0.80, 0.95),
            cloud_cover=0.25,
            fog_distance_m=math.inf,
            fog_rgb=(0.75, 0.80, 0.90),
            foliage_rgb=(0.22, 0.45, 0.15),
            foliage_density=1.0,
            lit_window_fraction=0.0,
            lamps_on=False,
            parked_car_seed=1,
            parked_car_probability=0.45,
            exposure=1.0,
            gamma=1.0,
            noise_sigma=1.5,
        )

    @classmethod
    def autumn_dusk(cls) -> Appearance:
        """
        Low, weak, warm sun from the west, haze, thinning autumn trees.

        Lights on, other cars parked.
        """
        return cls(
            sun_azimuth=math.radians(250),
            sun_elevation=math.radians(20),
            sun_strength=0.25,
            ambient=0.5,
            light_rgb=(1.15, 0.85, 0.60),
            sky_zenith_rgb=(0.22, 0.20, 0.40),
            sky_horizon_rgb=(0.95, 0.55, 0.35),
            cloud_cover=0.6,
            fog_distance_m=150.0,
            fog_rgb=(0.55, 0.42, 0.40),
            foliage_rgb=(0.70, 0.38, 0.10),
            foliage_density=0.7,
            lit_window_fraction=0.25,
            lamps_on=True,
            parked_car_seed=2,
            parked_car_probability=0.45,
            exposure=0.95,
            gamma=1.15,
            noise_sigma=4.0,
        )


class _SpriteCanvas:
    """
    The frame's albedo, shading and depth buffers.

    Billboards are painted onto them with a depth test.
    """

    def __init__(
        self, rgb, shade, depth, horizon: float, camera_height: float, appearance: Appearance
    ) -> None:
        self.rgb, self.shade, self.depth = rgb, shade, depth
        self.horizon, self.camera_height = horizon, camera_height
        # sprites: half in sun on average
        self.lit = appearance.ambient + 0.55 * appearance.sun_strength
        self.foliage_density = appearance.foliage_density
        self.cx = self.z = self.scale = 0.0

    def place(self, cx: float, z: float, scale: float) -> None:
        """Set the billboard's image column, depth (m) and pixels per metre for the next draws."""
        self.cx, self.z, self.scale = cx, z, scale

    def _window(self, z_lo: float, z_hi: float, half_px: float) -> tuple[slice, slice] | None:
        """Image region covering heights [z_lo, z_hi] m and `half_px` either side of the column."""
        h, w = self.depth.shape
        r0 = max(int(math.floor(self.horizon - (z_hi - self.camera_height) * self.scale)), 0)
        r1 = min(int(math.ceil(self.horizon - (z_lo - self.camera_height) * self.scale)), h)
        c0, c1 = max(int(self.cx - half_px), 0), min(int(math.ceil(self.cx + half_px)), w)
        return (slice(r0, r1), slice(c0, c1)) if r0 < r1 and c0 < c1 else None

    def _paint(self, window, mask: np.ndarray, colour, shade: float) -> None:
        region = mask & (self.depth[window] > self.z)
        self.rgb[window][region] = colour if np.ndim(colour) < 2 else colour[region]
        self.shade[window][region] = shade
        self.depth[window][region] = self.z

    def box(
        self, z_lo: float, z_hi: float, width_m: float, colour, emissive: bool = False
    ) -> None:
        window = self._window(z_lo, z_hi, max(width_m * self.scale / 2, 0.5))
        if window is not None:
            mask = np.ones(self.depth[window].shape, bool)
            self._paint(window, mask, colour, 1.0 if emissive else self.lit)

    def crown(
        self,
        template: np.ndarray,
        centre_h: float,
        radius: float,
        aspect: float,
        foliage: np.ndarray,
    ) -> None:
        """Paint a tree crown: the template (brightness, leafiness) sampled at its pixels."""
        half = radius * self.scale
        window = self._window(centre_h - radius * aspect, centre_h + radius * aspect, half)
        if window is None:
            return
        rows, cols = window
        size = template.shape[0]
        cy = self.horizon - (centre_h - self.camera_height) * self.scale
        tx = ((np.arange(cols.start, cols.stop) + 0.5 - self.cx) / half + 1) * size / 2
        ty = ((np.arange(rows.start, rows.stop) + 0.5 - cy) / (half * aspect) + 1) * size / 2
        tx, ty = (np.clip(t.astype(np.int32), 0, size - 1) for t in (tx, ty))
        sample = template[ty[:, None], tx[None, :]]
        colour = sample[..., :1] * foliage
        self._paint(window, sample[..., 1] > 1.0 - self.foliage_density, colour, self.lit)


class StreetWorld:
    """
    A grid city: street centrelines at multiples of `block_pitch_m`, blocks in between.

    Streets run along x = i * pitch and y = j * pitch for i in [0, blocks_x], j in
    [0, blocks_y]; routes should stay inside that range. A ring of extra blocks
    around it keeps the skyline filled.
    """

    def __init__(
        self,
        seed: int = 0,
        blocks_x: int = 6,
        blocks_y: int = 5,
        block_pitch_m: float = 60.0,
        street_width_m: float = 16.0,
        camera: PinholeCamera = PinholeCamera(),
        render_scale: float = 0.5,
    ) -> None:
        self.seed = seed
        self.pitch = block_pitch_m
        self.half_street = street_width_m / 2
        self.road_half = self.half_street - 3.0  # 3 m sidewalks
        self.camera = camera
        # Shading is evaluated on a coarser raster and upsampled; sensor noise is added at full
        # size.
        self._raster = PinholeCamera(
            round(camera.width * render_scale),
            round(camera.height * render_scale),
            camera.hfov_deg,
        )
        rng = np.random.default_rng(seed)
        i, j = np.meshgrid(np.arange(-2, blocks_x + 2), np.arange(-2, blocks_y + 2), indexing="ij")
        lo_x, lo_y = (
            i.ravel() * self.pitch + self.half_street,
            j.ravel() * self.pitch + self.half_street,
        )
        side = self.pitch - 2 * self.half_street
        self.block_min = np.stack([lo_x, lo_y], 1).astype(np.float64)
        self.block_max = self.block_min + side
        self.face_length = side
        self._make_buildings(rng, n_faces=4 * len(self.block_min))
        self._make_street_furniture(rng, blocks_x, blocks_y)
        self._crowns = self._make_crown_templates()
        self._noise_tile = rng.standard_normal((camera.height + 64, camera.width + 64, 3)).astype(
            np.float32
        )

    # ---- world generation ---------------------------------------------------------------
    def _make_buildings(
        self, rng: np.random.Generator, n_faces: int, max_per_face: int = 6
    ) -> None:
        """Split each block face into buildings; every building gets its own facade parameters."""
        widths = rng.uniform(6.0, 15.0, (n_faces, max_per_face))
        starts = np.concatenate([np.zeros((n_faces, 1)), np.cumsum(widths, 1)[:, :-1]], 1)
        starts[starts >= self.face_length - 3.0] = np.inf  # no sliver buildings at the corner
        self.building_start = starts
        ends = np.concatenate([starts[:, 1:], np.full((n_faces, 1), np.inf)], 1)
        self.building_width = np.minimum(ends, self.face_length) - starts
        n = n_faces * max_per_face
        self.max_per_face = max_per_face
        floors = rng.integers(2, 9, n)
        self.floor_h = rng.uniform(2.9, 3.8, n).astype(np.float32)
        self.ground_floor_h = self.floor_h * rng.uniform(1.1, 1.4, n).astype(np.float32)
        parapet = rng.uniform(0.3, 1.2, n)
        self.building_h = (self.ground_floor_h + (floors - 1) * self.floor_h + parapet).astype(
            np.float32
        )
        wall = _WALL_PALETTE[rng.integers(0, len(_WALL_PALETTE), n)] * rng.uniform(
            0.85, 1.15, (n, 1)
        )
        self.wall_rgb = np.clip(wall + rng.normal(0, 0.03, (n, 3)), 0, 1).astype(np.float32)
        light_trim = rng.uniform(0.75, 0.95, (n, 1))
        self.trim_rgb = np.where(rng.random((n, 1)) < 0.5, self.wall_rgb * 0.6, light_trim).astype(
            np.float32
        )
        self.glass_rgb = rng.uniform(0.10, 0.30, (n, 3)).astype(np.float32) * np.array(
            [0.9, 1.0, 1.1], np.float32
        )
        self.bay_m = rng.uniform(1.8, 3.6, n).astype(np.float32)
        self.window_w = rng.uniform(0.35, 0.7, n).astype(np.float32)  # fraction of the bay
        self.window_h = rng.uniform(0.35, 0.65, n).astype(np.float32)  # fraction of the floor
        # 0 plain, 1 a band under each floor, 2 brick courses
        self.band_style = rng.integers(0, 3, n)
        self.has_shop = rng.random(n) < 0.6
        self.sign_rgb = _SIGN_PALETTE[rng.integers(0, len(_SIGN_PALETTE), n)]
        self.sign_text_rgb = np.where(
            self.sign_rgb.mean(1, keepdims=True) > 0.4, 0.05, 0.95
        ).astype(np.float32)
        # of the width
        self.sign_span = np.sort(rng.uniform(0.05, 0.95, (n, 2)), 1).astype(np.float32)
        self.door_at = rng.uniform(0.1, 0.9, n).astype(np.float32)

    @staticmethod
    def _make_crown_templates(variants: int = 8, size: int = 64) -> np.ndarray:
        """
        (variants, size, size, 2).

        Leaf brightness and leafiness (leaf where above 1 - density; -1 outside).
        """
        t = np.linspace(-1, 1, size, dtype=np.float32)
        b, a = np.meshgrid(t, t, indexing="ij")
        templates = []
        for k in range(variants):
            lobes = np.sin(a * 5.5 + k) * np.sin(b * 7.0 + 2 * k) + 0.5 * np.sin(
                a * 13.8 - b * 10.7 + k
            )
            inside = a * a + b * b < 0.8 + 0.15 * lobes
            leafiness = np.where(
                inside, 0.5 + 0.35 * lobes + 0.25 * np.sin(a * 29.0 + b * 34.0), -1.0
            )
            templates.append(np.stack([0.75 + 0.25 * lobes, leafiness], -1))
        return np.stack(templates).astype(np.float32)

    def _street_segments(
        self, blocks_x: int, blocks_y: int
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """
        Return (start, unit direction) of each street between two intersections.

        Both directions' axes.
        """
        p, segments = self.pitch, []
        for i in range(-1, blocks_x + 2):
            for j in range(-1, blocks_y + 1):
                segments.append(
                    (np.array([i * p, j * p + self.half_street]), np.array([0.0, 1.0]))
                )
        for j in range(-1, blocks_y + 2):
            for i in range(-1, blocks_x + 1):
                segments.append(
                    (np.array([i * p + self.half_street, j * p]), np.array([1.0, 0.0]))
                )
        return segments

    def _make_street_furniture(
        self, rng: np.random.Generator, blocks_x: int, blocks_y: int
    ) -> None:
        """
        Trees and lamp posts on the sidewalks (fixed).

        Parking slots at the kerb (filled per appearance).
        """
        length = self.face_length
        trees, lamps, slots = [], [], []
        for start, direction in self._street_segments(blocks_x, blocks_y):
            normal = np.array([-direction[1], direction[0]])
            for side in (-1.0, 1.0):
                if rng.random() < 0.65:
                    s = rng.uniform(1.5, 5.0)
                    while s < length - 1.5:
                        trees.append(
                            start + direction * s + normal * side * (self.half_street - 1.6)
                        )
                        s += rng.uniform(6.0, 12.0)
                for s in np.arange(rng.uniform(4, 14), length - 2, 22.0):
                    lamps.append(start + direction * s + normal * side * (self.road_half + 0.4))
                for s in np.arange(3.0, length - 3.0, 6.0):
                    slots.append(start + direction * s + normal * side * (self.road_half - 1.1))
        self.trees = np.array(trees)
        self.tree_shape = np.stack([
            rng.uniform(1.8, 3.4, len(trees)),  # crown radius
            rng.uniform(2.2, 4.0, len(trees)),  # trunk height
            rng.uniform(0.8, 1.25, len(trees)),  # crown aspect
            rng.uniform(0.8, 1.15, len(trees)),  # foliage tint
        ], 1)
        self.lamps = np.array(lamps)
        self.parking_slots = np.array(slots)

    # ---- rendering ---------------------------------------------------------------------
    def render(self, pose: CameraPose, appearance: Appearance) -> np.ndarray:
        """RGB uint8 image (H, W, 3) of the city seen from `pose` under `appearance`."""
        cam = self._raster
        h, w, f = cam.height, cam.width, cam.focal_px
        horizon = h / 2 + f * math.tan(pose.pitch)
        fwd = np.array([math.cos(pose.yaw), math.sin(pose.yaw)])
        right = np.array([math.sin(pose.yaw), -math.cos(pose.yaw)])
        xc = (np.arange(w, dtype=np.float64) + 0.5 - w / 2) / f
        ray = fwd[None, :] + xc[:, None] * right[None, :]  # unnormalised: hit parameter t is depth
        origin = np.array([pose.x, pose.y])
        depth_col, building, u_face, face_dir = self._cast(origin, ray)

        rows = (np.arange(h, dtype=np.float32) + 0.5)[:, None]
        above = np.float32(horizon) - rows  # (H, 1) pixels above the horizon
        hit = np.isfinite(depth_col)
        z_col = depth_col.astype(np.float32)[None, :]
        # height on the facade of every pixel
        v = pose.height + above * np.where(hit, z_col, 0) / f
        is_wall = (v >= 0) & (v < np.where(hit, self.building_h[building], 0)[None, :])
        is_ground = ~is_wall & (above < 0)

        material, shade = self._facade(v, building, u_face, face_dir, appearance)
        depth = np.where(is_wall, z_col, np.float32(np.inf))
        hz = int(np.clip(math.ceil(horizon - 0.5), 0, h))  # first row below the horizon
        ground_mat, ground_shade, ground_depth = self._ground(
            origin, fwd, right, xc.astype(np.float32), above[hz:], pose.height, f, appearance)
        low = is_ground[hz:]
        material[hz:][low] = _FACADE_MATERIALS * w + ground_mat[low]
        shade[hz:][low] = ground_shade[low]
        depth[hz:][low] = np.broadcast_to(ground_depth, low.shape)[low]
        rgb = self._palette(building, appearance)[material]  # (H, W, 3) albedo
        canvas = _SpriteCanvas(rgb, shade, depth, horizon, pose.height, appearance)
        self._draw_sprites(canvas, origin, fwd, right, appearance)

        rgb *= shade[..., None] * np.array(appearance.light_rgb, np.float32)
        sky = ~np.isfinite(depth[:hz])
        rgb[:hz][sky] = self._sky(above[:hz], xc, pose.yaw, f, appearance)[sky]
        if math.isfinite(appearance.fog_distance_m):
            fog = 1.0 - np.exp(-np.minimum(depth, 1e6) / np.float32(appearance.fog_distance_m))
            rgb += fog[..., None] * (np.array(appearance.fog_rgb, np.float32) - rgb)
        if (w, h) != (self.camera.width, self.camera.height):
            rgb = cv2.resize(
                rgb, (self.camera.width, self.camera.height), interpolation=cv2.INTER_LINEAR
            )
        return self._tone_map(rgb, pose, appearance)

    def _cast(self, origin: np.ndarray, ray: np.ndarray):
        """
        Nearest block face hit by each column's ray.

        Depth, building id, metres along face, face normal axis.
        """
        near = (
            np.linalg.norm((self.block_min + self.block_max) / 2 - origin, axis=1)
            < _MAX_VIEW_M + self.face_length
        )
        bmin, bmax = self.block_min[near] - origin, self.block_max[near] - origin
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / ray  # (W, 2)
            t1 = bmin[None, :, :] * inv[:, None, :]  # (W, B, 2)
            t2 = bmax[None, :, :] * inv[:, None, :]
        t_near = np.minimum(t1, t2)
        t_far = np.maximum(t1, t2)
        entry = t_near.max(2)
        hit = (entry <= t_far.min(2)) & (entry > 0)
        entry = np.where(hit, entry, np.inf)
        nearest = entry.argmin(1)
        cols = np.arange(len(ray))
        depth = entry[cols, nearest]
        depth[depth > _MAX_VIEW_M] = np.inf
        # entered through an x = const face
        x_face = t_near[cols, nearest, 0] >= t_near[cols, nearest, 1]
        point = origin + depth[:, None] * ray
        lo, hi = self.block_min[near][nearest], self.block_max[near][nearest]
        # Faces 0..3: west, east, south, north; u runs left to right as seen from the street.
        face = np.where(x_face, np.where(ray[:, 0] > 0, 0, 1), np.where(ray[:, 1] > 0, 2, 3))
        u = np.select(
            [face == 0, face == 1, face == 2],
            [hi[:, 1] - point[:, 1], point[:, 1] - lo[:, 1], point[:, 0] - lo[:, 0]],
            hi[:, 0] - point[:, 0],
        )
        u = np.nan_to_num(u, nan=0.0, posinf=0.0, neginf=0.0)
        face_id = np.flatnonzero(near)[nearest] * 4 + face
        k = (self.building_start[face_id] <= u[:, None]).sum(1) - 1
        u_local = u - self.building_start[face_id, k]
        building = face_id * self.max_per_face + k
        normal = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]], np.float32)[face]
        return (
            depth,
            building,
            (u_local.astype(np.float32), self.building_width[face_id, k].astype(np.float32)),
            normal,
        )

    def _facade(
        self,
        v: np.ndarray,
        building: np.ndarray,
        u_face,
        normal: np.ndarray,
        appearance: Appearance,
    ):
        """Per-pixel facade material (as an index into the per-column palette) and shading."""
        u, width = u_face
        w = len(building)
        col = np.arange(w)
        bay, ww, wh = self.bay_m[building], self.window_w[building], self.window_h[building]
        floor_h, ground_h = self.floor_h[building], self.ground_floor_h[building]
        top = self.building_h[building]
        # Column-wise parts of the pattern (cheap), combined with row-wise parts per pixel.
        n_bays = np.maximum(np.floor(width / bay), 1)
        bay_fit = width / n_bays
        bay_pos = (u % bay_fit) / bay_fit
        bay_idx = np.floor(u / bay_fit)
        in_window_col = np.abs(bay_pos - 0.5) < ww / 2
        on_frame_col = np.abs(np.abs(bay_pos - 0.5) - ww / 2) < 0.04
        sign_lo, sign_hi = self.sign_span[building, 0] * width, self.sign_span[building, 1] * width
        in_sign_col = self.has_shop[building] & (u > sign_lo) & (u < sign_hi)
        letter = np.floor(np.maximum(u - sign_lo, 0) / 0.45)
        text_col = in_sign_col & (_hash01(building, letter) < 0.6) & ((u - sign_lo) % 0.45 > 0.08)
        door_col = np.abs(u - self.door_at[building] * width) < 0.6
        shop_glass_col = self.has_shop[building] & ~door_col & ((u % 4.0) > 0.3)

        above_ground_floor = v >= ground_h
        storey = np.floor((v - ground_h) / floor_h)
        fv = (v - ground_h) / floor_h - storey
        in_window_row = np.abs(fv - 0.55) < wh / 2
        window = above_ground_floor & in_window_col & in_window_row & (v < top - 0.6)
        material = np.full(v.shape, _WALL, np.int32)
        material[window] = _GLASS
        frame = (
            above_ground_floor
            & (v < top - 0.6)
            & (
                (on_frame_col & in_window_row)
                | (in_window_col & (np.abs(np.abs(fv - 0.55) - wh / 2) < 0.05))
            )
        )
        material[frame] = _TRIM
        cornice = v > top - 0.5
        band = (self.band_style[building] == 1) & (fv < 0.08) & above_ground_floor
        material[cornice | band] = _TRIM
        if appearance.lit_window_fraction > 0:
            lit = window & (
                _hash01(building, bay_idx, np.maximum(storey, 0)) < appearance.lit_window_fraction
            )
            material[lit] = _LIT_GLASS
        # Ground floor: shop sign band with "lettering", shop windows, door.
        sign_row = (v > ground_h - 1.05) & (v < ground_h - 0.2)
        text_row = (v > ground_h - 0.9) & (v < ground_h - 0.35)
        material[sign_row & in_sign_col] = _SIGN
        material[text_row & text_col] = _SIGN_TEXT
        low = (v > 0.4) & (v < ground_h - 1.3)
        material[low & shop_glass_col] = _SHOP_GLASS
        material[(v < 2.3) & door_col] = _DOOR

        sun = np.array(
            [math.cos(appearance.sun_azimuth), math.sin(appearance.sun_azimuth)], np.float32
        )
        facing = np.maximum(normal @ sun, 0.0) * math.cos(appearance.sun_elevation)
        # Shadow of the building across the street falls on the lower part of a sunlit facade.
        shadow_length = (
            2 * self.half_street * math.tan(appearance.sun_elevation) / np.maximum(facing, 1e-3)
        )
        shadow_top = _SHADOW_CASTER_HEIGHT_M - shadow_length
        sunlit = (v > shadow_top[None, :]) * facing[None, :]
        shade = appearance.ambient + appearance.sun_strength * sunlit
        brick = (self.band_style[building] == 2)[None, :] & (
            _frac(v * np.float32(3.3), 1.0) < 0.14
        )
        shade = shade * np.where(brick, np.float32(0.85), np.float32(1.0))
        # emissive: its palette entry already divides out the light tint
        shade[material == _LIT_GLASS] = 1.0
        material += (col * _FACADE_MATERIALS)[None, :].astype(np.int32)
        return material, shade.astype(np.float32)

    def _ground(self, origin, fwd, right, xc, above, cam_h, f, appearance):
        """Road, markings, kerbs and sidewalks below the horizon, with building shadows."""
        # (rows, 1), rows below the horizon
        z = (cam_h * f / np.maximum(-above, 1e-3)).astype(np.float32)
        # Relative to the street grid origin nearest the camera, so float32 keeps centimetres.
        p = np.float32(self.pitch)
        ox, oy = (float(o - self.pitch * math.floor(o / self.pitch)) for o in origin)
        gx = np.float32(ox) + z * (fwd[0] + xc * right[0]).astype(np.float32)[None, :]
        gy = np.float32(oy) + z * (fwd[1] + xc * right[1]).astype(np.float32)[None, :]
        ax, ay = _frac(gx, p), _frac(gy, p)
        # distance to the nearest street centreline
        dx, dy = np.minimum(ax, p - ax), np.minimum(ay, p - ay)
        rh, hs = self.road_half, self.half_street
        on_road = (dx < rh) | (dy < rh)
        material = np.where(on_road, _ROAD, _SIDEWALK).astype(np.int32)
        kerb = ~on_road & ((np.abs(dx - rh) < 0.2) | (np.abs(dy - rh) < 0.2))
        material[kerb] = _CURB
        dashes_x = (dx < 0.08) & (dy > hs) & (_frac(gy, 6.0) < 3.0)
        dashes_y = (dy < 0.08) & (dx > hs) & (_frac(gx, 6.0) < 3.0)
        zebra = ((dx < rh) & (np.abs(dy - hs - 1.5) < 1.5) & (_frac(gx, 1.2) < 0.6)) | (
            (dy < rh) & (np.abs(dx - hs - 1.5) < 1.5) & (_frac(gy, 1.2) < 0.6))
        material[dashes_x | dashes_y | zebra] = _MARKING
        # A point is in shadow if walking from it towards the sun meets a block before the
        # roofline.
        reach = _SHADOW_CASTER_HEIGHT_M / math.tan(appearance.sun_elevation)
        qx = _frac(ax + np.float32(reach * math.cos(appearance.sun_azimuth)), p)
        qy = _frac(ay + np.float32(reach * math.sin(appearance.sun_azimuth)), p)
        blocked = (qx > hs) & (qx < p - hs) & (qy > hs) & (qy < p - hs)
        shade = (
            appearance.ambient
            + appearance.sun_strength * math.sin(appearance.sun_elevation) * ~blocked
        )
        tiles = (material == _SIDEWALK) & ((_frac(gx, 1.0) < 0.05) | (_frac(gy, 1.0) < 0.05))
        shade = shade * np.where(tiles, np.float32(0.8), np.float32(1.0))
        return material, shade.astype(np.float32), z

    def _palette(self, building: np.ndarray, appearance: Appearance) -> np.ndarray:
        """Flat (W * facade materials + ground materials, 3) albedo table for this frame."""
        w = len(building)
        table = np.empty((w, _FACADE_MATERIALS, 3), np.float32)
        wall = self.wall_rgb[building]
        sky_tint = np.array(appearance.sky_horizon_rgb, np.float32)
        table[:, _WALL] = wall
        table[:, _TRIM] = self.trim_rgb[building]
        table[:, _GLASS] = 0.6 * self.glass_rgb[building] + 0.35 * sky_tint
        table[:, _LIT_GLASS] = _WARM_LIGHT / np.array(appearance.light_rgb, np.float32)
        table[:, _SIGN] = self.sign_rgb[building]
        table[:, _SIGN_TEXT] = self.sign_text_rgb[building]
        table[:, _SHOP_GLASS] = 0.5 * self.glass_rgb[building] + 0.15
        table[:, _DOOR] = wall * 0.35
        return np.concatenate([table.reshape(-1, 3), _GROUND_RGB])

    def _sky(self, above, xc, yaw, f, appearance):
        elevation = np.clip(above / f, 0, None)  # (H, 1) ~ tan of the elevation angle
        t = 1.0 - np.exp(-3.0 * elevation)
        zen, hor = np.array(appearance.sky_zenith_rgb, np.float32), np.array(
            appearance.sky_horizon_rgb, np.float32
        )
        sky = hor + t[..., None] * (zen - hor)  # (H, 1, 3)
        # Clouds live on the sky dome (azimuth, elevation), so they stay put as the camera moves;
        # they are smooth, so they are evaluated on a 4x coarser grid and upsampled.
        azimuth = (yaw - np.arctan(xc[::4])).astype(np.float32)[None, :]
        el = elevation[::4]
        cloud = (
            np.sin(azimuth * 5.0 + 1.3) * np.sin(el * 9.0 + azimuth * 2.0)
            + 0.6 * np.sin(azimuth * 13.0 - el * 17.0)
            + 0.3 * np.sin(azimuth * 31.0 + el * 23.0)
        )
        cover = np.clip((cloud * 0.5 + 0.5) - (1.0 - appearance.cloud_cover), 0, 1) * 1.5
        cover = cv2.resize(cover, (len(xc), len(elevation)), interpolation=cv2.INTER_LINEAR)
        cloud_rgb = np.float32(0.92) * np.array(appearance.light_rgb, np.float32)
        return (sky + np.clip(cover, 0, 1)[..., None] * (cloud_rgb - sky)).astype(np.float32)

    def _draw_sprites(
        self, canvas: _SpriteCanvas, origin, fwd, right, appearance: Appearance
    ) -> None:
        """
        Trees, lamp posts and parked cars as camera-facing billboards.

        Painted far to near, depth-tested per pixel.
        """
        f, w = self._raster.focal_px, self._raster.width
        parked = _hash01(np.arange(len(self.parking_slots)), self.seed, appearance.parked_car_seed)
        cars = self.parking_slots[parked < appearance.parked_car_probability]
        items = [(p, "tree", k) for k, p in self._visible(self.trees, origin, fwd, right)]
        items += [(p, "lamp", k) for k, p in self._visible(self.lamps, origin, fwd, right)]
        items += [(p, "car", k) for k, p in self._visible(cars, origin, fwd, right)]
        items.sort(key=lambda item: -float((item[0] - origin) @ fwd))
        lamp_head = (
            _WARM_LIGHT / np.array(appearance.light_rgb, np.float32)
            if appearance.lamps_on
            else (0.5, 0.5, 0.5)
        )
        for position, kind, index in items:
            rel = position - origin
            z = float(rel @ fwd)
            canvas.place(w / 2 + f * float(rel @ right) / z, z, f / z)
            if kind == "tree":
                radius, trunk, aspect, tint = self.tree_shape[index]
                canvas.box(0.0, trunk + radius * 0.5, 0.35, (0.28, 0.20, 0.14))
                foliage = np.array(appearance.foliage_rgb, np.float32) * np.float32(tint)
                canvas.crown(
                    self._crowns[index % len(self._crowns)],
                    trunk + radius * aspect,
                    radius,
                    aspect,
                    foliage,
                )
            elif kind == "lamp":
                canvas.box(0.0, 5.5, 0.18, (0.15, 0.15, 0.17))
                canvas.box(5.3, 5.7, 0.6, lamp_head, emissive=appearance.lamps_on)
            else:
                colour = _CAR_PALETTE[
                    int(_hash01(index, appearance.parked_car_seed) * len(_CAR_PALETTE))
                ]
                canvas.box(0.25, 1.0, 1.8, colour)
                canvas.box(1.0, 1.45, 1.5, (0.12, 0.14, 0.17))  # windows
                canvas.box(0.0, 0.3, 1.9, (0.05, 0.05, 0.05))  # wheels

    @staticmethod
    def _visible(
        points: np.ndarray, origin, fwd, right, max_depth: float = 90.0
    ) -> list[tuple[int, np.ndarray]]:
        if len(points) == 0:
            return []
        rel = points - origin
        z, x = rel @ fwd, rel @ right
        keep = np.flatnonzero((z > 1.0) & (z < max_depth) & (np.abs(x) < z * 0.9 + 4.0))
        return [(int(k), points[k]) for k in keep]

    def _tone_map(self, rgb: np.ndarray, pose: CameraPose, appearance: Appearance) -> np.ndarray:
        """Exposure, sensor noise (a fixed tile at a pose-seeded offset) and gamma, to uint8."""
        h, w = self.camera.height, self.camera.width
        key = (int(pose.x * 1000), int(pose.y * 1000), int(pose.yaw * 1000))
        oy, ox = int(_hash01(*key, 1) * 64), int(_hash01(*key, 2) * 64)
        rgb *= np.float32(255.0 * appearance.exposure)
        rgb += self._noise_tile[oy:oy + h, ox:ox + w] * np.float32(appearance.noise_sigma)
        q = np.clip(rgb, 0, 255).astype(np.uint8)
        lut = (255.0 * (np.arange(256) / 255.0) ** appearance.gamma).astype(np.uint8)
        return cv2.LUT(q, lut)
