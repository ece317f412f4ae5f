"""Nearest-neighbour recall of coded vectors, and the baselines it is compared with.

Every method is measured the same way: the database vectors are coded and decoded, the
queries stay float32 (an edge sends its one query a request as floats; the database is what
is stored or streamed as codes), and each query's top-k by inner product over the decoded
database is compared with its exact top-k over the float32 database. For product
quantisation this is ADC (asymmetric distance computation), what faiss's IndexPQ searches.

numpy does the metrics and the PCA and binary baselines; faiss (the `text` extra) is
imported only for its scalar and product quantisers, with a one-line error when missing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from latentwire.runtime.errors import DataError

log = logging.getLogger("latentwire.training")

Coder = Callable[[np.ndarray], np.ndarray]
"""Codes and decodes a batch of vectors: (N, D) float32 in, reconstructions out."""


@dataclass
class RetrievalPoint:
    """One method at one size."""

    method: str
    """ae | pq | opq | sq | pca | binary | float"""
    label: str
    bytes_per_vector: float
    recall: float
    """k-recall@k with float queries and coded database vectors"""
    mean_cos: float
    """mean cosine between a database vector and its reconstruction"""
    recall_coded_query: float | None = None
    """the same with the queries coded and decoded too"""
    params: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("bytes_per_vector", "recall", "mean_cos", "recall_coded_query"):
            if d[key] is not None:
                d[key] = round(float(d[key]), 4)
        return d


def top_k(queries: np.ndarray, db: np.ndarray, k: int) -> np.ndarray:
    """Indices (Q, k) of each query's k largest inner products over `db`, best first
    (ties broken by the lower index, so the result is deterministic)."""
    k = min(k, len(db))
    out = np.empty((len(queries), k), np.int64)
    for s in range(0, len(queries), 256):  # bounded memory: 256 x N scores at a time
        scores = queries[s : s + 256].astype(np.float64) @ db.astype(np.float64).T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.lexsort((part, -part_scores), axis=1)
        out[s : s + 256] = np.take_along_axis(part, order, axis=1)
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """k-recall@k: the mean share of each query's true top-k that the method's top-k holds."""
    if found.shape != truth.shape:
        raise ValueError(f"shapes differ: {found.shape} vs {truth.shape}")
    hits = sum(len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def mean_cosine(x: np.ndarray, x_hat: np.ndarray) -> float:
    """Mean cosine between rows of `x` and of `x_hat` (a zero row counts as cosine 0)."""
    a, b = x.astype(np.float64), x_hat.astype(np.float64)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    num = np.sum(a * b, axis=1)
    return float(np.mean(np.divide(num, den, out=np.zeros_like(num), where=den > 0)))


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows rescaled to unit length (zero rows stay zero)."""
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(np.divide(x, n, out=np.zeros_like(x), where=n > 0), np.float32)


@dataclass
class Bench:
    """The vectors every method is measured on, and the exact answers."""

    train: np.ndarray
    queries: np.ndarray
    db: np.ndarray
    k: int
    unit: bool = False
    """rescale decoded vectors to unit length before searching (for data of unit vectors,
    such as MiniLM's: a server that knows this can renormalise whatever it decodes)"""
    truth: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        for name in ("train", "queries", "db"):
            arr = getattr(self, name)
            if arr.ndim != 2 or arr.shape[1] != self.db.shape[1] or not len(arr):
                raise DataError(f"{name} vectors must be (N, {self.db.shape[1]}), got {arr.shape}")
            if not np.isfinite(arr).all():
                raise DataError(f"{name} vectors hold NaN or Inf")
        if self.k < 1 or self.k > len(self.db):
            raise DataError(f"k must be in 1 .. {len(self.db)} (the database size), got {self.k}")
        self.truth = top_k(self.queries, self.db, self.k)

    def point(
        self,
        method: str,
        label: str,
        nbytes: float,
        coder: Coder,
        *,
        db_hat: np.ndarray | None = None,
        params: dict[str, Any] | None = None,
    ) -> RetrievalPoint:
        """Measure one method: `coder` codes and decodes (queries and, unless `db_hat`
        gives the decoded database already, the database)."""
        if db_hat is None:
            db_hat = coder(self.db)
        q_hat = coder(self.queries)
        cos = mean_cosine(self.db, db_hat)
        if self.unit:
            db_hat, q_hat = unit_rows(db_hat), unit_rows(q_hat)
        return RetrievalPoint(
            method=method,
            label=label,
            bytes_per_vector=nbytes,
            recall=recall_at_k(top_k(self.queries, db_hat, self.k), self.truth),
            mean_cos=cos,
            recall_coded_query=recall_at_k(top_k(q_hat, db_hat, self.k), self.truth),
            params=params or {},
        )


def int8_coder(train: np.ndarray) -> Coder:
    """Per-column affine int8, calibrated on the training vectors' min and max."""
    lo, hi = train.min(axis=0), train.max(axis=0)
    scale = np.where(hi > lo, (hi - lo) / 255.0, 1.0)

    def code(x: np.ndarray) -> np.ndarray:
        q = np.clip(np.rint((x - lo) / scale), 0, 255)
        return np.asarray(q * scale + lo, np.float32)

    return code


def pca_int8_coder(train: np.ndarray, n: int) -> Coder:
    """PCA to `n` components (fitted on train), each component as int8 (n bytes)."""
    mean = train.mean(axis=0)
    _, _, vt = np.linalg.svd(train - mean, full_matrices=False)
    basis = vt[:n].astype(np.float64)
    q = int8_coder(((train - mean) @ basis.T).astype(np.float32))

    def code(x: np.ndarray) -> np.ndarray:
        z = q(((x - mean) @ basis.T).astype(np.float32))
        return np.asarray(z @ basis + mean, np.float32)

    return code


def binary_coder(train: np.ndarray) -> Coder:
    """Sign bits (D/8 bytes); a database vector becomes its sign pattern (for inner
    products with a float query the scale does not change the ranking)."""

    def code(x: np.ndarray) -> np.ndarray:
        return np.where(x >= 0, 1.0, -1.0).astype(np.float32)

    return code


def numpy_points(bench: Bench, budgets: Sequence[int]) -> list[RetrievalPoint]:
    """Baselines without faiss: float16, binary sign codes, PCA + int8 at each budget."""
    d = bench.db.shape[1]
    pts = [
        bench.point("float", "float16", 2 * d, lambda x: x.astype(np.float16).astype(np.float32)),
        bench.point("binary", f"binary sign ({d // 8} B)", d / 8, binary_coder(bench.train)),
    ]
    for b in budgets:
        if b <= min(d, len(bench.train)):
            pts.append(
                bench.point("pca", f"PCA{b} + int8", b, pca_int8_coder(bench.train, b))
            )
    return pts


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise DataError(
            "the faiss baselines need faiss-cpu: pip install 'latentwire[text]' "
            "(or pass --no-faiss)"
        ) from None
    faiss.omp_set_num_threads(1)
    return faiss


def faiss_points(
    bench: Bench, budgets: Sequence[int], *, opq_iterations: int = 50
) -> list[RetrievalPoint]:
    """faiss SQ8 and SQ4 (fixed sizes), and PQ and OPQ+PQ with 8-bit sub-codes at each
    budget that divides the dimension (M sub-quantisers = bytes). faiss's default training
    parameters, except that PQ skips polysemous training ("np": it only reorders codes for
    Hamming search and takes minutes); `opq_iterations` is OPQ's outer loop (faiss: 50)."""
    faiss = _faiss()
    d = bench.db.shape[1]
    train = np.ascontiguousarray(bench.train, np.float32)
    specs = [("sq", "SQ8", "faiss SQ8"), ("sq", "SQ4", "faiss SQ4")]
    for b in budgets:
        if d % b == 0:
            specs.append(("pq", f"PQ{b}x8np", f"faiss PQ{b}x8"))
            specs.append(("opq", f"OPQ{b},PQ{b}x8np", f"faiss OPQ{b},PQ{b}x8"))
    if len(train) < 256 * 39 and len(specs) > 2:
        log.warning(
            "faiss PQ/OPQ: %d training vectors are fewer than faiss advises for 256 "
            "centroids (9,984); their recall is lower than with more data",
            len(train),
        )
    pts = []
    for method, factory, label in specs:
        index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
        if method == "opq":
            faiss.downcast_VectorTransform(index.chain.at(0)).niter = opq_iterations
        log.info("training %s on %d vectors", label, len(train))
        with _quiet_stderr():
            index.train(train)

        def code(x: np.ndarray, index: Any = index) -> np.ndarray:
            x = np.ascontiguousarray(x, np.float32)
            return np.asarray(index.sa_decode(index.sa_encode(x)), np.float32)

        nbytes = float(index.sa_code_size())
        pts.append(bench.point(method, label, nbytes, code, params={"factory": factory}))
    return pts


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Hold back what faiss's C++ code prints to stderr (one clustering warning per
    sub-quantiser); the caller logs one line instead."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (pytest capture)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
