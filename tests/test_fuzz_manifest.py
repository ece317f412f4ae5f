"""Fuzzing manifest parsing: edited JSON objects (wrong types, missing keys, absurd sizes,
NaN) and mutated manifest.json bytes.

Every case ends in a Manifest whose every field is sane, or in a PackageError: never another
exception, and never a manifest that could make a runtime size a buffer past the limits.
The manifests are built here (no training), for each code format, dense and convolutional.
See tests/_fuzz.py for the budget and the long run.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from latentwire.runtime import CodesError, PackageError
from latentwire.runtime.entropy import FactorizedPrior
from latentwire.runtime.formats import CodeFormat
from latentwire.runtime.manifest import (
    MANIFEST_FILE,
    MAX_RANK,
    MAX_SAMPLE_VALUES,
    SCHEMA,
    SCHEMA_VERSION,
    Manifest,
    TensorSpec,
    compute_fingerprint,
    is_file_name,
)

from ._fuzz import fuzz, mutated, outcome

K = 4


def _manifest(fmt: str, conv: bool) -> dict[str, Any]:
    """A valid manifest as export writes it (graph hashes made up)."""
    rng = np.random.default_rng(0)
    lo, hi = -rng.uniform(1, 2, K), rng.uniform(1, 2, K)
    prior = FactorizedPrior.from_pmfs([-3] * K, [rng.dirichlet(np.ones(7)) for _ in range(K)])
    in_shape: list[int | None] = [3, None, None] if conv else [16]
    lat_shape: list[int | None] = [K, None, None] if conv else [K]
    stride = 4 if conv else 1
    norm = (
        {"kind": "standard", "offset": [[[0.5]], [[0.4]], [[0.3]]], "scale": [[[0.2]]] * 3}
        if conv
        else {"kind": "minmax", "offset": [0.0] * 16, "scale": [16.0] * 16}
    )
    m: dict[str, Any] = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "name": f"fuzz-{fmt}",
        "fingerprint": "",
        "input": {"name": "x", "shape": in_shape, "dtype": "float32", "multiple_of": stride},
        "latent": {"name": "z", "shape": lat_shape, "dtype": "float32", "multiple_of": 1},
        "output": {"name": "x_hat", "shape": in_shape, "dtype": "float32", "multiple_of": stride},
        "normalization": norm,
        "codes": CodeFormat.build(fmt, lo, hi, prior).to_dict(),
        "files": {
            role: {"path": f"{role}.onnx", "sha256": c * 64, "graph_sha256": d * 64, "bytes": 9}
            for role, c, d in (("encoder", "a", "b"), ("decoder", "c", "d"))
        },
        "onnx": {"opset": 18},
        "model": {"kind": "conv" if conv else "dense"},
    }
    m["fingerprint"] = compute_fingerprint(m)
    return m


BASES = [_manifest(f, c) for f in ("f32", "f16", "int8", "entropy") for c in (False, True)]

ABSURD = st.sampled_from(
    [
        0, -1, -8, 1, 2**31, 2**63, 10**30, 10**400, 1e308, 1.5, -0.0,
        float("nan"), float("inf"), float("-inf"), True, False, None, "", "64", "x",
        "../../etc/passwd", "/etc/passwd", "a/b.onnx", ".", "..", "C:evil.onnx",
        [], {}, [None], [1] * 100, [2**40, 2**40], [1, None, None], [[1, 2], [3]],
        [float("nan")] * 4, [1e308] * 4, {"a": 1},
    ]
)  # fmt: skip
JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**64), 2**64),
        st.floats(),
        st.text(max_size=12),
    ),
    lambda kids: st.one_of(
        st.lists(kids, max_size=5), st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=12,
)


def _places(obj: Any) -> Iterator[tuple[Any, Any]]:
    """(container, key) of every value inside `obj`."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj)
    for key, value in list(items):
        yield obj, key
        if isinstance(value, (dict, list)):
            yield from _places(value)


@st.composite
def edited(draw: st.DrawFn) -> dict[str, Any]:
    """A valid manifest with 1..4 edits: a value replaced (absurd or random JSON), deleted,
    wrapped in a list, or a key added."""
    d: dict[str, Any] = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 4))):
        places = list(_places(d))
        if not places:
            break
        container, key = draw(st.sampled_from(places))
        op = draw(st.sampled_from(["absurd", "absurd", "json", "delete", "wrap", "add"]))
        if op == "absurd":
            container[key] = copy.deepcopy(draw(ABSURD))
        elif op == "json":
            container[key] = draw(JSON)
        elif op == "delete":
            if isinstance(container, dict):
                del container[key]
            else:
                container.pop(key)
        elif op == "wrap":
            container[key] = [container[key]]
        elif isinstance(container[key], dict):
            container[key][draw(st.text(max_size=8))] = draw(JSON)
    if draw(st.booleans()):
        fp = outcome(lambda: compute_fingerprint(d), Exception)
        if isinstance(fp, str):
            d["fingerprint"] = fp
    return d


def _check_spec(spec: TensorSpec) -> None:
    assert isinstance(spec.name, str) and spec.name
    assert len(spec.shape) <= MAX_RANK
    assert all(s is None or (type(s) is int and s >= 1) for s in spec.shape)
    assert type(spec.multiple_of) is int and spec.multiple_of >= 1
    assert math.prod(spec.multiple_of if s is None else s for s in spec.shape) <= MAX_SAMPLE_VALUES
    np.dtype(spec.dtype)
    spec.describe()


def _check_accepted(m: Manifest) -> None:
    """Everything a runtime reads from an accepted manifest is sane."""
    for spec in (m.input, m.latent, m.output):
        _check_spec(spec)
    assert isinstance(m.name, str) and isinstance(m.fingerprint, str)
    n = m.normalization
    assert np.all(np.isfinite(n.offset)) and np.all(np.isfinite(n.scale)) and np.all(n.scale)
    for role in ("encoder", "decoder"):
        assert is_file_name(m.files[role]["path"])
    compute_fingerprint(m.raw)  # Model computes it next
    fmt, prior = m.codes, m.codes.prior
    assert np.all(np.isfinite(fmt.lo)) and np.all(fmt.lo <= fmt.hi)
    if prior is not None:  # the tables work: a round trip through the coder
        rng = np.random.default_rng(0)
        syms = rng.integers(prior.low, prior.high + 1, size=(3, prior.channels))
        coded = outcome(lambda: prior.encode(syms), CodesError)
        if isinstance(coded, bytes):
            np.testing.assert_array_equal(prior.decode(coded, 3, [prior.channels]), syms)


@fuzz(800)
@given(d=edited())
def test_edited_manifests(d: dict[str, Any]) -> None:
    m = outcome(lambda: Manifest.from_dict(d), PackageError)
    if isinstance(m, Manifest):
        _check_accepted(m)


def test_the_bases_are_valid() -> None:
    for d in BASES:
        _check_accepted(Manifest.from_dict(copy.deepcopy(d)))


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-manifest")


TEXT_EDITS = st.sampled_from(
    [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"9" * 5000, b"[" * 5000, b"{" * 3000,
     b'"\\ud800"', b"\xef\xbb\xbf", b"\xff\xfe", b"null", b"\x00", b"-0", b"1.5"]
)  # fmt: skip


@st.composite
def manifest_bytes(draw: st.DrawFn) -> bytes:
    """manifest.json text: mutated bytes, or a JSON value spliced in as text."""
    text = json.dumps(draw(st.sampled_from(BASES))).encode()
    if draw(st.booleans()):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 12))
        text = text[:at] + draw(TEXT_EDITS) + text[at + cut :]
    return draw(mutated(text, max_ops=3))


@fuzz(500)
@given(blob=manifest_bytes())
def test_mutated_manifest_files(package_dir: Path, blob: bytes) -> None:
    (package_dir / MANIFEST_FILE).write_bytes(blob)
    m = outcome(lambda: Manifest.load(package_dir), PackageError)
    if isinstance(m, Manifest):
        _check_accepted(m)
    else:
        assert MANIFEST_FILE in str(m)  # the error names the file


@pytest.mark.parametrize(
    ("edit", "match"),
    [  # run against the parser before this change, the fuzz tests above found it accept
        # NaN offsets and calibration, unknown kinds and dtypes, non-string names and
        # sha256s, huge strides and samples, and raise OverflowError for infinite or huge
        # numbers; paths and the other limits are part of the package-safety work
        (lambda m: m["input"].update(shape=[float("inf")]), "dimensions must be integers"),
        (lambda m: m["input"].update(shape="64"), "shape must be a list"),
        (lambda m: m["input"].update(shape=[64.5]), "dimensions must be integers"),
        (lambda m: m["input"].update(shape=[2**40, 2**40]), "more than the 67,108,864"),
        (lambda m: m["input"].update(shape=[1] * 100), "at most 8 dimensions"),
        (lambda m: m["input"].update(multiple_of=10**9), "multiple_of 1000000000 is over"),
        (lambda m: m["input"].update(dtype="object"), "input.dtype 'object' is not one of"),
        (lambda m: m["normalization"].update(offset=[float("nan")] * 16), "offset must be fin"),
        (lambda m: m["normalization"].update(kind="zscore"), "kind 'zscore' is not one of"),
        (lambda m: m["normalization"].update(scale="16"), "scale must be a number or a list"),
        (lambda m: m["codes"]["calibration"].update(min=[float("nan")] * K), "min <= max"),
        (lambda m: m.update(name={"a": 1}), "name must be a non-empty string"),
        (lambda m: m["files"]["encoder"].update(path="../encoder.onnx"), "must name a file"),
        (lambda m: m["files"]["encoder"].update(path="/etc/passwd"), "must name a file"),
        (lambda m: m["files"]["decoder"].update(sha256=5), "sha256 must be 64 hex digits"),
        (lambda m: m["files"]["decoder"].update(bytes="9"), "bytes must be a byte count"),
        (lambda m: m.update(files=[]), "files must be an object"),
    ],
)
def test_absurd_fields_are_refused(edit: Any, match: str) -> None:
    d = copy.deepcopy(BASES[0])
    edit(d)
    with pytest.raises(PackageError, match=match):
        Manifest.from_dict(d)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t: t.update(freq=[10**30, 1]), "must hold 2..4096 frequencies"),
        (lambda t: t.update(freq=[1.5, 2]), "must hold 2..4096 frequencies"),
        (lambda t: t.update(freq=[1, 2**16 + 1]), "must hold 2..4096 frequencies"),
        (lambda t: t.update(offset=float("inf")), "needs an integer offset"),
        (lambda t: t.update(offset=2**40), "needs an integer offset"),
        (lambda t: t.clear(), "must hold 2..4096 frequencies"),
    ],
)
def test_absurd_entropy_tables_are_refused(edit: Any, match: str) -> None:
    d = copy.deepcopy(BASES[6])  # entropy, dense
    edit(d["codes"]["entropy"]["tables"][1])
    with pytest.raises(PackageError, match=match):
        Manifest.from_dict(d)


@pytest.mark.parametrize(
    ("text", "match"),
    [(b"9" * 5000, "cannot read"), (b"[" * 100_000, "nested too deeply|cannot read")],
)
def test_json_python_refuses_is_a_package_error(package_dir: Path, text: bytes, match: str) -> None:
    """Found by fuzzing: json.loads raises plain ValueError past 4300 digits and
    RecursionError on deep nesting, neither of which the loader caught."""
    (package_dir / MANIFEST_FILE).write_bytes(text)
    with pytest.raises(PackageError, match=match):
        Manifest.load(package_dir)
