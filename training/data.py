"""Training data: built-in datasets and user files, split and normalisation fitting.

Every loader returns float32 arrays of shape (N, *sample_shape) in the user's own units;
normalisation is fitted on the training split only and recorded in the manifest, and the
runtime applies it, so users always pass and receive data in their own units.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latentwire.runtime.arrays import read_array
from latentwire.runtime.errors import DataError
from latentwire.runtime.model import first_nonfinite

BUILTIN = (
    "digits",
    "breast-cancer",
    "wine",
    "sample-images",
    "sample-images:china",
    "sample-images:flower",
    "photos",
)
PHOTOS = ("china", "flower")
"""scikit-learn's two sample photos (china.jpg, flower.jpg), 427x640 RGB."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEEP_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
"""PIL modes of 16-bit and 32-bit greyscale images: read as they are, not cut to 8 bits."""
NORMALIZATIONS = ("auto", "none", "minmax", "standard", "scale")


@dataclass(frozen=True)
class Dataset:
    """Samples in the user's units plus what is known about them."""

    x: np.ndarray
    """float32, shape (N, *sample_shape)."""
    name: str
    """Short name used as the default model name."""
    source: str
    """What --data said: a built-in name, or the file or folder as an absolute path (so
    that manifests and checkpoints find it from any working directory)."""
    is_image: bool
    """(N, C, H, W) images in 0..255 units."""
    default_normalization: str
    """What --normalize auto picks for this data."""


def _finish(x: np.ndarray, *, name: str, source: str, image: bool, norm: str) -> Dataset:
    # float, signed/unsigned int and bool (True/False become 1.0/0.0)
    if x.dtype.kind not in "fiub":
        raise DataError(f"{source}: data must be numeric, got dtype {x.dtype}")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        raise DataError(
            f"{source}: expected a 2-D array (samples x features) or more, got shape {x.shape}"
        )
    if x.shape[0] < 2 or x.size == 0:
        raise DataError(f"{source}: needs at least 2 samples, got shape {x.shape}")
    bad = first_nonfinite(x)
    if bad is not None:
        raise DataError(f"{source}: {bad[0]} NaN/Inf value(s), the first at index {bad[1]}")
    return Dataset(x, name, source, image, norm)


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    x = load_digits().data / 16.0
    return _finish(x, name="digits", source="digits", image=False, norm="none")


def _breast_cancer() -> Dataset:
    from sklearn.datasets import load_breast_cancer

    x = load_breast_cancer().data
    return _finish(x, name="breast-cancer", source="breast-cancer", image=False, norm="standard")


def _wine() -> Dataset:
    from sklearn.datasets import load_wine

    x = load_wine().data
    return _finish(x, name="wine", source="wine", image=False, norm="standard")


def sample_photos(which: str | None = None) -> list[np.ndarray]:
    """scikit-learn's sample photos as (427, 640, 3) uint8: both, or one by name."""
    from sklearn.datasets import load_sample_images

    bunch = load_sample_images()
    names = [Path(f).stem for f in bunch.filenames]
    if which is None:
        return list(bunch.images)
    if which not in names:
        raise DataError(f"unknown sample photo {which!r}; choose one of {', '.join(names)}")
    return [bunch.images[names.index(which)]]


TRAINING_PHOTOS = (
    ("sklearn", "china.jpg"),
    ("matplotlib", "grace_hopper.jpg"),
    ("skimage", "astronaut.png"),
    ("skimage", "chelsea.png"),
    ("skimage", "coffee.png"),
    ("skimage", "motorcycle_left.png"),
    ("skimage", "rocket.jpg"),
)
"""The `photos` training set: natural RGB photos that ship inside installed packages
(scikit-learn, matplotlib, scikit-image), so nothing is downloaded. flower.jpg is left
out on purpose: it is the held-out test image (`sample-images:flower`)."""


def _package_photo(package: str, filename: str) -> np.ndarray:
    from PIL import Image

    if package == "sklearn":
        return sample_photos(Path(filename).stem)[0]
    try:
        module = __import__(package)
    except ImportError:
        raise DataError(
            f"the photos data set needs {package} (it ships {filename}): "
            "pip install 'latentwire[train]'"
        ) from None
    root = Path(module.__file__ or "").parent
    path = root / ("mpl-data/sample_data" if package == "matplotlib" else "data") / filename
    if not path.is_file():
        raise DataError(f"{path} is missing from the installed {package}")
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def training_photos() -> list[np.ndarray]:
    """The TRAINING_PHOTOS as (H, W, 3) uint8 arrays."""
    return [_package_photo(pkg, name) for pkg, name in TRAINING_PHOTOS]


def _grid_patches(images: list[np.ndarray], patch: int, step: int, source: str) -> np.ndarray:
    """Patches (N, 3, patch, patch) float32 cut on a grid with the given step; `patch` must
    fit the smallest of the images (`source` names them in the error)."""
    smallest = min(images, key=lambda img: min(img.shape[:2]))
    largest = min(smallest.shape[:2])
    if not 2 <= patch <= largest:
        raise DataError(
            f"--patch must be 2 .. {largest} for {source} (its smallest photo is "
            f"{smallest.shape[0]}x{smallest.shape[1]}), got {patch}"
        )
    if step < 1:
        raise DataError(f"patch stride must be at least 1, got {step}")
    out = [
        img[top : top + patch, left : left + patch].transpose(2, 0, 1)
        for img in images
        for top in range(0, img.shape[0] - patch + 1, step)
        for left in range(0, img.shape[1] - patch + 1, step)
    ]
    return np.stack(out).astype(np.float32)


def photo_patches(patch: int = 64) -> np.ndarray:
    """Patches of the TRAINING_PHOTOS, cut every patch/4 pixels (overlapping crops: more
    distinct views of seven photos than a patch/2 grid)."""
    return _grid_patches(training_photos(), patch, max(1, patch // 4), "photos")


def sample_image_patches(
    patch: int = 32, stride: int | None = None, which: str | None = None
) -> np.ndarray:
    """Patches (N, 3, patch, patch) cut on a grid from scikit-learn's sample photos (both,
    or the one named `which`)."""
    return _grid_patches(sample_photos(which), patch, stride or patch // 2, "sample-images")


def _sample_images(patch: int, which: str | None = None) -> Dataset:
    x = sample_image_patches(patch, which=which)
    source = f"sample-images:{which}" if which else "sample-images"
    name = f"sample-images-{which}" if which else "sample-images"
    return _finish(x, name=name, source=source, image=True, norm="scale")


def load_whole_images(spec: str) -> list[np.ndarray]:
    """Whole images (1, C, H, W) float32 in 0..255 for evaluation: `sample-images:NAME`,
    `sample-images` (both photos), `photos` (the TRAINING_PHOTOS), a PNG/JPEG file, or a
    folder of them."""
    if spec == "sample-images" or spec.startswith("sample-images:") or spec == "photos":
        which = spec.partition(":")[2] or None
        photos = training_photos() if spec == "photos" else sample_photos(which)
        return [img.transpose(2, 0, 1)[None].astype(np.float32) for img in photos]
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        files = [path]
    else:
        raise DataError(
            f"{spec}: an image model is evaluated on whole images: sample-images:flower, "
            "a PNG/JPEG file or a folder of them"
        )
    if not files:
        raise DataError(f"{spec}: no PNG or JPEG images")
    from latentwire.runtime.images import read_images

    return [img[None] for img in read_images(files)]


def _image_folder(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{path}: no PNG or JPEG images in this folder")
    images: list[Any] = []
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                images.append(im.copy())
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{f}: cannot read image ({exc})") from None
    sizes = {im.size for im in images}
    if len(sizes) > 1:
        (w0, h0) = images[0].size
        odd, (w1, h1) = next(
            (f, im.size) for f, im in zip(files, images, strict=True) if im.size != (w0, h0)
        )
        raise DataError(
            f"{path}: images differ in size ({files[0].name} is {w0}x{h0}, {odd.name} is "
            f"{w1}x{h1}); resize or crop them to one size"
        )
    deep = [im.mode in DEEP_GRAY_MODES for im in images]
    if any(deep):
        if not all(deep):
            hi, lo = deep.index(True), deep.index(False)
            raise DataError(
                f"{path}: images mix bit depths ({files[hi].name} is 16/32-bit, PIL mode "
                f"{images[hi].mode}; {files[lo].name} is 8-bit or less, mode {images[lo].mode}); "
                "save them all with one bit depth"
            )
        # np.asarray keeps the values; convert("L") would clip them to 0..255
        return np.stack([np.asarray(im, dtype=np.float32) for im in images])[:, None]
    gray = all(im.mode in ("L", "1") for im in images)
    mode = "L" if gray else "RGB"
    arr = np.stack([np.asarray(im.convert(mode)) for im in images])
    return arr[:, None] if gray else arr.transpose(0, 3, 1, 2)


def load_data(spec: str, *, key: str | None = None, patch: int = 32) -> Dataset:
    """Load `--data`: a built-in name, a .npy/.npz/.csv file or a folder of images."""
    if spec == "digits":
        return _digits()
    if spec == "breast-cancer":
        return _breast_cancer()
    if spec == "wine":
        return _wine()
    if spec == "sample-images":
        return _sample_images(patch)
    if spec == "photos":
        return _finish(photo_patches(patch), name="photos", source=spec, image=True, norm="scale")
    if spec.startswith("sample-images:"):
        return _sample_images(patch, spec.partition(":")[2])
    path = Path(spec)
    if not path.exists():
        looks_like_name = not path.suffix and "/" not in spec
        if looks_like_name:
            raise DataError(
                f"unknown dataset {spec!r}; built-in names are {', '.join(BUILTIN)}, "
                "or give a .npy/.npz/.csv file or an image folder"
            )
        raise DataError(f"{spec}: no such file or folder")
    name = path.stem if path.is_file() else path.name
    source = str(path.resolve())
    if path.is_dir():
        return _finish(_image_folder(path), name=name, source=source, image=True, norm="scale")
    x = read_array(path, key=key)
    image = x.ndim == 4
    norm = "scale" if image else "standard"
    return _finish(x, name=name, source=source, image=image, norm=norm)


def is_builtin(spec: str) -> bool:
    """Whether `spec` names a built-in dataset rather than a file or folder."""
    return spec in BUILTIN or spec.startswith("sample-images:")


def resolve_source(source: str, near: Path) -> str:
    """A data source stored in a manifest or checkpoint, loadable from here.

    Built-in names and absolute paths stay as they are. Relative paths (stored by versions
    before the path was resolved at training time) are relative to wherever `train` ran:
    they are looked up from the working directory, then from `near` (the package or
    checkpoint) and each folder above it; a DataError says where they were looked for.
    """
    if not source or is_builtin(source) or Path(source).is_absolute():
        return source
    near = near.resolve()
    for base in (Path.cwd(), near, *near.parents):
        if (base / source).exists():
            return str((base / source).resolve())
    raise DataError(
        f"the model was trained on {source!r}, a path relative to the folder `latentwire "
        f"train` ran in, which is not found from here ({Path.cwd()}) nor from {near} or a "
        "folder above it; run from the folder training ran in"
    )


def same_source(stored: str | None, spec: str, near: Path) -> bool:
    """Whether a stored data source (see `resolve_source`) and --data name the same data."""
    if not stored:
        return False
    if is_builtin(stored) or is_builtin(spec):
        return stored == spec
    try:
        return Path(resolve_source(stored, near)) == Path(spec).resolve()
    except DataError:
        return False


def split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffled train/validation indices, repeatable for a seed."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * val_fraction))
    if n_val >= n:
        raise DataError(f"{n} samples are too few to hold out {val_fraction:.0%} for validation")
    return order[n_val:], order[:n_val]


def fit_normalization(x_train: np.ndarray, kind: str, *, is_image: bool) -> dict[str, Any]:
    """Fit offset/scale on the training split; the manifest stores the result.

    Images get per-channel statistics (shape (C, 1, 1)) so any image size works; other
    data gets per-feature statistics.
    """
    if kind not in NORMALIZATIONS or kind == "auto":
        raise DataError(f"normalization must be one of {NORMALIZATIONS[1:]}, got {kind!r}")
    axes: tuple[int, ...] = (0, 2, 3) if is_image else (0,)
    if kind == "none":
        offset, scale = np.zeros(1), np.ones(1)
    elif kind == "scale":  # 8-bit images (values in 1..255) by 255, anything else by max |x|
        peak = float(np.abs(x_train).max())
        eight_bit = is_image and 1 < peak <= 255
        offset, scale = np.zeros(1), np.array([255.0 if eight_bit else peak or 1.0])
    elif kind == "minmax":
        lo, hi = x_train.min(axis=axes, keepdims=True)[0], x_train.max(axis=axes, keepdims=True)[0]
        offset, scale = lo, np.where(hi - lo > 0, hi - lo, 1.0)
    else:  # standard
        mean = x_train.mean(axis=axes, keepdims=True, dtype=np.float64)[0]
        std = x_train.std(axis=axes, keepdims=True, dtype=np.float64)[0]
        offset, scale = mean, np.where(std > 0, std, 1.0)
    return {
        "kind": kind,
        "offset": np.asarray(offset, dtype=np.float32).tolist(),
        "scale": np.asarray(scale, dtype=np.float32).tolist(),
    }
