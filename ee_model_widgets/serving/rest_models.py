"""REST models: `from_vertex_ai`, `from_ai_platform_predictor` and Earth Engine's spellings
(`fromVertexAi`, `fromAiPlatformPredictor`, with Earth Engine's positional order).

Each wraps a `RestPredictor` (`serving/client.py`, the transport) in a core `Model`. `core`
reaches these through `core/remote.py`, wired by the package root (docs/architecture.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..core.model import BAND_INPUTS, Model
from ..errors import InputError
from . import protocol
from .client import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_PAYLOAD_BYTES,
    RestPredictor,
    _needs_google_auth,
)
from .transport import _pool_manager, read_reply

MAX_METADATA_BYTES = 16 << 20  # a model's signature takes kilobytes

# ---- Model constructors ------------------------------------------------------------------------------


def discover_signature(
    url: str, headers: Mapping[str, str] | None = None, timeout: float = 5.0
) -> dict | None:
    """Best effort: input/output names from a TF-Serving-style `GET <model>/metadata`, else None."""
    base = url.rsplit(":", 1)[0] if url.rsplit("/", 1)[-1].count(":") else url
    try:
        with _pool_manager(1, timeout) as http:
            resp = http.request("GET", base + "/metadata", headers=dict(headers or {}), preload_content=False)
            # a trickling or endless reply must not hold up the constructor, nor fill memory
            data = read_reply(resp, base, timeout, MAX_METADATA_BYTES)
        if resp.status != 200:
            return None
        defs = protocol.loads(data)["metadata"]["signature_def"]["signature_def"]
        sig = defs.get("serving_default") or next(iter(defs.values()))
        return {"inputs": list(sig["inputs"]), "outputs": list(sig["outputs"])}
    except Exception:  # noqa: BLE001 - any endpoint without TF Serving metadata
        return None


def _model_from_predictor(predictor: RestPredictor, label: str, ee_params: dict[str, Any], discover: bool):
    kwargs = dict(ee_params)
    if "input_names" not in kwargs:
        # Earth Engine sends every band under its own name whatever the endpoint is; a TF-Serving
        # `/metadata` (ours, TF Serving) can say otherwise, e.g. one stacked input.
        kwargs["input_names"] = BAND_INPUTS
        if discover and not _needs_google_auth(predictor.url):
            found = discover_signature(predictor.url, predictor._headers, timeout=min(predictor.timeout, 5.0))
            if found and found["inputs"]:
                kwargs["input_names"] = found["inputs"]
                if len(found["outputs"]) > 1:
                    kwargs.setdefault("output_names", found["outputs"])
    kwargs.setdefault("name", label)
    kwargs.setdefault("max_batch_size", None)  # the predictor splits by payload size itself
    kwargs.setdefault("thread_safe", True)  # one HTTP request per call: concurrent tiles overlap
    model = Model.from_callable(predictor, fingerprint=predictor.fingerprint, **kwargs)
    # EE's outputMultiplier sizes requests so that replies stay under the payload limit too;
    # it changes how instances are grouped, never the predictions (so not the fingerprint).
    predictor.output_multiplier = model.params.output_multiplier
    return model


def _take(kwargs: dict[str, Any], snake: str, value: Any, camel: str, default: Any) -> Any:
    """The value of a parameter given as `snake` (`value`, None = not given) or as `camel` in
    `kwargs` (popped); both given is an error, as for every other parameter."""
    if camel in kwargs:
        if value is not None:
            raise InputError(
                f"Parameter given twice: {snake!r} and {camel!r} mean the same thing; keep only one."
            )
        value = kwargs.pop(camel)
    return default if value is None else value


def from_vertex_ai(
    endpoint: str,
    *,
    max_payload_bytes: int | None = None,
    payload_format: str | None = None,
    timeout: float = 60.0,
    max_concurrency: int | None = None,
    max_retries: int | None = None,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    discover: bool = True,
    **ee_params: Any,
):
    """A `Model` whose predictions come from a REST endpoint, like `ee.Model.fromVertexAi`.

    `endpoint`: `http(s)://host/v1/models/NAME` (ee-model serve, TF Serving, KServe) or a Vertex AI
    name `projects/P/locations/L/endpoints/E`. `ee_params` are the EE parameters of
    `Model.from_callable` (snake_case or camelCase, `maxPayloadBytes`/`payloadFormat` too; the
    same parameter under both spellings is an error). `max_payload_bytes` defaults to
    1 500 000 and `payload_format` to SERIALIZED_TF_TENSORS, as in Earth Engine.
    `token`: bearer token of an `ee-model serve --token` server. Inputs: Earth Engine's request,
    one input per band named after it, unless `input_names` says otherwise or `discover` reads
    other names from the endpoint's TF-Serving `/metadata` (e.g. one stacked input).
    """
    max_payload_bytes = _take(
        ee_params, "max_payload_bytes", max_payload_bytes, "maxPayloadBytes", DEFAULT_MAX_PAYLOAD_BYTES
    )
    payload_format = _take(
        ee_params, "payload_format", payload_format, "payloadFormat", "SERIALIZED_TF_TENSORS"
    )
    max_concurrency = _take(
        ee_params, "max_concurrency", max_concurrency, "maxConcurrency", DEFAULT_MAX_CONCURRENCY
    )
    max_retries = _take(ee_params, "max_retries", max_retries, "maxRetries", 4)
    predictor = RestPredictor(
        endpoint,
        payload_format=payload_format,
        max_payload_bytes=max_payload_bytes,
        timeout=timeout,
        max_concurrency=max_concurrency,
        max_retries=max_retries,
        token=token,
        headers=headers,
    )
    m = re.search(r"/(?:models|endpoints)/([^/:]+)", "/" + endpoint.strip())
    label = m[1] if m else endpoint
    return _model_from_predictor(predictor, label, ee_params, discover)


def from_ai_platform_predictor(
    *,
    project_id: str | None = None,
    model_name: str | None = None,
    version: str | None = None,
    region: str | None = None,
    endpoint_url: str | None = None,
    project_name: str | None = None,
    **ee_params: Any,
):
    """A `Model` served like `ee.Model.fromAiPlatformPredictor` (always SERIALIZED_TF_TENSORS).

    Cloud AI Platform was shut down in January 2025; this keeps ported code running against a
    compatible server: `endpoint_url` is the full model URL (e.g. an `ee-model serve` URL), else
    `https://{region}-ml.googleapis.com/v1/projects/{project_id}/models/{model_name}[/versions/{version}]`
    (region default us-central1). `project_name` is EE's deprecated alias of `project_id`.
    camelCase names work too (one spelling per parameter); `Model.fromAiPlatformPredictor` also
    takes Earth Engine's positional order.
    """
    project_id = _take(ee_params, "project_id", project_id, "projectId", None)
    model_name = _take(ee_params, "model_name", model_name, "modelName", None)
    project_name = _take(ee_params, "project_name", project_name, "projectName", None)
    endpoint_url = _take(ee_params, "endpoint_url", endpoint_url, "endpointUrl", None)
    if project_id and project_name and project_id != project_name:
        raise InputError(
            f"project_id {project_id!r} and project_name {project_name!r} differ: project_name is Earth "
            "Engine's deprecated alias of project_id; give only project_id."
        )
    project = project_id or project_name
    if endpoint_url:
        endpoint = endpoint_url
    else:
        if not project or not model_name:
            raise InputError(
                "from_ai_platform_predictor needs project_id and model_name (or endpoint_url=<model URL>, e.g. "
                "the .url of `ee_model_widgets.serving.serve(...)`)."
            )
        endpoint = (
            f"https://{region or 'us-central1'}-ml.googleapis.com/v1/projects/{project}/models/{model_name}"
        )
        if version:
            endpoint += f"/versions/{version}"
    if "payload_format" in ee_params or "payloadFormat" in ee_params:
        raise InputError(
            "from_ai_platform_predictor always sends SERIALIZED_TF_TENSORS; use from_vertex_ai for other formats."
        )
    return from_vertex_ai(endpoint, **ee_params)


# ---- Earth Engine's positional order --------------------------------------------------------------

_EE_MODEL_ARGS = (
    "inputProperties",
    "inputTypeOverride",
    "inputShapes",
    "proj",
    "fixInputProj",
    "inputTileSize",
    "inputOverlapSize",
    "outputTileSize",
    "outputBands",
    "outputProperties",
    "outputMultiplier",
)
#: The positional order of `ee.Model.fromVertexAi` / `ee.Model.fromAiPlatformPredictor`.
VERTEX_AI_ARGS = ("endpoint", *_EE_MODEL_ARGS, "maxPayloadBytes", "payloadFormat")
AI_PLATFORM_ARGS = ("projectName", "projectId", "modelName", "version", "region", *_EE_MODEL_ARGS)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _positional(args: tuple, kwargs: dict[str, Any], order: tuple[str, ...], what: str) -> dict[str, Any]:
    """Keywords from arguments given in Earth Engine's positional `order` (None = not given, as
    in Earth Engine); an argument also given by keyword (either spelling) is an error."""
    if len(args) > len(order):
        raise InputError(
            f"{what} takes at most {len(order)} positional arguments ({', '.join(order)}), got {len(args)}."
        )
    out = dict(kwargs)
    for name, value in zip(order, args):
        if value is None:
            continue
        for spelling in {name, _snake(name)}:
            if spelling in kwargs:
                raise InputError(
                    f"{what}: {name!r} given both by position and as {spelling}=...; keep only one."
                )
        out[name] = value
    return out


def fromVertexAi(*args: Any, **kwargs: Any):  # noqa: N802 - Earth Engine's spelling
    """`ee.Model.fromVertexAi` with Earth Engine's positional order (`VERTEX_AI_ARGS`):
    `fromVertexAi(endpoint, inputProperties, inputTypeOverride, inputShapes, proj, ...)`."""
    kw = _positional(args, kwargs, VERTEX_AI_ARGS, "Model.fromVertexAi")
    if "endpoint" not in kw:
        raise InputError("Model.fromVertexAi needs an endpoint (its first argument).")
    return from_vertex_ai(kw.pop("endpoint"), **kw)


def fromAiPlatformPredictor(*args: Any, **kwargs: Any):  # noqa: N802 - Earth Engine's spelling
    """`ee.Model.fromAiPlatformPredictor` with Earth Engine's positional order (`AI_PLATFORM_ARGS`):
    `fromAiPlatformPredictor(projectName, projectId, modelName, version, region, inputProperties, ...)`."""
    kw = _positional(args, kwargs, AI_PLATFORM_ARGS, "Model.fromAiPlatformPredictor")
    return from_ai_platform_predictor(**kw)
