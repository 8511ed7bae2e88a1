"""The panel's Model tab: the model picker, fixInputProj / tile size / overlap, and models added
from a path or an endpoint; `ModelEntry` is a model in the picker.
"""

from __future__ import annotations

import html
import math
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import ipywidgets as widgets

from ..errors import InputError
from .tab_host import HELP_STYLE, help_html

_Self = TypeVar("_Self")


#: Order of the demo models in the picker (the first is shown when the panel opens).
DEMO_ORDER = ["landcover", "fcn", "downscale", "ndvi"]


@dataclass
class ModelEntry:
    """A model in the picker: loaded (`model`) or loaded on first use (`loader`)."""

    name: str
    model: Any = None
    loader: Callable[[], Any] | None = None
    vis_params: dict | None = None  # default vis for one band (its "bands" entry, else the first band)
    class_names: Sequence[str] | None = None  # names of class values 0..n-1 of class bands
    description: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def get(self):
        """The loaded model (loading it now if needed; thread-safe, loads once)."""
        with self.lock:
            if self.model is None:
                if self.loader is None:
                    raise InputError(f"Model {self.name!r} has neither a model nor a loader.")
                self.model = self.loader()
            return self.model


def load_model(spec: str, **ee_params: Any):
    """A model from a string: an http(s) endpoint / Vertex name, a SavedModel directory, or a .keras/.h5 file."""
    from ..core.model import Model

    s = str(spec).strip()
    if not s:
        raise InputError("Type a model path (.keras/.h5 file or SavedModel folder) or an endpoint URL first.")
    if s.startswith(("http://", "https://")) or s.startswith("projects/"):
        return Model.from_vertex_ai(s, **ee_params)
    path = os.path.expanduser(s)
    if os.path.isdir(path):
        return Model.from_saved_model(path, **ee_params)
    return Model.from_keras(path, **ee_params)


def _demo_entries() -> list[ModelEntry]:
    from .. import demo

    entries = []
    for name in DEMO_ORDER:
        vis = dict(demo.VIS_PARAMS[name])
        out = next(iter(demo.MODEL_PARAMS[name]["output_bands"]))
        class_names = None
        if name == "landcover":
            # The demo's suggested landcover palette colours the argmax class band.
            vis = {"bands": [f"{out}_class"], "min": 0, "palette": vis["palette"], "categorical": True}
            class_names = list(demo.LANDCOVER_CLASSES)
        else:
            vis["bands"] = [out]
        entries.append(
            ModelEntry(
                name,
                loader=(lambda n=name: demo.model(n)),
                vis_params=vis,
                class_names=class_names,
                description=demo.MODELS[name],
            )
        )
    return entries


def _normalise_models(models) -> list[ModelEntry]:
    if models is None:
        return _demo_entries()
    if isinstance(models, ModelEntry):
        return [models]
    if isinstance(models, Mapping):
        items = list(models.items())
    elif isinstance(models, (str, os.PathLike)) or hasattr(models, "predict_image"):
        items = [(None, models)]
    else:
        items = [(None, m) for m in models]
    entries = []
    seen: set[str] = set()
    for name, m in items:
        if isinstance(m, ModelEntry):
            entry = m
        elif isinstance(m, (str, os.PathLike)):
            spec = os.fspath(m)
            entry = ModelEntry(
                str(name or os.path.basename(spec.rstrip("/")) or spec), loader=lambda s=spec: load_model(s)
            )
        elif hasattr(m, "predict_image"):
            entry = ModelEntry(str(name or getattr(m, "name", None) or f"model {len(entries) + 1}"), model=m)
        else:
            raise InputError(
                f"explore(models=...) takes emw.Models or model paths/URLs (alone, in a list or a dict "
                f"name -> model), got {type(m).__name__}."
            )
        base, k = entry.name, 2
        while entry.name in seen:
            entry.name = f"{base} ({k})"
            k += 1
        seen.add(entry.name)
        entries.append(entry)
    if not entries:
        raise InputError("explore(models=...) got no model: pass at least one, or None for the demo models.")
    return entries


class ModelTab:
    """The Model tab of `Panel` (a mixin: its widgets and handlers, on the panel's state)."""

    def _build_model_tab(self, names: list[str]) -> widgets.VBox:
        self.model_picker = widgets.Dropdown(options=names, value=names[0], description="Model")
        self.model_picker.add_class("emw-model-picker")
        self.model_info = widgets.HTML("")
        self.fix_input_proj = widgets.Checkbox(value=False, description="fixInputProj", indent=False)
        self.fix_input_proj.add_class("emw-fix-input-proj")
        self.resampling = widgets.Dropdown(
            options=[("nearest (as in EE)", "nearest"), ("bilinear", "bilinear"), ("bicubic", "bicubic")],
            value="nearest",
            description="Resampling",
        )
        self.resampling.add_class("emw-resampling")
        self.tile_size = widgets.BoundedIntText(value=256, min=1, max=4096, description="Tile size")
        self.tile_size.add_class("emw-tile-size")
        self.overlap = widgets.BoundedIntText(value=0, min=0, max=1024, description="Overlap")
        self.overlap.add_class("emw-overlap")
        params_help = help_html(
            "fixInputProj: feed the model pixels in its own grid (native scale) at every zoom, "
            "instead of the map's pixels. Resampling: how the image is brought to those pixels: "
            "nearest neighbour, Earth Engine's default, or interpolated (image.resample(...) in EE). "
            "Tile size: core pixels per model call (x = y). Overlap: "
            "extra pixels read on each edge and cropped from each result, so tiles join without seams."
        )
        self.model_path = widgets.Text(placeholder=".keras/.h5 file or SavedModel folder", description="Path")
        self.model_path.add_class("emw-model-path")
        self.load_model_button = widgets.Button(
            description="Load", icon="folder-open", layout={"width": "90px"}
        )
        self.load_model_button.add_class("emw-load-model")
        self.endpoint = widgets.Text(
            placeholder="http://127.0.0.1:8501/v1/models/NAME", description="Endpoint"
        )
        self.endpoint.add_class("emw-endpoint")
        self.connect_button = widgets.Button(description="Connect", icon="plug", layout={"width": "90px"})
        self.connect_button.add_class("emw-connect")
        return widgets.VBox(
            [
                self.model_picker,
                self.model_info,
                self.fix_input_proj,
                self.resampling,
                self.tile_size,
                self.overlap,
                params_help,
                widgets.HTML("<b>Add a model</b>"),
                widgets.HBox([self.model_path, self.load_model_button]),
                widgets.HBox([self.endpoint, self.connect_button]),
            ]
        )

    def add_model(
        self: _Self,
        name: str,
        model,
        *,
        vis_params: dict | None = None,
        class_names: Sequence[str] | None = None,
        select: bool = True,
    ) -> _Self:
        """Add a model to the picker (an `emw.Model`, or a path/URL string loaded on first use).

        `vis_params`: how to show one of its bands by default (its `bands` entry, else the
        first band). `class_names`: names of class values 0..n-1 for class bands.
        """
        name = str(name)
        if isinstance(model, str):
            spec = model
            entry = ModelEntry(
                name, loader=lambda: load_model(spec), vis_params=vis_params, class_names=class_names
            )
        else:
            if not hasattr(model, "predict_image"):
                raise InputError(
                    f"add_model({name!r}, ...) needs an emw.Model or a path/URL, got {type(model).__name__}."
                )
            entry = ModelEntry(name, model=model, vis_params=vis_params, class_names=class_names)
        with self._lock:
            self._models[name] = entry
            options = list(self._models)
        with self._quietly():
            self.model_picker.options = options
            self.compare_model.options = options
        if select:
            self.model_picker.value = name  # observer applies it
            if self.model_picker.value == name and self._applied.get("model") == name:
                self._request_apply()  # re-added under the same name: show the new one
        return self

    def _update_model_info(self, entry: ModelEntry, model) -> None:
        lines = [html.escape(entry.description)] if entry.description else []
        if model is not None:
            p = model.params
            ins = ", ".join(s.name for s in model.inputs) if model.inputs is not None else "one per band"
            lines.append(
                f"inputs: {html.escape(ins)} · tile {list(p.input_tile_size)} + overlap {list(p.overlap)} "
                f"→ output tile {list(p.output_tile_size)}"
            )
            if self.prediction is not None:
                lines.append(f"outputs: {html.escape(', '.join(self.prediction.band_names))}")
        self.model_info.value = f"<div style='{HELP_STYLE}'>" + "<br>".join(lines) + "</div>"

    # ---- adding models and images from the fields ----------------------------------------------
    def _load_from_field(self, text: str, kind: str) -> None:
        spec = str(text).strip()

        def job():
            try:
                model = load_model(spec)
            except Exception as exc:  # noqa: BLE001
                self._set_error(exc, f"loading {spec}")
                return
            name = getattr(model, "name", None) or os.path.basename(spec.rstrip("/")) or spec
            self.add_model(self._unique_name(name), model)

        self._submit("load", f"Loading {spec}", job)


def with_params(
    model, *, fix_input_proj: bool | None = None, tile: int | None = None, overlap: int | None = None
):
    """`model` with other EE parameters; shares the loaded model (and its call lock and stats).

    `tile`/`overlap` are square sizes in pixels (per-edge overlap, EE's API reading). When
    the model's output tile differs from its input tile (e.g. 256 -> 128), the ratio is kept.
    The model's own checks run again (e.g. a fixed input shape), so a bad size raises here.
    """
    p = model.params
    changes: dict = {}
    if fix_input_proj is not None and bool(fix_input_proj) != p.fix_input_proj:
        changes["fix_input_proj"] = bool(fix_input_proj)
    cur_tile = p.input_tile_size
    new_tile = cur_tile
    if tile is not None and (cur_tile is None or (int(tile), int(tile)) != tuple(cur_tile)):
        t = int(tile)
        if t < 1:
            raise InputError(f"Input tile size must be a positive number of pixels, got {tile}.")
        new_tile = (t, t)
        changes["input_tile_size"] = new_tile
        if cur_tile is not None and p.output_tile_size is not None:
            rx = p.output_tile_size[0] / cur_tile[0]
            ry = p.output_tile_size[1] / cur_tile[1]
            ox, oy = t * rx, t * ry
            if not (float(ox).is_integer() and float(oy).is_integer()):
                raise InputError(
                    f"Model {model.name!r} turns {list(cur_tile)} px input tiles into {list(p.output_tile_size)} px "
                    f"outputs: the input tile size must keep that ratio whole, {t} px does not "
                    f"(try {int(math.ceil(t * rx) / rx)})."
                )
            changes["output_tile_size"] = (int(ox), int(oy))
    if overlap is not None and (int(overlap), int(overlap)) != tuple(p.overlap):
        o = int(overlap)
        if o < 0:
            raise InputError(f"Overlap must be 0 or more pixels per edge, got {overlap}.")
        changes["overlap"] = (o, o)
        changes["overlap_as_given"] = (o, o)
        changes["overlap_mode"] = "per_edge"
    if not changes:
        return model
    new_params = p.replace(**changes)
    tile_now = new_params.input_tile_size
    if tile_now is not None and (
        new_params.overlap[0] >= tile_now[0] or new_params.overlap[1] >= tile_now[1]
    ):
        raise InputError(
            f"Overlap {list(new_params.overlap)} px per edge must be smaller than the input tile size "
            f"{list(tile_now)}: lower the overlap or raise the tile size."
        )
    return model.replace(**changes)
