"""Code formats without a server: f32, f16, int8 (per-channel affine, folded into the encoder
graph) and entropy (integer symbols + a factorised prior, one constriction ANS stream).

Each format's package is trained once per session (`format_pkgs` in conftest.py). The
references are the numpy twins in runtime/formats.py and the packages' own decode.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latentwire.runtime import Model, load
from latentwire.runtime._proto.v1 import codec_pb2
from latentwire.runtime.codes import array_to_tensor, read_codes_file, write_codes_file
from latentwire.runtime.entropy import CODER, PRECISION_BITS, FactorizedPrior, quantize_pmf
from latentwire.runtime.errors import CodesError, InputError, IntegrityError, PackageError

from .conftest import EXPECTED, FORMAT_NAMES, GENERATE_EXPECTED

K = 8  # latent channels of the dense digits model
WIRE = {"f32": np.float32, "f16": np.float16, "int8": np.int8, "entropy": np.int32}


@pytest.fixture(scope="module")
def models(format_pkgs: dict[str, Path]) -> dict[str, Model]:
    return {fmt: load(path, providers="cpu") for fmt, path in format_pkgs.items()}


@pytest.fixture(scope="module")
def all_digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    x: np.ndarray = (load_digits().data / 16.0).astype(np.float32)
    return x


def _copy(msg: codec_pb2.Codes) -> codec_pb2.Codes:
    out = codec_pb2.Codes()
    out.CopyFrom(msg)
    return out


def _psnr(x: np.ndarray, x_hat: np.ndarray) -> float:
    mse = float(np.mean((x.astype(np.float64) - x_hat.astype(np.float64)) ** 2))
    return float(10.0 * np.log10(1.0 / mse))


# -- every format: wire dtype, codes files, payload size ------------------------------------
@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_encode_returns_the_wire_dtype(
    models: dict[str, Model], digits_x: np.ndarray, fmt: str
) -> None:
    m = models[fmt]
    w = m.encode(digits_x)
    assert m.manifest.code_format == fmt and m.codes.wire_dtype == np.dtype(WIRE[fmt]).name
    assert w.dtype == WIRE[fmt] and w.shape == (len(digits_x), K)
    z = m.encode_latents(digits_x)
    assert z.dtype == np.float32 and z.shape == (len(digits_x), K)


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_codes_file_round_trip_is_exact(
    models: dict[str, Model], digits_x: np.ndarray, fmt: str, tmp_path: Path
) -> None:
    m = models[fmt]
    messages = list(m.encode_codes(digits_x, chunk=40))
    assert [msg.count for msg in messages] == [40, 40, 20]
    assert all(msg.format == fmt and msg.fingerprint == m.fingerprint for msg in messages)
    path = tmp_path / f"{fmt}.codes"
    write_codes_file(path, messages)
    back = read_codes_file(path)
    assert back == messages
    expected = m.decode(m.encode(digits_x))
    x_hat = m.decode_codes(back)
    assert x_hat.dtype == np.float32
    np.testing.assert_array_equal(x_hat, expected)


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_payload_bytes_per_sample(models: dict[str, Model], digits_x: np.ndarray, fmt: str) -> None:
    m = models[fmt]
    n = len(digits_x)
    messages = list(m.encode_codes(digits_x))
    assert len(messages) == 1
    payload = len(messages[0].tensor.data)
    per_sample = payload / n
    if fmt == "entropy":
        assert per_sample < K, f"entropy codes take {per_sample:.2f} bytes/sample, int8 takes {K}"
        assert payload % 4 == 0 and list(messages[0].latent_shape) == [K]
        # the ANS stream is within a few words of the prior's ideal code length
        assert m.codes.prior is not None
        ideal = m.codes.prior.bits(m.encode(digits_x)) / 8
        assert ideal - 1 <= payload <= ideal + 12, (payload, ideal)
    else:
        assert per_sample == {"f32": 4 * K, "f16": 2 * K, "int8": K}[fmt]
        assert list(messages[0].latent_shape) == []


# -- the folded quantiser equals its numpy twin ----------------------------------------------
@pytest.mark.parametrize("fmt", FORMAT_NAMES)
@pytest.mark.parametrize("gain", [1.0, 4.0], ids=["data", "far-outside"])
def test_graph_quantiser_matches_numpy_twin(
    models: dict[str, Model], all_digits: np.ndarray, fmt: str, gain: float
) -> None:
    """`far-outside` scales the inputs so latents leave the calibration range: int8 must
    saturate and entropy clip to the prior's support exactly as the twin does."""
    m = models[fmt]
    x = all_digits * gain
    w = m.encode(x)
    twin = m.codes.quantize(m.encode_latents(x))
    assert twin.dtype == w.dtype
    if fmt != "int8":
        np.testing.assert_array_equal(w, twin)
        return
    diff = np.abs(w.astype(np.int16) - twin.astype(np.int16))
    assert diff.max() <= 1
    assert (diff > 0).mean() < 0.01
    if gain > 1:
        assert (np.abs(w.astype(np.int16)) >= 127).any()  # saturation was exercised


def test_entropy_symbols_are_clipped_to_the_prior_support(
    models: dict[str, Model], all_digits: np.ndarray
) -> None:
    m = models["entropy"]
    prior = m.codes.prior
    assert prior is not None
    w = m.encode(all_digits * 4.0)
    assert (w >= prior.low[None]).all() and (w <= prior.high[None]).all()
    m.decode(w)  # clipped symbols are always decodable


def test_int8_costs_under_0_05_db(models: dict[str, Model], all_digits: np.ndarray) -> None:
    m = models["int8"]
    via_int8 = _psnr(all_digits, m.decode(m.encode(all_digits)))
    via_float = _psnr(all_digits, m.run_decoder(m.encode_latents(all_digits)))
    assert abs(via_float - via_int8) < 0.05, (via_float, via_int8)


def test_int8_dequantize_is_the_affine_map(models: dict[str, Model], digits_x: np.ndarray) -> None:
    fmt = models["int8"].codes
    assert fmt.scale is not None and fmt.offset is not None
    assert (fmt.scale > 0).all() and fmt.scale.dtype == np.float32
    w = models["int8"].encode(digits_x)
    z = fmt.dequantize(w)
    np.testing.assert_allclose(z, w * fmt.scale + fmt.offset, rtol=1e-6)
    # the calibration range maps to -127 .. 127
    lo, hi = fmt.quantize(fmt.lo[None].astype(np.float32)), fmt.quantize(fmt.hi[None])
    assert (np.abs(lo.astype(int) + 127) <= 1).all() and (np.abs(hi.astype(int) - 127) <= 1).all()


# -- entropy: bit-exact symbols, deterministic streams, a golden stream ----------------------
def test_entropy_symbols_survive_the_message_bit_exactly(
    models: dict[str, Model], all_digits: np.ndarray
) -> None:
    m = models["entropy"]
    w = m.encode(all_digits)
    wire = m.to_codes(w).SerializeToString()
    back = m.from_codes(codec_pb2.Codes.FromString(wire))
    assert back.dtype == np.int32
    np.testing.assert_array_equal(back, w)


def test_entropy_stream_is_deterministic_across_loads(
    format_pkgs: dict[str, Path], digits_x: np.ndarray
) -> None:
    a = Model(format_pkgs["entropy"], providers="cpu")
    b = Model(format_pkgs["entropy"], providers="cpu", roles=("encoder",))
    streams = [[m.SerializeToString() for m in mdl.encode_codes(digits_x)] for mdl in (a, b)]
    assert streams[0] == streams[1]
    assert a.to_codes(a.encode(digits_x)).tensor.data == b.to_codes(b.encode(digits_x)).tensor.data


def _golden_prior() -> FactorizedPrior:
    """A fixed synthetic prior: three channels of hand-written probabilities."""
    pmfs = [
        np.array([0.05, 0.2, 0.5, 0.2, 0.05]),
        np.array([0.7, 0.2, 0.1]),
        np.array([1, 1, 2, 4, 8, 16, 8, 4, 2, 1, 1], dtype=np.float64),
    ]
    return FactorizedPrior.from_pmfs([-2, 0, -5], pmfs)


def _golden_symbols() -> np.ndarray:
    """(N=3, K=3, 2, 2) int32 symbols, each inside its channel's support."""
    sizes, offsets = np.array([5, 3, 11]), np.array([-2, 0, -5])
    i = np.arange(3 * 3 * 2 * 2).reshape(3, 3, 2, 2)
    symbols: np.ndarray = (i * 7 + 3) % sizes[None, :, None, None] + offsets[None, :, None, None]
    return symbols.astype(np.int32)


def test_entropy_stream_matches_golden_bytes() -> None:
    """Coder, table quantisation and stream layout are a contract: a change breaks codes
    already written."""
    prior = _golden_prior()
    assert [f.tolist() for f in prior.freqs][1] == [45874, 13108, 6554]
    symbols = _golden_symbols()
    stream = prior.encode(symbols)
    golden = EXPECTED / "entropy_stream.bin"
    if GENERATE_EXPECTED:
        golden.write_bytes(stream)
    assert stream == golden.read_bytes()
    np.testing.assert_array_equal(prior.decode(golden.read_bytes(), 3, [3, 2, 2]), symbols)


# -- runtime.entropy -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "pmf",
    [
        np.ones(7),
        np.array([1.0, 0.0]),
        np.array([0.0, 1.0, 0.0]),
        np.array([1e-12, 1.0, 1e-12, 1e-30]),
        np.array([0.999999, 1e-6]),
        np.random.default_rng(0).random(4096) ** 8,
        np.ones(1 << (PRECISION_BITS - 1)),
    ],
    ids=["uniform", "one-likely", "zeros", "tiny", "skewed", "random-4096", "largest"],
)
def test_quantize_pmf_sums_to_2_16_and_keeps_every_symbol(pmf: np.ndarray) -> None:
    freq = quantize_pmf(pmf)
    assert freq.dtype.kind == "i" and freq.shape == pmf.shape
    assert int(freq.sum()) == 1 << PRECISION_BITS
    assert freq.min() >= 1
    order = np.lexsort((freq, pmf))  # by probability, ties by count
    assert (np.diff(freq[order]) >= 0).all()  # more probable symbols get no fewer counts
    np.testing.assert_array_equal(quantize_pmf(pmf), freq)  # deterministic


@pytest.mark.parametrize(
    "pmf",
    [
        np.array([]),
        np.array([1.0]),  # one symbol: nothing to code (constriction refuses it)
        np.array([0.5, -0.1]),
        np.array([np.nan, 1.0]),
        np.array([np.inf, 1.0]),
        np.zeros(3),
        np.ones((2, 2)),
        np.ones((1 << (PRECISION_BITS - 1)) + 1),
    ],
)
def test_quantize_pmf_refuses_bad_pmfs(pmf: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"pmf|does not fit"):
        quantize_pmf(pmf)


def test_prior_dict_round_trip(models: dict[str, Model]) -> None:
    for prior in (_golden_prior(), models["entropy"].codes.prior):
        assert prior is not None
        d = prior.to_dict()
        assert d["coder"] == CODER and d["precision_bits"] == PRECISION_BITS
        back = FactorizedPrior.from_dict(json.loads(json.dumps(d)), prior.channels)
        np.testing.assert_array_equal(back.offsets, prior.offsets)
        assert len(back.freqs) == len(prior.freqs)
        for f, g in zip(back.freqs, prior.freqs, strict=True):
            np.testing.assert_array_equal(f, g)
        assert back.to_dict() == d


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(coder="rans64"), "coder 'rans64' is not supported"),
        (lambda d: d["tables"].pop(), "needs 3 tables"),
        (lambda d: d["tables"][1].update(freq=[5, 0, 7]), "table 1 must hold"),
        (lambda d: d["tables"][2].update(freq=[]), "table 2 must hold"),
    ],
)
def test_prior_from_dict_refuses_bad_tables(edit: Any, match: str) -> None:
    d = _golden_prior().to_dict()
    edit(d)
    with pytest.raises(PackageError, match=match):
        FactorizedPrior.from_dict(d, 3)


def test_check_symbols_names_channel_index_and_range() -> None:
    prior = _golden_prior()
    symbols = _golden_symbols()
    symbols[1, 2, 0, 1] = 6  # channel 2 takes -5 .. 5
    symbols[2, 0, 1, 1] = 9
    with pytest.raises(CodesError) as info:
        prior.check_symbols(symbols, what="codes")
    msg = str(info.value)
    for word in ("2 value(s)", "index (1, 2, 0, 1)", "is 6", "channel 2", "-5 .. 5"):
        assert word in msg, msg
    with pytest.raises(CodesError, match=r"channel 2 takes -5 \.\. 5"):
        prior.encode(symbols)


# -- bad codes: a clear error, never garbage output -----------------------------------------
@pytest.fixture(scope="module")
def entropy_msg(models: dict[str, Model], digits_x: np.ndarray) -> codec_pb2.Codes:
    msg = models["entropy"].to_codes(models["entropy"].encode(digits_x))
    assert len(msg.tensor.data) >= 16
    return msg


def _with_stream(msg: codec_pb2.Codes, stream: bytes) -> codec_pb2.Codes:
    out = _copy(msg)
    out.tensor.CopyFrom(array_to_tensor(np.frombuffer(stream, dtype=np.uint8)))
    return out


def _corrupt_middle_word(stream: bytes) -> bytes:
    b = bytearray(stream)
    mid = (len(b) // 8) * 4
    b[mid : mid + 4] = bytes(x ^ 0xA5 for x in b[mid : mid + 4])
    return bytes(b)


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("drop-last-word", "truncated or corrupted: it does not decode to exactly 100 samples"),
        ("drop-first-word", "truncated or corrupted"),
        ("drop-one-byte", "whole number of 32-bit words; got 299 bytes|got \\d+ bytes"),
        ("corrupt-middle-word", "truncated or corrupted|cannot be decoded"),
        ("empty-stream", "the entropy stream is empty but codes say count=100"),
        ("latent-shape-channels", r"latent shape \[4\]; this model's symbols have 8 channels"),
        ("latent-shape-extra-axis", r"exactly 100 samples of latent shape \[8, 2\]"),
        ("no-latent-shape", "must say their latent_shape"),
        ("count-too-large", "exactly 101 samples"),
        ("count-too-small", "exactly 99 samples"),
        ("count-absurd", "more than the 67,108,864 symbols one message may hold"),
        ("int32-tensor", "1-D uint8 tensor, got dtype 'int32'"),
        ("2-d-stream", r"1-D uint8 tensor, got dtype 'uint8' shape \[\d+, 4\]"),
        ("format-tag", "codes have format 'int8'; model 'digits-entropy' uses 'entropy'"),
    ],
)
def test_bad_entropy_codes(
    models: dict[str, Model], entropy_msg: codec_pb2.Codes, case: str, match: str
) -> None:
    m, stream = models["entropy"], entropy_msg.tensor.data
    msg = _copy(entropy_msg)
    if case == "drop-last-word":
        msg = _with_stream(msg, stream[:-4])
    elif case == "drop-first-word":
        msg = _with_stream(msg, stream[4:])
    elif case == "drop-one-byte":
        msg = _with_stream(msg, stream[:-1])
    elif case == "corrupt-middle-word":
        msg = _with_stream(msg, _corrupt_middle_word(stream))
    elif case == "empty-stream":
        msg = _with_stream(msg, b"")
    elif case == "latent-shape-channels":
        msg.latent_shape[:] = [4]
    elif case == "latent-shape-extra-axis":
        msg.latent_shape[:] = [K, 2]
    elif case == "no-latent-shape":
        msg.ClearField("latent_shape")
    elif case == "count-too-large":
        msg.count += 1
    elif case == "count-too-small":
        msg.count -= 1
    elif case == "count-absurd":
        msg.count = 1 << 40
    elif case == "int32-tensor":
        msg.tensor.CopyFrom(array_to_tensor(m.encode(np.zeros((2, 64), np.float32))))
    elif case == "2-d-stream":
        msg.tensor.CopyFrom(array_to_tensor(np.frombuffer(stream, np.uint8).reshape(-1, 4)))
    elif case == "format-tag":
        msg.format = "int8"
    with pytest.raises(CodesError, match=match):
        m.from_codes(msg)
    with pytest.raises(CodesError, match=match):
        m.decode_codes([msg])


def test_every_single_bit_flip_of_an_entropy_stream_is_caught(
    models: dict[str, Model], entropy_msg: codec_pb2.Codes
) -> None:
    """Not a guarantee of ANS in general, but of this stream: no flipped bit decodes."""
    m, stream = models["entropy"], entropy_msg.tensor.data
    undetected = []
    for bit in range(len(stream) * 8):
        b = bytearray(stream)
        b[bit // 8] ^= 1 << (bit % 8)
        try:
            m.from_codes(_with_stream(entropy_msg, bytes(b)))
        except CodesError:
            continue
        undetected.append(bit)
    assert undetected == []


@pytest.mark.parametrize(
    ("fmt", "case", "error", "match"),
    [
        ("int8", "format-tag-f32", CodesError, "codes have format 'f32'; model 'digits-int8'"),
        ("f32", "format-tag-entropy", CodesError, "codes have format 'entropy'"),
        ("f32", "format-tag-empty", CodesError, "codes have format ''"),
        ("int8", "int16-tensor", CodesError, "format 'int8' carries int8 codes, got 'int16'"),
        ("int8", "float32-tensor", CodesError, "carries int8 codes, got 'float32'"),
        ("f16", "float32-tensor", CodesError, "format 'f16' carries float16 codes, got 'float32'"),
        ("f32", "float16-tensor", CodesError, "format 'f32' carries float32 codes, got 'float16'"),
        ("int8", "latent-shape", CodesError, "latent_shape is only for entropy codes"),
        ("f32", "latent-shape", CodesError, "latent_shape is only for entropy codes, not"),
        ("int8", "count", CodesError, r"count=11 but the tensor has shape \(10, 8\)"),
    ],
)
def test_bad_dense_codes(
    models: dict[str, Model],
    digits_x: np.ndarray,
    fmt: str,
    case: str,
    error: type[Exception],
    match: str,
) -> None:
    m = models[fmt]
    w = m.encode(digits_x[:10])
    msg = m.to_codes(w)
    if case.startswith("format-tag"):
        msg.format = {"format-tag-f32": "f32", "format-tag-entropy": "entropy"}.get(case, "")
    elif case.endswith("-tensor"):
        dtype = case.removesuffix("-tensor")
        msg.tensor.CopyFrom(array_to_tensor(w.astype(dtype)))
    elif case == "latent-shape":
        msg.latent_shape[:] = [K]
    elif case == "count":
        msg.count = 11
    with pytest.raises(error, match=match):
        m.from_codes(msg)


def test_out_of_range_entropy_symbols_are_refused(
    models: dict[str, Model], digits_x: np.ndarray
) -> None:
    m = models["entropy"]
    prior = m.codes.prior
    assert prior is not None
    w = m.encode(digits_x[:10])
    lo, hi = int(prior.low[2]), int(prior.high[2])
    for value in (hi + 1, lo - 1, 1 << 30):
        bad = w.copy()
        bad[3, 2] = value
        with pytest.raises(CodesError) as info:
            m.decode(bad)
        msg = str(info.value)
        for word in ("index (3, 2)", f"is {value}", "channel 2", f"{lo} .. {hi}"):
            assert word in msg, msg
        with pytest.raises(CodesError, match="channel 2"):
            m.to_codes(bad)  # nor can they be entropy-coded
    huge = np.full((2, K), 1 << 40, dtype=np.int64)  # past int32: checked before any cast
    with pytest.raises(CodesError, match="is 1099511627776"):
        m.decode(huge)
    wrapped = np.full((2, K), (1 << 32) - 1, dtype=np.uint32)  # not -1 after a cast
    with pytest.raises(CodesError, match="is 4294967295"):
        m.decode(wrapped)
    with pytest.raises(InputError, match="must be integers"):
        m.decode(w.astype(np.float32))
    np.testing.assert_array_equal(m.decode(w.astype(np.int64)), m.decode(w))


def test_int8_values_are_checked(models: dict[str, Model], digits_x: np.ndarray) -> None:
    m = models["int8"]
    w = m.encode(digits_x[:10])
    np.testing.assert_array_equal(m.decode(w.astype(np.int16)), m.decode(w))
    for value in (128, 300, -129, -1000):
        bad = w.astype(np.int16)
        bad[1, 4] = value
        with pytest.raises(CodesError, match=rf"-128 \.\. 127; index \(1, 4\) is {value}"):
            m.decode(bad)
    with pytest.raises(CodesError, match="is 200"):
        m.decode(np.full((2, K), 200, dtype=np.uint8))  # not -56 after a cast
    for dtype in (np.float32, np.float16, np.float64, bool):
        with pytest.raises(InputError, match="format int8 must be integers"):
            m.decode(w.astype(dtype))


def test_float_formats_refuse_integers_and_overflow(
    models: dict[str, Model], digits_x: np.ndarray
) -> None:
    for fmt in ("f32", "f16"):
        m = models[fmt]
        with pytest.raises(InputError, match="float dtype"):
            m.decode(np.zeros((2, K), dtype=np.int8))
        with pytest.raises(InputError, match="NaN/Inf"):
            m.decode(np.full((2, K), np.inf, dtype=np.float32))
    with pytest.raises(InputError, match="past float16's range"):
        models["f16"].decode(np.full((2, K), 1e6, dtype=np.float32))
    w = models["f16"].encode(digits_x[:10])
    np.testing.assert_array_equal(
        models["f16"].decode(w.astype(np.float32)), models["f16"].decode(w)
    )


# -- manifests -------------------------------------------------------------------------------
def _edited(pkg: Path, tmp_path: Path, edit: Any) -> Path:
    out = tmp_path / pkg.name
    shutil.copytree(pkg, out)
    manifest = json.loads((out / "manifest.json").read_text())
    edit(manifest["codes"])
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


@pytest.mark.parametrize(
    ("fmt", "edit", "error", "match"),
    [
        ("f32", lambda c: c.update(format="bf16"), PackageError, "unknown code format 'bf16'"),
        ("int8", lambda c: c.pop("format"), PackageError, "codes.format is missing"),
        ("int8", lambda c: c.update(dtype="float32"), PackageError, "dtype int8"),
        ("f32", lambda c: c.pop("calibration"), PackageError, "codes.calibration"),
        ("int8", lambda c: c.pop("calibration"), PackageError, "codes.calibration"),
        ("f16", lambda c: c["calibration"]["min"].pop(), PackageError, "8 latent channels"),
        ("int8", lambda c: c.pop("int8"), PackageError, "codes.int8 needs 8 finite"),
        ("int8", lambda c: c["int8"]["scale"].__setitem__(0, 0.0), PackageError, "positive"),
        ("entropy", lambda c: c.pop("entropy"), PackageError, "coder None is not supported"),
        ("entropy", lambda c: c["entropy"]["tables"].pop(), PackageError, "needs 8 tables"),
        # valid but changed: the fingerprint no longer matches
        ("entropy", lambda c: c["entropy"]["tables"][0]["freq"].__setitem__(0, 2), IntegrityError,
         "edited after export"),
        ("entropy", lambda c: c["entropy"]["tables"][3].update(offset=-100), IntegrityError,
         "fingerprint"),
        ("int8", lambda c: c["int8"]["scale"].__setitem__(2, 1.0), IntegrityError, "fingerprint"),
        ("f32", lambda c: c["calibration"]["max"].__setitem__(0, 99.0), IntegrityError,
         "fingerprint"),
    ],
)  # fmt: skip
def test_bad_code_manifests(
    format_pkgs: dict[str, Path],
    tmp_path: Path,
    fmt: str,
    edit: Any,
    error: type[Exception],
    match: str,
) -> None:
    pkg = _edited(format_pkgs[fmt], tmp_path, edit)
    with pytest.raises(error, match=match):
        load(pkg, providers="cpu")


def test_tampered_entropy_table_with_refreshed_fingerprint_is_caught_by_the_graphs(
    format_pkgs: dict[str, Path], tmp_path: Path
) -> None:
    """Recomputing the manifest fingerprint after editing a table does not help: the graphs
    carry the old fingerprint in their metadata."""
    from latentwire.runtime.manifest import compute_fingerprint

    pkg = _edited(
        format_pkgs["entropy"], tmp_path, lambda c: c["entropy"]["tables"][0]["freq"].append(1)
    )
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["fingerprint"] = compute_fingerprint(manifest)
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IntegrityError, match="carries fingerprint"):
        load(pkg, providers="cpu")
