"""The torch-free runtime: loading, verification, encode/decode, input validation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latentwire.runtime import (
    CodesError,
    FingerprintMismatch,
    InputError,
    IntegrityError,
    Model,
    PackageError,
    ProviderError,
    load,
)


@pytest.fixture(scope="module")
def model(digits_pkg: Path) -> Model:
    return load(digits_pkg, providers="cpu")


def _copy(pkg: Path, tmp_path: Path) -> Path:
    dst = tmp_path / pkg.name
    shutil.copytree(pkg, dst)
    return dst


def test_encode_decode_shapes_and_units(model: Model, digits_x: np.ndarray) -> None:
    z = model.encode(digits_x)
    assert z.shape == (100, 8) and z.dtype == np.float32
    x_hat = model.decode(z)
    assert x_hat.shape == (100, 64) and x_hat.dtype == np.float32
    assert np.all(x_hat >= 0) and np.all(x_hat <= 1)  # sigmoid output, digits units
    assert model.providers[0] == "CPUExecutionProvider"


def test_any_batch_size_gives_the_same_answer(digits_pkg: Path, digits_x: np.ndarray) -> None:
    whole = load(digits_pkg, providers="cpu")
    chunked = Model(digits_pkg, providers="cpu", batch_size=7)
    z = whole.encode(digits_x)
    np.testing.assert_allclose(chunked.encode(digits_x), z, atol=1e-6)
    np.testing.assert_allclose(chunked.decode(z), whole.decode(z), atol=1e-6)
    assert whole.encode(digits_x[:1]).shape == (1, 8)
    assert whole.encode(digits_x[:0]).shape == (0, 8)


def test_integer_and_float64_inputs_are_accepted(model: Model, digits_x: np.ndarray) -> None:
    np.testing.assert_allclose(
        model.encode(digits_x.astype(np.float64)), model.encode(digits_x), atol=1e-6
    )
    assert model.encode(np.zeros((2, 64), dtype=np.int64)).shape == (2, 8)
    ones = np.ones((2, 64))
    np.testing.assert_array_equal(model.encode(ones.astype(bool)), model.encode(ones))


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((3, 63), np.float32), "has 63 values on axis 1; the model expects 64"),
        (np.zeros((3, 65), np.float32), "expects 64"),
        (np.zeros(64, np.float32), r"add a batch axis"),
        (np.zeros((2, 8, 8), np.float32), r"shape \(batch, 64\)"),
        (np.array([["a"] * 64]), "real numeric dtype"),
        (np.zeros((2, 64), np.complex64), "real numeric dtype"),
    ],
)
def test_bad_inputs_are_refused_clearly(model: Model, bad: np.ndarray, match: str) -> None:
    with pytest.raises(InputError, match=match):
        model.encode(bad)


def test_nan_and_inf_are_refused_with_their_position(model: Model, digits_x: np.ndarray) -> None:
    x = digits_x[:4].copy()
    x[2, 5] = np.nan
    with pytest.raises(InputError, match=r"1 NaN/Inf value\(s\), the first at index \(2, 5\)"):
        model.encode(x)
    x[2, 5] = np.inf
    with pytest.raises(InputError, match="NaN/Inf"):
        model.encode(x)
    z = model.encode(digits_x[:2])
    z[0, 0] = -np.inf
    with pytest.raises(InputError, match="codes holds 1 NaN/Inf"):
        model.decode(z)
    big = np.zeros((1, 8))  # float64: finite here, inf once cast to float32
    big[0, 3] = 1e39
    with pytest.raises(InputError, match="codes hold values past float32's range"):
        model.decode(big)


def test_decode_checks_latent_shape_and_dtype(model: Model) -> None:
    with pytest.raises(InputError, match="expects 8"):
        model.decode(np.zeros((2, 7), np.float32))
    with pytest.raises(InputError, match="float dtype"):
        model.decode(np.zeros((2, 8), np.int32))


def test_codes_round_trip_and_fingerprint(
    model: Model, digits_x: np.ndarray, other_pkg: Path
) -> None:
    (msg,) = list(model.encode_codes(digits_x))
    assert msg.fingerprint == model.fingerprint and msg.model_name == model.name
    assert msg.count == 100 and msg.format == "f32" and len(msg.tensor.data) == 100 * 8 * 4
    np.testing.assert_array_equal(model.decode_codes([msg]), model.decode(model.encode(digits_x)))
    other = load(other_pkg, providers="cpu")
    assert other.fingerprint != model.fingerprint
    with pytest.raises(
        FingerprintMismatch, match=f"this is .* with fingerprint {other.fingerprint}"
    ):
        other.decode_codes([msg])


def test_codes_chunks(model: Model, digits_x: np.ndarray) -> None:
    msgs = list(model.encode_codes(digits_x, chunk=30))
    assert [m.count for m in msgs] == [30, 30, 30, 10]
    np.testing.assert_allclose(
        model.decode_codes(msgs), model.decode(model.encode(digits_x)), atol=1e-6
    )


def test_malformed_codes_messages(model: Model, digits_x: np.ndarray) -> None:
    (msg,) = list(model.encode_codes(digits_x[:4]))
    wrong_count = type(msg)()
    wrong_count.CopyFrom(msg)
    wrong_count.count = 5
    with pytest.raises(CodesError, match="count=5"):
        model.decode_codes([wrong_count])
    wrong_format = type(msg)()
    wrong_format.CopyFrom(msg)
    wrong_format.format = "int8"
    with pytest.raises(CodesError, match="format 'int8'"):
        model.decode_codes([wrong_format])
    short = type(msg)()
    short.CopyFrom(msg)
    short.tensor.data = msg.tensor.data[:-1]
    with pytest.raises(CodesError, match="needs 128 bytes, got 127"):
        model.decode_codes([short])
    with pytest.raises(CodesError, match="no codes"):
        model.decode_codes([])


def test_altered_encoder_is_refused(digits_pkg: Path, tmp_path: Path) -> None:
    pkg = _copy(digits_pkg, tmp_path)
    blob = bytearray((pkg / "encoder.onnx").read_bytes())
    blob[-10] ^= 0xFF
    (pkg / "encoder.onnx").write_bytes(bytes(blob))
    with pytest.raises(IntegrityError, match=r"encoder.onnx has sha256 .* changed after export"):
        load(pkg, providers="cpu")


def test_swapped_graphs_with_updated_sha_are_refused(
    digits_pkg: Path, other_pkg: Path, tmp_path: Path
) -> None:
    """A graph from another export carries another fingerprint in its metadata."""
    pkg = _copy(digits_pkg, tmp_path)
    shutil.copyfile(other_pkg / "decoder.onnx", pkg / "decoder.onnx")
    manifest = json.loads((pkg / "manifest.json").read_text())
    other = json.loads((other_pkg / "manifest.json").read_text())
    manifest["files"]["decoder"]["sha256"] = other["files"]["decoder"]["sha256"]
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match=r"decoder\.onnx carries fingerprint"):
        load(pkg, providers="cpu")


def test_edited_manifest_is_refused(digits_pkg: Path, tmp_path: Path) -> None:
    pkg = _copy(digits_pkg, tmp_path)
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["normalization"]["kind"] = "standard"
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="edited after export"):
        load(pkg, providers="cpu")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda m: m.update(schema_version=99), "schema_version 99 is not supported"),
        (lambda m: m.update(schema="other"), "not a latentwire manifest"),
        (lambda m: m.pop("latent"), "missing or has a malformed field"),
        (lambda m: m["codes"].update(format="zip"), "unknown code format 'zip'"),
    ],
)
def test_bad_manifests(digits_pkg: Path, tmp_path: Path, change: Any, match: str) -> None:
    pkg = _copy(digits_pkg, tmp_path)
    manifest = json.loads((pkg / "manifest.json").read_text())
    change(manifest)
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match=match):
        load(pkg, providers="cpu")


def test_missing_package_and_files(digits_pkg: Path, tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="not a directory"):
        load(tmp_path / "nope")
    with pytest.raises(PackageError, match="not a model package"):
        load(tmp_path)
    pkg = _copy(digits_pkg, tmp_path)
    (pkg / "decoder.onnx").unlink()
    with pytest.raises(PackageError, match=r"cannot read .*decoder\.onnx"):
        load(pkg, providers="cpu")


def test_cuda_on_a_cpu_build_is_a_clear_error(digits_pkg: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this ONNX Runtime build has CUDA; the CPU-only error cannot occur")
    with pytest.raises(ProviderError, match=r"latentwire\[gpu\]"):
        load(digits_pkg, providers="cuda")


def test_auto_provider_logs_its_choice(digits_pkg: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="latentwire.runtime"):
        load(digits_pkg)
    assert f"decoder: running on {load(digits_pkg).providers[0]}" in caplog.text


def test_image_model_any_multiple_of_the_stride(image_pkg: Path) -> None:
    model = load(image_pkg, providers="cpu")
    assert model.manifest.input.multiple_of == 4
    x = np.random.default_rng(0).uniform(0, 255, (2, 3, 40, 24)).astype(np.float32)
    z = model.encode(x)
    assert z.shape == (2, 4, 10, 6)
    assert model.decode(z).shape == (2, 3, 40, 24)
    with pytest.raises(InputError, match="positive multiple of 4"):
        model.encode(np.zeros((1, 3, 30, 24), np.float32))
    with pytest.raises(InputError, match="expects 3"):
        model.encode(np.zeros((1, 1, 32, 32), np.float32))


def test_encoder_only_package_encodes_on_the_edge(
    digits_pkg: Path, tmp_path: Path, digits_x: np.ndarray
) -> None:
    """An edge device carries encoder.onnx + manifest.json only."""
    edge = tmp_path / "edge"
    edge.mkdir()
    for name in ("encoder.onnx", "manifest.json"):
        shutil.copyfile(digits_pkg / name, edge / name)
    with pytest.raises(PackageError, match=r"cannot read .*decoder"):
        load(edge, providers="cpu")
    enc = load(edge, providers="cpu", roles=("encoder",))
    full = load(digits_pkg, providers="cpu")
    np.testing.assert_array_equal(enc.encode(digits_x), full.encode(digits_x))
    with pytest.raises(PackageError, match="the decoder was not loaded"):
        enc.decode(np.zeros((1, 8), np.float32))


def test_values_that_overflow_after_normalisation_are_refused(image_pkg: Path) -> None:
    """Finite input, but not finite once normalised or encoded: refused, never NaN codes."""
    model = load(image_pkg, providers="cpu")
    x = np.zeros((1, 3, 8, 8), np.float64)
    x[0, 0, 0, 0] = 1e42  # finite in float64; /255 is still past float32's 3.4e38
    with pytest.raises(InputError, match="overflow float32 after normalisation"):
        model.encode(x)
    x[:] = 8e40  # /255 fits float32, but the encoder's sums overflow
    with pytest.raises(InputError, match="non-finite code value"):
        list(model.encode_codes(x))


def test_encode_codes_validates_the_whole_batch_first(model: Model, digits_x: np.ndarray) -> None:
    x = digits_x.copy()
    x[40, 5] = np.nan
    with pytest.raises(InputError, match=r"first at index \(40, 5\)"):  # not (10, 5)
        list(model.encode_codes(x, chunk=30))
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        list(model.encode_codes(digits_x, chunk=0))


def test_messages_are_bounded_in_bytes(model: Model, digits_x: np.ndarray) -> None:
    x = np.tile(digits_x, (100, 1))  # 10,000 samples x 32 code bytes
    msgs = list(model.encode_codes(x, max_message_bytes=64 * 1024))
    assert [m.count for m in msgs] == [2048] * 4 + [1808]
    assert all(len(m.tensor.data) <= 64 * 1024 for m in msgs)
    assert max(m.ByteSize() for m in list(model.encode_codes(x))) < 1.01 * (1 << 20)


def test_empty_batches_keep_their_shape(image_pkg: Path, model: Model) -> None:
    conv = load(image_pkg, providers="cpu")
    z = conv.encode(np.zeros((0, 3, 16, 24), np.float32))
    assert z.shape == (0, 4, 4, 6)
    assert conv.decode(z).shape == (0, 3, 16, 24)
    (msg,) = list(model.encode_codes(np.zeros((0, 64))))
    assert msg.count == 0 and model.decode_codes([msg]).shape == (0, 64)


def test_codes_must_carry_the_formats_dtype(model: Model, digits_x: np.ndarray) -> None:
    from latentwire.runtime.codes import array_to_tensor

    (msg,) = list(model.encode_codes(digits_x[:3]))
    msg.tensor.CopyFrom(array_to_tensor(model.encode(digits_x[:3]).astype(np.float64)))
    with pytest.raises(CodesError, match="'f32' carries float32 codes, got 'float64'"):
        model.decode_codes([msg])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda m: m.update(normalization=None), "normalization must be an object"),
        (lambda m: m["input"].update(multiple_of=0), "must be positive"),
        (lambda m: m["latent"].update(shape=[-8]), "must be positive"),
    ],
)
def test_hand_edited_contract_fields_are_refused(
    digits_pkg: Path, tmp_path: Path, change: Any, match: str
) -> None:
    """Even with a recomputed fingerprint, nonsense in the manifest is a PackageError."""
    from latentwire.runtime.manifest import compute_fingerprint

    pkg = _copy(digits_pkg, tmp_path)
    manifest = json.loads((pkg / "manifest.json").read_text())
    change(manifest)
    manifest["fingerprint"] = compute_fingerprint(manifest)
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match=match):
        load(pkg, providers="cpu")


def test_unloadable_graph_is_a_package_error(digits_pkg: Path, tmp_path: Path) -> None:
    """A graph ONNX Runtime cannot load (here: not ONNX at all, sha256 updated to match)."""
    import hashlib

    pkg = _copy(digits_pkg, tmp_path)
    junk = b"this is not an onnx model"
    (pkg / "decoder.onnx").write_bytes(junk)
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["files"]["decoder"]["sha256"] = hashlib.sha256(junk).hexdigest()
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match=r"ONNX Runtime .* cannot load the graph"):
        load(pkg, providers="cpu")
