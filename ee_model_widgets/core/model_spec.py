"""`ModelSpec`: how a model was built, so that another process can build it again (core/portable.py)."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from ..errors import ModelError


@dataclass
class ModelSpec:
    """What a worker needs to load a model again: `kind` and `source`, plus constructor options.

    kind: "keras" (source: a .keras/.h5 path, a keras.Model, or the bytes of a .keras file),
    "saved_model" (a directory path), "callable" (a picklable function, e.g. a REST predictor).
    """

    kind: str
    source: Any
    options: dict = field(default_factory=dict)

    def portable(self) -> ModelSpec:
        """This spec with an in-memory Keras model replaced by the bytes of its .keras file."""
        if self.kind != "keras" or isinstance(self.source, (str, bytes, os.PathLike)):
            return self
        cached = self.options.get("_bytes")
        if cached is None:
            with tempfile.TemporaryDirectory() as d:
                p = os.path.join(d, "model.keras")
                try:
                    self.source.save(p)
                except Exception as exc:  # noqa: BLE001 - keras raises many types
                    raise ModelError(
                        f"Cannot send Keras model {getattr(self.source, 'name', '?')!r} to the workers: saving it "
                        f"as .keras failed ({type(exc).__name__}: {exc}). Save it yourself and load it with "
                        "Model.from_keras('model.keras') so the workers load the file."
                    ) from None
                with open(p, "rb") as fh:
                    cached = fh.read()
            self.options["_bytes"] = cached  # serialised once per Model, not per export
        return ModelSpec("keras", cached, self._public_options())

    def _public_options(self) -> dict:
        return {k: v for k, v in self.options.items() if not k.startswith("_")}
