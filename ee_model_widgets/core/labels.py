"""`Labels`: classes and the geometries a user labelled with them, for training a classifier.

    labels = Labels(["water", "forest"])
    labels.add((-67.6, -47.8), "water")                        # a (lon, lat) point
    labels.add((-67.62, -47.86, -67.61, -47.85), "forest")     # a (west, south, east, north) box
    labels.add({"type": "Polygon", "coordinates": [...]}, "forest")
    samples = labels.sample(image)                             # pixels under the labels

Geometries are kept as GeoJSON (lon/lat degrees), so `to_geojson` / `from_geojson` round-trip
exactly. Sampling happens on the image's lattice (its native scale unless `proj` is given):
a point gives the pixel containing it, a polygon the pixels whose centres it covers
(rasterio.features), and when labels overlap the one added last decides the pixel's class.
"""

from __future__ import annotations

import copy
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError, RegionError
from .output_file import output_file

if TYPE_CHECKING:
    from .grid import Grid
    from .image import Image

#: Default class colours (matplotlib's "tab10", then "Dark2"), as hex without '#'.
PALETTE = [
    "1f77b4", "ff7f0e", "2ca02c", "d62728", "9467bd", "8c564b", "e377c2", "7f7f7f", "bcbd22", "17becf",
    "1b9e77", "d95f02", "7570b3", "e7298a", "66a61e", "e6ab02", "a6761d", "666666",
]  # fmt: skip
_GEOMETRY_TYPES = ("Point", "MultiPoint", "Polygon", "MultiPolygon")
# Reads larger than this (pixels) are split per label instead of one window over all labels.
_MAX_WINDOW_PIXELS = 16_000_000


@dataclass(frozen=True)
class Samples:
    """Labelled pixels: `x` (N, bands) float32 values, `y` (N,) class indices, where they are.

    `rows`/`cols` index `grid` (the lattice window that was read); `patches`, when asked for,
    holds (N, bands, size, size) neighbourhoods centred on each pixel (0 outside the image).
    """

    x: np.ndarray
    y: np.ndarray
    band_names: list[str]
    classes: list[str]
    grid: Grid
    rows: np.ndarray
    cols: np.ndarray
    patches: np.ndarray | None = None
    #: Labels with no pixel in the image, and labelled pixels left out because they are masked.
    labels_outside: int = 0
    masked_pixels: int = 0

    def __len__(self) -> int:
        return int(self.y.size)

    def unused(self) -> str:
        """What of the labels was not sampled, as a sentence ("" when everything was)."""
        parts = []
        if self.labels_outside:
            n = self.labels_outside
            parts.append(f"{n} label{'s' * (n > 1)} outside the image")
        if self.masked_pixels:
            n = self.masked_pixels
            parts.append(f"{n} labelled pixel{'s' * (n > 1)} masked in the image (nodata or NaN)")
        if not parts:
            return ""
        n = len(self)
        return f"Not used: {' and '.join(parts)}; {n} labelled pixel{'s were' if n != 1 else ' was'} sampled."

    def counts(self) -> dict[str, int]:
        """Pixels per class, in class order."""
        n = np.bincount(self.y, minlength=len(self.classes))
        return {c: int(k) for c, k in zip(self.classes, n)}

    def lonlat(self) -> np.ndarray:
        """(N, 2) lon/lat of each pixel's centre."""
        from rasterio.warp import transform as warp_transform

        t = self.grid.transform
        xs = t.c + (self.cols + 0.5) * t.a + (self.rows + 0.5) * t.b
        ys = t.f + (self.cols + 0.5) * t.d + (self.rows + 0.5) * t.e
        lon, lat = warp_transform(self.grid.crs, "EPSG:4326", list(xs), list(ys))
        return np.column_stack([lon, lat])


def _check_color(color) -> str:
    from .vis import parse_color

    r, g, b, _ = parse_color(color)
    return "".join(f"{round(v * 255):02x}" for v in (r, g, b))


def _number(v, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise InputError(f"{what}: coordinates must be numbers, got {v!r}.")
    f = float(v)
    if not math.isfinite(f):
        raise InputError(f"{what}: coordinates must be finite, got {v!r}.")
    return f


def _position(p, what: str) -> list[float]:
    if not isinstance(p, (list, tuple)) or len(p) < 2:
        raise InputError(f"{what}: a position is [lon, lat], got {p!r}.")
    lon, lat = _number(p[0], what), _number(p[1], what)
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        raise InputError(
            f"{what}: ({lon}, {lat}) is not lon/lat in degrees (lon -180..180, lat -90..90, lon first)."
        )
    # Kept as given (ints stay ints) so GeoJSON round-trips exactly; numpy scalars become
    # Python numbers, which JSON (save, to_geojson, the map) can write.
    return [_plain(p[0]), _plain(p[1])]


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def _ring(ring, what: str) -> list[list[float]]:
    if not isinstance(ring, (list, tuple)):
        raise InputError(f"{what}: a polygon ring is a list of [lon, lat] positions, got {ring!r}.")
    pts = [_position(p, what) for p in ring]
    if len(pts) >= 2 and pts[0] != pts[-1]:
        pts.append(list(pts[0]))  # GeoJSON rings are closed; close what users leave open
    if len(pts) < 4:
        raise InputError(f"{what}: a polygon ring needs at least 3 distinct positions, got {len(ring)}.")
    return pts


def _geometry(obj, what: str) -> dict:
    """A (lon, lat) point, a (west, south, east, north) box, or a GeoJSON geometry/feature ->
    a checked GeoJSON geometry (Point, MultiPoint, Polygon or MultiPolygon)."""
    if isinstance(obj, Mapping):
        if obj.get("type") == "Feature":
            obj = obj.get("geometry")
            if not isinstance(obj, Mapping):
                raise InputError(f"{what}: the Feature has no geometry.")
        kind, coords = obj.get("type"), obj.get("coordinates")
        if kind not in _GEOMETRY_TYPES:
            raise InputError(
                f"{what}: geometry type {kind!r} cannot be a label; use one of {', '.join(_GEOMETRY_TYPES)} "
                "(or a (lon, lat) point / (west, south, east, north) box)."
            )
        if not isinstance(coords, (list, tuple)):
            raise InputError(f"{what}: the {kind} has no 'coordinates' list.")
        if kind == "Point":
            coords = _position(coords, what)
        elif kind == "MultiPoint":
            coords = [_position(p, what) for p in coords]
        elif kind == "Polygon":
            coords = [_ring(r, what) for r in coords]
        else:
            coords = [[_ring(r, what) for r in poly] for poly in coords]
        if kind != "Point" and not coords:
            raise InputError(f"{what}: the {kind} is empty.")
        return {"type": kind, "coordinates": coords}
    if isinstance(obj, (tuple, list, np.ndarray)) and len(obj) == 2:
        return {"type": "Point", "coordinates": _position(list(obj), what)}
    if isinstance(obj, (tuple, list, np.ndarray)) and len(obj) == 4:
        w, s, e, n = (_number(v, what) for v in obj)
        _position([w, s], what)
        _position([e, n], what)
        if not (w < e and s < n):
            raise InputError(
                f"{what}: a box is (west, south, east, north) with west < east and south < north, got {tuple(obj)}."
            )
        w, s, e, n = (_plain(v) for v in obj)
        return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    raise InputError(
        f"{what}: a label is a (lon, lat) point, a (west, south, east, north) box or a GeoJSON "
        f"geometry/feature, got {obj!r}."
    )


class Labels:
    """An ordered list of classes (each with a colour) and the geometries labelled with them."""

    def __init__(self, classes: Sequence[str], colors: Sequence | None = None):
        """`classes`: distinct names, in the order of the classifier's output bands; `colors`
        one per class (hex, CSS name or RGB), default a categorical palette."""
        if isinstance(classes, str) or not isinstance(classes, Sequence):
            raise InputError(f"classes must be a list of class names, got {classes!r}.")
        self._classes: list[str] = []
        self._colors: list[str] = []
        self._features: list[dict] = []
        if colors is not None and (isinstance(colors, str) or len(colors) != len(classes)):
            raise InputError(f"colors must give one colour per class ({len(classes)}), got {colors!r}.")
        for i, name in enumerate(classes):
            self.add_class(name, None if colors is None else colors[i])

    # ---- classes ---------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    @property
    def colors(self) -> list[str]:
        """Hex colours (no '#'), one per class."""
        return list(self._colors)

    def add_class(self, name: str, color=None) -> None:
        """Append a class (colour default: the next unused palette colour)."""
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"A class name must be a non-empty string, got {name!r}.")
        if name in self._classes:
            raise InputError(f"Class {name!r} exists already; class names must be distinct.")
        if color is None:
            free = [c for c in PALETTE if c not in self._colors]
            color = free[0] if free else PALETTE[len(self._classes) % len(PALETTE)]
        self._colors.append(_check_color(color))
        self._classes.append(name)

    def set_color(self, name: str, color) -> None:
        """Change a class's colour."""
        self._colors[self._index(name)] = _check_color(color)

    def remove_class(self, name: str) -> None:
        """Drop a class and every label of it."""
        i = self._index(name)
        del self._classes[i], self._colors[i]
        self._features = [f for f in self._features if f["properties"]["class"] != name]

    def _index(self, name: str) -> int:
        if name not in self._classes:
            raise InputError(
                f"Unknown class {name!r}: the classes are {self._classes}. Add it with add_class()."
            )
        return self._classes.index(name)

    # ---- labels ----------------------------------------------------------------------------
    def add(self, geometry, cls: str, **properties: Any) -> int:
        """Label `geometry` with class `cls`; returns the label's index. Extra keyword
        arguments are kept as GeoJSON properties."""
        self._index(cls)
        if "class" in properties:
            raise InputError("Pass the class as the second argument, not as a property.")
        geom = _geometry(geometry, f"Label {len(self._features)}")
        props = {"class": cls}
        if isinstance(geometry, Mapping) and geometry.get("type") == "Feature":
            extra = dict(geometry.get("properties") or {})
            extra.pop("class", None)
            props.update(extra)
        props.update(properties)
        self._features.append({"type": "Feature", "geometry": geom, "properties": props})
        return len(self._features) - 1

    def remove(self, index: int = -1) -> dict:
        """Remove label `index` (default the last one: undo) and return it as a GeoJSON Feature."""
        if not self._features:
            raise InputError("There are no labels to remove.")
        try:
            return self._features.pop(index)
        except (IndexError, TypeError):
            raise InputError(f"No label {index!r}: there are {len(self._features)} labels.") from None

    def clear(self, cls: str | None = None) -> None:
        """Remove every label (or every label of class `cls`)."""
        if cls is None:
            self._features.clear()
        else:
            self._index(cls)
            self._features = [f for f in self._features if f["properties"]["class"] != cls]

    def __len__(self) -> int:
        return len(self._features)

    def __iter__(self):
        return iter(copy.deepcopy(self._features))

    def __getitem__(self, index: int) -> dict:
        return copy.deepcopy(self._features[index])

    def counts(self) -> dict[str, int]:
        """Labels (geometries, not pixels) per class, in class order."""
        out = dict.fromkeys(self._classes, 0)
        for f in self._features:
            out[f["properties"]["class"]] += 1
        return out

    def __repr__(self) -> str:
        return f"<Labels {len(self)} labels: {self.counts()}>"

    def copy(self) -> Labels:
        """An independent copy."""
        return Labels.from_geojson(self.to_geojson())

    # ---- GeoJSON ---------------------------------------------------------------------------
    def to_geojson(self) -> dict:
        """A FeatureCollection, one Feature per label with its `class` property; the class list
        and colours ride along as `classes`/`colors` members so empty classes survive too."""
        return {
            "type": "FeatureCollection",
            "classes": list(self._classes),
            "colors": list(self._colors),
            "features": copy.deepcopy(self._features),
        }

    def save(self, path: str | os.PathLike) -> str:
        """Write `to_geojson()` to `path` (written to a temporary file, then renamed)."""
        path = os.fspath(path)
        with output_file(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_geojson(), f)
        return path

    @classmethod
    def from_geojson(cls, obj_or_path, classes: Sequence[str] | None = None, colors=None) -> Labels:
        """Labels from a FeatureCollection (dict, JSON text, or a path to a .geojson file)
        whose features carry a `class` property (a name, or an index into `classes`)."""
        obj = obj_or_path
        if isinstance(obj, (str, os.PathLike)):
            text = os.fspath(obj)
            if isinstance(obj, str) and text.lstrip().startswith("{"):
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise InputError(f"Labels GeoJSON text is not valid JSON: {exc}.") from None
            else:
                if not os.path.exists(text):
                    raise InputError(f"No such labels file: {text}.")
                try:
                    with open(text, encoding="utf-8") as f:
                        obj = json.load(f)
                except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise InputError(
                        f"Cannot read labels from {text}: {exc}. Is it a GeoJSON file?"
                    ) from None
        if not isinstance(obj, Mapping) or obj.get("type") != "FeatureCollection":
            got = obj.get("type") if isinstance(obj, Mapping) else type(obj).__name__
            raise InputError(f"Labels GeoJSON must be a FeatureCollection, got {got!r}.")
        feats = obj.get("features")
        if not isinstance(feats, list):
            raise InputError("Labels GeoJSON has no 'features' list.")
        names = list(classes) if classes is not None else obj.get("classes")
        if colors is None and classes is None:
            colors = obj.get("colors")
        if names is None:  # classes in order of first appearance
            names = []
            for f in feats:
                c = (f.get("properties") or {}).get("class") if isinstance(f, Mapping) else None
                if isinstance(c, str) and c not in names:
                    names.append(c)
        labels = cls(names, colors)
        for i, f in enumerate(feats):
            if not isinstance(f, Mapping) or f.get("type") != "Feature":
                raise InputError(f"Feature {i} is not a GeoJSON Feature.")
            props = dict(f.get("properties") or {})
            c = props.pop("class", None)
            if isinstance(c, float) and c.is_integer():  # 1.0: how some tools write an index
                c = int(c)
            if isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c < len(names):
                c = names[c]
            if c is None:
                raise InputError(
                    f"Feature {i} has no 'class' property (a class name); its properties: {props}."
                )
            if not isinstance(c, str):
                raise InputError(
                    f"Feature {i} has class {c!r}: give a class name, or an index 0..{len(names) - 1} "
                    f"into the classes {names}."
                )
            if c not in names:
                raise InputError(f"Feature {i} has class {c!r}, which is not one of the classes {names}.")
            geom = _geometry(f.get("geometry") or {}, f"Feature {i}")
            labels._features.append(
                {"type": "Feature", "geometry": geom, "properties": {"class": c, **props}}
            )
        return labels

    # ---- sampling --------------------------------------------------------------------------
    def sample(
        self, image: Image, proj=None, bands: Sequence[str] | None = None, patch_size: int | None = None
    ) -> Samples:
        """The pixels under the labels, on `proj`'s lattice (None: the image's native grid).

        Masked pixels are dropped; a pixel under several labels gets the class of the last.
        Labels outside the image and masked labelled pixels are counted (`Samples.unused()`)
        and named in a warning: a label that counts for nothing is never silent.
        `patch_size` (odd) also returns each pixel's neighbourhood (for patch classifiers).
        """
        from .region import grid_for

        if not self._features:
            raise InputError("There are no labels to sample: add some with labels.add(geometry, class).")
        bands = image.band_names if bands is None else list(bands)
        if patch_size is not None and (
            not isinstance(patch_size, int) or patch_size < 1 or patch_size % 2 == 0
        ):
            raise InputError(f"patch_size must be a positive odd integer, got {patch_size!r}.")
        full = grid_for(image, None, proj)
        rows, cols, cls, label = self._pixels(full)
        if rows.size == 0:
            raise RegionError(
                f"None of the {len(self)} labels covers a pixel of the image, which covers {image.bounds} "
                f"(lon/lat): label places inside the image.{self._swapped_hint(image.bounds)}"
            )
        # Last label wins on a pixel: keep each pixel's last occurrence (labels were visited in order).
        key = rows.astype(np.int64) * full.width + cols
        _, last = np.unique(key[::-1], return_index=True)
        keep = np.sort(key.size - 1 - last)
        rows, cols, cls = rows[keep], cols[keep], cls[keep]
        outside = len(self._features) - np.unique(label).size

        half = (patch_size or 1) // 2
        r0, r1 = int(rows.min()) - half, int(rows.max()) + half + 1
        c0, c1 = int(cols.min()) - half, int(cols.max()) + half + 1
        if (r1 - r0) * (c1 - c0) <= _MAX_WINDOW_PIXELS:
            win = full.window(c0, r0, c1 - c0, r1 - r0)
            block = image.read(win, bands)
            values, mask = block.data, np.ma.getmaskarray(block)

            def at(dr: int, dc: int):
                return values[:, rows - r0 + dr, cols - c0 + dc], mask[:, rows - r0 + dr, cols - c0 + dc]
        else:  # labels far apart on a big image: one small read per pixel neighbourhood
            n = 2 * half + 1
            reads = [
                image.read(full.window(int(c) - half, int(r) - half, n, n), bands) for r, c in zip(rows, cols)
            ]
            values = np.stack([np.asarray(b.data) for b in reads], axis=1)  # (bands, N, n, n)
            mask = np.stack([np.ma.getmaskarray(b) for b in reads], axis=1)
            idx = np.arange(rows.size)

            def at(dr: int, dc: int):
                return values[:, idx, half + dr, half + dc], mask[:, idx, half + dr, half + dc]

        x, m = at(0, 0)
        ok = ~m.any(axis=0)
        patches = None
        if patch_size is not None:
            offsets = range(-half, half + 1)
            patches = np.zeros((rows.size, len(bands), patch_size, patch_size), np.float32)
            for i, dr in enumerate(offsets):
                for j, dc in enumerate(offsets):
                    v, vm = at(dr, dc)
                    patches[:, :, i, j] = np.where(vm, 0.0, v).T  # masked -> 0, as Earth Engine sends
            patches = patches[ok]
        samples = Samples(
            x=np.ascontiguousarray(x.T[ok], dtype=np.float32),
            y=cls[ok].astype(np.int64),
            band_names=list(bands),
            classes=self.classes,
            grid=full,
            rows=rows[ok],
            cols=cols[ok],
            patches=patches,
            labels_outside=int(outside),
            masked_pixels=int((~ok).sum()),
        )
        unused = samples.unused()
        if unused:  # a label the user placed and that would silently count for nothing
            warnings.warn(unused, stacklevel=2)
        return samples

    def _swapped_hint(self, bounds) -> str:
        """A hint when points given as (lat, lon) would fall inside `bounds` read as (lon, lat)."""
        w, s, e, n = bounds
        for f in self._features:
            g = f["geometry"]
            pts = (
                [g["coordinates"]]
                if g["type"] == "Point"
                else g["coordinates"]
                if g["type"] == "MultiPoint"
                else []
            )
            if any(w <= p[1] <= e and s <= p[0] <= n for p in pts):
                return " Some points are inside it read as (lat, lon): give points as (lon, lat), lon first."
        return ""

    def _pixels(self, grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(rows, cols, class index, label index) of every pixel of `grid` under each label, in
        label order."""
        from rasterio import features
        from rasterio.warp import transform as warp_transform
        from rasterio.warp import transform_geom

        from .grid import snap_bounds

        rows, cols, cls, label = [], [], [], []
        inv = ~grid.transform
        # Every point in one projection call (thousands of clicked points are common).
        lonlat = [
            p[:2]
            for f in self._features
            if f["geometry"]["type"] in ("Point", "MultiPoint")
            for p in (
                [f["geometry"]["coordinates"]]
                if f["geometry"]["type"] == "Point"
                else f["geometry"]["coordinates"]
            )
        ]
        if lonlat:
            xs, ys = warp_transform("EPSG:4326", grid.crs, [p[0] for p in lonlat], [p[1] for p in lonlat])
            pc, pr = inv @ (np.asarray(xs, np.float64), np.asarray(ys, np.float64))
        n_pt = 0
        for i, f in enumerate(self._features):
            k = self._classes.index(f["properties"]["class"])
            kind = f["geometry"]["type"]
            if kind in ("Point", "MultiPoint"):
                m = 1 if kind == "Point" else len(f["geometry"]["coordinates"])
                c, r = pc[n_pt : n_pt + m], pr[n_pt : n_pt + m]
                n_pt += m
                ok = np.isfinite(c) & np.isfinite(r)
                rows.append(np.floor(r[ok]))
                cols.append(np.floor(c[ok]))
                cls.append(np.full(int(ok.sum()), k))
                label.append(np.full(int(ok.sum()), i))
                continue
            g = transform_geom("EPSG:4326", grid.crs, f["geometry"])
            flat = np.array([p[:2] for poly in _polygons(g) for ring in poly for p in ring], np.float64)
            bounds = (flat[:, 0].min(), flat[:, 1].min(), flat[:, 0].max(), flat[:, 1].max())
            win = snap_bounds(grid.crs, grid.transform, bounds)
            c0, r0 = (round(v) for v in inv @ (win.transform.c, win.transform.f))
            # Only the part inside the image: a polygon far larger than the image costs nothing.
            c1, r1 = min(c0 + win.width, grid.width), min(r0 + win.height, grid.height)
            c0, r0 = max(c0, 0), max(r0, 0)
            if c1 <= c0 or r1 <= r0:
                continue
            win = grid.window(c0, r0, c1 - c0, r1 - r0)
            shape = (win.height, win.width)
            # Pixels whose centres the polygon covers; a polygon too thin to cover any centre
            # still labels the pixels it touches, so a small drawn box is never lost.
            burn = features.rasterize([(g, 1)], out_shape=shape, transform=win.transform, dtype="uint8")
            if not burn.any():
                burn = features.rasterize(
                    [(g, 1)], out_shape=shape, transform=win.transform, dtype="uint8", all_touched=True
                )
            rr, cc = np.nonzero(burn)
            rows.append(rr + r0)
            cols.append(cc + c0)
            cls.append(np.full(rr.size, k))
            label.append(np.full(rr.size, i))
        if not rows:
            return tuple(np.zeros(0, np.int64) for _ in range(4))  # type: ignore[return-value]
        r, c, k, i = (np.concatenate(a).astype(np.int64) for a in (rows, cols, cls, label))
        inside = (r >= 0) & (c >= 0) & (r < grid.height) & (c < grid.width)
        return r[inside], c[inside], k[inside], i[inside]


def _polygons(g: dict) -> list:
    return [g["coordinates"]] if g["type"] == "Polygon" else g["coordinates"]
