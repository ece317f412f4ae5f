"""Tests for training data loading, splitting and normalisation fitting.

Covers latentwire/training/data.py and latentwire/runtime/arrays.py.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentwire.runtime.arrays import read_array
from latentwire.runtime.errors import DataError
from latentwire.training.data import (
    BUILTIN,
    Dataset,
    fit_normalization,
    load_data,
    sample_image_patches,
    sample_photos,
    split,
)

# --------------------------------------------------------------------------- helpers


def _write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _write_png(path: Path, size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Path:
    """Write a random image of `size` (width, height) in `mode` ("RGB" or "L")."""
    w, h = size
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
    Image.fromarray(arr, mode=mode).save(path)
    return path


def _data_error(spec: str | Path, **kwargs: object) -> str:
    """load_data(spec) must raise DataError; return its message."""
    with pytest.raises(DataError) as info:
        load_data(str(spec), **kwargs)  # type: ignore[arg-type]
    return str(info.value)


# --------------------------------------------------------------------------- built-ins


def test_digits_builtin() -> None:
    ds = load_data("digits")
    assert isinstance(ds, Dataset)
    assert ds.x.dtype == np.float32
    assert ds.x.shape == (1797, 64)
    assert ds.x.min() >= 0.0
    assert ds.x.max() <= 1.0
    assert ds.x.max() == 1.0  # divided by 16, the maximum pixel value
    assert ds.name == "digits"
    assert not ds.is_image


def test_breast_cancer_builtin() -> None:
    ds = load_data("breast-cancer")
    assert ds.x.dtype == np.float32
    assert ds.x.shape == (569, 30)
    assert ds.default_normalization == "standard"
    assert not ds.is_image


def test_sample_images_builtin() -> None:
    ds = load_data("sample-images")
    assert ds.is_image
    assert ds.x.dtype == np.float32
    assert ds.x.ndim == 4
    assert ds.x.shape[1:] == (3, 32, 32)
    assert ds.x.shape[0] > 100
    assert ds.x.min() >= 0.0
    assert ds.x.max() <= 255.0
    assert ds.x.max() > 1.0  # in 0..255 units, not already scaled to [0, 1]
    assert ds.default_normalization == "scale"


def test_sample_images_patch_size() -> None:
    ds = load_data("sample-images", patch=16)
    assert ds.x.shape[1:] == (3, 16, 16)
    # smaller patches on a finer grid give more of them
    assert ds.x.shape[0] > load_data("sample-images").x.shape[0]


@pytest.mark.parametrize("patch", [0, 1, 428, 500])
def test_sample_images_patch_out_of_range(patch: int) -> None:
    msg = _data_error("sample-images", patch=patch)
    assert "2 .. 427" in msg
    assert str(patch) in msg
    with pytest.raises(DataError, match=r"2 \.\. 427"):
        sample_image_patches(patch)


def test_sample_images_largest_patch() -> None:
    x = sample_image_patches(427)
    assert x.shape[1:] == (3, 427, 427)
    assert x.shape[0] >= 2


def test_photos_training_set_leaves_flower_out() -> None:
    """`photos`: patches of seven photos shipped inside installed packages; flower.jpg, the
    held-out test image, is not among them."""
    from latentwire.training.data import TRAINING_PHOTOS, training_photos

    photos = training_photos()
    assert len(photos) == len(TRAINING_PHOTOS) == 7
    assert all(p.dtype == np.uint8 and p.ndim == 3 and p.shape[2] == 3 for p in photos)
    assert "flower.jpg" not in {name for _, name in TRAINING_PHOTOS}
    flower = sample_photos("flower")[0]
    assert not any(p.shape == flower.shape and np.array_equal(p, flower) for p in photos)
    ds = load_data("photos", patch=64)
    assert ds.is_image and ds.name == "photos" and ds.default_normalization == "scale"
    assert ds.x.shape[1:] == (3, 64, 64)
    # a patch/4 grid over every photo
    expected = sum(
        ((h - 64) // 16 + 1) * ((w - 64) // 16 + 1) for h, w, _ in (p.shape for p in photos)
    )
    assert ds.x.shape[0] == expected
    # evaluate fits its image PCA baseline on the model's training images, whole
    from latentwire.training.data import load_whole_images

    whole = load_whole_images("photos")
    assert [w.shape for w in whole] == [(1, 3, *p.shape[:2]) for p in photos]
    assert all(
        np.array_equal(w[0].transpose(1, 2, 0), p) for w, p in zip(whole, photos, strict=True)
    )


# --------------------------------------------------------------------------- files


def test_npy_file(tmp_path: Path) -> None:
    x = np.arange(20, dtype=np.float64).reshape(5, 4)
    np.save(tmp_path / "arr.npy", x)
    ds = load_data(str(tmp_path / "arr.npy"))
    assert ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.x, x.astype(np.float32))
    assert ds.name == "arr"
    assert not ds.is_image
    assert ds.default_normalization == "standard"


def test_npz_single_array(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((6, 3))
    np.savez(tmp_path / "one.npz", data=x)
    ds = load_data(str(tmp_path / "one.npz"))
    np.testing.assert_array_equal(ds.x, x.astype(np.float32))


def test_npz_several_arrays_needs_key(tmp_path: Path) -> None:
    a = np.ones((4, 2))
    b = np.zeros((5, 3))
    path = tmp_path / "many.npz"
    np.savez(path, first=a, second=b)
    msg = _data_error(path)
    assert "first" in msg
    assert "second" in msg
    assert "--key" in msg
    np.testing.assert_array_equal(load_data(str(path), key="second").x, b)
    np.testing.assert_array_equal(read_array(path, key="first"), a)
    msg = _data_error(path, key="third")
    assert "third" in msg
    assert "first" in msg


def test_csv_with_and_without_header(tmp_path: Path) -> None:
    body = "1,2.5,3\n4,-5,6e1\n7,8,9\n"
    plain = _write_csv(tmp_path / "plain.csv", body)
    headed = _write_csv(tmp_path / "headed.csv", "a,b,c\n" + body)
    expected = np.array([[1, 2.5, 3], [4, -5, 60], [7, 8, 9]], dtype=np.float32)
    x_plain = load_data(str(plain)).x
    x_headed = load_data(str(headed)).x
    np.testing.assert_array_equal(x_plain, expected)
    np.testing.assert_array_equal(x_headed, x_plain)
    assert x_headed.dtype == np.float32


# --------------------------------------------------------------------------- bad data


def test_csv_non_numeric_column_names_line_and_column(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "bad.csv", "x,y,label\n1,2,3\n4,5,cat\n")
    msg = _data_error(path)
    assert "line 3" in msg
    assert "column 3" in msg
    assert "'label'" in msg
    assert "'cat'" in msg
    assert "not a number" in msg


def test_csv_non_numeric_without_header(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "bad.csv", "1,2,3\n4,5,6\n7,x,9\n")
    msg = _data_error(path)
    assert "line 3" in msg
    assert "column 2" in msg
    assert "'x'" in msg


def test_csv_with_nan(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "nan.csv", "1,2\n3,nan\n5,6\n")
    msg = _data_error(path)
    assert "NaN/Inf" in msg
    assert "(1, 1)" in msg  # index of the first bad value


def test_csv_with_inf(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "inf.csv", "1,2\n3,4\n-inf,6\n")
    msg = _data_error(path)
    assert "NaN/Inf" in msg
    assert "(2, 0)" in msg


def test_npy_with_nan_and_inf(tmp_path: Path) -> None:
    x = np.ones((4, 3), np.float32)
    x[1, 2] = np.nan
    x[3, 0] = np.inf
    np.save(tmp_path / "bad.npy", x)
    msg = _data_error(tmp_path / "bad.npy")
    assert "2 NaN/Inf" in msg
    assert "(1, 2)" in msg


@pytest.mark.parametrize("suffix", [".csv", ".npy", ".npz"])
def test_empty_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"empty{suffix}"
    path.write_bytes(b"")
    assert "empty" in _data_error(path)


def test_csv_blank_lines_only_is_empty(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "blank.csv", "\n\n  \n")
    assert "empty" in _data_error(path)


def test_csv_header_without_rows(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "header.csv", "a,b,c\n")
    assert "no data rows" in _data_error(path)


def test_csv_ragged_rows(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "ragged.csv", "1,2,3\n4,5,6\n7,8\n")
    msg = _data_error(path)
    assert "line 3" in msg
    assert "2 columns" in msg
    assert "expected 3" in msg


def test_csv_error_line_counts_blank_lines(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "gaps.csv", "1,2\n\n\n3,x\n")
    assert "line 4" in _data_error(path)


def test_csv_bad_first_row_is_not_a_header(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "first.csv", "1,oops\n3,4\n5,6\n")
    assert "'oops'" in _data_error(path)


def test_csv_utf8_bom(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeff1,2\n3,4\n5,6\n".encode())
    assert load_data(str(path)).x.shape == (3, 2)


def test_unknown_dataset_lists_builtins() -> None:
    msg = _data_error("no-such-dataset")
    assert "unknown dataset" in msg
    assert "'no-such-dataset'" in msg
    for name in BUILTIN:
        assert name in msg


def test_missing_path(tmp_path: Path) -> None:
    msg = _data_error(tmp_path / "missing.npy")
    assert "no such file" in msg
    assert "missing.npy" in msg
    assert "no such file" in _data_error(tmp_path / "missing_folder")


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("1 2\n3 4\n")
    msg = _data_error(path)
    assert "unsupported file type" in msg
    assert "'.txt'" in msg


def test_one_dimensional_array(tmp_path: Path) -> None:
    np.save(tmp_path / "flat.npy", np.arange(10.0))
    msg = _data_error(tmp_path / "flat.npy")
    assert "2-D" in msg
    assert "(10,)" in msg


def test_single_sample(tmp_path: Path) -> None:
    np.save(tmp_path / "one.npy", np.ones((1, 5)))
    assert "at least 2 samples" in _data_error(tmp_path / "one.npy")


def test_non_numeric_npy(tmp_path: Path) -> None:
    np.save(tmp_path / "str.npy", np.array([["a", "b"], ["c", "d"]]))
    assert "numeric" in _data_error(tmp_path / "str.npy")


def test_corrupt_npy(tmp_path: Path) -> None:
    (tmp_path / "junk.npy").write_bytes(b"this is not a numpy file at all")
    assert "cannot read" in _data_error(tmp_path / "junk.npy")


def test_npy_saved_as_npz(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    with path.open("wb") as f:  # np.save(path) would append ".npy" to the name
        np.save(f, np.ones((4, 3)))
    msg = _data_error(path)
    assert "x.npz: not an .npz archive (it looks like a .npy file)" in msg
    assert "\n" not in msg


def test_npz_saved_as_npy(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    with path.open("wb") as f:  # np.savez(path) would append ".npz" to the name
        np.savez(f, data=np.ones((4, 3)))
    msg = _data_error(path)
    assert "x.npy: not a .npy file (it looks like an .npz archive)" in msg
    with pytest.raises(DataError, match=r"looks like an \.npz archive"):
        read_array(path)


def test_truncated_npz(tmp_path: Path) -> None:
    whole = tmp_path / "whole.npz"
    np.savez(whole, data=np.random.default_rng(0).random((50, 8)))
    path = tmp_path / "cut.npz"
    path.write_bytes(whole.read_bytes()[:200])
    msg = _data_error(path)
    assert "cut.npz" in msg
    assert "damaged or truncated" in msg


def test_damaged_compressed_npz(tmp_path: Path) -> None:
    whole = tmp_path / "whole.npz"
    np.savez_compressed(whole, data=np.random.default_rng(0).random((200, 8)))
    blob = bytearray(whole.read_bytes())
    for i in range(200, 600):  # inside the compressed member, not the zip directory
        blob[i] ^= 0x55
    path = tmp_path / "bad.npz"
    path.write_bytes(bytes(blob))
    assert "damaged or truncated" in _data_error(path)


def test_npz_member_not_an_array(tmp_path: Path) -> None:
    path = tmp_path / "notes.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")
    assert "'readme.txt' in the archive is not a NumPy array" in _data_error(path)


def test_zero_dimensional_npy(tmp_path: Path) -> None:
    path = tmp_path / "scalar.npy"
    np.save(path, np.float32(3.5))
    msg = _data_error(path)
    assert "holds a single value; expected rows of samples" in msg
    with pytest.raises(DataError, match="holds a single value"):
        read_array(path)


def test_zero_dimensional_npz_member(tmp_path: Path) -> None:
    path = tmp_path / "scalar.npz"
    np.savez(path, data=np.array(7))
    with pytest.raises(DataError, match="holds a single value"):
        read_array(path)


def test_bool_npy_is_zero_one(tmp_path: Path) -> None:
    x = np.array([[True, False, True], [False, False, True], [True, True, False]])
    np.save(tmp_path / "mask.npy", x)
    ds = load_data(str(tmp_path / "mask.npy"))
    assert ds.x.dtype == np.float32
    np.testing.assert_array_equal(ds.x, x.astype(np.float32))


# --------------------------------------------------------------------------- image folders


def test_image_folder_rgb(tmp_path: Path) -> None:
    for i in range(3):
        _write_png(tmp_path / f"img{i}.png", (12, 8), "RGB", seed=i)
    (tmp_path / "notes.txt").write_text("ignored")
    ds = load_data(str(tmp_path))
    assert ds.is_image
    assert ds.x.dtype == np.float32
    assert ds.x.shape == (3, 3, 8, 12)  # (N, C, H, W)
    assert ds.name == tmp_path.name
    assert ds.default_normalization == "scale"
    with Image.open(tmp_path / "img1.png") as im:
        expected = np.asarray(im).transpose(2, 0, 1).astype(np.float32)
    np.testing.assert_array_equal(ds.x[1], expected)


def test_image_folder_grayscale(tmp_path: Path) -> None:
    for i in range(4):
        _write_png(tmp_path / f"g{i}.png", (16, 16), "L", seed=i)
    ds = load_data(str(tmp_path))
    assert ds.is_image
    assert ds.x.shape == (4, 1, 16, 16)
    with Image.open(tmp_path / "g0.png") as im:
        np.testing.assert_array_equal(ds.x[0, 0], np.asarray(im).astype(np.float32))


def _write_png16(path: Path, arr: np.ndarray) -> Path:
    im = Image.fromarray(arr.astype(np.uint16))
    assert im.mode == "I;16"
    im.save(path)
    return path


def test_image_folder_16_bit_grayscale(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 60001, size=(6, 10)) for _ in range(3)]
    arrays[0][0, 0] = 60000
    for i, arr in enumerate(arrays):
        _write_png16(tmp_path / f"deep{i}.png", arr)
    ds = load_data(str(tmp_path))
    assert ds.is_image
    assert ds.x.dtype == np.float32
    assert ds.x.shape == (3, 1, 6, 10)
    assert ds.x.max() == 60000.0  # not clipped to 255
    np.testing.assert_array_equal(ds.x[:, 0], np.stack(arrays).astype(np.float32))


def test_image_folder_mixed_bit_depths(tmp_path: Path) -> None:
    _write_png16(tmp_path / "a.png", np.full((8, 8), 40000))
    _write_png(tmp_path / "b.png", (8, 8), "L")
    msg = _data_error(tmp_path)
    assert "bit depth" in msg
    assert "a.png" in msg
    assert "b.png" in msg


def test_image_folder_16_bit_with_rgb(tmp_path: Path) -> None:
    _write_png16(tmp_path / "a.png", np.full((8, 8), 40000))
    _write_png(tmp_path / "b.png", (8, 8), "RGB")
    assert "bit depth" in _data_error(tmp_path)


def test_image_folder_different_sizes(tmp_path: Path) -> None:
    _write_png(tmp_path / "a.png", (8, 8))
    _write_png(tmp_path / "b.png", (8, 8))
    _write_png(tmp_path / "c.png", (10, 6))
    msg = _data_error(tmp_path)
    assert "differ in size" in msg
    assert "a.png is 8x8" in msg
    assert "c.png is 10x6" in msg


def test_empty_image_folder(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no images here")
    assert "no PNG or JPEG images" in _data_error(tmp_path)


def test_unreadable_image(tmp_path: Path) -> None:
    _write_png(tmp_path / "a.png", (8, 8))
    (tmp_path / "b.png").write_bytes(b"not a png")
    msg = _data_error(tmp_path)
    assert "b.png" in msg
    assert "cannot read image" in msg


# --------------------------------------------------------------------------- split


def test_split_repeatable_disjoint_and_complete() -> None:
    tr, va = split(100, 0.2, seed=7)
    tr2, va2 = split(100, 0.2, seed=7)
    np.testing.assert_array_equal(tr, tr2)
    np.testing.assert_array_equal(va, va2)
    assert len(va) == 20
    assert len(tr) == 80
    assert not set(tr.tolist()) & set(va.tolist())
    assert sorted(tr.tolist() + va.tolist()) == list(range(100))


def test_split_seed_changes_order() -> None:
    tr_a, va_a = split(100, 0.2, seed=0)
    tr_b, va_b = split(100, 0.2, seed=1)
    assert not np.array_equal(np.concatenate([va_a, tr_a]), np.concatenate([va_b, tr_b]))
    assert set(va_a.tolist()) != set(va_b.tolist())


def test_split_keeps_at_least_one_validation_sample() -> None:
    tr, va = split(5, 0.01, seed=0)
    assert len(va) == 1
    assert len(tr) == 4


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_split_bad_fraction(fraction: float) -> None:
    with pytest.raises(DataError, match="val-fraction"):
        split(100, fraction, seed=0)


def test_split_too_few_samples() -> None:
    with pytest.raises(DataError, match="too few"):
        split(2, 0.9, seed=0)


# --------------------------------------------------------------------------- normalisation


def _train_val() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x_train = (rng.normal(size=(50, 4)) * [1, 2, 3, 4] + [10, -5, 0, 3]).astype(np.float32)
    # validation data on a very different scale: must not influence the statistics
    x_val = (rng.normal(size=(50, 4)) * 100 + 1000).astype(np.float32)
    return x_train, x_val


def test_standard_uses_training_statistics_only() -> None:
    x_train, x_val = _train_val()
    norm = fit_normalization(x_train, "standard", is_image=False)
    assert norm["kind"] == "standard"
    np.testing.assert_allclose(norm["offset"], x_train.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(norm["scale"], x_train.std(axis=0), rtol=1e-5)
    both = fit_normalization(np.concatenate([x_train, x_val]), "standard", is_image=False)
    assert not np.allclose(both["offset"], norm["offset"])
    # values normalised with the training statistics have mean 0 / std 1 on the training set
    z = (x_train - np.asarray(norm["offset"])) / np.asarray(norm["scale"])
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=1e-5)


def test_minmax_uses_training_min_max() -> None:
    x_train, _ = _train_val()
    norm = fit_normalization(x_train, "minmax", is_image=False)
    lo, hi = x_train.min(axis=0), x_train.max(axis=0)
    np.testing.assert_allclose(norm["offset"], lo)
    np.testing.assert_allclose(norm["scale"], hi - lo, rtol=1e-6)
    z = (x_train - np.asarray(norm["offset"], np.float32)) / np.asarray(norm["scale"], np.float32)
    assert z.min() >= 0.0
    assert z.max() <= 1.0 + 1e-6


def test_none_is_identity() -> None:
    x_train, _ = _train_val()
    norm = fit_normalization(x_train, "none", is_image=False)
    assert norm == {"kind": "none", "offset": [0.0], "scale": [1.0]}


def test_scale_kind() -> None:
    x_train, _ = _train_val()
    norm = fit_normalization(x_train, "scale", is_image=False)
    assert norm["offset"] == [0.0]
    assert norm["scale"] == pytest.approx([float(np.abs(x_train).max())])
    img8 = np.full((3, 3, 4, 4), 200.0, np.float32)  # 8-bit images: divided by 255
    assert fit_normalization(img8, "scale", is_image=True)["scale"] == [255.0]
    img01 = np.full((3, 3, 4, 4), 0.5, np.float32)  # float images in [0, 1]: by max |x|
    assert fit_normalization(img01, "scale", is_image=True)["scale"] == [0.5]
    img16 = np.full((3, 1, 4, 4), 60000.0, np.float32)  # past 8 bits: by max |x|, not 255
    assert fit_normalization(img16, "scale", is_image=True)["scale"] == [60000.0]


@pytest.mark.parametrize("kind", ["standard", "minmax"])
def test_image_statistics_are_per_channel(kind: str) -> None:
    rng = np.random.default_rng(1)
    x = (
        rng.random((10, 3, 5, 6)).astype(np.float32)
        * np.array([1, 10, 100], np.float32)[None, :, None, None]
    )
    norm = fit_normalization(x, kind, is_image=True)
    offset = np.asarray(norm["offset"])
    scale = np.asarray(norm["scale"])
    assert offset.shape == (3, 1, 1)
    assert scale.shape == (3, 1, 1)
    if kind == "standard":
        np.testing.assert_allclose(offset[:, 0, 0], x.mean(axis=(0, 2, 3)), rtol=1e-5)
        np.testing.assert_allclose(scale[:, 0, 0], x.std(axis=(0, 2, 3)), rtol=1e-4)
    else:
        np.testing.assert_allclose(offset[:, 0, 0], x.min(axis=(0, 2, 3)))
        np.testing.assert_allclose(
            scale[:, 0, 0], x.max(axis=(0, 2, 3)) - x.min(axis=(0, 2, 3)), rtol=1e-6
        )
    # broadcasts against images of any size
    assert ((np.zeros((2, 3, 7, 9)) - offset) / scale).shape == (2, 3, 7, 9)


@pytest.mark.parametrize("kind", ["standard", "minmax"])
def test_constant_features_get_unit_scale(kind: str) -> None:
    x = np.random.default_rng(2).random((20, 3)).astype(np.float32)
    x[:, 0] = 0.0
    x[:, 2] = 0.1
    norm = fit_normalization(x, kind, is_image=False)
    scale = np.asarray(norm["scale"])
    assert scale[0] == 1.0
    assert scale[2] == 1.0
    assert scale[1] != 1.0
    assert np.all(scale > 0)
    assert np.all(np.isfinite((x - np.asarray(norm["offset"])) / scale))


def test_constant_image_channel_gets_unit_scale() -> None:
    x = np.random.default_rng(3).random((4, 2, 3, 3)).astype(np.float32)
    x[:, 1] = 7.0
    norm = fit_normalization(x, "standard", is_image=True)
    assert np.asarray(norm["scale"])[1, 0, 0] == 1.0
    assert np.asarray(norm["offset"])[1, 0, 0] == pytest.approx(7.0)


def test_digits_constant_columns_unit_scale() -> None:
    x = load_data("digits").x
    norm = fit_normalization(x, "standard", is_image=False)
    scale = np.asarray(norm["scale"])
    assert scale.shape == (64,)
    assert scale[0] == 1.0  # the first pixel is always 0
    assert np.all(scale > 0)


@pytest.mark.parametrize("kind", ["auto", "zscore", ""])
def test_fit_normalization_bad_kind(kind: str) -> None:
    with pytest.raises(DataError, match="normalization must be one of"):
        fit_normalization(np.ones((3, 2), np.float32), kind, is_image=False)
