"""`latentwire evaluate --task embed`: a package's float latents as features, against PCA.

For each model package (array data): the test set is the model's validation split of its
training data (the seed and fraction in its manifest), as `evaluate --task rd` uses; the
training split is what the classifiers and PCA are fitted on. Measured on the test set:

- kNN accuracy (k = --neighbors) and logistic-regression accuracy, fitted on the training
  split's codes (standardised) and the labels;
- trustworthiness at k = 5 and 10 (scikit-learn's), test inputs vs their codes, in the
  model's normalised units;
- reconstruction PSNR through the package's decoder (float latents, no quantisation).

Baselines on the same split, with the same number of dimensions: PCA (fitted on the
training split, normalised units), UMAP when umap-learn is installed (reported as not
installed otherwise), and the raw inputs themselves (kNN/logreg only). Packages that differ
only in their training seed are grouped: the report gives the mean and standard deviation
over them, so pass one package per seed (e.g. K = 2, 8, 16 × seeds 0, 1, 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from latentwire.runtime.errors import DataError

log = logging.getLogger("latentwire.training")

BUILTIN_LABELS = ("digits", "breast-cancer", "wine")
"""Built-in data whose class labels come with it."""
TRUST_K = (5, 10)


def add_arguments(group: Any) -> None:
    """Flags of this task beyond --task, --labels and --noise."""
    group.add_argument(
        "--neighbors",
        type=int,
        default=5,
        metavar="K",
        help="embed: k of the kNN classifier (default: 5)",
    )


def run(args: argparse.Namespace) -> int:
    """The extras were checked by `run_evaluate` (training/cli.py) before dispatch."""
    from .report_embed import format_table, write_report

    if args.neighbors < 1:
        raise DataError(f"--neighbors must be >= 1, got {args.neighbors}")
    result, plots = evaluate_embed(
        args.model, args.data, labels=args.labels, neighbors=args.neighbors
    )
    paths = write_report(result, plots, args.report)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(format_table(result))
    print(f"report: {', '.join(str(p) for p in paths)}")
    return 0


# -- data and labels -----------------------------------------------------------------------
def builtin_labels(spec: str) -> np.ndarray | None:
    """Class labels of built-in data (None for other data)."""
    if spec not in BUILTIN_LABELS:
        return None
    from sklearn import datasets

    loader = {
        "digits": datasets.load_digits,
        "breast-cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
    }[spec]
    return np.asarray(loader().target)


def read_labels(path: str, n: int) -> np.ndarray:
    """One label per sample of --data (.npy or .csv, a single column; any values)."""
    from latentwire.runtime.arrays import read_array

    y = read_array(path, key_flag="--labels")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{path}: labels must be one column, got shape {y.shape}")
    if len(y) != n:
        raise DataError(
            f"{path}: {len(y)} labels for {n} samples of --data; give one label per sample "
            "of --data, in its order (the split into training and test is the model's)"
        )
    return y


# -- metrics -------------------------------------------------------------------------------
def _scores(
    z_tr: np.ndarray,
    y_tr: np.ndarray,
    z_te: np.ndarray,
    y_te: np.ndarray,
    x_te: np.ndarray | None,
    neighbors: int,
) -> dict[str, float]:
    """kNN and logistic-regression accuracy; trustworthiness when x_te is given."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.manifold import trustworthiness
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out: dict[str, float] = {}
    knn = KNeighborsClassifier(n_neighbors=min(neighbors, len(z_tr))).fit(z_tr, y_tr)
    out["knn_acc"] = float(knn.score(z_te, y_te))
    logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    out["logreg_acc"] = float(logreg.fit(z_tr, y_tr).score(z_te, y_te))
    if x_te is not None:
        for k in TRUST_K:
            if k < len(x_te) / 2:  # scikit-learn's bound
                out[f"trust@{k}"] = float(trustworthiness(x_te, z_te, n_neighbors=k))
    return out


def _umap(
    x_tr: np.ndarray, x_te: np.ndarray, dims: int, seed: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """UMAP's (training, test) embeddings, or None when umap-learn is not installed."""
    try:
        import umap  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    reducer = umap.UMAP(n_components=dims, random_state=seed).fit(x_tr)
    return np.asarray(reducer.embedding_), np.asarray(reducer.transform(x_te))


def umap_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("umap") is not None


def _evaluate_package(
    package: Path, spec: str, data_x: np.ndarray, y: np.ndarray, neighbors: int
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """(model info, its rows, what the baselines need) for one package."""
    from latentwire.runtime.model import Model

    from .baselines import psnr
    from .data import same_source, split

    model = Model(package, providers="cpu", threads=1)
    m = model.manifest
    info = m.raw.get("training") or {}
    if not same_source(info.get("data"), spec, package):
        log.warning(
            "model %s was trained on %r, not %r: using a fresh 80/20 split of %r",
            m.name,
            info.get("data"),
            spec,
            spec,
        )
    seed = int(info.get("seed", 0))
    frac = float(info.get("val_fraction", 0.2))
    tr, te = split(len(data_x), frac, seed)
    x_tr, x_te = data_x[tr], data_x[te]
    if any(s is None for s in m.latent.shape):
        raise DataError(f"{package}: --task embed needs a model with a fixed latent size")
    dims = math.prod(s for s in m.latent.shape if s is not None)
    norm = m.normalization
    n_tr = norm.forward(x_tr).reshape(len(x_tr), -1).astype(np.float64)
    n_te = norm.forward(x_te).reshape(len(x_te), -1).astype(np.float64)
    z_tr = model.encode_latents(x_tr).reshape(len(x_tr), -1)
    z_te = model.encode_latents(x_te).reshape(len(x_te), -1)
    data_range = float(info.get("data_range") or (x_tr.max() - x_tr.min()) or 1.0)
    x_hat = model.run_decoder(z_te.reshape(len(z_te), *m.latent.shape).astype(np.float32))  # type: ignore[arg-type]
    variant = info.get("embed_loss") or info.get("loss") or "mse"
    row = {
        "method": f"latentwire[{variant}]",
        "model": m.name,
        "package": str(package),
        "dims": dims,
        "seed": seed,
        **_scores(z_tr, y[tr], z_te, y[te], n_te, neighbors),
        "psnr_db": round(psnr(x_te, x_hat, data_range), 3),
    }
    model_info = {
        "package": str(package),
        "name": m.name,
        "fingerprint": m.fingerprint,
        "dims": dims,
        "seed": seed,
        "loss": info.get("loss"),
        "embed_loss": info.get("embed_loss"),
        "val_psnr_db": info.get("val_psnr_db"),
    }
    ctx = {
        "seed": seed,
        "dims": dims,
        "tr": tr,
        "te": te,
        "n_tr": n_tr,
        "n_te": n_te,
        "norm": norm,
        "x_te": x_te,
        "data_range": data_range,
        "z_te": z_te,
    }
    return model_info, [row], ctx


def _baselines(ctx: dict[str, Any], y: np.ndarray, neighbors: int) -> list[dict[str, Any]]:
    """PCA (and UMAP when installed) at the model's dims, on the model's split."""
    from sklearn.decomposition import PCA

    from .baselines import psnr

    tr, te, n_tr, n_te = ctx["tr"], ctx["te"], ctx["n_tr"], ctx["n_te"]
    dims, seed = ctx["dims"], ctx["seed"]
    rows = []
    k = min(dims, n_tr.shape[1], len(n_tr))
    pca = PCA(n_components=k, random_state=seed).fit(n_tr)
    p_te = pca.transform(n_te)
    back = ctx["norm"].inverse(pca.inverse_transform(p_te).reshape(ctx["x_te"].shape))
    rows.append(
        {
            "method": "pca",
            "dims": k,
            "seed": seed,
            **_scores(pca.transform(n_tr), y[tr], p_te, y[te], n_te, neighbors),
            "psnr_db": round(psnr(ctx["x_te"], back, ctx["data_range"]), 3),
            "explained_variance": round(float(pca.explained_variance_ratio_.sum()), 4),
        }
    )
    u = _umap(n_tr, n_te, dims, seed)
    if u is not None:
        scores = _scores(u[0], y[tr], u[1], y[te], n_te, neighbors)
        rows.append({"method": "umap", "dims": dims, "seed": seed, **scores})
    return rows


def _summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds of each (method, dims)."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["dims"]), []).append(r)
    out = []
    metrics = ("knn_acc", "logreg_acc", "trust@5", "trust@10", "psnr_db")
    for (method, dims), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        s: dict[str, Any] = {
            "method": method,
            "dims": dims,
            "seeds": sorted({r["seed"] for r in rs}),
        }
        for key in metrics:
            vals = [r[key] for r in rs if r.get(key) is not None]
            if vals:
                s[key] = round(float(np.mean(vals)), 4)
                s[f"{key}_std"] = round(float(np.std(vals)), 4)
        out.append(s)
    return out


def _verdicts(rows: list[dict[str, Any]], summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per model family and dims: does it beat PCA on kNN accuracy and trust@5? PCA's
    mean is taken over the same seeds (splits) as the family's."""
    out = []
    for s in summary:
        method, dims = s["method"], s["dims"]
        pca = [r for r in rows if r["method"] == "pca" and r["dims"] == dims]
        pca = [r for r in pca if r["seed"] in s["seeds"]]
        if not method.startswith("latentwire") or not pca:
            continue
        v: dict[str, Any] = {"method": method, "dims": dims, "seeds": s["seeds"]}
        for key in ("knn_acc", "trust@5", "psnr_db"):
            vals = [r[key] for r in pca if r.get(key) is not None]
            if key in s and vals:
                v[f"pca_{key}"] = round(float(np.mean(vals)), 4)
                v[f"{key}_minus_pca"] = round(s[key] - float(np.mean(vals)), 4)
        v["beats_pca"] = all(v.get(f"{key}_minus_pca", -1) > 0 for key in ("knn_acc", "trust@5"))
        out.append(v)
    return out


def evaluate_embed(
    packages: list[Path], spec: str, *, labels: str | None, neighbors: int = 5
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Measure every package and its baselines: (what report.json holds, the test codes
    and inputs of each package for the scatter plots)."""
    from .data import load_data

    data = load_data(spec)
    if data.is_image:
        raise DataError(
            "--task embed needs array data (rows of samples), e.g. digits; image models "
            "give latents whose size depends on the image"
        )
    y = read_labels(labels, len(data.x)) if labels else builtin_labels(spec)
    if y is None:
        raise DataError(
            f"--task embed on {spec!r} needs --labels (one class label per sample of "
            f"--data, .npy or .csv); built-in data with labels: {', '.join(BUILTIN_LABELS)}"
        )
    models, rows, plots = [], [], []
    seen: set[tuple[int, int, int]] = set()
    raw_seen: set[int] = set()
    for package in packages:
        log.info("embed: measuring %s", package)
        info, own, ctx = _evaluate_package(Path(package), spec, data.x, y, neighbors)
        models.append(info)
        rows += own
        key = (ctx["seed"], ctx["dims"], len(ctx["te"]))
        if key not in seen:  # one baseline per split and size
            seen.add(key)
            log.info("embed: PCA at %d dims on seed %d's split", ctx["dims"], ctx["seed"])
            rows += _baselines(ctx, y, neighbors)
        if ctx["seed"] not in raw_seen:
            raw_seen.add(ctx["seed"])
            tr, te = ctx["tr"], ctx["te"]
            scores = _scores(ctx["n_tr"], y[tr], ctx["n_te"], y[te], None, neighbors)
            rows.append(
                {"method": "raw", "dims": ctx["n_tr"].shape[1], "seed": ctx["seed"], **scores}
            )
        plots.append(
            {
                "model": info["name"],
                "method": own[0]["method"],
                "dims": ctx["dims"],
                "seed": ctx["seed"],
                "z": ctx["z_te"],
                "x": ctx["n_te"],
                "y": y[ctx["te"]],
            }
        )
    summary = _summary(rows)
    return {
        "task": "embed",
        "data": {"name": data.name, "source": spec, "n": len(data.x), "labels": labels or spec},
        "neighbors": neighbors,
        "umap": "measured" if umap_installed() else "not installed (pip install umap-learn)",
        "models": models,
        "rows": rows,
        "summary": summary,
        "verdicts": _verdicts(rows, summary),
    }, plots
