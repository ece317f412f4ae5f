"""Read PNG/JPEG images into arrays and write arrays back as PNG (edge-safe).

Images come back as float32 arrays of shape (C, H, W) in the file's own units (8-bit:
0..255, 16-bit greyscale PNG: 0..65535): greyscale is C=1, every colour mode (RGB, RGBA,
palette, CMYK, ...) is C=3 RGB; an alpha channel is dropped (and logged). Pillow is not a
dependency of the runtime: it is imported when an image is read or written, and its
absence is one DataError naming the extra that brings it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DataError
from .manifest import Normalization

__all__ = [
    "IMAGE_SUFFIXES",
    "bits_for",
    "describe_sizes",
    "is_image_path",
    "numbered_paths",
    "read_images",
    "write_png",
]

log = logging.getLogger("latentwire.runtime")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_DEEP_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
"""Pillow modes of 16/32-bit greyscale images: read as they are, not cut to 8 bits."""
_GRAY_MODES = ("1", "L", "LA", "La")
_PILLOW_HINT = "pip install 'latentwire[images]' (Pillow)"


def is_image_path(path: str | Path) -> bool:
    """True when the file name ends in .png, .jpg or .jpeg (any case)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _pillow(what: str) -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise DataError(f"{what} needs Pillow: {_PILLOW_HINT}") from None
    return Image


def _to_array(im: Any, path: Path) -> np.ndarray:
    """A loaded Pillow image as (C, H, W) float32 in the file's units."""
    mode = im.mode
    if mode in _DEEP_GRAY_MODES:  # np.asarray keeps the values; convert("L") would clip
        return np.asarray(im, dtype=np.float32)[None]
    has_alpha = "A" in mode or "a" in mode or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        log.info("%s: dropped the alpha channel (mode %s)", path, mode)
    if mode in _GRAY_MODES:
        return np.asarray(im.convert("L"), dtype=np.float32)[None]
    return np.asarray(im.convert("RGB"), dtype=np.float32).transpose(2, 0, 1)


def read_image(path: str | Path) -> np.ndarray:
    """One image file as (C, H, W) float32; see the module docstring."""
    Image = _pillow("reading images")
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    try:
        with Image.open(p) as im:
            im.load()
            return _to_array(im, p)
    except Image.DecompressionBombError as exc:
        raise DataError(f"{p}: {exc}") from None
    # Pillow reports damaged files with several exception types (UnidentifiedImageError
    # is an OSError; a broken PNG chunk is a SyntaxError)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).replace(str(p), "").strip(" :'\"") or type(exc).__name__
        raise DataError(f"{p}: cannot read the image ({reason})") from None


def read_images(paths: Iterable[str | Path]) -> list[np.ndarray]:
    """Image files as a list of (C, H, W) float32 arrays, in order (sizes may differ)."""
    return [read_image(p) for p in paths]


def write_png(path: str | Path, x: np.ndarray, bits: int = 8) -> None:
    """Write (C, H, W) values as a PNG: rounded and clipped to 0..255 (bits=8) or 0..65535
    (bits=16, greyscale only). C=1 is greyscale, C=3 is RGB."""
    p = Path(path)
    arr = np.asarray(x)
    if arr.ndim != 3 or arr.shape[0] not in (1, 3):
        raise DataError(
            f"{p}: PNG holds greyscale (1, H, W) or RGB (3, H, W) images; got shape {arr.shape}"
        )
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    if bits == 16 and arr.shape[0] != 1:
        raise DataError(f"{p}: cannot write 16-bit RGB PNG files; write .npy instead")
    Image = _pillow("writing PNG images")
    top, dtype = (255, np.uint8) if bits == 8 else (65535, np.uint16)
    pixels = np.clip(np.rint(arr), 0, top).astype(dtype)
    # 2-D uint8 -> "L", 2-D uint16 -> "I;16", (H, W, 3) uint8 -> "RGB"
    image = Image.fromarray(pixels[0] if arr.shape[0] == 1 else pixels.transpose(1, 2, 0))
    try:
        image.save(p, format="PNG")
    except OSError as exc:
        raise DataError(f"{p}: cannot write ({exc.strerror or exc})") from None


def bits_for(normalization: Normalization) -> int:
    """16 when a model's normalization says its data went past 8 bits (an offset or scale
    above 255, e.g. 16-bit greyscale PNGs), else 8: the PNG depth its decodes are written in."""
    peak = max(float(np.abs(normalization.offset).max()), float(np.abs(normalization.scale).max()))
    return 16 if normalization.kind != "none" and peak > 255 else 8


def numbered_paths(path: str | Path, n: int) -> list[Path]:
    """Where n images go: `path` itself for one, else out.png -> out-0.png, out-1.png, ..."""
    p = Path(path)
    if n == 1:
        return [p]
    return [p.with_name(f"{p.stem}-{i}{p.suffix}") for i in range(n)]


def describe_sizes(shapes: Iterable[tuple[int, ...]], limit: int = 3) -> str:
    """Image sizes as WxH, each distinct size once, in order: "640x427, 61x45"."""
    sizes: list[str] = []
    for shape in shapes:
        size = f"{shape[-1]}x{shape[-2]}"
        if size not in sizes:
            sizes.append(size)
    more = len(sizes) - limit
    return ", ".join(sizes[:limit]) + (f" and {more} more sizes" if more > 0 else "")
