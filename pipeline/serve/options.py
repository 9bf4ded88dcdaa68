"""``pipeline run``'s serving options, merged over the graph file's ``serve:`` section."""

from __future__ import annotations

import argparse
from typing import Any

from pipeline.serve.config import ServeConfig

__all__ = ["add_serve_arguments", "serve_config"]


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--serve`` and its companions to ``pipeline run``."""
    group = parser.add_argument_group(
        "serving (Viam's vision, ML model and camera APIs; overrides the file's serve:)"
    )
    group.add_argument(
        "--serve", metavar="HOST:PORT", help="serve the graph on this address, e.g. 127.0.0.1:8081"
    )
    group.add_argument("--unix-socket", metavar="PATH", help="also serve on a Unix socket")
    group.add_argument("--tls-cert", metavar="FILE", help="TLS certificate (PEM)")
    group.add_argument("--tls-key", metavar="FILE", help="TLS private key (PEM)")
    group.add_argument("--api-key-file", metavar="FILE", help='API keys, lines of "KEY_ID KEY"')
    group.add_argument(
        "--allow-public-without-keys",
        action="store_true",
        help="serve a non-loopback address without API keys (anyone reaching it may call it)",
    )


def serve_config(args: argparse.Namespace, from_file: ServeConfig | None) -> ServeConfig | None:
    """The effective config: the file's section with the command line's values over it;
    None when neither asks to serve.

    Raises:
        ValueError: only one of --tls-cert/--tls-key.
    """
    asked = any(
        getattr(args, name, None)
        for name in ("serve", "unix_socket", "tls_cert", "tls_key", "api_key_file")
    )
    if from_file is None and not asked:
        return None
    if bool(getattr(args, "tls_cert", None)) != bool(getattr(args, "tls_key", None)):
        raise ValueError("--tls-cert and --tls-key go together")
    values: dict[str, Any] = from_file.model_dump() if from_file is not None else {}
    if from_file is None:
        values["address"] = None
    if args.serve:
        values["address"] = args.serve
    if args.unix_socket:
        values["unix_socket"] = args.unix_socket
    if args.tls_cert:
        values["tls"] = {"cert": args.tls_cert, "key": args.tls_key}
    if args.api_key_file:
        values["api_key_file"] = args.api_key_file
    if args.allow_public_without_keys:
        values["allow_public_without_keys"] = True
    return ServeConfig.model_validate(values)
