"""`image_fingerprint`: the string that names an image's pixels in cache keys."""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .image import Image


def image_fingerprint(image: Image) -> str:
    """A string identifying an image's pixels, for cache keys.

    Uses `image.fingerprint()` if the image has one (band views: their parent's fingerprint
    and band mapping); files are identified by path, size and modification time; other
    images by a token stored on the object (so the cache is shared by everything reading
    that same object).
    """
    fp = getattr(image, "fingerprint", None)
    if callable(fp):
        fp = fp()
    if isinstance(fp, str):
        return fp
    extra = f"{image.band_names}|{sorted(image.categorical_bands)}"
    path = getattr(image, "path", None)
    if isinstance(path, str) and os.path.exists(path):
        st = os.stat(path)
        return f"file:{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}:{extra}"
    token = image.__dict__.get("_emw_token") if hasattr(image, "__dict__") else None
    if token is None:
        token = uuid.uuid4().hex
        try:
            image._emw_token = token
        except AttributeError:
            token = f"id{id(image)}"
    return f"obj:{token}|{extra}"
