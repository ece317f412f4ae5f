"""The scikit-learn-style transformer over a package (latentwire.runtime.embed)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from latentwire.runtime import InputError, LatentwireTransformer, load


@pytest.fixture(scope="module")
def digits_xy() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.data[:400] / 16.0).astype(np.float32), d.target[:400]


def test_transform_is_the_encoders_float_latents(digits_pkg: Path, digits_x: np.ndarray) -> None:
    t = LatentwireTransformer(digits_pkg)
    z = t.fit_transform(digits_x)
    assert z.shape == (len(digits_x), 8) and z.dtype == np.float32
    np.testing.assert_array_equal(z, load(digits_pkg).encode_latents(digits_x))
    assert t.n_features_in_ == 64 and t.n_components_ == 8
    assert list(t.get_feature_names_out()) == [f"latent{i}" for i in range(8)]


def test_inverse_transform_decodes_float_latents(digits_pkg: Path, digits_x: np.ndarray) -> None:
    t = LatentwireTransformer(digits_pkg)
    x_hat = t.inverse_transform(t.transform(digits_x))
    assert x_hat.shape == digits_x.shape
    np.testing.assert_allclose(x_hat, load(digits_pkg).decode(t.transform(digits_x)), atol=1e-6)
    assert np.mean((x_hat - digits_x) ** 2) < np.mean((digits_x - digits_x.mean(0)) ** 2)
    with pytest.raises(InputError, match="the model expects 8"):
        t.inverse_transform(np.zeros((3, 5), np.float32))


def test_in_a_pipeline_with_clone_and_cross_val_score(
    digits_pkg: Path, digits_xy: tuple[np.ndarray, np.ndarray]
) -> None:
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline

    x, y = digits_xy
    pipe = make_pipeline(LatentwireTransformer(digits_pkg), LogisticRegression(max_iter=500))
    scores = cross_val_score(pipe, x, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.5, scores  # 10 classes: chance is 0.1
    twin = clone(pipe)
    assert twin.get_params()["latentwiretransformer__model"] == digits_pkg
    assert twin.fit(x, y).score(x, y) == pytest.approx(pipe.fit(x, y).score(x, y))
    assert list(pipe[:-1].get_feature_names_out()) == [f"latent{i}" for i in range(8)]
    search = GridSearchCV(
        make_pipeline(LatentwireTransformer(digits_pkg), KNeighborsClassifier()),
        {"kneighborsclassifier__n_neighbors": [1, 5]},
        cv=2,
    )
    assert search.fit(x, y).best_score_ > 0.5


def test_params_and_pickling(digits_pkg: Path, other_pkg: Path, digits_x: np.ndarray) -> None:
    t = LatentwireTransformer(digits_pkg, threads=2)
    assert t.get_params() == {
        "model": digits_pkg,
        "providers": "auto",
        "threads": 2,
        "batch_size": 4096,
    }
    z = t.transform(digits_x)
    assert "threads=2" in repr(t)
    again = pickle.loads(pickle.dumps(t))  # no ONNX Runtime session inside
    np.testing.assert_array_equal(again.transform(digits_x), z)
    t.set_params(model=other_pkg)  # reloads: another package gives other latents
    assert not np.array_equal(t.transform(digits_x), z)
    with pytest.raises(ValueError, match="invalid parameter 'n_components'"):
        t.set_params(n_components=3)


def test_wrong_width_is_one_clear_error(digits_pkg: Path) -> None:
    t = LatentwireTransformer(digits_pkg)
    with pytest.raises(InputError, match="expects 64"):
        t.fit(np.zeros((4, 10)))
    with pytest.raises(InputError, match="NaN"):
        t.transform(np.full((2, 64), np.nan))


def test_image_model_takes_flat_rows(image_pkg: Path) -> None:
    """A model of any image size has no fixed width; arrays of its sample shape work."""
    t = LatentwireTransformer(image_pkg)
    m = load(image_pkg)
    c = m.manifest.input.shape[0]
    assert c is not None
    x = np.random.default_rng(0).random((2, c, 16, 16)).astype(np.float32) * 255
    z = t.transform(x)
    assert z.shape[0] == 2 and z.ndim == 2
    with pytest.raises(InputError, match="no fixed number of features"):
        _ = t.n_features_in_
