"""Where `Model.from_vertex_ai` and its Earth Engine spellings find their constructors.

The REST transport (`serving/client.py`) and the models built on it (`serving/rest_models.py`)
sit above `core`: a REST model wraps a REST predictor in a core `Model`. `core` never imports them: the
package root, which Python runs before any submodule, provides a resolver here, so the import
line stays one-way (see docs/architecture.md, "The REST line").
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ModelError

_resolver: Callable[[str], Callable | None] | None = None


def provide(resolver: Callable[[str], Callable | None]) -> None:
    """Install `resolver(name) -> constructor or None` (done once, by the package root)."""
    global _resolver
    _resolver = resolver


def constructor(name: str) -> Callable:
    """The REST model constructor called `name` (e.g. "from_vertex_ai"); a clear error when absent."""
    if _resolver is None:
        raise ModelError(
            "REST models need ee_model_widgets.serving.rest_models, and no provider is installed "
            "(import ee_model_widgets, or wrap your endpoint with Model.from_callable)."
        )
    try:
        fn = _resolver(name)
    except ImportError as exc:
        raise ModelError(
            f"REST models need ee_model_widgets.serving.rest_models, which could not be imported ({exc}). "
            "Reinstall ee_model_widgets, or wrap your endpoint with Model.from_callable."
        ) from None
    if fn is None:
        raise ModelError(
            f"ee_model_widgets.serving.rest_models has no {name}(): this installation is incomplete; "
            "wrap your endpoint with Model.from_callable meanwhile."
        )
    return fn
