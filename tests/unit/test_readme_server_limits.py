"""The README's table of server limits states the defaults `ee-model serve` really has."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from ee_model_widgets.cli import build_parser
from ee_model_widgets.serving import server
from ee_model_widgets.serving.batcher import Batcher
from ee_model_widgets.serving.connections import ConnectionLimits
from ee_model_widgets.serving.protocol import JSON_VALUE_ELEMENTS

README = Path(__file__).resolve().parents[2] / "README.md"


def limits_table() -> dict[str, tuple[str, str]]:
    """limit -> (default, flag) from the README table under '| limit | default | flag |'."""
    text = README.read_text(encoding="utf-8")
    start = text.index("| limit | default | flag | beyond it |")
    rows = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        limit, default, flag, _ = (c.strip() for c in line.strip("|").split("|"))
        rows[limit.split(" (")[0]] = (default, flag.strip("`"))
    return rows


def first_number(text: str) -> float:
    """'67 108 864 bytes (64 MiB)' -> 67108864; '10 s' -> 10."""
    m = re.match(r"[\d ]+(\.\d+)?", text)
    assert m, f"no number at the start of {text!r}"
    return float(m.group(0).replace(" ", ""))


def serve_defaults() -> dict:
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["serve"]
    return {o: a.default for a in sub._actions for o in a.option_strings}


ROWS = limits_table()


@pytest.mark.parametrize("limit", [k for k, (_, flag) in ROWS.items() if flag])
def test_each_flagged_limit_states_the_cli_default(limit):
    default, flag = ROWS[limit]
    expected = serve_defaults()[flag]
    if limit.startswith("JSON numbers and lists"):  # derived from the flag, as the row says
        assert f"`{flag}` / {JSON_VALUE_ELEMENTS}" in default
        expected //= JSON_VALUE_ELEMENTS
    assert first_number(default) == expected, (limit, default, expected)


def test_the_cli_defaults_are_the_servers_own():
    cli = serve_defaults()
    limits = ConnectionLimits()
    assert cli["--max-request-bytes"] == server.DEFAULT_MAX_REQUEST_BYTES
    assert cli["--max-instances"] == server.DEFAULT_MAX_INSTANCES
    assert cli["--max-instance-elements"] == server.DEFAULT_MAX_INSTANCE_ELEMENTS
    assert cli["--max-request-elements"] == server.DEFAULT_MAX_REQUEST_ELEMENTS
    assert cli["--max-inflight-elements"] == server.DEFAULT_MAX_INFLIGHT_ELEMENTS
    for name in ("header_timeout", "body_timeout", "send_timeout", "keep_alive_timeout", "max_connections"):
        assert cli["--" + name.replace("_", "-")] == getattr(limits, name), name


def test_limits_without_a_flag():
    assert first_number(ROWS["request headers"][0]) == ConnectionLimits().max_header_bytes
    queue = inspect.signature(Batcher).parameters["max_queue"].default
    assert first_number(ROWS["requests queued for the model"][0]) == queue
