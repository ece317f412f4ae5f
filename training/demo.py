"""`latentwire demo`: digits end to end, the way an edge device and a server would run it.

1. Hold out 20% of scikit-learn's digits as a test split nothing trains or early-stops on.
2. Train the dense autoencoder on the rest (its own train/validation split), export it.
3. With the torch-free runtime: encode the test split, write a codes file, read it back,
   decode it.
4. Report bytes per sample on the wire against raw float32, the compression ratio, and
   PSNR against PCA with as many components as the latent has (fitted on the same
   non-test samples, so PCA sees at least as much data as the autoencoder).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from latentwire.runtime import load, read_codes_file, write_codes_file
from latentwire.runtime.manifest import MANIFEST_FILE

from .data import Dataset, load_data, split
from .pipeline import psnr, train_and_export

DEMO_NAME = "digits-demo"


def _own_output(out: Path) -> bool:
    """Whether `out` holds a package an earlier demo wrote (the demo replaces those)."""
    try:
        return bool(json.loads((out / MANIFEST_FILE).read_text()).get("name") == DEMO_NAME)
    except (OSError, ValueError, AttributeError):
        return False


def run(
    *,
    out: Path,
    latent_dim: int = 8,
    seed: int = 0,
    epochs: int = 300,
    progress: bool = True,
    force: bool = False,
) -> dict[str, Any]:
    """The demo, end to end. It replaces its own earlier package at `out` (so the README's
    command can be run again); any other package there only with `force`."""
    t0 = time.perf_counter()
    digits = load_data("digits")
    rest_idx, test_idx = split(len(digits.x), 0.2, seed)
    rest = Dataset(digits.x[rest_idx], "digits", "digits", False, digits.default_normalization)
    x_test = digits.x[test_idx]
    trained = train_and_export(
        rest,
        name=DEMO_NAME,
        out=out,
        checkpoint=None,
        resume=False,
        force=force or _own_output(out),
        latent_dim=latent_dim,
        epochs=epochs,
        seed=seed,
        progress=progress,
    )
    train_seconds = time.perf_counter() - t0

    model = load(out)
    codes_path = out.parent / f"{out.name}.heldout.codes"
    file_bytes = write_codes_file(codes_path, model.encode_codes(x_test))
    messages = read_codes_file(codes_path)
    x_hat = model.decode_codes(messages)
    n = len(x_test)
    payload = sum(len(m.tensor.data) for m in messages)
    message_bytes = sum(m.ByteSize() for m in messages)
    raw_per_sample = x_test.shape[1] * 4

    from sklearn.decomposition import PCA

    pca = PCA(n_components=latent_dim, random_state=seed).fit(rest.x)
    x_pca = pca.inverse_transform(pca.transform(x_test))
    data_range = 1.0  # digits / 16 lies in [0, 1]
    ae_db, pca_db = psnr(x_test, x_hat, data_range), psnr(x_test, x_pca, data_range)
    plot = out.parent / f"{out.name}.png"
    _plot(x_test[:12], x_hat[:12], x_pca[:12], plot, ae_db, pca_db, latent_dim)
    return {
        "plot": str(plot),
        "dataset": "digits",
        "n_test": n,
        "features": int(x_test.shape[1]),
        "latent_dim": latent_dim,
        "seed": seed,
        "package": str(out),
        "fingerprint": model.fingerprint,
        "codes_file": str(codes_path),
        "codes_file_bytes": file_bytes,
        "raw_float32_bytes_per_sample": raw_per_sample,
        "code_bytes_per_sample": payload / n,
        "message_bytes_per_sample": message_bytes / n,
        "compression_ratio": raw_per_sample / (payload / n),
        "psnr_db": ae_db,
        "pca_psnr_db": pca_db,
        "psnr_gain_db": ae_db - pca_db,
        "epochs": trained.result.epochs_run,
        "seconds": time.perf_counter() - t0,
        "train_seconds": train_seconds,
        "providers": model.providers,
    }


def _plot(
    x: np.ndarray, ae: np.ndarray, pca: np.ndarray, path: Path, ae_db: float, pca_db: float, k: int
) -> None:
    """Held-out digits: originals, autoencoder and PCA reconstructions, one row each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        ("held-out", x),
        (f"autoencoder\n{ae_db:.1f} dB", ae),
        (f"PCA ({k})\n{pca_db:.1f} dB", pca),
    ]
    fig, axes = plt.subplots(3, len(x), figsize=(len(x) * 0.8, 3 * 0.95))
    for r, (label, images) in enumerate(rows):
        for c, img in enumerate(images):
            ax = axes[r, c]
            ax.imshow(img.reshape(8, 8), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(
        f"digits, K={k}: {k * 4} bytes/sample on the wire vs {x.shape[1] * 4} raw", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_report(r: dict[str, Any]) -> str:
    k = r["latent_dim"]
    rows = [
        ("held-out samples", f"{r['n_test']} digits (8x8, {r['features']} features in [0, 1])"),
        ("raw float32", f"{r['raw_float32_bytes_per_sample']} bytes/sample"),
        (
            "codes on the wire",
            f"{r['code_bytes_per_sample']:.0f} bytes/sample ({k} x float32); "
            f"{r['message_bytes_per_sample']:.1f} with the message header",
        ),
        ("compression ratio", f"{r['compression_ratio']:.1f}x"),
        ("autoencoder PSNR", f"{r['psnr_db']:.2f} dB"),
        (f"PCA ({k} components)", f"{r['pca_psnr_db']:.2f} dB"),
        ("difference", f"{r['psnr_gain_db']:+.2f} dB"),
    ]
    width = max(len(a) for a, _ in rows)
    lines = [
        f"latentwire demo: digits, K={k}, seed {r['seed']} "
        f"({r['epochs']} epochs, {r['seconds']:.1f}s total, runtime on {r['providers'][0]})"
    ]
    lines += [f"  {a:<{width}}  {b}" for a, b in rows]
    lines.append(f"  picture {r['plot']}")
    lines.append(
        f"  package {r['package']} (fingerprint {r['fingerprint']}), codes {r['codes_file']}"
    )
    return "\n".join(lines)
