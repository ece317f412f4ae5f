"""`latentwire denoise`: denoise samples or images with a model trained with --noise.

The input goes through the package exactly as `encode` then `decode` (or a server's
Encode then Decode) would take it: encoder, the package's code format, decoder. So a
server answers the same denoised values for the same input. Edge-safe: numpy and ONNX
Runtime only.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .arrays import check_writable, read_array, write_array
from .cli import _add_model_args, _inputs_are_images, _plural, _read_model_images
from .errors import DataError, InputError
from .images import bits_for, describe_sizes, numbered_paths, write_png
from .model import Model

log = logging.getLogger("latentwire")


def add_command(sub: Any) -> None:
    p = sub.add_parser(
        "denoise",
        help="denoise samples or images (a model trained with --noise)",
        description="Denoise INPUT with a model package trained as a denoiser (`latentwire "
        "train --noise gaussian:0..0.6`, say): each sample goes through the encoder, the "
        "package's codes and the decoder, as `encode` + `decode` or a server's Encode + "
        "Decode would take it. INPUT is one .npy, .npz or .csv file of samples in your own "
        "units (rows = samples), or PNG/JPEG images for an image model (a convolutional "
        "model takes whole images of any size). OUTPUT is .npy or .csv for arrays, .png "
        "for images (several images: OUTPUT-0.png, OUTPUT-1.png, ... in the order given). "
        "A model trained without --noise only reconstructs (a warning says so), and a "
        "denoiser cannot beat its clean reconstruction: `latentwire evaluate --noise "
        "gaussian:0.1,0.3` measures both.",
    )
    _add_model_args(p)
    p.add_argument(
        "input",
        metavar="INPUT",
        nargs="+",
        help="one .npy, .npz or .csv of noisy samples, or noisy PNG/JPEG images",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="OUTPUT",
        help="denoised output: .npy or .csv (arrays), .png (images)",
    )
    p.add_argument("--key", help="array name inside an .npz holding several")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace OUTPUT when it exists (refused otherwise)",
    )
    p.set_defaults(func=run)


def denoise(model: Model, x: Any) -> np.ndarray:
    """Denoised samples (N, *shape) in the user's units: encode to the package's codes,
    decode, crop any padding (images of sizes the model cannot take directly)."""
    return model.decode_codes(list(model.encode_codes(x)))


def _refuse_existing(paths: list[Path], force: bool) -> None:
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise DataError(f"{existing[0]} exists; pass --force to replace it")


def _warn_if_not_denoiser(model: Model) -> str:
    noise = (model.manifest.raw.get("training") or {}).get("noise")
    if not noise:
        log.warning(
            "model %r was trained without --noise: it reconstructs its input, it was not "
            "trained to remove noise",
            model.name,
        )
        return "not trained as a denoiser"
    return f"trained with --noise {noise}"


def _denoise_images(args: argparse.Namespace, model: Model, out: Path) -> int:
    bits = bits_for(model.manifest.normalization)
    paths = [Path(p) for p in args.input]
    targets = numbered_paths(out, len(paths))
    _refuse_existing(targets, args.force)
    images = _read_model_images(model, paths, "denoises")
    how = _warn_if_not_denoiser(model)
    start = 0
    for _, run in itertools.groupby(images, key=lambda x: x.shape):
        batch = list(run)
        for i, img in enumerate(batch):  # one image at a time: bounded memory for large ones
            try:
                clean = denoise(model, img[None])[0]
            except InputError as exc:
                raise InputError(f"{paths[start + i]}: {exc}") from None
            write_png(targets[start + i], clean, bits=bits)
        start += len(batch)
        if len(images) > 1:
            log.info("denoised %d of %s", start, _plural(len(images), "image"))
    where = str(out) if len(targets) == 1 else f"{targets[0]} .. {targets[-1]}"
    print(
        f"denoised {_plural(len(images), 'image')} ({describe_sizes(x.shape for x in images)}) "
        f"with {model.name!r} ({how}) -> {where} ({bits}-bit PNG)",
        file=sys.stderr,
    )
    return 0


def run(args: argparse.Namespace) -> int:
    inputs: list[str] = args.input
    images = _inputs_are_images(inputs)
    out = Path(args.out)
    if images:
        check_writable(out, (".png",))
        return _denoise_images(args, _load_both(args), out)
    check_writable(out, (".npy", ".csv"))
    _refuse_existing([out], args.force)
    model = _load_both(args)
    x = read_array(inputs[0], key=args.key)
    how = _warn_if_not_denoiser(model)
    clean = denoise(model, x)
    write_array(out, clean)
    print(
        f"denoised {len(clean)} samples of shape {tuple(clean.shape[1:])} with {model.name!r} "
        f"({how}) -> {out}",
        file=sys.stderr,
    )
    return 0


def _load_both(args: argparse.Namespace) -> Model:
    """The package with both graphs (encode and decode run here)."""
    return Model(args.model, providers=args.providers, threads=args.threads)
