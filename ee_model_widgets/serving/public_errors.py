"""Error texts fit to send to a client (`public_message`): the server log keeps the full story.

Its own module because both the wire protocol and the servables (TensorFlow's errors) use it.
"""

from __future__ import annotations

import re

# Lines of TensorFlow's messages that are graph dumps or Python stacks, not the error itself.
_DUMP_LINE = re.compile(r"^\s|Detected at node|most recent call last|<stack traces unavailable>|^Traceback")
_NODE = re.compile(r"\[\[\{\{node [^]]*\}\}\]\]|\[Op:__inference\w*\]")
# Absolute paths (not URL paths such as /v1/models/x, which start with /v<digit>/)
_PATH = re.compile(r"(?<![\w.)(-])(?:[A-Za-z]:)?(?![\\/]v\d+[\\/])(?:[\\/][\w.@~+-]+){2,}[\\/]?|file://\S+")


def public_message(message: str, limit: int = 500) -> str:
    """An error text fit to send to a client: one line, no filesystem paths, no TensorFlow graph
    dumps or stacks, at most `limit` characters (the server log keeps the full story)."""
    lines = [ln for ln in message.splitlines() if ln.strip() and not _DUMP_LINE.search(ln)]
    text = _PATH.sub("<path>", _NODE.sub("", " ".join(lines)))
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " ..."
