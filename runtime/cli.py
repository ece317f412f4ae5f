"""The `latentwire` command line.

    latentwire train | export | demo      need the training extra (torch, onnx)
    latentwire encode | decode | info     edge-safe: numpy + onnxruntime only
    latentwire send | fetch-encoder       edge-safe gRPC client of a decoding server
    latentwire serve                      the decoding server (gRPC: Codec + KServe V2)

Every command is `main(argv)`-callable so tests run it in-process. Expected problems (bad
files, bad flags, mismatched codes) print one line `latentwire: error: ...` and exit 1;
argparse usage errors exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, client_cli
from ._proto.v1 import codec_pb2
from .argtypes import add_session_args, positive
from .arrays import ARRAY_SUFFIXES, check_writable, read_array, write_array
from .codes import read_codes_file, write_codes_file
from .errors import DataError, InputError, IntegrityError, LatentwireError
from .images import (
    bits_for,
    describe_sizes,
    is_image_path,
    numbered_paths,
    read_images,
    write_png,
)
from .manifest import ANOMALY, ROLES, SCORER, Manifest, TensorSpec, compute_fingerprint
from .model import MAX_GRAPH_BYTES, Model, read_checked, read_verified
from .server import cli as server_cli

log = logging.getLogger("latentwire")

_APPLICATION_COMMANDS = (
    "latentwire.runtime.score_cli",  # latentwire score: anomaly scores and flags
    "latentwire.runtime.embed_cli",  # latentwire embed: float latents as features
    "latentwire.runtime.denoise_cli",  # latentwire denoise: encode + decode a noisy input
)
"""Edge-safe commands for the autoencoder's applications; each module has
`add_command(sub)` and imports numpy and ONNX Runtime only."""


def _load(args: argparse.Namespace, role: str) -> Model:
    return Model(args.model, providers=args.providers, threads=args.threads, roles=(role,))


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="DIR", help="model package directory")
    add_session_args(p)


_COLOURS = {1: "greyscale", 3: "RGB"}


def _image_channels(model: Model, spec: TensorSpec, what: str) -> int:
    """The channel count C of a model whose samples are images (C, H, W); refuses others."""
    if len(spec.shape) != 3 or spec.shape[0] is None:
        raise InputError(
            f"model {model.name!r} {what} samples of shape ({spec.dims()}), not images "
            "(C, H, W); use .npy, .npz or .csv files with it"
        )
    return spec.shape[0]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _read_model_images(model: Model, paths: list[Path], what: str) -> list[np.ndarray]:
    """Read image files for an image model, refusing any whose channel count differs."""
    channels = _image_channels(model, model.manifest.input, what)
    images = read_images(paths)
    for path, x in zip(paths, images, strict=True):
        if x.shape[0] != channels:
            raise InputError(
                f"{path} is a {_COLOURS.get(x.shape[0], '?')} image "
                f"({_plural(x.shape[0], 'channel')}); model {model.name!r} expects "
                f"{_plural(channels, 'channel')} ({_COLOURS.get(channels, '?')}): "
                "convert the image first"
            )
    return images


def _encode_images(args: argparse.Namespace, model: Model) -> int:
    m = model.manifest
    paths = [Path(p) for p in args.input]
    images = _read_model_images(model, paths, "encodes")
    if bits_for(m.normalization) == 8 and any(x.max(initial=0.0) > 255 for x in images):
        log.warning("some images have values above 255; model %r was trained on 8-bit data", m.name)
    messages: list[codec_pb2.Codes] = []
    start = 0
    # runs of same-size images are encoded as one batch, still one image per message
    for _, run in itertools.groupby(images, key=lambda x: x.shape):
        batch = np.stack(list(run))
        try:
            messages.extend(model.encode_codes(batch, chunk=1))
        except InputError as exc:
            raise InputError(f"{paths[start]}: {exc}") from None
        start += len(batch)
    size = write_codes_file(args.out, messages)
    n = len(images)
    pixels = sum(x.shape[1] * x.shape[2] for x in images)
    print(
        f"encoded {_plural(n, 'image')} ({describe_sizes(x.shape for x in images)}) -> "
        f"{args.out}: {size:,} bytes, {size / n:,.0f} bytes/image, "
        f"{8 * size / max(pixels, 1):.2f} bpp",
        file=sys.stderr,
    )
    return 0


def _inputs_are_images(inputs: list[str]) -> bool:
    """True for PNG/JPEG images, False for one array file; refuses mixes and other files."""
    n_images = sum(is_image_path(p) for p in inputs)
    if 0 < n_images < len(inputs):
        raise DataError("give PNG/JPEG images or one .npy, .npz or .csv file, not a mix")
    if n_images == 0 and len(inputs) > 1:
        raise DataError(
            f"give one .npy, .npz or .csv file (got {len(inputs)} files); several inputs "
            "must be PNG/JPEG images"
        )
    suffix = Path(inputs[0]).suffix.lower()
    if n_images == 0 and suffix not in ARRAY_SUFFIXES:
        raise DataError(
            f"{inputs[0]}: unsupported file type {suffix or '(none)'!r}; use .npy, .npz, .csv "
            "or PNG/JPEG images"
        )
    return n_images > 0


def cmd_encode(args: argparse.Namespace) -> int:
    inputs: list[str] = args.input
    images = _inputs_are_images(inputs)
    check_writable(args.out)
    model = _load(args, "encoder")
    if images:
        return _encode_images(args, model)
    x = read_array(inputs[0], key=args.key)
    t0 = time.perf_counter()
    messages = list(model.encode_codes(x, chunk=args.chunk))  # validates x as a whole
    seconds = time.perf_counter() - t0
    size = write_codes_file(args.out, messages)
    n = sum(int(m.count) for m in messages)
    raw = n * int(np.prod(x.shape[1:])) * 4
    payload = sum(len(m.tensor.data) for m in messages)
    print(
        f"encoded {n} samples of shape {tuple(x.shape[1:])} in {seconds:.2f}s -> {args.out}: "
        f"{size:,} bytes ({payload / max(n, 1):.1f} code bytes/sample, "
        f"{raw / max(size, 1):.1f}x smaller than raw float32)",
        file=sys.stderr,
    )
    return 0


def _decode_each(model: Model, messages: list[codec_pb2.Codes]) -> list[np.ndarray]:
    """Reconstructions message by message: messages of an image encode hold one image
    each, and images of different sizes cannot share an array."""
    if not messages:
        model.decode_codes(messages)  # raises the runtime's "no codes" error
    return [model.decode_codes([msg]) for msg in messages]


def _decode_png(args: argparse.Namespace, model: Model, out: Path) -> int:
    m = model.manifest
    channels = _image_channels(model, m.output, "decodes")
    bits = bits_for(m.normalization)
    if channels not in _COLOURS or (bits == 16 and channels != 1):
        raise DataError(
            f"{out}: model {m.name!r} decodes {channels}-channel {bits}-bit images; PNG is "
            "written for 8-bit greyscale/RGB and 16-bit greyscale only: write .npy"
        )
    images = [img for part in _decode_each(model, read_codes_file(args.codes)) for img in part]
    if not images:
        raise DataError(f"{args.codes} holds no images to write")
    paths = numbered_paths(out, len(images))
    for path, img in zip(paths, images, strict=True):
        write_png(path, img, bits=bits)
    where = str(out) if len(paths) == 1 else f"{paths[0]} .. {paths[-1]}"
    print(
        f"decoded {_plural(len(images), 'image')} ({describe_sizes(x.shape for x in images)}) "
        f"-> {where} ({bits}-bit PNG)",
        file=sys.stderr,
    )
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix.lower() == ".png":
        check_writable(out)
        return _decode_png(args, _load(args, "decoder"), out)
    if out.suffix.lower() not in (".npy", ".csv"):
        raise DataError(
            f"{out}: write .npy or .csv, not {out.suffix or '(no suffix)'!r} "
            "(or .png for an image model)"
        )
    check_writable(out)
    model = _load(args, "decoder")
    parts = _decode_each(model, read_codes_file(args.codes))
    if len({p.shape[1:] for p in parts}) > 1:
        raise DataError(
            f"{out}: the codes hold images of different sizes "
            f"({describe_sizes(p.shape for p in parts)}) and one array holds one size; "
            "write .png instead (one file per image)"
        )
    x_hat = parts[0] if len(parts) == 1 else np.concatenate(parts)
    write_array(out, x_hat)
    print(f"decoded {len(x_hat)} samples -> {out} {x_hat.shape} float32", file=sys.stderr)
    return 0


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _file_lines(path: Path, m: Manifest) -> tuple[list[str], set[str]]:
    """One line per file the manifest names, sha256-checked (graphs also as ONNX), and the
    roles present. A file that is not here is no problem: an edge device folder (what
    `fetch-encoder` writes) holds the encoder alone, a decoding server may hold the decoder
    alone; a file that is here but differs from the manifest is."""
    lines, present = [], set()
    for role, entry in m.files.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            continue
        file = path / entry["path"]
        size = f"{entry.get('bytes', 0):,} bytes"
        if not file.exists():
            lines.append(f"{role:<12} {entry['path']} ({size}) not in this folder")
            continue
        present.add(role)
        try:
            if role in ROLES or role == SCORER:
                read_verified(path, m, role)
            else:
                read_checked(path, m, role, MAX_GRAPH_BYTES)
            status = "sha256 ok"
        except IntegrityError:
            status = "PROBLEM: sha256 differs"
        except LatentwireError as exc:
            status = f"PROBLEM: {exc}"
        lines.append(f"{role:<12} {entry['path']} {size}, {status}")
    return lines, present


def _abilities(m: Manifest, present: set[str]) -> list[str]:
    """What the folder can do with the files it holds (the `holds` and `can` lines)."""
    encodes = bool({"encoder", SCORER} & present)
    if not encodes and "decoder" not in present:
        return ["can          PROBLEM: none of this package's graphs is in this folder"]
    can = []
    if encodes:
        can.append("encode, send (the server decodes)")
        if ANOMALY in m.raw:
            can.append("send --score (the server scores the codes)")
    if "decoder" in present:
        can.append("decode")
    if encodes and ANOMALY in present:
        recon = "decoder" in present or SCORER in present
        can.append("score here (" + ("every score" if recon else "code densities") + ")")
    kind = (
        "a whole package"
        if {"encoder", "decoder"} <= present
        else "an edge device's files (no decoder)"
        if encodes
        else "a decoding server's files (no encoder)"
    )
    return [f"holds        {kind}", "can          " + "; ".join(can)]


def _anomaly_lines(anomaly: dict[str, Any]) -> list[str]:
    """What `--task anomaly` stored: the scores, the chosen density, the thresholds."""
    if not anomaly:
        return []
    thresholds = _dict(anomaly.get("thresholds"))
    calibration = _dict(anomaly.get("calibration"))
    return [
        f"detector     scores {', '.join(map(str, anomaly.get('scores', [])))}; flags by "
        f"{anomaly.get('default_score')} (codes only: {anomaly.get('default_codes_score')})",
        "thresholds   "
        + ", ".join(f"{k} {v:.6g}" for k, v in thresholds.items() if isinstance(v, float))
        + f" ({calibration.get('target')} {calibration.get('rate')}, "
        f"{calibration.get('n')} held-out samples)",
    ]


def cmd_info(args: argparse.Namespace) -> int:
    path = Path(args.package)
    m = Manifest.load(path)
    if args.json:
        print(json.dumps(m.raw, indent=2))
        return 0
    raw = m.raw
    model = _dict(raw.get("model"))
    arch = (
        "channels" if model.get("kind") == "conv" else "hidden",
        "latent_dim",
        "output_activation",
    )
    fp_ok = compute_fingerprint(raw) == m.fingerprint
    lines = [
        f"model        {m.name}",
        f"fingerprint  {m.fingerprint}"
        + ("" if fp_ok else "  PROBLEM: does not match the manifest's contract (edited?)"),
        f"input        {m.input.name} ({m.input.dims()}) {m.input.dtype}"
        + (f", sides multiples of {m.input.multiple_of}" if m.input.multiple_of > 1 else ""),
        f"latent       {m.latent.name} ({m.latent.dims()}) {m.latent.dtype}, codes {m.code_format}",
        f"output       {m.output.name} ({m.output.dims()}) {m.output.dtype}",
        f"normalize    {m.normalization.kind}",
        f"architecture {model.get('kind', '?')}: "
        + ", ".join(f"{k}={model[k]}" for k in arch if k in model),
    ]
    files, present = _file_lines(path, m)
    lines += files + _abilities(m, present)
    onnx_info = _dict(raw.get("onnx"))
    parity = _dict(onnx_info.get("parity_max_abs_error"))
    if parity:
        lines.append(
            f"onnx         opset {onnx_info.get('opset')}, parity max abs error "
            f"enc {parity.get('encoder')} / dec {parity.get('decoder')}"
        )
    lines += _anomaly_lines(_dict(raw.get("anomaly")))
    training = _dict(raw.get("training"))
    if training:
        lines.append("training     " + ", ".join(f"{k}={v}" for k, v in training.items()))
    lines.append(
        f"created      {raw.get('created_utc', '?')} "
        f"by latentwire {raw.get('latentwire_version', '?')}"
    )
    print("\n".join(lines))
    problems = sum("PROBLEM" in line for line in lines)
    if problems:
        print(
            f"latentwire: error: {path}: {problems} problem(s), marked PROBLEM above",
            file=sys.stderr,
        )
        return 1
    return 0


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (tests swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latentwire",
        description="Train an autoencoder, ship its encoder to the edge as ONNX, send compact "
        "codes, decode them on a server.",
        epilog="Run `latentwire COMMAND --help` for a command's options. "
        "Start with `latentwire demo`.",
    )
    parser.add_argument("--version", action="version", version=f"latentwire {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    training = importlib.import_module("latentwire.training.cli")  # imports no torch itself
    for name in ("train", "export", "export-triton", "evaluate", "demo"):
        training.add_command(sub, name)
    server_cli.add_command(sub)
    client_cli.add_commands(sub)
    for app in _APPLICATION_COMMANDS:  # score, embed, denoise: one module each
        importlib.import_module(app).add_command(sub)

    p = sub.add_parser(
        "encode",
        help="encode samples or images into a codes file (edge side)",
        description="Encode INPUT with the package's encoder and write a codes file. INPUT "
        "is one .npy, .npz or .csv file of samples in your own units (rows = samples), or "
        "one or more PNG/JPEG images of any sizes for an image model (greyscale or RGB as "
        "the model expects; alpha is dropped): each image becomes one codes message, in "
        "the order given. For a folder, use a shell glob: photos/*.png.",
    )
    _add_model_args(p)
    p.add_argument(
        "input",
        metavar="INPUT",
        nargs="+",
        help="one .npy, .npz or .csv of samples, or PNG/JPEG image files",
    )
    p.add_argument("--out", required=True, metavar="CODES", help="codes file to write")
    p.add_argument("--key", help="array name inside an .npz holding several")
    p.add_argument(
        "--chunk",
        type=positive(int),
        metavar="N",
        help="samples per codes message (default: as many as fit in 1 MiB of codes; "
        "images always go one per message)",
    )
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser(
        "decode",
        help="decode a codes file back to samples or PNG images (server side)",
        description="Decode a codes file made by `latentwire encode` with the "
        "same model package; refuses codes made by another encoder. OUTPUT .npy or .csv "
        "gets all samples as one array (images of one size only). OUTPUT .png (image "
        "models) writes one PNG per image: a single image goes to OUTPUT itself, several "
        "take OUTPUT as a pattern, out.png -> out-0.png, out-1.png, ... in the order they "
        "were encoded. PNGs are 8-bit, or 16-bit greyscale when the model's normalization "
        "has an offset or scale above 255 (data deeper than 8 bits).",
    )
    _add_model_args(p)
    p.add_argument("codes", metavar="CODES", help="codes file from `latentwire encode`")
    p.add_argument(
        "--out",
        required=True,
        metavar="OUTPUT",
        help="reconstructions: .npy, .csv, or .png for images (several: OUTPUT-0.png, ...)",
    )
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser(
        "info",
        help="print a model package's manifest",
        description="Print a model package's manifest readably and check its files' sha256.",
    )
    p.add_argument("package", metavar="DIR", help="model package directory")
    p.add_argument("--json", action="store_true", help="print the raw manifest.json")
    p.set_defaults(func=cmd_info)
    _no_abbreviations(parser)
    return parser


def _no_abbreviations(parser: argparse.ArgumentParser) -> None:
    """Refuse abbreviated flags (`--grace=3` for --grace-seconds) in every command: an
    abbreviation that works today breaks silently when a flag with the same prefix is
    added, and scripts and manifests must name exact options."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _no_abbreviations(child)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for noisy in ("onnx_ir", "onnxscript", "torch", "torch.onnx"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    try:
        return int(args.func(args))
    except LatentwireError as exc:
        print(f"latentwire: error: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:
        print(f"latentwire: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `latentwire info PKG | head`: the reader left, not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the exit-time flush stays quiet too
        return 141
    except OSError as exc:
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"latentwire: error:{where} {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("latentwire: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
