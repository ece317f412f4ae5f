"""Classical baselines for the rate–distortion report: PCA, JPEG, WebP, zlib and zstd.

Every baseline turns test data into a list of `Point`s (bytes per sample, PSNR, and for
images bits per pixel and SSIM) measured the same way as the autoencoder's points, so one
plot compares them all:

* `pca_points`: PCA fitted on the training split, with the same byte budgets and the same
  code formats as the autoencoder (f32, f16, per-component affine int8, and transform coding
  with one uniform step and an ANS stream for "entropy", constriction's or latentwire's
  own, which writes the same bytes).
* `jpeg_points` / `webp_points`: Pillow, whole file and payload-only sizes (markers, headers
  and tables are fixed costs an application could share, so both are given).
* `lossless_points`: zlib -9 and zstd -19 of the raw test array, as a "store it exactly" line.

PSNR is always one MSE over every value of the test set (not a mean of per-sample PSNRs),
computed in float64 in the user's units.
"""

from __future__ import annotations

import functools
import io
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from latentwire.runtime.entropy import coder_tables, decode_words, default_coder, encode_words

__all__ = [
    "DEFAULT_QUALITIES",
    "ImageStats",
    "Point",
    "image_stats",
    "jpeg_payload_bytes",
    "jpeg_points",
    "lossless_points",
    "pca_points",
    "psnr",
    "ssim",
    "webp_payload_bytes",
    "webp_points",
]

DEFAULT_QUALITIES: tuple[int, ...] = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
"""Quality settings swept for JPEG and WebP when the caller gives none."""

FORMAT_ITEMSIZE = {"f32": 4, "f16": 2, "int8": 1}
"""Bytes per coefficient of the fixed-size code formats."""

_SSIM_SIGMA = 1.5
_SSIM_MAX_RADIUS = 5  # sigma 1.5 truncated at 3.5 sigma: the classic 11x11 window
_MAX_SUPPORT = 1 << 16  # entropy PCA: at most this many symbols per component


@dataclass
class Point:
    """One measured operating point of one method on the test set."""

    method: str
    """"ae" | "pca" | "jpeg" | "webp" | "zlib" | "zstd"."""
    label: str
    """Human label, e.g. "PCA k=8 int8", "JPEG q=50", "digits-k8 int8"."""
    format: str | None
    """Code format of ae/pca points: "f32" | "f16" | "int8" | "entropy"; None otherwise."""
    bytes_per_sample: float
    """Payload bytes per sample (JPEG: entropy-coded scan data; WebP: the VP8/VP8L chunk)."""
    psnr_db: float | None
    """PSNR over the whole test set in dB; None when lossless."""
    file_bytes_per_sample: float | None = None
    """JPEG/WebP: whole-file bytes per sample."""
    bpp: float | None = None
    """Images only: 8 * bytes_per_sample / (H * W)."""
    file_bpp: float | None = None
    """Images only: 8 * file_bytes_per_sample / (H * W)."""
    ssim: float | None = None
    """Images only: mean SSIM over the test images."""
    lossless: bool = False
    """True for zlib/zstd: the data comes back bit for bit."""
    model: str | None = None
    """ae points: the model package path or name."""
    params: dict[str, Any] = field(default_factory=dict)
    """Method settings: k, quality, step, level, ..."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: plain Python types, non-finite floats as None."""
        return {
            "method": self.method,
            "label": self.label,
            "format": self.format,
            "bytes_per_sample": _jsonable(self.bytes_per_sample),
            "file_bytes_per_sample": _jsonable(self.file_bytes_per_sample),
            "bpp": _jsonable(self.bpp),
            "file_bpp": _jsonable(self.file_bpp),
            "psnr_db": _jsonable(self.psnr_db),
            "ssim": _jsonable(self.ssim),
            "lossless": self.lossless,
            "model": self.model,
            "params": _jsonable(self.params),
        }


def _jsonable(value: Any) -> Any:
    """numpy scalars/arrays to Python, NaN and +-inf to None, recursively."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------- metrics


def psnr(x: np.ndarray, x_hat: np.ndarray, data_range: float) -> float:
    """10 log10(range² / MSE), one MSE over every value of the set, in float64.

    Returns inf when the reconstruction is exact.
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(x_hat, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ: {a.shape} vs {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(float(data_range) ** 2 / mse)


def _ssim_radius(height: int, width: int) -> int:
    """Window radius: 5 (11x11, the usual sigma 1.5 / truncate 3.5) or what fits the image."""
    return max(0, min(_SSIM_MAX_RADIUS, (min(height, width) - 1) // 2))


def ssim(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """Mean SSIM (Wang et al. 2004) over images shaped (N, C, H, W), in the user's units.

    Gaussian window with sigma 1.5 and K1 = 0.01, K2 = 0.03, per channel, population
    (not sample) covariances. The window is 11x11 (scipy truncate = 5 / 1.5 ≈ 3.33 sigma)
    when the image is at least 11 pixels on its short side; smaller images get the largest
    odd window that fits: radius (min(H, W) - 1) // 2, e.g. 7x7 (truncate = 2) for 8x8
    digits. The SSIM map is averaged over the positions where the whole window lies inside
    the image (the border of width = radius is cropped, as scikit-image does), then over
    channels and images.
    """
    from scipy.ndimage import gaussian_filter

    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim: expected two equal (N, C, H, W) arrays, got {a.shape}, {b.shape}")
    height, width = a.shape[2], a.shape[3]
    radius = _ssim_radius(height, width)
    truncate = radius / _SSIM_SIGMA
    sigma = (0.0, 0.0, _SSIM_SIGMA, _SSIM_SIGMA)

    def blur(v: np.ndarray) -> np.ndarray:
        if radius == 0:
            return v
        out: np.ndarray = gaussian_filter(v, sigma=sigma, truncate=truncate, mode="reflect")
        return out

    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a * mu_a
    var_b = blur(b * b) - mu_b * mu_b
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    smap = num / den
    r = radius
    smap = smap[:, :, r : height - r, r : width - r]
    return float(np.mean(smap))


@dataclass(frozen=True)
class ImageStats:
    """Shape facts of an image set (N, C, H, W)."""

    channels: int
    height: int
    width: int

    @property
    def pixels_per_sample(self) -> int:
        """H * W: the denominator of bits per pixel (channels are not counted)."""
        return self.height * self.width


def image_stats(x: np.ndarray | Sequence[int]) -> ImageStats:
    """Channels, height and width of images (N, C, H, W), or of a (C, H, W) shape."""
    shape = tuple(int(s) for s in (x.shape[1:] if isinstance(x, np.ndarray) else x))
    if len(shape) != 3:
        raise ValueError(f"expected images (N, C, H, W) or a shape (C, H, W), got {shape}")
    return ImageStats(*shape)


def _bpp(nbytes: float | None, stats: ImageStats | None) -> float | None:
    if nbytes is None or stats is None:
        return None
    return 8.0 * nbytes / stats.pixels_per_sample


# --------------------------------------------------------------------------- PCA


def _int8_roundtrip(z_train: np.ndarray, z_test: np.ndarray) -> np.ndarray:
    """Per-component affine int8 calibrated on the training projections, by the runtime's
    own rule (latentwire.runtime.formats.int8_params)."""
    from latentwire.runtime.formats import int8_params

    scale, offset = int8_params(z_train.min(axis=0), z_train.max(axis=0))
    z32 = z_test.astype(np.float32)
    q = np.clip(np.rint((z32 - offset) / scale), -128, 127).astype(np.int8)
    z_hat: np.ndarray = q.astype(np.float64) * scale + offset
    return z_hat


@dataclass
class _EntropyTables:
    """Per-component symbol support [lo, hi] and probabilities (None: one symbol), coded
    by `coder` (constriction where it is installed, else latentwire's own: same streams)."""

    lo: np.ndarray
    hi: np.ndarray
    probs: list[np.ndarray | None]
    coder: str

    @property
    def coded(self) -> list[int]:
        """The components that take bits (not constant)."""
        return [c for c, p in enumerate(self.probs) if p is not None]

    @functools.cached_property
    def models(self) -> list[Any]:
        """Per component, its table in the coder's form (None: a constant)."""
        made = iter(coder_tables([p for p in self.probs if p is not None], self.coder))
        return [None if p is None else next(made) for p in self.probs]


def _fit_tables(sym_train: np.ndarray) -> _EntropyTables:
    lo = sym_train.min(axis=0)
    hi = sym_train.max(axis=0)
    probs: list[np.ndarray | None] = []
    for c in range(sym_train.shape[1]):
        if hi[c] == lo[c]:
            probs.append(None)  # a constant: the decoder knows it, it costs nothing
            continue
        counts = np.bincount(sym_train[:, c] - lo[c], minlength=int(hi[c] - lo[c]) + 1)
        probs.append((counts + 1.0) / (counts.sum() + counts.size))  # add-one smoothing
    return _EntropyTables(lo, hi, probs, default_coder())


def _encode(sym: np.ndarray, tables: _EntropyTables) -> np.ndarray:
    """All samples in one ANS stream, component-major; components pushed in reverse."""
    idx = [(sym[:, c] - tables.lo[c]).astype(np.int32) for c in tables.coded]
    return encode_words([tables.models[c] for c in tables.coded], idx, tables.coder)


def _decode(words: np.ndarray, tables: _EntropyTables, n: int) -> np.ndarray:
    out = np.tile(tables.lo.astype(np.int64), (n, 1))  # constants keep their one value
    models = [tables.models[c] for c in tables.coded]
    symbols, _ = decode_words(models, words, n, tables.coder)
    for row, c in zip(symbols, tables.coded, strict=True):
        out[:, c] += row
    return out


def _entropy_at(
    z_train: np.ndarray, z_test: np.ndarray, step: float
) -> tuple[np.ndarray, np.ndarray, _EntropyTables]:
    """(test symbols clipped to the train support, ANS words, tables) for one step."""
    sym_train = np.rint(z_train / step).astype(np.int64)
    tables = _fit_tables(sym_train)
    sym_test = np.clip(np.rint(z_test / step).astype(np.int64), tables.lo, tables.hi)
    return sym_test, _encode(sym_test, tables), tables


def _search_step(
    z_train: np.ndarray, z_test: np.ndarray, budget: float, *, rtol: float = 0.01
) -> float:
    """Bisect log(step) so the measured bytes per sample meet the budget; the closest wins."""
    n = z_test.shape[0]
    span = float(np.max(z_train.max(axis=0) - z_train.min(axis=0)))
    span = max(span, 1e-12)
    lo_step = span / (_MAX_SUPPORT - 2)  # finest step: support stays under _MAX_SUPPORT
    hi_step = 4.0 * span  # every component collapses to one or two symbols
    best_step, best_err = hi_step, math.inf
    log_lo, log_hi = math.log(lo_step), math.log(hi_step)
    for _ in range(60):
        step = math.exp(0.5 * (log_lo + log_hi))
        _, words, _ = _entropy_at(z_train, z_test, step)
        got = 4.0 * len(words) / n
        err = abs(got - budget)
        if err < best_err:
            best_step, best_err = step, err
        if err <= rtol * budget or log_hi - log_lo < 1e-4:
            break
        if got > budget:
            log_lo = math.log(step)  # too many bytes: coarser step
        else:
            log_hi = math.log(step)
    return best_step


def pca_points(
    x_train: np.ndarray,
    x_test: np.ndarray,
    budgets: Sequence[tuple[str, float]],
    *,
    data_range: float,
    image_shape: Sequence[int] | None = None,
) -> list[Point]:
    """PCA (fitted on x_train) at the autoencoder's byte budgets and code formats.

    `budgets` holds (format, bytes per sample) pairs. Fixed formats keep k = bytes // itemsize
    components (capped at D; a budget with k = 0 is skipped): f32 keeps float32 coefficients,
    f16 rounds them through float16, int8 quantises each component with the runtime's affine
    int8 calibrated on the training projections. "entropy" is transform coding: every
    component, one uniform step Δ (symbol = rint(z / Δ)), each component coded with its own
    categorical model (training histogram, add-one smoothing over the training support;
    test symbols are clipped to it), all test samples in one ANS stream; Δ is searched so
    the measured stream bytes match the budget. The models themselves are side information
    and not counted, like the autoencoder's entropy tables.

    Inputs are (N, ...) arrays in user units; they are flattened to (N, D). With
    `image_shape` (C, H, W) the points also carry bpp and SSIM.
    """
    from sklearn.decomposition import PCA

    xtr = np.asarray(x_train, dtype=np.float64).reshape(len(x_train), -1)
    xte = np.asarray(x_test, dtype=np.float64).reshape(len(x_test), -1)
    if xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"pca_points: train has {xtr.shape[1]} features, test {xte.shape[1]}")
    dim = xtr.shape[1]
    stats = image_stats(image_shape) if image_shape is not None else None
    if stats is not None and stats.channels * stats.pixels_per_sample != dim:
        raise ValueError(f"pca_points: image_shape {tuple(image_shape or ())} != {dim} features")

    kmax = min(dim, xtr.shape[0])
    pca = PCA(n_components=kmax, svd_solver="full").fit(xtr)
    z_train = pca.transform(xtr)
    z_test = pca.transform(xte)
    mean = pca.mean_
    comps = pca.components_

    def point(fmt: str, k: int, nbytes: float, z_hat: np.ndarray, **params: Any) -> Point:
        x_hat = z_hat @ comps[:k] + mean
        pt = Point(
            method="pca",
            label=f"PCA k={k} {fmt}",
            format=fmt,
            bytes_per_sample=float(nbytes),
            psnr_db=psnr(xte, x_hat, data_range),
            params={"k": k, **params},
        )
        if stats is not None:
            shape = (len(xte), stats.channels, stats.height, stats.width)
            pt.bpp = _bpp(pt.bytes_per_sample, stats)
            pt.ssim = ssim(xte.reshape(shape), x_hat.reshape(shape), data_range)
        return pt

    points: list[Point] = []
    for fmt, budget in budgets:
        if fmt == "entropy":
            step = _search_step(z_train, z_test, float(budget))
            sym, words, tables = _entropy_at(z_train, z_test, step)
            decoded = _decode(words, tables, len(xte))
            assert np.array_equal(decoded, sym), "entropy PCA: decode differs from encode"
            nbytes = 4.0 * len(words) / len(xte)
            points.append(
                point(
                    fmt,
                    kmax,
                    nbytes,
                    sym * step,
                    step=step,
                    target_bytes_per_sample=float(budget),
                )
            )
            continue
        if fmt not in FORMAT_ITEMSIZE:
            raise ValueError(f"pca_points: unknown format {fmt!r}")
        itemsize = FORMAT_ITEMSIZE[fmt]
        k = min(int(budget // itemsize), kmax)
        if k <= 0:
            continue
        ztr, zte = z_train[:, :k], z_test[:, :k]
        if fmt == "f32":
            z_hat = zte.astype(np.float32).astype(np.float64)
        elif fmt == "f16":
            z_hat = zte.astype(np.float16).astype(np.float64)
        else:
            z_hat = _int8_roundtrip(ztr, zte)
        points.append(point(fmt, k, k * itemsize, z_hat, target_bytes_per_sample=float(budget)))
    return points


# --------------------------------------------------------------------------- images


def _to_uint8(images: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(images, dtype=np.float64)), 0, 255).astype(np.uint8)


def _check_images(images: np.ndarray, who: str) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[1] not in (1, 3) or arr.shape[0] == 0:
        raise ValueError(f"{who}: expected images (N, C, H, W) with C = 1 or 3, got {arr.shape}")
    return arr


def _pil_image(img: np.ndarray) -> Any:
    from PIL import Image

    if img.shape[0] == 1:
        return Image.fromarray(img[0])
    return Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0)))


def _decode_pil(data: bytes, channels: int) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM, RST0..7: markers without a length


def jpeg_payload_bytes(data: bytes) -> int:
    """Bytes of entropy-coded scan data in a JPEG file (summed over all scans).

    Walks the marker segments from SOI; for each SOS it skips the SOS header (its length
    field) and counts the bytes up to the next marker that is not a stuffed 0xFF00 or a
    restart marker RSTn (those belong to the scan). Stops at EOI. Raises ValueError when
    the file has no SOI, no scan, or no EOI.
    """
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        raise ValueError("not a JPEG file: no SOI marker")
    pos, payload, scans = 2, 0, 0
    while pos < n:
        if data[pos] != 0xFF:
            raise ValueError(f"JPEG: expected a marker at byte {pos}")
        while pos < n and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= n:
            break
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            if scans == 0:
                raise ValueError("JPEG: EOI before any scan")
            return payload
        if marker in _JPEG_STANDALONE:
            continue
        if pos + 2 > n:
            break
        length = (data[pos] << 8) | data[pos + 1]
        pos += length
        if marker != 0xDA:  # not SOS: skip the segment
            continue
        scans += 1
        start = pos
        while pos + 1 < n:
            if data[pos] == 0xFF:
                nxt = data[pos + 1]
                if nxt != 0x00 and not 0xD0 <= nxt <= 0xD7:
                    break
                pos += 2
            else:
                pos += 1
        if pos + 1 >= n:
            break
        payload += pos - start
    raise ValueError("JPEG: truncated, no EOI marker")


def webp_payload_bytes(data: bytes) -> int:
    """Size of the VP8 (lossy) or VP8L (lossless) chunk's data in a WebP file.

    The RIFF header, the WEBP tag, the chunk headers and other chunks (VP8X, ALPH, ICCP,
    EXIF, ...) are not counted.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("not a WebP file: no RIFF/WEBP header")
    pos = 12
    while pos + 8 <= len(data):
        fourcc = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if fourcc in (b"VP8 ", b"VP8L"):
            if pos + 8 + size > len(data):
                raise ValueError("WebP: truncated VP8 chunk")
            return size
        pos += 8 + size + (size & 1)  # chunks are padded to an even size
    raise ValueError("WebP: no VP8/VP8L chunk")


def _codec_points(
    images: np.ndarray | Sequence[np.ndarray],
    qualities: Sequence[int],
    *,
    data_range: float,
    method: str,
) -> list[Point]:
    """One point per quality over all images. `images` is one (N, C, H, W) array or a list
    of them (e.g. whole test images of different sizes, (1, C, H, W) each): every quality is
    applied to every image, bytes are summed, PSNR is one MSE over every pixel and SSIM the
    mean over the images, as for the autoencoder's points."""
    who = f"{method}_points"
    given: Sequence[np.ndarray] = [images] if isinstance(images, np.ndarray) else images
    arrays = [_check_images(a, who) for a in given]
    if not arrays:
        raise ValueError(f"{who}: no images")
    if len({a.shape[1] for a in arrays}) > 1:
        raise ValueError(f"{who}: images differ in channels: {[a.shape[1] for a in arrays]}")
    channels = arrays[0].shape[1]
    n = sum(len(a) for a in arrays)
    values = sum(a.size for a in arrays)
    pixels = sum(len(a) * a.shape[2] * a.shape[3] for a in arrays) / n  # per image
    points: list[Point] = []
    for q in qualities:
        file_total = payload_total = 0
        sq_err = ssim_sum = 0.0
        for arr in arrays:
            u8 = _to_uint8(arr)
            decoded = np.empty_like(u8)
            for i in range(len(arr)):
                buf = io.BytesIO()
                pil = _pil_image(u8[i])
                if method == "jpeg":
                    pil.save(buf, format="JPEG", quality=int(q), optimize=True)
                else:
                    pil.save(buf, format="WEBP", quality=int(q), lossless=False, method=6)
                data = buf.getvalue()
                file_total += len(data)
                if method == "jpeg":
                    payload_total += jpeg_payload_bytes(data)
                else:
                    payload_total += webp_payload_bytes(data)
                decoded[i] = _decode_pil(data, channels)
            diff = np.asarray(arr, dtype=np.float64) - decoded
            sq_err += float(np.sum(diff * diff))
            ssim_sum += ssim(arr, decoded, data_range) * len(arr)
        nbytes, fbytes = payload_total / n, file_total / n
        mse = sq_err / values
        params: dict[str, Any] = {"quality": int(q)}
        if not isinstance(images, np.ndarray):
            params["images"] = n
        points.append(
            Point(
                method=method,
                label=f"{'JPEG' if method == 'jpeg' else 'WebP'} q={q}",
                format=None,
                bytes_per_sample=nbytes,
                psnr_db=math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse),
                file_bytes_per_sample=fbytes,
                bpp=8 * nbytes / pixels,
                file_bpp=8 * fbytes / pixels,
                ssim=ssim_sum / n,
                params=params,
            )
        )
    return points


def jpeg_points(
    images: np.ndarray | Sequence[np.ndarray],
    qualities: Sequence[int] = DEFAULT_QUALITIES,
    *,
    data_range: float = 255.0,
) -> list[Point]:
    """Pillow JPEG (baseline, optimized Huffman tables, default 4:2:0 chroma) per quality.

    `images` are (N, C, H, W) floats in 0..255 (C = 1 or 3), rounded to uint8 before
    encoding, or a list of such arrays (images of different sizes: one point per quality
    over all of them, with params["images"] = their number); PSNR and SSIM compare the
    decoded images with the original floats.
    `bytes_per_sample` counts the entropy-coded scan data only, `file_bytes_per_sample` the
    whole file.
    """
    return _codec_points(images, qualities, data_range=data_range, method="jpeg")


def webp_points(
    images: np.ndarray | Sequence[np.ndarray],
    qualities: Sequence[int] = DEFAULT_QUALITIES,
    *,
    data_range: float = 255.0,
) -> list[Point]:
    """Pillow lossy WebP (method=6, the slowest and best) per quality.

    As `jpeg_points`; `bytes_per_sample` is the VP8 chunk's data only (no RIFF/WEBP/chunk
    headers), `file_bytes_per_sample` the whole file. Greyscale images are stored as RGB by
    libwebp and read back as luma.
    """
    return _codec_points(images, qualities, data_range=data_range, method="webp")


# --------------------------------------------------------------------------- lossless


def lossless_points(x_test_raw: np.ndarray | Sequence[np.ndarray]) -> list[Point]:
    """zlib (level 9) and zstd (level 19) of the test array's bytes as stored.

    Pass the array in the dtype it is kept in: uint8 for 8-bit images, float32 otherwise.
    A list of arrays (whole images of different sizes) is compressed one array at a time,
    as files would be, and the sizes summed (params["images"] = the number of samples).
    """
    import zstandard

    given: Sequence[np.ndarray] = [x_test_raw] if isinstance(x_test_raw, np.ndarray) else x_test_raw
    arrays = [np.ascontiguousarray(a) for a in given]
    n = sum(len(a) for a in arrays)
    if n == 0:
        raise ValueError("lossless_points: no samples")
    raws = [a.tobytes() for a in arrays]
    raw_per_sample = sum(len(r) for r in raws) / n
    images = all(a.ndim == 4 for a in arrays)
    pixels = sum(len(a) * a.shape[2] * a.shape[3] for a in arrays) / n if images else None
    zstd = zstandard.ZstdCompressor(level=19)
    sizes = {
        "zlib": (sum(len(zlib.compress(r, 9)) for r in raws), 9),
        "zstd": (sum(len(zstd.compress(r)) for r in raws), 19),
    }
    points = []
    for method, (size, level) in sizes.items():
        nbytes = size / n
        params: dict[str, Any] = {
            "level": level,
            "dtype": str(arrays[0].dtype),
            "raw_bytes_per_sample": raw_per_sample,
        }
        if not isinstance(x_test_raw, np.ndarray):
            params["images"] = n
        points.append(
            Point(
                method=method,
                label=f"{method} -{level}",
                format=None,
                bytes_per_sample=nbytes,
                psnr_db=None,
                bpp=8.0 * nbytes / pixels if pixels else None,
                lossless=True,
                params=params,
            )
        )
    return points
