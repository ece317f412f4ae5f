"""The Node.js edge client (clients/node, npm package latentwire-edge) against this runtime.

The packages come from the session fixtures (a dense package per code format, the
convolutional one, the anomaly one, another encoder) plus a convolutional entropy package
trained here. The Python side writes the inputs (.npy), the codes of the error cases (codes
files) and a plan, starts two servers on the front under test, and runs `node --test` in
clients/node with LATENTWIRE_NODE_PLAN pointing at the plan; the Node tests encode, decode,
stream, score, fetch and provoke errors and write what they got. Then this module checks:

- Codes bytes from Node == `Model.encode_codes(...)` SerializeToString() here, for every
  format, dense and convolutional (padded images included), chunked and not;
- the reconstructions and scores Node got from the server == what Python's Client gets for
  the same codes;
- for every error case, Node reports the status and the error class Python's client raises
  (a third server, grpcio with mutual TLS and a token, covers TLS).

clients/node/node_modules must exist: CI runs `npm ci` in clients/node first. Without it
(or without `node`) the test fails, saying what to run.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latentwire.runtime._proto.v1 import codec_pb2
from latentwire.runtime.client import Client
from latentwire.runtime.codes import MAGIC, read_codes_file, write_codes_file
from latentwire.runtime.errors import LatentwireError
from latentwire.runtime.model import Model
from latentwire.runtime.server.batcher import BatchPolicy

from .conftest import FORMAT_NAMES, _train, free_port, running_server

NODE_DIR = Path(__file__).resolve().parents[1] / "clients" / "node"
CERTS = Path(__file__).parent / "certs"
INSTALL = "cd clients/node && npm ci"
TOKEN = "s3cret"
NODE_TIMEOUT = 240


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("the Node.js client tests need `node` (Node 20+) on PATH")
    if not (NODE_DIR / "node_modules" / "onnxruntime-node").is_dir():
        pytest.fail(
            f"{NODE_DIR / 'node_modules'} is missing: install the Node client's dependencies "
            f"with `{INSTALL}` (clients/node/.npmrc skips onnxruntime-node's CUDA download)"
        )
    return node


def _load(path: Path) -> Model:
    return Model(path, providers="cpu", roles=("encoder",))


def _payloads(path: Path) -> list[bytes]:
    """The serialized messages of a codes file, byte for byte."""
    data = path.read_bytes()
    assert data[: len(MAGIC)] == MAGIC
    pos, out = len(MAGIC), []
    while pos < len(data):
        (size,) = struct.unpack_from("<I", data, pos)
        out.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    assert pos == len(data)
    return out


def _outcome(fn: Callable[[], Any]) -> tuple[str, str | None]:
    """(status, error class) of a call; ("OK", None) when it succeeds."""
    try:
        fn()
    except LatentwireError as exc:
        return exc.status, type(exc).__name__
    return "OK", None


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def images_entropy_pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The convolutional model of `image_pkg` with entropy-coded codes (latent (4, H/4, W/4))."""
    out = tmp_path_factory.mktemp("pkg") / "images-entropy"
    return _train(
        out,
        seed=0,
        data="sample-images",
        epochs=1,
        channels=(8, 8),
        latent_dim=4,
        codec="entropy",
        rate_lambda=0.01,
    )


@pytest.fixture(scope="module")
def packages(
    format_pkgs: dict[str, Path], image_pkg: Path, images_entropy_pkg: Path, anomaly_pkg: Path
) -> dict[str, Path]:
    """Served name -> package."""
    pkgs = {f"digits-{fmt}": format_pkgs[fmt] for fmt in FORMAT_NAMES}
    pkgs.update({"images": image_pkg, "images-entropy": images_entropy_pkg, "anomaly": anomaly_pkg})
    return pkgs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, digits_x: np.ndarray) -> dict[str, Path]:
    from sklearn.datasets import load_breast_cancer, load_sample_images

    folder = tmp_path_factory.mktemp("node-inputs")
    photo = load_sample_images().images[0].transpose(2, 0, 1)[None]  # (1, 3, 427, 640) uint8
    rng = np.random.default_rng(0)
    arrays = {
        "digits": digits_x,
        "digits_f64": digits_x.astype(np.float64) * (1 + 1e-9),
        "digits_f16": digits_x.astype(np.float16),
        "empty": np.zeros((0, 64), np.float32),
        "bc": load_breast_cancer().data[:60],  # float64, the anomaly package's minmax units
        "photo": photo.astype(np.float32),
        # three 30x41 crops (sides not multiples of the stride 4), a little different each
        "crops": np.repeat(photo[:, :, 100:130, 200:241], 3, axis=0).astype(np.float32)
        + rng.normal(size=(3, 3, 30, 41)).astype(np.float32),
        "crop_u8": np.concatenate([photo[:, :, :50, :70], photo[:, :, 50:100, :70]]),
    }
    paths = {}
    for name, arr in arrays.items():
        paths[name] = folder / f"{name}.npy"
        np.save(paths[name], np.ascontiguousarray(arr))
    return paths


ENCODE_CASES: list[tuple[str, str, str, dict[str, int]]] = [
    *[(f"digits-{f}", f"digits-{f}", "digits", {}) for f in FORMAT_NAMES],
    *[(f"digits-{f}-chunk30", f"digits-{f}", "digits", {"chunk": 30}) for f in FORMAT_NAMES],
    *[
        (f"digits-{f}-small", f"digits-{f}", "digits", {"maxMessageBytes": 200})
        for f in FORMAT_NAMES
    ],
    ("digits-f16-from-f64", "digits-f16", "digits_f64", {}),
    ("digits-int8-from-f16", "digits-int8", "digits_f16", {}),
    ("digits-f32-empty", "digits-f32", "empty", {}),
    ("digits-entropy-empty", "digits-entropy", "empty", {}),
    ("anomaly", "anomaly", "bc", {}),
    ("images-photo", "images", "photo", {}),
    ("images-crops", "images", "crops", {"maxMessageBytes": 3000}),
    ("images-entropy-photo", "images-entropy", "photo", {}),
    ("images-entropy-u8", "images-entropy", "crop_u8", {}),
    ("images-entropy-crops", "images-entropy", "crops", {"chunk": 2}),
]
"""(case, served package, input, encode_codes options as the Node API names them)."""
DECODE_CASES = [
    *[f"digits-{f}" for f in FORMAT_NAMES],
    *[f"digits-{f}-chunk30" for f in FORMAT_NAMES],
    "digits-f16-from-f64",
    "anomaly",
    "images-photo",
    "images-crops",
    "images-entropy-photo",
    "images-entropy-u8",
]


def _py_options(options: dict[str, int]) -> dict[str, int]:
    names = {"chunk": "chunk", "maxMessageBytes": "max_message_bytes"}
    return {names[k]: v for k, v in options.items()}


def _error_codes(
    folder: Path, f32: Model, entropy: Model, other: Model, x: np.ndarray
) -> dict[str, Path]:
    """Codes files of the bad (and one good) Decode requests, the same bytes for both clients."""
    good = f32.to_codes(f32.encode(x[:3]))
    z = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
    made: dict[str, list[codec_pb2.Codes]] = {"good": [good]}
    bad = codec_pb2.Codes()
    bad.CopyFrom(good)
    bad.fingerprint = "0" * 16
    made["fingerprint"] = [bad]
    made["other_encoder"] = [other.to_codes(z)]
    named = other.to_codes(z)
    named.model_name = "digits-f32"
    made["other_encoder_named"] = [named]
    short = f32.to_codes(z)
    short.tensor.data = short.tensor.data[:-1]
    made["short"] = [short]
    made["width"] = [f32.to_codes(z[:, :7])]
    made["empty"] = [f32.to_codes(np.zeros((0, 8), np.float32))]
    counted = f32.to_codes(z)
    counted.count = 5
    made["count"] = [counted]
    nonfinite = z.copy()
    nonfinite[1, 4] = np.nan
    made["nonfinite"] = [f32.to_codes(nonfinite)]
    fmt = f32.to_codes(z)
    fmt.format = "q8"
    made["format"] = [fmt]
    cut = entropy.to_codes(entropy.encode(x[:20]))
    cut.tensor.data = cut.tensor.data[:-4]
    cut.tensor.shape[0] -= 4
    made["entropy_cut"] = [cut]
    paths = {}
    for name, messages in made.items():
        paths[name] = folder / f"error-{name}.lwc"
        write_codes_file(paths[name], messages)
    return paths


def _tampered(folder: Path, pkg: Path) -> dict[str, Path]:
    """Copies of a package, each changed after export in one way Model refuses."""
    import onnx

    out = {}
    changed = folder / "encoder_changed"
    shutil.copytree(pkg, changed)
    blob = bytearray((changed / "encoder.onnx").read_bytes())
    blob[-1] ^= 1
    (changed / "encoder.onnx").write_bytes(bytes(blob))
    out["encoder_changed"] = changed
    edited = folder / "manifest_edited"
    shutil.copytree(pkg, edited)
    manifest = json.loads((edited / "manifest.json").read_text())
    manifest["input"]["multiple_of"] = 2  # a contract field: the fingerprint no longer fits
    (edited / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    out["manifest_edited"] = edited
    meta = folder / "metadata_fingerprint"
    shutil.copytree(pkg, meta)
    graph = onnx.load(str(meta / "encoder.onnx"))
    for prop in graph.metadata_props:
        if prop.key == "latentwire.fingerprint":
            prop.value = "f" * 16
    onnx.save(graph, str(meta / "encoder.onnx"))
    data = (meta / "encoder.onnx").read_bytes()
    manifest = json.loads((meta / "manifest.json").read_text())
    manifest["files"]["encoder"]["sha256"] = hashlib.sha256(data).hexdigest()
    (meta / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    out["metadata_fingerprint"] = meta
    return out


class Run:
    """One run of the Node tests: its plan, what it wrote, and the servers it talked to."""

    def __init__(self, plan: dict[str, Any], out: Path, packages: dict[str, Path]) -> None:
        self.plan = plan
        self.out = out
        self.packages = packages
        self.results: dict[str, Any] = json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def node_run(
    tmp_path_factory: pytest.TempPathFactory,
    packages: dict[str, Path],
    inputs: dict[str, Path],
    other_pkg: Path,
    serve: Callable[..., Any],
) -> Iterator[Run]:
    node = _node()
    tmp = tmp_path_factory.mktemp("node")
    repo, strict_repo = tmp / "repo", tmp / "strict-repo"
    for name, pkg in packages.items():
        shutil.copytree(pkg, repo / name / "1")
    shutil.copytree(packages["digits-f32"], strict_repo / "digits-f32" / "1")
    f32, entropy = _load(packages["digits-f32"]), _load(packages["digits-entropy"])
    x = np.load(inputs["digits"])
    errors = _error_codes(tmp, f32, entropy, _load(other_pkg), x)
    big = tmp / "big.lwc"
    z = np.random.default_rng(2).normal(size=(3200, 8)).astype(np.float32)
    write_codes_file(big, [f32.to_codes(z)])  # 102,400 bytes of codes, over 64 KiB
    out = tmp / "out"
    strict = {"token": TOKEN, "max_receive_bytes": 64 << 10, "warmup": False}
    strict["policy"] = BatchPolicy(max_delay=0.5, max_batch=100_000)
    tls = {"tls_cert": CERTS / "server.pem", "tls_key": CERTS / "server.key"}
    tls.update(tls_client_ca=CERTS / "ca.pem")
    with (
        serve(repo) as srv,
        serve(strict_repo, **strict) as strict_srv,
        running_server(strict_repo, token=TOKEN, warmup=False, **tls) as tls_srv,
    ):
        plan = {
            "out": str(out),
            "server": f"127.0.0.1:{srv.port}",
            "encode": [
                {
                    "name": name,
                    "package": str(packages[pkg]),
                    "input": str(inputs[inp]),
                    "options": options,
                    "served": pkg,
                }
                for name, pkg, inp, options in ENCODE_CASES
            ],
            "decode": [
                {"name": name, "served": next(c[1] for c in ENCODE_CASES if c[0] == name)}
                for name in DECODE_CASES
            ],
            "score": {"codes": "anomaly"},
            "fetch": {"model": "digits-int8", "scorer": "anomaly", "input": str(inputs["digits"])},
            "strict": {"address": f"127.0.0.1:{strict_srv.port}", "token": TOKEN, "big": str(big)},
            "errors": {
                "codes": {k: str(v) for k, v in errors.items()},
                "served": "digits-f32",
                "input": str(inputs["digits"]),
                "unused": f"127.0.0.1:{free_port()}",
            },
            "tampered": {k: str(v) for k, v in _tampered(tmp, packages["digits-f32"]).items()},
            "tls": {
                "address": f"127.0.0.1:{tls_srv.port}",
                "token": TOKEN,
                "server_name": "localhost",
                **{k: str(CERTS / f) for k, f in (("ca", "ca.pem"), ("cert", "client.pem"))},
                "key": str(CERTS / "client.key"),
            },
        }
        plan_path = tmp / "plan.json"
        plan_path.write_text(json.dumps(plan, indent=2))
        files = sorted(str(p.relative_to(NODE_DIR)) for p in (NODE_DIR / "test").glob("*.test.js"))
        env = {**os.environ, "LATENTWIRE_NODE_PLAN": str(plan_path)}
        t0 = time.monotonic()
        proc = subprocess.run(
            [node, "--test", *files],
            cwd=NODE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT,
        )
        took = time.monotonic() - t0
        failed = [part for part in proc.stdout.split("# Subtest: ") if "\nnot ok " in part]
        report = "\n".join(f[:4000] for f in failed) or proc.stdout[-6000:]
        report += proc.stderr[-3000:]
        assert proc.returncode == 0, f"node --test failed (exit {proc.returncode}):\n{report}"
        assert "# skipped 0" in proc.stdout, f"some Node tests were skipped:\n{proc.stdout[-3000:]}"
        print(f"node --test: {took:.1f} s")
        yield Run(plan, out, packages)


# -- the checks -----------------------------------------------------------------------------
def test_node_client_is_installed() -> None:
    """Fails (does not skip) without `node` or clients/node/node_modules, saying what to run."""
    _node()


def test_codes_bytes_equal_python(node_run: Run, inputs: dict[str, Path]) -> None:
    """Every Codes message Node made is byte for byte the one Model.encode_codes makes."""
    for name, pkg, inp, options in ENCODE_CASES:
        model = _load(node_run.packages[pkg])
        expected = [
            m.SerializeToString()
            for m in model.encode_codes(np.load(inputs[inp]), **_py_options(options))
        ]
        got = _payloads(node_run.out / f"{name}.lwc")
        assert len(got) == len(expected), name
        for i, (a, b) in enumerate(zip(got, expected, strict=True)):
            assert a == b, f"{name}: message {i} differs ({len(a)} vs {len(b)} bytes)"
    # the cases do what they say: chunks, padding, latent shapes
    assert node_run.results["encode"]["digits-f32-chunk30"]["counts"] == [30, 30, 30, 10]
    assert len(_payloads(node_run.out / "digits-entropy-small.lwc")) > 1
    photo = read_codes_file(node_run.out / "images-entropy-photo.lwc")[0]
    assert list(photo.input_shape) == [3, 427, 640] and list(photo.latent_shape) == [4, 107, 160]
    assert read_codes_file(node_run.out / "digits-f32-empty.lwc")[0].count == 0


def test_reconstructions_equal_python(node_run: Run, inputs: dict[str, Path]) -> None:
    """What Node got from Decode and DecodeStream equals what Python's client gets."""
    with Client(node_run.plan["server"], timeout=30) as client:
        for case in node_run.plan["decode"]:
            name = case["name"]
            _, pkg, inp, options = next(c for c in ENCODE_CASES if c[0] == name)
            model = _load(node_run.packages[pkg])
            messages = list(model.encode_codes(np.load(inputs[inp]), **_py_options(options)))
            expected = client.decode(messages).x
            unary = np.load(node_run.out / f"{name}.decode.npy")
            stream = np.load(node_run.out / f"{name}.stream.npy")
            assert unary.dtype == expected.dtype and unary.shape == expected.shape, name
            np.testing.assert_array_equal(unary, expected, err_msg=name)
            np.testing.assert_allclose(stream, expected, atol=1e-6, err_msg=name)
    x = np.load(inputs["photo"])
    assert np.load(node_run.out / "images-photo.decode.npy").shape == x.shape  # cropped back


def test_scores_equal_python(node_run: Run, inputs: dict[str, Path]) -> None:
    model = _load(node_run.packages["anomaly"])
    messages = list(model.encode_codes(np.load(inputs["bc"])))
    got = node_run.results["score"]
    with Client(node_run.plan["server"], timeout=30) as client:
        reply = client.score(messages)
        at_fpr = client.score(messages, fpr=0.2)
        at_zero = client.score(messages, threshold=0.0)
    assert got["score"] == reply.score and got["model"] == "anomaly"
    np.testing.assert_array_equal(np.asarray(got["scores"]), reply.scores)
    np.testing.assert_array_equal(np.asarray(got["p_values"]), reply.p_values)
    assert got["flags"] == reply.flags.tolist()
    assert got["threshold"] == reply.threshold and got["fpr_threshold"] == at_fpr.threshold
    assert got["zero_threshold"] == at_zero.threshold == 0.0
    assert got["zero_flags"] == at_zero.flags.tolist()


def test_fetched_encoder_is_the_servers(node_run: Run, inputs: dict[str, Path]) -> None:
    fetched = node_run.out / "fetched"
    pkg = node_run.packages["digits-int8"]
    assert sorted(p.name for p in fetched.iterdir()) == ["encoder.onnx", "manifest.json"]
    assert (fetched / "encoder.onnx").read_bytes() == (pkg / "encoder.onnx").read_bytes()
    assert json.loads((fetched / "manifest.json").read_text()) == json.loads(
        (pkg / "manifest.json").read_text()
    )
    assert not [p for p in node_run.out.iterdir() if p.name.startswith(".")]  # no temp left
    with_scorer, anomaly = node_run.out / "fetched-scorer", node_run.packages["anomaly"]
    names = ["anomaly.npz", "encoder.onnx", "manifest.json", "scorer.onnx"]
    assert sorted(p.name for p in with_scorer.iterdir()) == names
    for name in names:
        assert (with_scorer / name).read_bytes() == (anomaly / name).read_bytes(), name
    edge = _load(fetched)
    expected = [m.SerializeToString() for m in edge.encode_codes(np.load(inputs["digits"]))]
    assert _payloads(node_run.out / "fetched.lwc") == expected
    assert _payloads(node_run.out / "fetched-in-memory.lwc") == expected


def _decode_file(client: Client, path: str) -> Any:
    return client.decode(read_codes_file(path))


def _python_outcomes(run: Run, tmp: Path) -> dict[str, tuple[str, str | None]]:
    """What Python's client (and Model) report for every error case the Node test ran."""
    plan, e = run.plan, run.plan["errors"]
    out: dict[str, tuple[str, str | None]] = {}
    x = np.load(e["input"])
    with Client(plan["server"], timeout=20) as client:
        for name, path in e["codes"].items():
            out[f"decode_{name}"] = _outcome(functools.partial(_decode_file, client, path))
        good = read_codes_file(e["codes"]["good"])
        bad = read_codes_file(e["codes"]["fingerprint"])
        streamed = sorted(client.decode_stream([good[0], bad[0], good[0]]), key=lambda r: r.id)
        err = streamed[1].error
        out["stream_fingerprint"] = (
            ("OK", None) if err is None else (err.status, type(err).__name__)
        )
        out["decode_output_dtype"] = _outcome(lambda: client.decode(good, output_dtype="float64"))
        out["get_model_unknown"] = _outcome(lambda: client.get_model("nope"))
        out["get_model_version_unknown"] = _outcome(lambda: client.get_model(e["served"], "7"))
        out["encode_unknown"] = _outcome(lambda: client.encode("nope", x))
        narrow = np.zeros((len(x), x.shape[1] - 1), np.float32)
        out["encode_wrong_shape"] = _outcome(lambda: client.encode(e["served"], narrow))
        out["fetch_unknown"] = _outcome(lambda: client.fetch_encoder("nope", tmp / "nope"))
        out["score_not_anomaly"] = _outcome(lambda: client.score(good))
        scored = read_codes_file(run.out / "anomaly.lwc")
        out["score_unknown_name"] = _outcome(lambda: client.score(scored, score="nope"))
    s = plan["strict"]
    cases: list[tuple[str, str | None, Callable[[Client], Any]]] = [
        ("token_missing", None, lambda c: c.list_models()),
        ("token_wrong", "wrong", lambda c: c.list_models()),
        ("token_ok", s["token"], lambda c: c.list_models()),
        ("token_stream_missing", None, lambda c: list(c.decode_stream(good))),
        ("token_decode_ok", s["token"], lambda c: c.decode(good)),
        ("deadline", s["token"], lambda c: c.decode(good, timeout=0.05)),
        ("too_big", s["token"], lambda c: c.decode(read_codes_file(s["big"]))),
    ]
    for name, token, call in cases:
        with Client(s["address"], token=token, timeout=10) as c:
            out[name] = _outcome(functools.partial(call, c))
    t = plan["tls"]
    ca, cert, key = (Path(t[k]).read_bytes() for k in ("ca", "cert", "key"))
    name_override = t["server_name"]
    tls_cases: list[tuple[str, dict[str, Any]]] = [
        ("tls_ok", {"certificate_chain": cert, "private_key": key, "token": t["token"]}),
        ("tls_no_token", {"certificate_chain": cert, "private_key": key}),
    ]
    for name, extra in tls_cases:
        with Client(
            t["address"],
            root_certificates=ca,
            server_name_override=name_override,
            timeout=10,
            retries=0,
            **extra,
        ) as c:
            out[name] = _outcome(functools.partial(c.decode, good))
    with Client(t["address"], token=t["token"], timeout=10, retries=0) as c:
        out["tls_plaintext"] = _outcome(functools.partial(c.decode, good))
    with Client(e["unused"], retries=2, backoff=0.05, timeout=10) as gone:
        out["unavailable"] = _outcome(gone.list_models)
    for name, path in plan["tampered"].items():
        out[f"load_{name}"] = _outcome(functools.partial(_load, Path(path)))
    return out


def test_errors_match_the_python_client(node_run: Run, tmp_path: Path) -> None:
    """For every error case, Node reports the status and class the Python client raises."""
    expected = _python_outcomes(node_run, tmp_path)
    got = {k: (v["status"], v["kind"]) for k, v in node_run.results["errors"].items()}
    assert set(got) == set(expected)
    mismatched = {k: (got[k], expected[k]) for k in expected if got[k] != expected[k]}
    assert not mismatched, f"Node vs Python (status, class): {mismatched}"
    # and the cases are the ones they claim to be
    assert expected["decode_fingerprint"] == ("FAILED_PRECONDITION", "FingerprintMismatch")
    assert expected["get_model_unknown"] == ("NOT_FOUND", "ModelNotFound")
    assert expected["decode_short"] == ("INVALID_ARGUMENT", "CodesError")
    assert expected["token_wrong"] == ("UNAUTHENTICATED", "Unauthenticated")
    assert expected["deadline"] == ("DEADLINE_EXCEEDED", "DeadlineExceeded")
    assert expected["unavailable"] == ("UNAVAILABLE", "Unavailable")
    assert expected["load_metadata_fingerprint"] == ("FAILED_PRECONDITION", "IntegrityError")
    messages = node_run.results["errors"]
    assert "0000000000000000" in messages["decode_fingerprint"]["message"]
    assert "wrong bearer token" in messages["token_wrong"]["message"]
    assert node_run.results["unavailable_retries"] == 2
