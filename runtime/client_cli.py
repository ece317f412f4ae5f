"""The client commands of the `latentwire` command line (edge side, torch-free).

    latentwire send           encode locally, decode on a server, report size and quality
    latentwire send --score   encode locally, get anomaly scores and flags from a server
    latentwire fetch-encoder  provision an edge package from a server

`runtime/cli.py` registers them with `add_commands(sub)`.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .argtypes import positive
from .arrays import check_writable, read_array, write_array
from .codes import OUTPUT_DTYPES
from .errors import DataError, ServerError
from .manifest import Manifest
from .model import Model

if TYPE_CHECKING:  # grpcio loads only for the commands that call a server
    from .client import Client, ScoreReply

__all__ = ["add_commands", "cmd_fetch_encoder", "cmd_send", "psnr"]

log = logging.getLogger("latentwire")

TOKEN_ENV = "LATENTWIRE_TOKEN"
LB_CHOICES = ("auto", "pick_first", "round_robin")
"""--lb: "auto" or one of client.LB_POLICIES (named here so that `--help` loads no grpcio;
tests/test_scaleout.py checks that the two agree)."""


def psnr(x: np.ndarray, x_hat: np.ndarray) -> float:
    """PSNR in dB of `x_hat` against `x`, data range = x.max() - x.min() (inf when equal,
    nan when x is constant)."""
    ref = np.asarray(x, dtype=np.float64)
    err = np.asarray(x_hat, dtype=np.float64).reshape(ref.shape) - ref
    mse = float(np.mean(err * err)) if err.size else 0.0
    data_range = float(ref.max() - ref.min()) if ref.size else 0.0
    if mse == 0.0:
        return math.inf
    if data_range == 0.0:
        return math.nan
    return 10.0 * math.log10(data_range**2 / mse)


def _add_connection_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection")
    g.add_argument(
        "--server",
        required=True,
        metavar="HOST:PORT",
        help="the server's address, or any gRPC name: dns:///HOST:PORT (every address the "
        "name resolves to), ipv4:ADDR:PORT,ADDR:PORT",
    )
    g.add_argument(
        "--lb",
        choices=LB_CHOICES,
        default="auto",
        help="how calls spread over the addresses --server resolves to: round_robin = each "
        "call to the next address, e.g. the pods of a Kubernetes headless Service with "
        "--server dns:///NAME.NAMESPACE.svc.cluster.local:8001; pick_first = all calls to "
        "the first address that answers; auto = round_robin for dns:/// and multi-address "
        "targets, pick_first for HOST:PORT (default: auto)",
    )
    g.add_argument("--tls", action="store_true", help="connect with TLS (implied by --ca/--cert)")
    g.add_argument("--ca", metavar="FILE", help="PEM root certificates (default: system roots)")
    g.add_argument("--cert", metavar="FILE", help="PEM client certificate chain (mutual TLS)")
    g.add_argument("--key", metavar="FILE", help="PEM client private key (with --cert)")
    g.add_argument(
        "--server-name",
        metavar="NAME",
        help="TLS: expect this name in the server's certificate instead of HOST",
    )
    g.add_argument(
        "--token",
        metavar="TOKEN",
        help=f"bearer token (default: the {TOKEN_ENV} environment variable)",
    )
    g.add_argument(
        "--timeout",
        type=positive(float),
        default=30.0,
        metavar="S",
        help="deadline of each call in seconds, retries included (default: 30)",
    )


def _read_pem(path: str | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()  # OSError: one line from main()


def _client(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Client:
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together (mutual TLS)")
    try:
        from .client import Client
    except ImportError as exc:  # grpcio is a base dependency; someone removed it
        raise ImportError(
            f"talking to a server needs grpcio ({exc.name or exc} is not installed): "
            "pip install 'grpcio>=1.78'"
        ) from None

    return Client(
        args.server,
        tls=args.tls,
        root_certificates=_read_pem(args.ca),
        certificate_chain=_read_pem(args.cert),
        private_key=_read_pem(args.key),
        token=args.token or os.environ.get(TOKEN_ENV) or None,
        timeout=args.timeout,
        server_name_override=args.server_name,
        lb_policy=None if args.lb == "auto" else args.lb,
    )


def _score_lines(reply: ScoreReply) -> list[str]:
    """The per-sample CSV of `send --score`: header, then index,score,is_anomaly,p_value."""
    lines = ["index,score,is_anomaly,p_value"]
    for i, (score, flag, p) in enumerate(
        zip(reply.scores, reply.flags, reply.p_values, strict=True)
    ):
        lines.append(f"{i},{score:.10g},{int(flag)},{p:.6g}")
    return lines


def _send_score(
    args: argparse.Namespace, parser: argparse.ArgumentParser, model: Model, x: np.ndarray
) -> int:
    """`send --score`: the codes' anomaly scores and flags from the server, per sample."""
    messages = list(model.encode_codes(x, chunk=args.chunk))
    sent = sum(m.ByteSize() for m in messages)
    with _client(args, parser) as client:
        t0 = time.perf_counter()
        reply = client.score(
            messages, score=args.score_name, threshold=args.threshold, fpr=args.fpr
        )
        round_trip_ms = (time.perf_counter() - t0) * 1e3
    lines = _score_lines(reply)
    if args.out is not None:
        Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        sys.stdout.write("\n".join(lines) + "\n")
    n, flagged = len(reply.scores), int(reply.flags.sum())
    log.info(
        "scored %d samples on %s (%s version %s, score %s, threshold %.6g) from %s code bytes "
        "in %d message(s), round trip %.1f ms: %d flagged as anomalies (%.1f%%)%s",
        n,
        args.server,
        reply.model_name,
        reply.model_version,
        reply.score,
        reply.threshold,
        f"{sent:,}",
        len(messages),
        round_trip_ms,
        flagged,
        100.0 * flagged / max(n, 1),
        f" -> {args.out}" if args.out is not None else "",
    )
    return 0


def _check_score_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    scoring = (args.score_name, args.threshold, args.fpr)
    if not args.score:
        if scoring != ("", None, None):
            parser.error("--score-name, --threshold and --fpr go with --score")
        return
    if args.stream:
        parser.error("--score sends Score calls; --stream is for decoding")
    if args.threshold is not None and args.fpr is not None:
        parser.error("give --threshold or --fpr, not both")
    if args.out is not None:
        out = check_writable(args.out, (".csv",))
        if out.exists() and not args.force:
            raise DataError(f"{out} exists; pass --force to replace it")


def cmd_send(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    _check_score_args(args, parser)
    if args.out is not None and not args.score:
        check_writable(args.out, (".npy", ".csv"))
    model = Model(args.model, providers=args.providers, threads=args.threads, roles=("encoder",))
    x = read_array(args.input, key=args.array, key_flag="--array")
    if args.score:
        return _send_score(args, parser, model, x)
    t0 = time.perf_counter()
    messages = list(model.encode_codes(x, chunk=args.chunk))  # validates x as a whole
    encode_ms = (time.perf_counter() - t0) * 1e3
    n = sum(int(m.count) for m in messages)
    sent = sum(m.ByteSize() for m in messages)
    raw = n * math.prod(x.shape[1:]) * 4
    with _client(args, parser) as client:
        t0 = time.perf_counter()
        if args.stream:
            results = {
                r.id: r for r in client.decode_stream(messages, output_dtype=args.output_dtype)
            }
            round_trip_ms = (time.perf_counter() - t0) * 1e3
            parts = []
            for i in range(len(messages)):
                r = results.get(str(i))
                if r is None:
                    raise ServerError(f"the server sent no answer to message {i} of the stream")
                parts.append(r.unwrap())  # the first refused message raises its error
            x_hat = parts[0] if len(parts) == 1 else np.concatenate(parts)
            decoded_by = sorted(
                {f"{r.model_name} version {r.model_version}" for r in results.values()}
            )
        else:
            result = client.decode(messages, output_dtype=args.output_dtype)
            round_trip_ms = (time.perf_counter() - t0) * 1e3
            x_hat = result.x
            decoded_by = [f"{result.model_name} version {result.model_version}"]
    if args.out is not None:
        write_array(args.out, x_hat)
    quality = psnr(x, x_hat)
    log.info(
        "sent %d samples of shape %s to %s in %d message(s)%s: %s code bytes vs %s raw "
        "float32 bytes (%.1fx smaller)",
        n,
        tuple(x.shape[1:]),
        args.server,
        len(messages),
        " over one stream" if args.stream else "",
        f"{sent:,}",
        f"{raw:,}",
        raw / max(sent, 1),
    )
    log.info(
        "decoded by %s; encode %.1f ms, round trip %.1f ms; PSNR %.2f dB (%s reconstructions%s)",
        ", ".join(decoded_by),
        encode_ms,
        round_trip_ms,
        quality,
        args.output_dtype,
        f" -> {args.out}" if args.out is not None else "",
    )
    return 0


def cmd_fetch_encoder(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    with _client(args, parser) as client:
        out = client.fetch_encoder(
            args.name, args.out, version=args.version, include_scorer=args.scorer
        )
    m = Manifest.load(out)
    written = [
        f"{entry['path']} {(out / entry['path']).stat().st_size:,} bytes"
        for entry in m.files.values()
        if isinstance(entry, dict) and (out / entry["path"]).is_file()
    ]
    log.info(
        "fetched the encoder of %s (package %s, fingerprint %s) from %s -> %s: %s, sha256 ok",
        args.name,
        m.name,
        m.fingerprint,
        args.server,
        out,
        ", ".join(written),
    )
    return 0


def add_commands(sub: Any) -> None:
    """Register `send` and `fetch-encoder` on the `latentwire` subparsers."""
    from .cli import _add_model_args  # here: cli imports this module

    p = sub.add_parser(
        "send",
        help="encode samples locally; decode them (or score them: --score) on a server",
        description="Encode INPUT (.npy, .npz or .csv; samples in your own units) with the "
        "package's encoder only, send the codes to a latentwire server, and report the bytes "
        "sent, the round trip and the PSNR of the server's reconstructions. With --score the "
        "server returns anomaly scores of the codes instead (a package trained with "
        "`--task anomaly`): one CSV line per sample, index,score,is_anomaly,p_value, on "
        "stdout or into --out, and a summary line.",
    )
    _add_model_args(p)
    p.add_argument("input", metavar="INPUT", help=".npy, .npz or .csv of samples (rows = samples)")
    p.add_argument(
        "--out",
        metavar="OUTPUT",
        help="write the reconstructions (.npy or .csv); with --score, the per-sample scores "
        "(.csv; an existing file only with --force)",
    )
    p.add_argument("--array", metavar="NAME", help="array name inside an .npz holding several")
    p.add_argument(
        "--output-dtype",
        choices=OUTPUT_DTYPES,
        default="float32",
        help="dtype of the reconstructions the server sends (default: float32)",
    )
    p.add_argument(
        "--chunk",
        type=positive(int),
        metavar="N",
        help="samples per codes message (default: as many as fit in 1 MiB of codes)",
    )
    p.add_argument(
        "--stream",
        action="store_true",
        help="send every message over one DecodeStream instead of one Decode call each",
    )
    g = p.add_argument_group("anomaly scores (--score)")
    g.add_argument(
        "--score",
        action="store_true",
        help="ask the server for anomaly scores of the codes (Score RPC) instead of "
        "reconstructions: higher = more anomalous; is_anomaly = score > threshold; p_value = "
        "share of held-out normal samples scoring at least as high",
    )
    g.add_argument(
        "--score-name",
        default="",
        metavar="NAME",
        help="which density of the codes: gmm, mahalanobis or knn, as the package carries "
        "(default: the package's default, chosen at training)",
    )
    g.add_argument(
        "--threshold",
        type=float,
        metavar="T",
        help="flag scores above T instead of the package's calibrated threshold",
    )
    g.add_argument(
        "--fpr",
        type=float,
        metavar="RATE",
        help="flag at this false-positive rate on the package's held-out normal samples, "
        "0 < RATE < 1 (instead of the calibrated threshold)",
    )
    g.add_argument("--force", action="store_true", help="replace an existing --out score file")
    _add_connection_args(p)
    p.set_defaults(func=functools.partial(cmd_send, parser=p))

    p = sub.add_parser(
        "fetch-encoder",
        help="fetch a model's encoder from a server into an edge package",
        description="Fetch NAME's encoder.onnx and manifest.json from a latentwire server, "
        "check their sha256 and write them to a new folder that `latentwire encode`, "
        "`latentwire send` and `latentwire send --score` load (`latentwire info DIR` says "
        "what it holds). With --scorer, also scorer.onnx and anomaly.npz of a package "
        "trained with `--task anomaly --edge-score`, so that `latentwire score` runs on the "
        "device.",
    )
    p.add_argument("--name", required=True, help="model name on the server")
    p.add_argument("--version", default="", help="version directory (default: the latest)")
    p.add_argument("--out", required=True, metavar="DIR", help="new or empty folder to write")
    p.add_argument(
        "--scorer",
        action="store_true",
        help="also fetch the edge scorer (scorer.onnx) and the anomaly calibration",
    )
    _add_connection_args(p)
    p.set_defaults(func=functools.partial(cmd_fetch_encoder, parser=p))
