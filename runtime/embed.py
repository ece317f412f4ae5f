"""A scikit-learn-style transformer over a model package: float latents as features.

`LatentwireTransformer(model="models/digits")` behaves like a fitted `PCA` whose
components came from the autoencoder: `transform` runs the encoder (ONNX Runtime) and
returns the float latents, one row per sample; `inverse_transform` runs the decoder.
It follows scikit-learn's estimator protocol (`get_params`/`set_params`, `fit` returning
self, `__sklearn_tags__`, `get_feature_names_out`) without importing scikit-learn, so it
works in a `Pipeline`, with `clone`, `cross_val_score` and grid searches, and on an edge
device with only ONNX Runtime installed::

    from sklearn.pipeline import make_pipeline
    from sklearn.linear_model import LogisticRegression
    from latentwire.runtime import LatentwireTransformer

    clf = make_pipeline(LatentwireTransformer("models/digits"), LogisticRegression())
    clf.fit(x_train, y_train).score(x_test, y_test)

`fit` trains nothing (the package is already trained): it loads the package and checks
the width of X. Rows are samples in the units the model was trained on; a model whose
samples are not flat (images (C, H, W)) takes rows of C*H*W values, or arrays of the
sample shape itself, and gives flat rows of latents either way.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from . import _ort
from .errors import InputError
from .model import DEFAULT_BATCH, Model, _check_batch

__all__ = ["LatentwireTransformer"]

_PARAMS = ("model", "providers", "threads", "batch_size")


class LatentwireTransformer:
    """Encode rows of X to float latents with a model package (see the module docstring).

    Parameters are stored as given (scikit-learn's `clone` relies on it); the package is
    loaded on first use and again after `set_params`.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        providers: _ort.Providers = "auto",
        threads: int = 1,
        batch_size: int = DEFAULT_BATCH,
    ) -> None:
        self.model = model
        """The model package directory."""
        self.providers = providers
        """ONNX Runtime execution providers: "auto", "cpu" or "cuda"."""
        self.threads = threads
        """ONNX Runtime intra-op threads (0 = one per core). One by default, so that
        parallel cross-validation jobs do not oversubscribe the cores."""
        self.batch_size = batch_size
        """Samples per ONNX Runtime call."""
        self._loaded: Model | None = None

    # -- scikit-learn's estimator protocol ------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's parameters (scikit-learn's `clone` rebuilds from these)."""
        return {name: getattr(self, name) for name in _PARAMS}

    def set_params(self, **params: Any) -> LatentwireTransformer:
        """Change parameters; the package is loaded again on next use."""
        for name, value in params.items():
            if name not in _PARAMS:
                raise ValueError(
                    f"invalid parameter {name!r} for LatentwireTransformer; valid: "
                    f"{', '.join(_PARAMS)}"
                )
            setattr(self, name, value)
        self._loaded = None
        return self

    def __sklearn_tags__(self) -> Any:
        """A stateless transformer that needs no y (only scikit-learn calls this, so the
        import happens only where scikit-learn is already in use)."""
        from sklearn.utils import Tags, TargetTags, TransformerTags

        return Tags(
            estimator_type=None,
            target_tags=TargetTags(required=False),
            transformer_tags=TransformerTags(preserves_dtype=["float32"]),
            requires_fit=False,
        )

    def __sklearn_is_fitted__(self) -> bool:
        return True  # the package is trained already; fit only checks the input width

    def __repr__(self) -> str:
        defaults = {"providers": "auto", "threads": 1, "batch_size": DEFAULT_BATCH}
        extra = "".join(
            f", {k}={getattr(self, k)!r}" for k, v in defaults.items() if getattr(self, k) != v
        )
        return f"LatentwireTransformer(model={str(self.model)!r}{extra})"

    def __getstate__(self) -> dict[str, Any]:
        """Pickles (joblib, cloudpickle) carry the parameters, not ONNX Runtime sessions."""
        return {**self.__dict__, "_loaded": None}

    # -- the package ------------------------------------------------------------------------
    @property
    def model_(self) -> Model:
        """The loaded package (loaded on first use)."""
        if self._loaded is None:
            self._loaded = Model(
                self.model,
                providers=self.providers,
                threads=self.threads,
                batch_size=self.batch_size,
            )
        return self._loaded

    @property
    def n_features_in_(self) -> int:
        """Values per sample the encoder takes (fixed-shape models)."""
        shape = self.model_.manifest.input.shape
        if any(s is None for s in shape):
            raise InputError(
                f"model {self.model_.name!r} takes samples of any size "
                f"({self.model_.manifest.input.dims()}): it has no fixed number of features"
            )
        return math.prod(s for s in shape if s is not None)

    @property
    def n_components_(self) -> int:
        """Float latents per sample (the output's width), like PCA's `n_components_`."""
        shape = self.model_.manifest.latent.shape
        if any(s is None for s in shape):
            raise InputError(
                f"model {self.model_.name!r} gives latents whose size depends on the input's "
                f"({self.model_.manifest.latent.dims()})"
            )
        return math.prod(s for s in shape if s is not None)

    def fit(self, X: Any, y: Any = None, **fit_params: Any) -> LatentwireTransformer:
        """Load the package and check X's width; nothing is trained. Returns self."""
        self._samples(X)
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Float latents (n_samples, n_components_) of rows of X (float32)."""
        z = self.model_.encode_latents(self._samples(X))
        return z.reshape(len(z), -1)

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        return self.fit(X, y).transform(X)

    def inverse_transform(self, X: Any) -> np.ndarray:
        """Reconstructions (n_samples, n_features_in_) of float latents (rows of
        `transform`'s output), in the data's units."""
        m = self.model_.manifest
        z = np.asarray(X)
        if z.ndim == 2 and len(m.latent.shape) != 1:
            if z.shape[1] != self.n_components_:
                raise InputError(
                    f"latents must have {self.n_components_} columns (model "
                    f"{self.model_.name!r}), got {z.shape[1]}"
                )
            z = z.reshape(len(z), *(s for s in m.latent.shape if s is not None))
        z = _check_batch(z, m.latent, what="latents", allow_int=False).astype(np.float32)
        x_hat = self.model_.run_decoder(z)
        return x_hat.reshape(len(x_hat), -1)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the output columns: latent0, latent1, ..."""
        return np.asarray([f"latent{i}" for i in range(self.n_components_)], dtype=object)

    def _samples(self, X: Any) -> np.ndarray:
        return as_samples(X, self.model_)


def as_samples(X: Any, model: Model) -> np.ndarray:
    """X as a batch of the model's samples: 2-D rows are reshaped for a model whose fixed
    sample shape is not flat (digits as (1, 8, 8)); other arrays must have the sample
    shape already (the encoder checks it)."""
    spec = model.manifest.input
    x = np.asarray(X)
    if x.ndim != 2 or any(s is None for s in spec.shape):
        return x
    width = math.prod(s for s in spec.shape if s is not None)
    if x.shape[1] != width:
        raise InputError(
            f"X has {x.shape[1]} features per sample; model {model.name!r} expects {width} "
            f"(samples of shape ({spec.dims()}))"
        )
    return x.reshape(len(x), *(s for s in spec.shape if s is not None))
