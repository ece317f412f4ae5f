"""`evaluate --task retrieval` and its metrics: recall of coded vectors against exact search.

Synthetic unit vectors and the session's digits packages only: nothing here needs the
`text` extra. The faiss baselines are skipped, with the reason shown, when faiss-cpu is
not installed; the metrics and the numpy baselines always run.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from latentwire.runtime.cli import main
from latentwire.runtime.errors import DataError
from latentwire.training.eval_retrieval import load_vectors
from latentwire.training.retrieval import (
    Bench,
    faiss_points,
    mean_cosine,
    numpy_points,
    recall_at_k,
    top_k,
)
from tests.conftest import error_line

HAS_FAISS = importlib.util.find_spec("faiss") is not None
needs_faiss = pytest.mark.skipif(
    not HAS_FAISS, reason="faiss-cpu not installed (pip install 'latentwire[text]')"
)


def _unit(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    """Unit vectors near an 8-dimensional subspace (so that PCA/PQ have structure to find)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)) @ np.random.default_rng(99).normal(size=(8, d))
    x += 0.2 * rng.normal(size=(n, d))
    return np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), np.float32)


def test_top_k_and_recall_by_hand() -> None:
    db = np.eye(4, dtype=np.float32)
    q = np.array([[0.9, 0.5, 0.1, 0.0], [0.0, 0.0, 0.2, 1.0]], np.float32)
    assert top_k(q, db, 2).tolist() == [[0, 1], [3, 2]]
    truth = np.array([[0, 1], [3, 2]])
    assert recall_at_k(np.array([[1, 0], [3, 0]]), truth) == 0.75  # order does not matter
    assert recall_at_k(np.array([[2, 3], [0, 1]]), truth) == 0.0
    # ties go to the lower index, whatever argpartition does
    assert top_k(np.ones((1, 4), np.float32), db, 2).tolist() == [[0, 1]]


def test_mean_cosine() -> None:
    x = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    assert mean_cosine(x, x * 3) == pytest.approx(1.0)
    assert mean_cosine(x, np.array([[0.0, 1.0], [0.0, -1.0]], np.float32)) == pytest.approx(-0.5)
    assert mean_cosine(x, np.zeros_like(x)) == 0.0  # a zero reconstruction, no NaN


def test_exact_coder_recalls_everything_and_noise_loses_some() -> None:
    bench = Bench(_unit(300), _unit(40, seed=1), _unit(500, seed=2), k=10)
    p = bench.point("float", "exact", 64, lambda x: x)
    assert p.recall == p.recall_coded_query == 1.0
    assert p.mean_cos == pytest.approx(1.0)
    rng = np.random.default_rng(3)
    noisy = bench.point("x", "noisy", 1, lambda x: x + 0.3 * rng.normal(size=x.shape))
    assert noisy.recall < 0.9
    assert noisy.mean_cos < 0.99


def test_unit_option_renormalises_decoded_vectors() -> None:
    """A coder that shrinks some vectors ranks them lower; --unit-vectors undoes that."""
    q, db = _unit(40, seed=1), _unit(500, seed=2)

    def shrink(x: np.ndarray) -> np.ndarray:
        return np.asarray(x * np.linspace(0.2, 1.0, len(x))[:, None], np.float32)

    plain = Bench(_unit(100), q, db, k=10).point("x", "shrunk", 1, shrink)
    unit = Bench(_unit(100), q, db, k=10, unit=True).point("x", "shrunk", 1, shrink)
    assert plain.recall < 0.9 and unit.recall == 1.0
    assert plain.mean_cos == unit.mean_cos == pytest.approx(1.0)


def test_numpy_baselines_rank_as_expected() -> None:
    bench = Bench(_unit(1000), _unit(50, seed=1), _unit(800, seed=2), k=10)
    pts = {p.label: p for p in numpy_points(bench, [2, 4, 8])}
    assert set(pts) == {"float16", "binary sign (2 B)", "PCA2 + int8", "PCA4 + int8", "PCA8 + int8"}
    assert pts["float16"].recall > 0.98  # near-ties at rank k may swap
    assert pts["float16"].bytes_per_vector == 32
    # more PCA bytes keep more neighbours; the data has 8 strong directions
    assert pts["PCA2 + int8"].recall < pts["PCA4 + int8"].recall < pts["PCA8 + int8"].recall
    assert pts["PCA8 + int8"].recall > 0.9
    assert 0 < pts["binary sign (2 B)"].recall < 1


@needs_faiss
def test_faiss_baselines_at_equal_bytes() -> None:
    bench = Bench(_unit(600), _unit(40, seed=1), _unit(400, seed=2), k=10)
    pts = {p.label: p for p in faiss_points(bench, [4, 5], opq_iterations=2)}
    # 5 does not divide 16: no PQ/OPQ at 5 bytes
    assert set(pts) == {"faiss SQ8", "faiss SQ4", "faiss PQ4x8", "faiss OPQ4,PQ4x8"}
    assert pts["faiss SQ8"].bytes_per_vector == 16
    assert pts["faiss SQ4"].bytes_per_vector == 8
    assert pts["faiss PQ4x8"].bytes_per_vector == 4
    assert pts["faiss SQ8"].recall > 0.95
    assert pts["faiss SQ8"].recall >= pts["faiss SQ4"].recall > pts["faiss PQ4x8"].recall
    assert pts["faiss OPQ4,PQ4x8"].recall > 0.3


def test_without_faiss_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real = builtins.__import__

    def no_faiss(name: str, *args: object, **kwargs: object) -> object:
        if name == "faiss":
            raise ImportError("No module named 'faiss'")
        return real(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    bench = Bench(_unit(50), _unit(5, seed=1), _unit(50, seed=2), k=5)
    with pytest.raises(DataError, match=r"latentwire\[text\]"):
        faiss_points(bench, [4])


def test_load_vectors(tmp_path: Path) -> None:
    x = _unit(30)
    np.save(tmp_path / "v.npy", x)
    q, db = load_vectors(tmp_path / "v.npy", 10)
    assert (q == x[:10]).all() and (db == x[10:]).all()
    np.savez(tmp_path / "v.npz", queries=x[:3], db=x[3:])
    q, db = load_vectors(tmp_path / "v.npz", 10)
    assert len(q) == 3 and len(db) == 27
    np.savez(tmp_path / "bad.npz", db=x)
    with pytest.raises(DataError, match="queries"):
        load_vectors(tmp_path / "bad.npz", 10)
    with pytest.raises(DataError, match="--queries"):
        load_vectors(tmp_path / "v.npy", 30)
    with pytest.raises(DataError, match="no such file"):
        load_vectors(tmp_path / "nope.npz", 10)


def test_bench_refuses_bad_vectors() -> None:
    x = _unit(20)
    with pytest.raises(DataError, match="k must be"):
        Bench(x, x, x, k=21)
    with pytest.raises(DataError, match="queries vectors must be"):
        Bench(x, x[:, :8], x, k=5)
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(DataError, match="NaN"):
        Bench(x, x, bad, k=5)


def _digits_vectors(tmp_path: Path) -> tuple[Path, Path]:
    """Digits as 'vectors' (the packages are digits models): train and query/db files."""
    from sklearn.datasets import load_digits

    x = (load_digits().data / 16.0).astype(np.float32)
    np.save(tmp_path / "train.npy", x[:1200])
    np.savez(tmp_path / "vectors.npz", queries=x[1200:1300], db=x[1300:])
    return tmp_path / "train.npy", tmp_path / "vectors.npz"


def test_evaluate_retrieval_end_to_end(
    format_pkgs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, vectors = _digits_vectors(tmp_path)
    out = tmp_path / "report"
    argv = ["evaluate", "--task", "retrieval", "--data", str(vectors), "--report", str(out)]
    for fmt in ("entropy", "int8"):
        argv += ["--model", str(format_pkgs[fmt])]
    argv += ["--train-vectors", str(train), "--budgets", "4,8", "--json"]
    if not HAS_FAISS:
        argv.append("--no-faiss")
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema"] == "latentwire.retrieval-report"
    assert doc["data"]["n_queries"] == 100 and doc["data"]["n_db"] == 497
    assert {p.name for p in out.iterdir()} == {"report.json", "report.md", "recall.png"}
    ae = {p["params"]["format"]: p for p in doc["points"] if p["method"] == "ae"}
    assert ae["int8"]["bytes_per_vector"] == 8.0  # K=8 latents, one byte each
    # entropy: the real ANS stream, batched, and one vector per message (32-bit words)
    assert 0 < ae["entropy"]["bytes_per_vector"] < 8
    single = ae["entropy"]["params"]["bytes_per_vector_one_per_message"]
    assert single >= ae["entropy"]["bytes_per_vector"]
    assert round(single * 497) % 4 == 0  # the mean over the 497 vectors' 4-byte streams
    for p in doc["points"]:
        assert 0 <= p["recall"] <= 1 and -1 <= p["mean_cos"] <= 1
    methods = {p["method"] for p in doc["points"]}
    assert {"ae", "pca", "binary", "float"} <= methods
    assert ({"pq", "opq", "sq"} <= methods) == HAS_FAISS
    rows = doc["summary"]["ae_vs_baselines"]
    assert len(rows) == 2 and all("above_pca" in r for r in rows)
    assert "| method | bytes/vector |" in (out / "report.md").read_text()


def test_evaluate_retrieval_errors_are_one_line(
    digits_pkg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, vectors = _digits_vectors(tmp_path)
    base = ["evaluate", "--task", "retrieval", "--model", str(digits_pkg)]
    base += ["--report", str(tmp_path / "report")]
    # the package was trained on built-in digits, not a .npy: say how to give the vectors
    assert main([*base, "--data", str(vectors), "--no-faiss"]) == 1
    assert "--train-vectors" in error_line(capsys)
    assert main([*base, "--data", str(tmp_path / "missing.npz")]) == 1
    assert "no such file" in error_line(capsys)
