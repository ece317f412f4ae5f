"""Anomaly scores on the server: the Score RPC (latentwire.v1.Codec) and V2 `<name>.scorer`.

Score takes the path Decode takes: parse -> route by fingerprint -> check the codes ->
batched with concurrent calls -> reply, on both fronts. So its errors are Decode's errors
for the same codes, word for word; and its answers are the package's own detector run
locally on the latents the decoder sees. The anomaly package here is a trained digits
package given densities of its codes by hand (as `train --task anomaly` writes them:
manifest section "anomaly" and a sha256-checked anomaly.npz), so no training is needed.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from latentwire.runtime import Model
from latentwire.runtime._proto.kserve.v2 import inference_pb2 as pb
from latentwire.runtime._proto.v1 import codec_pb2, codec_pb2_grpc
from latentwire.runtime.anomaly import ANOMALY_FILE, Detector
from latentwire.runtime.client import Client
from latentwire.runtime.codes import tensor_to_array
from latentwire.runtime.server.batcher import BatchPolicy

from .conftest import concurrently, error_class, rpc_fails

NAME = "sensor"  # the served name of the anomaly package (the repository folder)
V2 = "inference.GRPCInferenceService"


# -- an anomaly package, made by hand from a trained one ----------------------------------
def _latents(model: Model, x: np.ndarray) -> np.ndarray:
    """The float latents a server sees for x's codes."""
    return model.prepare_codes(model.encode(x))


def add_detector(src: Path, dst: Path, x_fit: np.ndarray, x_held: np.ndarray) -> Path:
    """Copy package `src` to `dst` with Gaussian (Mahalanobis and 1-component GMM) and kNN
    densities of its codes on x_fit, thresholds at a 5% FPR of x_held's scores."""
    shutil.copytree(src, dst)
    model = Model(dst, providers="cpu")
    z = _latents(model, x_fit).astype(np.float64)
    mean = z.mean(axis=0)
    precision = np.linalg.inv(np.cov(z, rowvar=False) + 1e-3 * np.eye(z.shape[1]))
    arrays = {
        "mahalanobis_mean": mean,
        "mahalanobis_precision": precision,
        "gmm_weights": np.ones(1),
        "gmm_means": mean[None],
        "gmm_precisions_cholesky": np.linalg.cholesky(precision)[None],
        "knn_bank": z,
    }
    section: dict[str, Any] = {
        "scores": ["gmm", "mahalanobis", "knn"],
        "default_codes_score": "gmm",
        "thresholds": {"gmm": 0.0, "mahalanobis": 0.0, "knn": 0.0},
        "knn_k": 3,
    }
    for s in section["scores"]:  # held-out scores, then thresholds from them
        arrays[f"heldout_{s}"] = np.arange(10.0)
    probe = Detector.from_package(section, arrays)
    z_held = _latents(model, x_held)
    for s in section["scores"]:
        held = np.sort(probe.score_latents(z_held, s).scores)
        arrays[f"heldout_{s}"] = held
        section["thresholds"][s] = float(np.quantile(held, 0.95))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    blob = buf.getvalue()
    (dst / ANOMALY_FILE).write_bytes(blob)
    manifest_path = dst / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["anomaly"] = section
    manifest["files"]["anomaly"] = {
        "path": ANOMALY_FILE,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "bytes": len(blob),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return dst


@pytest.fixture(scope="module")
def digits_all() -> np.ndarray:
    from sklearn.datasets import load_digits

    x: np.ndarray = (load_digits().data / 16.0).astype(np.float32)
    return x


@pytest.fixture(scope="module")
def score_repo(
    tmp_path_factory: pytest.TempPathFactory,
    digits_pkg: Path,
    other_pkg: Path,
    digits_all: np.ndarray,
) -> Path:
    """sensor/1 (other_pkg's encoder) and sensor/2 (digits_pkg's), both with densities."""
    root = tmp_path_factory.mktemp("score-repo")
    add_detector(other_pkg, root / NAME / "1", digits_all[:300], digits_all[300:600])
    add_detector(digits_pkg, root / NAME / "2", digits_all[:300], digits_all[300:600])
    return root


@pytest.fixture(scope="module")
def sensor(score_repo: Path) -> Model:
    """sensor/2 loaded here: the reference for the server's answers."""
    return Model(score_repo / NAME / "2", providers="cpu")


@pytest.fixture(scope="module")
def sensor1(score_repo: Path) -> Model:
    return Model(score_repo / NAME / "1", providers="cpu")


@pytest.fixture(scope="module")
def score_server(score_repo: Path, serve: Any) -> Iterator[Any]:
    with serve(score_repo, metrics_port=0) as srv:
        yield srv


@pytest.fixture()
def stub(score_server: Any) -> Iterator[codec_pb2_grpc.CodecStub]:
    with grpc.insecure_channel(f"127.0.0.1:{score_server.port}") as ch:
        yield codec_pb2_grpc.CodecStub(ch)


def _mixed(digits_all: np.ndarray, n: int = 40) -> np.ndarray:
    """Held-out digits and as many uniform-noise samples (anomalies)."""
    noise = np.random.default_rng(0).uniform(0, 1, size=(n, 64)).astype(np.float32)
    return np.concatenate([digits_all[-n:], noise])


def _check(response: codec_pb2.ScoreResponse, expected: Any, model: Model, version: str) -> None:
    assert response.score == expected.score
    np.testing.assert_allclose(tensor_to_array(response.scores), expected.scores, rtol=1e-12)
    flags = tensor_to_array(response.is_anomaly)
    assert flags.dtype == np.uint8
    np.testing.assert_array_equal(flags != 0, expected.flags)
    np.testing.assert_array_equal(tensor_to_array(response.p_values), expected.p_values)
    assert response.threshold == expected.threshold
    assert (response.model_name, response.model_version) == (NAME, version)
    assert response.fingerprint == model.fingerprint


# -- answers ------------------------------------------------------------------------------
def test_score_equals_the_package_detector_on_the_codes(
    stub: codec_pb2_grpc.CodecStub, sensor: Model, digits_all: np.ndarray
) -> None:
    x = _mixed(digits_all)
    det = sensor.detector
    assert det is not None
    z = _latents(sensor, x)
    for name in ("", "gmm", "mahalanobis", "knn"):
        request = codec_pb2.ScoreRequest(id=f"r-{name}", codes=sensor.to_codes(sensor.encode(x)))
        request.score = name
        response = stub.Score(request, timeout=10)
        assert response.id == f"r-{name}"
        _check(response, det.score_latents(z, name or None), sensor, "2")
    # noise looks less like digits than digits do
    scores = tensor_to_array(response.scores)
    assert scores[40:].mean() > scores[:40].mean()


def test_codes_route_to_the_version_of_their_encoder(
    stub: codec_pb2_grpc.CodecStub, sensor1: Model, digits_all: np.ndarray
) -> None:
    x = digits_all[:5]
    request = codec_pb2.ScoreRequest(codes=sensor1.to_codes(sensor1.encode(x)))
    response = stub.Score(request, timeout=10)
    assert sensor1.detector is not None
    _check(response, sensor1.detector.score_latents(_latents(sensor1, x)), sensor1, "1")


def test_threshold_and_fpr_overrides(
    stub: codec_pb2_grpc.CodecStub, sensor: Model, digits_all: np.ndarray
) -> None:
    x = _mixed(digits_all)
    codes = sensor.to_codes(sensor.encode(x))
    det = sensor.detector
    assert det is not None
    scores = det.score_latents(_latents(sensor, x), "mahalanobis").scores
    mid = float(np.median(scores))
    got = stub.Score(
        codec_pb2.ScoreRequest(codes=codes, score="mahalanobis", threshold=mid), timeout=10
    )
    assert got.threshold == mid
    np.testing.assert_array_equal(tensor_to_array(got.is_anomaly) != 0, scores > mid)
    got = stub.Score(codec_pb2.ScoreRequest(codes=codes, fpr=0.25), timeout=10)
    assert got.threshold == det.threshold_for("gmm", 0.25)
    expected = det.score_latents(_latents(sensor, x), "gmm", fpr=0.25)
    np.testing.assert_array_equal(tensor_to_array(got.is_anomaly) != 0, expected.flags)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"threshold": float("nan")}, ("threshold must be a finite number",)),
        ({"threshold": float("inf")}, ("threshold must be a finite number",)),
        ({"fpr": 1.0}, ("fpr must be a rate between 0 and 1",)),
        ({"fpr": 0.0}, ("fpr must be a rate between 0 and 1",)),
        ({"threshold": 1.0, "fpr": 0.1}, ("not both",)),
        ({"score": "lof"}, ("no score 'lof'", "gmm, mahalanobis, knn")),
        ({"score": "recon"}, ("no score 'recon'", "latentwire score")),
    ],
)
def test_bad_score_requests_are_invalid_argument(
    stub: codec_pb2_grpc.CodecStub, sensor: Model, fields: dict[str, Any], words: tuple[str, ...]
) -> None:
    codes = sensor.to_codes(sensor.encode(np.zeros((2, 64), np.float32)))
    rpc_fails(
        lambda: stub.Score(codec_pb2.ScoreRequest(codes=codes, **fields), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        *words,
        kind="InputError",
    )


def test_a_package_without_anomaly_scoring_is_failed_precondition(
    server: Any, local: Model
) -> None:
    """The shared server's digits package was trained without --task anomaly."""
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        stub = codec_pb2_grpc.CodecStub(ch)
        codes = local.to_codes(local.encode(np.zeros((2, 64), np.float32)))
        rpc_fails(
            lambda: stub.Score(codec_pb2.ScoreRequest(codes=codes), timeout=10),
            grpc.StatusCode.FAILED_PRECONDITION,
            "no anomaly scores",
            "--task anomaly",
            kind="PackageError",
        )
        ready = ch.unary_unary(
            f"/{V2}/ModelReady",
            request_serializer=pb.ModelReadyRequest.SerializeToString,
            response_deserializer=pb.ModelReadyResponse.FromString,
        )
        assert not ready(pb.ModelReadyRequest(name="digits.scorer"), timeout=10).ready
        assert ready(pb.ModelReadyRequest(name="digits.decoder"), timeout=10).ready


# -- errors: the same as Decode's -------------------------------------------------------------
def _short(codes: codec_pb2.Codes) -> None:
    codes.tensor.data = codes.tensor.data[:-1]


def _nan(codes: codec_pb2.Codes) -> None:
    arr = tensor_to_array(codes.tensor).copy()
    arr[1, 3] = np.nan
    codes.tensor.data = arr.tobytes()


def _narrow(codes: codec_pb2.Codes) -> None:
    arr = tensor_to_array(codes.tensor)[:, :7].copy()
    codes.tensor.shape[:] = list(arr.shape)
    codes.tensor.data = arr.tobytes()


def _empty(codes: codec_pb2.Codes) -> None:
    codes.tensor.shape[:] = [0, 8]
    codes.tensor.data = b""
    codes.count = 0


def _other_encoder(codes: codec_pb2.Codes) -> None:
    codes.fingerprint = "0123456789abcdef"


def _unknown(codes: codec_pb2.Codes) -> None:
    codes.fingerprint = "0123456789abcdef"
    codes.model_name = "nobody"


def _format(codes: codec_pb2.Codes) -> None:
    codes.format = "int8"


BREAKS = {
    "one byte short": (_short, grpc.StatusCode.INVALID_ARGUMENT),
    "NaN": (_nan, grpc.StatusCode.INVALID_ARGUMENT),
    "wrong width": (_narrow, grpc.StatusCode.INVALID_ARGUMENT),
    "empty batch": (_empty, grpc.StatusCode.INVALID_ARGUMENT),
    "wrong format tag": (_format, grpc.StatusCode.INVALID_ARGUMENT),
    "another encoder": (_other_encoder, grpc.StatusCode.FAILED_PRECONDITION),
    "unknown model": (_unknown, grpc.StatusCode.NOT_FOUND),
}


@pytest.mark.parametrize("case", list(BREAKS))
def test_score_rpc_errors_like_decodes(
    stub: codec_pb2_grpc.CodecStub, sensor: Model, digits_all: np.ndarray, case: str
) -> None:
    brk, code = BREAKS[case]
    codes = sensor.to_codes(sensor.encode(digits_all[:4]))
    brk(codes)
    decode = rpc_fails(lambda: stub.Decode(codec_pb2.DecodeRequest(codes=codes), timeout=10), code)
    score = rpc_fails(lambda: stub.Score(codec_pb2.ScoreRequest(codes=codes), timeout=10), code)
    assert score == decode
    kinds = set()
    for call in (stub.Decode, stub.Score):
        req = codec_pb2.DecodeRequest if call is stub.Decode else codec_pb2.ScoreRequest
        with pytest.raises(grpc.RpcError) as info:
            call(req(codes=codes), timeout=10)
        kinds.add(error_class(info.value))
    assert len(kinds) == 1 and None not in kinds
    # the server goes on answering good requests
    good = stub.Score(codec_pb2.ScoreRequest(codes=sensor.to_codes(sensor.encode(digits_all[:2]))))
    assert len(tensor_to_array(good.scores)) == 2


def test_no_codes_and_bytes_that_are_no_request(
    stub: codec_pb2_grpc.CodecStub, score_server: Any
) -> None:
    rpc_fails(
        lambda: stub.Score(codec_pb2.ScoreRequest(), timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "ScoreRequest has no codes",
        kind="CodesError",
    )
    with grpc.insecure_channel(f"127.0.0.1:{score_server.port}") as ch:
        raw = ch.unary_unary("/latentwire.v1.Codec/Score")
        rpc_fails(
            lambda: raw(b"\xff\xff\xff", timeout=10),
            grpc.StatusCode.INVALID_ARGUMENT,
            "not a valid ScoreRequest message",
            kind="InputError",
        )


# -- batching and metrics ---------------------------------------------------------------------
def test_concurrent_scores_share_a_batch_and_are_counted(
    score_repo: Path, serve: Any, sensor: Model, digits_all: np.ndarray
) -> None:
    det = sensor.detector
    assert det is not None
    xs = [_mixed(digits_all, 2 + i % 3) for i in range(12)]
    calls = [
        (
            lambda s, x=x: s.Score(
                codec_pb2.ScoreRequest(codes=sensor.to_codes(sensor.encode(x)), fpr=0.5)
            )
        )
        for x in xs
    ]
    with serve(score_repo, policy=BatchPolicy(max_delay=0.05)) as srv:
        answers = concurrently(srv.port, calls)
        get = srv.metrics.registry.get_sample_value
        graph = {"model": NAME, "version": "2", "role": "scorer-gmm"}
        batches = get("latentwire_batch_samples_count", graph)
        samples = get("latentwire_batch_samples_sum", graph)
        scored = get("latentwire_scored_samples_total", {"model": NAME})
        flagged = get("latentwire_anomalies_total", {"model": NAME})
        ok = get("latentwire_requests_total", {"method": "Score", "code": "OK"})
    expected_flags = 0
    for x, answer in zip(xs, answers, strict=True):
        assert isinstance(answer, codec_pb2.ScoreResponse), answer
        expected = det.score_latents(_latents(sensor, x), fpr=0.5)
        _check(answer, expected, sensor, "2")
        expected_flags += int(expected.flags.sum())
    total = sum(len(x) for x in xs)
    assert samples == total and scored == total and ok == len(xs)
    assert batches is not None and batches < len(xs), "no two Score calls shared a batch"
    assert flagged == expected_flags > 0


# -- KServe V2: <name>.scorer -------------------------------------------------------------------
def _v2(ch: grpc.Channel, method: str, req: Any, resp: Any) -> Any:
    return ch.unary_unary(
        f"/{V2}/{method}",
        request_serializer=req.SerializeToString,
        response_deserializer=resp.FromString,
    )


def _infer(ch: grpc.Channel, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
    call = _v2(ch, "ModelInfer", pb.ModelInferRequest, pb.ModelInferResponse)
    response: pb.ModelInferResponse = call(request, timeout=10)
    return response


def _scorer_request(model: Model, x: np.ndarray, **params: str) -> pb.ModelInferRequest:
    w = model.encode(x)
    request = pb.ModelInferRequest(model_name=f"{NAME}.scorer", id="v2")
    request.inputs.add(name=model.manifest.latent.name, datatype="FP32", shape=list(w.shape))
    request.raw_input_contents.append(np.ascontiguousarray(w, "<f4").tobytes())
    for key, value in params.items():
        request.parameters[key].string_param = value
    return request


def test_v2_scorer_metadata_ready_and_infer(
    score_server: Any, sensor: Model, digits_all: np.ndarray
) -> None:
    det = sensor.detector
    assert det is not None
    with grpc.insecure_channel(f"127.0.0.1:{score_server.port}") as ch:
        ready = _v2(ch, "ModelReady", pb.ModelReadyRequest, pb.ModelReadyResponse)
        assert ready(pb.ModelReadyRequest(name=f"{NAME}.scorer"), timeout=10).ready
        meta = _v2(ch, "ModelMetadata", pb.ModelMetadataRequest, pb.ModelMetadataResponse)(
            pb.ModelMetadataRequest(name=f"{NAME}.scorer"), timeout=10
        )
        assert list(meta.versions) == ["1", "2"]
        assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
            (sensor.manifest.latent.name, "FP32", [-1, 8])
        ]
        assert [(t.name, t.datatype) for t in meta.outputs] == [
            ("score", "FP32"),
            ("is_anomaly", "BOOL"),
            ("p_value", "FP32"),
        ]
        x = _mixed(digits_all, 10)
        expected = det.score_latents(_latents(sensor, x), "knn")
        got = _infer(ch, _scorer_request(sensor, x, score="knn", fingerprint=sensor.fingerprint))
        assert got.model_version == "2" and got.id == "v2"
        params = {k: v.string_param for k, v in got.parameters.items()}
        assert params == {
            "fingerprint": sensor.fingerprint,
            "score": "knn",
            "threshold": repr(expected.threshold),
        }
        assert [(o.name, o.datatype, list(o.shape)) for o in got.outputs] == [
            ("score", "FP32", [20]),
            ("is_anomaly", "BOOL", [20]),
            ("p_value", "FP32", [20]),
        ]
        raw = got.raw_output_contents
        np.testing.assert_allclose(np.frombuffer(raw[0], "<f4"), expected.scores, rtol=1e-6)
        np.testing.assert_array_equal(np.frombuffer(raw[1], np.bool_), expected.flags)
        np.testing.assert_allclose(np.frombuffer(raw[2], "<f4"), expected.p_values, rtol=1e-6)
        # one output asked for, and a threshold override
        request = _scorer_request(sensor, x, threshold="0.5", fingerprint=sensor.fingerprint)
        request.outputs.add(name="is_anomaly")
        got = _infer(ch, request)
        assert [o.name for o in got.outputs] == ["is_anomaly"]
        flags = det.score_latents(_latents(sensor, x)).scores > 0.5
        np.testing.assert_array_equal(np.frombuffer(got.raw_output_contents[0], np.bool_), flags)


def test_v2_scorer_routing_and_errors(score_server: Any, sensor: Model, sensor1: Model) -> None:
    x = np.zeros((3, 64), np.float32)
    with grpc.insecure_channel(f"127.0.0.1:{score_server.port}") as ch:
        # sensor has versions of two encoders: a scorer call must say whose codes these are
        rpc_fails(
            lambda: _infer(ch, _scorer_request(sensor, x)),
            grpc.StatusCode.FAILED_PRECONDITION,
            "versions of different encoders",
            kind="FingerprintMismatch",
        )
        got = _infer(ch, _scorer_request(sensor1, x, fingerprint=sensor1.fingerprint))
        assert got.model_version == "1"
        rpc_fails(
            lambda: _infer(ch, _scorer_request(sensor, x, fingerprint="0123456789abcdef")),
            grpc.StatusCode.FAILED_PRECONDITION,
            "no loaded version",
            kind="FingerprintMismatch",
        )
        for params, words in (
            ({"score": "lof"}, ("no score 'lof'",)),
            ({"threshold": "high"}, ("parameter threshold must be a number",)),
            ({"fpr": "2"}, ("fpr must be a rate",)),
        ):
            rpc_fails(
                lambda p=params: _infer(
                    ch, _scorer_request(sensor, x, fingerprint=sensor.fingerprint, **p)
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
                *words,
                kind="InputError",
            )
        request = _scorer_request(sensor, x, fingerprint=sensor.fingerprint)
        request.outputs.add(name="x_hat")
        rpc_fails(
            lambda: _infer(ch, request),
            grpc.StatusCode.INVALID_ARGUMENT,
            "score, is_anomaly, p_value",
            kind="InputError",
        )
        rpc_fails(
            lambda: _infer(ch, pb.ModelInferRequest(model_name=f"{NAME}.nothing")),
            grpc.StatusCode.NOT_FOUND,
            f"{NAME}.scorer",
            kind="ModelNotFound",
        )


# -- the client ---------------------------------------------------------------------------
def test_client_score(score_server: Any, sensor: Model, digits_all: np.ndarray) -> None:
    det = sensor.detector
    assert det is not None
    x = _mixed(digits_all, 30)
    expected = det.score_latents(_latents(sensor, x), "mahalanobis")
    with Client(f"127.0.0.1:{score_server.port}") as client:
        got = client.score(sensor.encode_codes(x, chunk=16), score="mahalanobis")
    assert (got.score, got.model_name, got.model_version) == ("mahalanobis", NAME, "2")
    assert got.fingerprint == sensor.fingerprint and got.threshold == expected.threshold
    np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-12)
    np.testing.assert_array_equal(got.flags, expected.flags)
    np.testing.assert_array_equal(got.p_values, expected.p_values)


def test_cli_send_score(
    score_server: Any,
    server: Any,
    score_repo: Path,
    digits_pkg: Path,
    sensor: Model,
    digits_all: np.ndarray,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from latentwire.runtime.cli import main

    from .conftest import error_line

    det = sensor.detector
    assert det is not None
    x = _mixed(digits_all, 5)
    np.save(tmp_path / "x.npy", x)
    expected = det.score_latents(_latents(sensor, x), fpr=0.2)
    pkg = str(score_repo / NAME / "2")
    base = ["send", "--score", "--server", f"127.0.0.1:{score_server.port}", "--model", pkg]
    out = tmp_path / "scores.csv"
    assert main([*base, str(tmp_path / "x.npy"), "--fpr", "0.2", "--out", str(out)]) == 0
    table = np.loadtxt(out, delimiter=",", skiprows=1)
    assert out.read_text().splitlines()[0] == "index,score,is_anomaly,p_value"
    np.testing.assert_array_equal(table[:, 0], np.arange(10))
    np.testing.assert_allclose(table[:, 1], expected.scores, rtol=1e-9)
    np.testing.assert_array_equal(table[:, 2] == 1, expected.flags)
    np.testing.assert_allclose(table[:, 3], expected.p_values, rtol=1e-5)
    err = capsys.readouterr().err
    flagged = int(expected.flags.sum())
    assert "scored 10 samples" in err and f"{NAME} version 2, score gmm" in err
    assert f"{flagged} flagged as anomalies" in err
    # stdout without --out; an existing file is kept unless --force
    assert main([*base, str(tmp_path / "x.npy"), "--score-name", "knn"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 11 and lines[0] == "index,score,is_anomaly,p_value"
    assert main([*base, str(tmp_path / "x.npy"), "--out", str(out)]) == 1
    assert "--force" in error_line(capsys)
    assert main([*base, str(tmp_path / "x.npy"), "--out", str(out), "--force"]) == 0
    # a package without anomaly scoring: one line saying how to make one
    plain = ["send", "--score", "--server", f"127.0.0.1:{server.port}", "--model"]
    assert main([*plain, str(digits_pkg), str(tmp_path / "x.npy")]) == 1
    assert "--task anomaly" in error_line(capsys)
    for bad in (["--stream"], ["--threshold", "1", "--fpr", "0.1"]):
        with pytest.raises(SystemExit) as info:
            main([*base, str(tmp_path / "x.npy"), *bad])
        assert info.value.code == 2


def test_a_trained_anomaly_package_scores_the_same_served_and_local(
    anomaly_pkg: Path, tmp_path: Path, serve: Any
) -> None:
    """`train --task anomaly` (int8 codes): the server's scores of the codes are the
    package's own code scores of the samples (`Model.score`), flags and p-values included."""
    from latentwire.runtime.anomaly import CODE_SCORES
    from latentwire.training.anomaly_data import split_from_spec

    model = Model(anomaly_pkg, providers="cpu")
    det = model.detector
    assert det is not None and det.codes_scores
    split = split_from_spec(model.manifest.raw["anomaly"]["split"])
    shutil.copytree(anomaly_pkg, tmp_path / "bc" / "1")
    with serve(tmp_path) as srv, Client(f"127.0.0.1:{srv.port}") as client:
        for name in ("", *[s for s in CODE_SCORES if s in det.codes_scores]):
            got = client.score(model.encode_codes(split.x_test), score=name)
            expected = model.score(split.x_test, name or det.default_codes_score)
            assert got.score == expected.score and got.threshold == expected.threshold
            np.testing.assert_allclose(got.scores, expected.scores, rtol=1e-12)
            np.testing.assert_array_equal(got.flags, expected.flags)
            np.testing.assert_array_equal(got.p_values, expected.p_values)
