"""The `ee-model` command: prepare models for Earth Engine's wire format, serve them, and more.

    ee-model prepare --source_dir SRC --dest_dir DST --input '{"serving_default_array:0": "array"}' --output out
    ee-model serve DST --name fcn --port 8501 [--host 127.0.0.1] [--token T]
    ee-model describe SRC

Subcommands register themselves: each module in `EXTENSIONS` that can be imported gets
`register(subparsers)` called (e.g. `ee_model_widgets.tfrecord.cli` adds `tfrecord ...`); a
command sets `func(args) -> int` and raises our own errors, which become one-line messages and
exit code 1. Nothing heavy (TensorFlow) is imported until a command runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from .errors import EEModelWidgetsError, InputError

#: Modules that add subcommands with `register(subparsers)`; missing ones are skipped.
EXTENSIONS = ["ee_model_widgets.tfrecord.cli"]


def _prepare(args: argparse.Namespace) -> int:
    for flag in ("source_dir", "dest_dir", "input", "output"):
        if not getattr(args, flag):
            raise InputError(f"Flag --{flag} must be set.")
    from .serving.prepare import prepare_model

    dest = prepare_model(
        args.source_dir,
        args.dest_dir,
        args.input,
        args.output,
        tag=args.tag or "serve",
        variables=args.variables or "/variables/variables",
        signature=args.signature,
    )
    print(
        f"Success: model at '{dest}' is ready to be hosted (ee-model serve {dest} --name NAME, or Vertex AI)."
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    from .serving.server import is_loopback, run_forever

    token = args.token or os.environ.get("EE_MODEL_TOKEN") or None
    if not is_loopback(args.host) and not token:
        print(
            f"warning: serving on {args.host} without a token: anyone who can reach this machine can use the "
            "model. Add --token (or set EE_MODEL_TOKEN).",
            file=sys.stderr,
        )

    def ready(handle, servable) -> None:
        sig = servable.signature()
        print(f"Serving {servable.source} as '{handle.name}'", flush=True)
        print(f"  model URL : {handle.url}", flush=True)
        print(f"  predict   : POST {handle.url}:predict", flush=True)
        print(f"  inputs    : {', '.join(i.describe() for i in sig.inputs.values())}", flush=True)
        print(f"  outputs   : {', '.join(o.describe() for o in sig.outputs.values())}", flush=True)
        if token:
            print("  auth      : Authorization: Bearer <token> required", flush=True)
        origins = ", ".join(args.allow_origin) or "none (browser requests are refused; see --allow-origin)"
        print(f"  web pages : {origins}", flush=True)
        print(
            f"  in Python : emw.Model.from_vertex_ai({handle.url!r}{', token=...' if token else ''}, "
            "input_tile_size=[...], output_bands={...})",
            flush=True,
        )
        print("Press Ctrl-C to stop.", flush=True)

    try:
        run_forever(
            args.model_dir,
            name=args.name,
            port=args.port,
            host=args.host,
            token=token,
            on_ready=ready,
            signature=args.signature,
            tag=args.tag,
            max_request_bytes=args.max_request_bytes,
            max_instances=args.max_instances,
            max_batch_size=args.max_batch_size,
            batch_window_ms=args.batch_window_ms,
            log_level=args.log_level,
            max_instance_elements=args.max_instance_elements,
            max_request_elements=args.max_request_elements,
            max_inflight_elements=args.max_inflight_elements,
            allow_origins=args.allow_origin,
            allow_hosts=args.allow_host,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
            send_timeout=args.send_timeout,
            keep_alive_timeout=args.keep_alive_timeout,
            max_connections=args.max_connections,
        )
    except KeyboardInterrupt:
        pass  # a second Ctrl-C while draining: uvicorn stopped at once
    print("Server stopped.", flush=True)
    return 0


def _describe(args: argparse.Namespace) -> int:
    from .serving.prepare import describe_model

    print(describe_model(args.model, tag=args.tag))
    return 0


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


def _positive_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        x = -1.0
    if not x > 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return x


def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(
            f"a port is an integer from 0 to 65535 (0 = any free port), got {text!r}"
        )
    return n


def build_parser() -> argparse.ArgumentParser:
    """The `ee-model` argument parser, with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="ee-model",
        description="Earth Engine's ee.Model workflow on your own machine: prepare, describe and serve models, "
        "and exchange Earth Engine TFRecords. `ee-model COMMAND --help` shows a command's flags.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"ee-model {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "prepare",
        help="wrap a SavedModel or .keras file so it takes and returns base64 TensorProtos (Earth Engine's format)",
        description="Same flags as `earthengine model prepare`. --input/--output: a comma list of names, or a "
        'JSON dict {"<model input/output or graph tensor>": "<Earth Engine band/property name>"}; a trailing :N '
        "is stripped from names. Run `ee-model describe SOURCE` to see the names.",
    )
    p.add_argument(
        "--source_dir", "--source-dir", dest="source_dir", help="SavedModel directory or .keras file"
    )
    p.add_argument(
        "--dest_dir", "--dest-dir", dest="dest_dir", help="new directory for the prepared SavedModel"
    )
    p.add_argument("--input", help="input mapping (comma list or JSON dict)")
    p.add_argument("--output", help="output mapping (comma list or JSON dict)")
    p.add_argument("--tag", default="serve", help="MetaGraph tag to load (default: serve)")
    p.add_argument(
        "--variables",
        default="/variables/variables",
        help="variables prefix relative to --source_dir (default: /variables/variables)",
    )
    p.add_argument(
        "--signature", default="serving_default", help="signature to wrap (default: serving_default)"
    )
    p.set_defaults(func=_prepare)

    s = sub.add_parser(
        "serve",
        help="serve a model over TF Serving's REST API (POST /v1/models/NAME:predict)",
        description="Serve a prepared or plain SavedModel, or a .keras file. Binds 127.0.0.1 unless --host says "
        "otherwise; with --token (or EE_MODEL_TOKEN) every request needs 'Authorization: Bearer <token>'.",
    )
    s.add_argument("model_dir", metavar="MODEL_DIR", help="SavedModel directory or .keras file")
    s.add_argument(
        "--name", help="model name in the URL (default: the folder name, or the file name without .keras/.h5)"
    )
    s.add_argument("--port", type=_port, default=8501, help="port (default 8501; 0 = any free port)")
    s.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)"
    )
    s.add_argument("--token", help="require this bearer token (default: $EE_MODEL_TOKEN, else none)")
    s.add_argument("--signature", help="serve only this signature (default: all)")
    s.add_argument("--tag", default="serve", help="MetaGraph tag of a SavedModel (default: serve)")
    s.add_argument(
        "--max-request-bytes",
        type=_positive_int,
        default=64 * 1024 * 1024,
        help="larger request bodies get 413 (default 67108864 = 64 MiB)",
    )
    s.add_argument(
        "--max-instances", type=_positive_int, default=1024, help="instances per request (default 1024)"
    )
    s.add_argument(
        "--max-batch-size", type=_positive_int, default=64, help="instances per model call (default 64)"
    )
    s.add_argument(
        "--batch-window-ms",
        type=float,
        default=2.0,
        help="wait this long for requests to batch together (default 2)",
    )
    s.add_argument(
        "--max-instance-elements",
        type=_positive_int,
        default=4 * 1024 * 1024,
        help="tensor elements per instance and input, checked before allocating; more gets 413 (default 4194304)",
    )
    s.add_argument(
        "--max-request-elements",
        type=_positive_int,
        default=32 * 1024 * 1024,
        help="tensor elements per request, all instances together; more gets 413 (default 33554432)",
    )
    s.add_argument(
        "--max-inflight-elements",
        type=_positive_int,
        default=128 * 1024 * 1024,
        help="tensor elements all requests in flight may hold together; more gets 503 (default 134217728)",
    )
    s.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let web pages from ORIGIN (e.g. http://localhost:8888, or *) call the server; repeatable. "
        "By default every request carrying an Origin header (i.e. from a browser) is refused",
    )
    s.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests addressed to this host name (default: the bound address, loopback "
        "names, and with --host 0.0.0.0 this machine's name and any IP address); repeatable; * turns the check off "
        "(behind a proxy that checks Host itself)",
    )
    s.add_argument(
        "--header-timeout",
        type=_positive_float,
        default=10.0,
        help="seconds to send request headers (default 10)",
    )
    s.add_argument(
        "--body-timeout",
        type=_positive_float,
        default=60.0,
        help="seconds to send a request body (default 60)",
    )
    s.add_argument(
        "--send-timeout",
        type=_positive_float,
        default=60.0,
        help="seconds a client may read none of its answer before it is closed (default 60)",
    )
    s.add_argument(
        "--keep-alive-timeout",
        type=_positive_float,
        default=15.0,
        help="seconds an idle connection stays open (default 15)",
    )
    s.add_argument(
        "--max-connections",
        type=_positive_int,
        default=1024,
        help="open connections; beyond, the oldest idle one is closed (default 1024)",
    )
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    s.set_defaults(func=_serve)

    d = sub.add_parser(
        "describe",
        help="list a model's signatures, inputs and outputs (the names prepare's --input/--output take)",
    )
    d.add_argument("model", metavar="MODEL", help="SavedModel directory or .keras file")
    d.add_argument("--tag", default="serve", help="MetaGraph tag (default: serve)")
    d.set_defaults(func=_describe)

    for module in EXTENSIONS:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue  # that part of the package is not installed / not built yet
        mod.register(sub)
    return parser


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub)command that `args` ran, e.g. `ee-model tfrecord export`'s."""
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = subs and getattr(args, subs[0].dest, None)
        if not chosen:
            return parser
        parser = subs[0].choices[chosen]


#: Flags whose value is a comma list: a space in the list splits it into stray arguments.
_LIST_FLAGS = ("--input", "--output", "--bands", "--region", "--tensor-depths")


def _unexpected(command: argparse.ArgumentParser, extra: list[str], argv: list[str]) -> str:
    """Say which arguments `command` does not take, and the likely slip behind them."""
    import difflib

    hints = []
    flags = [o for a in command._actions for o in a.option_strings if o.startswith("--")]
    for e in extra:
        close = (
            difflib.get_close_matches(e.split("=")[0], flags, n=1, cutoff=0.75) if e.startswith("-") else []
        )
        if close:
            hints.append(f"{e.split('=')[0]} is not a flag of this command; did you mean {close[0]}?")
    split_list = split_path = False
    for i, tok in enumerate(argv):
        if tok not in extra or tok.startswith("-"):
            continue
        prev, before = (argv[i - 1] if i else ""), (argv[i - 2] if i > 1 else "")
        if prev.endswith(",") or before in _LIST_FLAGS or ("=" in prev and prev.split("=")[0] in _LIST_FLAGS):
            split_list = True
        else:
            split_path = True
    if split_list:
        hints.append("A list is one argument without spaces (red,nir), or quote it ('red, nir').")
    if split_path and command.prog.endswith(" prepare"):
        hints.append(
            "prepare takes flags only, as `earthengine model prepare` does: "
            "--source_dir SRC --dest_dir DST --input NAMES --output NAMES."
        )
    hints.append(f"See `{command.prog} --help`.")
    return f"unexpected argument(s): {' '.join(extra)}. " + " ".join(hints)


def _glue_negative_values(argv: list[str]) -> list[str]:
    """`--region -67.7,-47.9,...`: argparse reads a value that starts with '-' as a flag (and says
    "expected one argument"); glue it to its flag, as `--region=-67.7,...` would be written."""
    out: list[str] = []
    for tok in argv:
        if out and out[-1] in _LIST_FLAGS and len(tok) > 1 and (tok[1].isdigit() or tok[1] == "."):
            out[-1] = f"{out[-1]}={tok}"
        else:
            out.append(tok)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `ee-model`; returns the exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ banner out of the output
    parser = build_parser()
    # argparse reports a subcommand's stray arguments with the top-level usage and no hint (the
    # classic slips: `prepare SRC DST`, `--input red, nir`); say them with the command's own usage.
    argv = _glue_negative_values(list(sys.argv[1:] if argv is None else argv))
    args, extra = parser.parse_known_args(argv)
    if extra:
        command = _command_parser(parser, args)
        command.error(_unexpected(command, extra, argv))
    try:
        return int(args.func(args) or 0)
    except EEModelWidgetsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
