"""Shared fixtures: small model packages trained once per test session."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

GENERATE_EXPECTED = os.environ.get("GENERATE_EXPECTED") == "1"
EXPECTED = Path(__file__).parent / "expected"


def _train(out: Path, *, seed: int, data: str = "digits", **kwargs: Any) -> Path:
    from latentwire.training.data import Dataset, load_data
    from latentwire.training.pipeline import train_and_export

    ds = load_data(data)
    if ds.is_image:  # a few hundred patches are plenty for a smoke-sized conv model
        ds = Dataset(ds.x[::4], ds.name, ds.source, True, ds.default_normalization)
    train_and_export(
        ds,
        name=f"{data}-test",
        out=out,
        checkpoint=out.parent / f"{out.name}.ckpt",
        resume=False,
        seed=seed,
        progress=False,
        **kwargs,
    )
    return out


@pytest.fixture(scope="session")
def digits_pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dense digits model (K=8), briefly trained."""
    return _train(tmp_path_factory.mktemp("pkg") / "digits", seed=0, epochs=15)


@pytest.fixture(scope="session")
def other_pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same architecture, another seed: a different fingerprint."""
    return _train(tmp_path_factory.mktemp("pkg") / "digits-other", seed=1, epochs=3)


@pytest.fixture(scope="session")
def image_pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small convolutional model on sample-images patches (stride 4)."""
    return _train(
        tmp_path_factory.mktemp("pkg") / "images",
        seed=0,
        data="sample-images",
        epochs=1,
        channels=(8, 8),
        latent_dim=4,
    )


@pytest.fixture(scope="session")
def anomaly_pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A breast-cancer anomaly package made by `latentwire train --task anomaly
    --edge-score` (clean protocol, seed 0, int8 codes, 10 epochs): manifest section
    "anomaly", anomaly.npz and scorer.onnx. Its labelled test split:
    `split_from_spec(manifest["anomaly"]["split"])`."""
    from latentwire.runtime import cli

    out = tmp_path_factory.mktemp("pkg") / "anomaly"
    argv = ["-q", "train", "--task", "anomaly", "--data", "breast-cancer", "--edge-score"]
    argv += ["--codec", "int8", "--epochs", "10", "--seed", "0", "--no-progress"]
    argv += ["--name", "breast-cancer-anomaly", "--out", str(out)]
    assert cli.main([*argv, "--checkpoint", str(out.parent / "anomaly.ckpt")]) == 0
    return out


@pytest.fixture(scope="session")
def digits_x() -> np.ndarray:
    from sklearn.datasets import load_digits

    x: np.ndarray = (load_digits().data[:100] / 16.0).astype(np.float32)
    return x


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory, digits_pkg: Path) -> Path:
    """A model repository DIR/<name>/<version>/ holding digits/1 (= digits_pkg)."""
    import shutil

    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(digits_pkg, root / "digits" / "1")
    return root


@contextlib.contextmanager
def running_server(models: Path, **config: Any) -> Iterator[Any]:
    """An in-process latentwire server on a free port (`server.port`), stopped on exit.

    Keyword arguments go to ServeConfig; `policy=BatchPolicy(...)` sets batching. The
    repository is not polled unless `poll_seconds` is given. Tests of the server take the
    `serve` fixture instead, which runs them on both fronts.
    """
    from latentwire.runtime.server.app import ServeConfig, Server

    config.setdefault("poll_seconds", 0)
    server = Server(ServeConfig(models=models, host="127.0.0.1", port=0, **config))
    server.start()
    try:
        yield server
    finally:
        server.stop(grace=1.0)


FRONTENDS = ("grpcio", "native")


def require_native() -> None:
    """Skip (visibly) without pygrpc-native; on CI its absence is a failure, so the native
    front is never left untested by accident."""
    if importlib.util.find_spec("pygrpc_native") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must test the native front: pip install -e '.[server]'")
        pytest.skip("pygrpc-native is not installed (pip install -e '.[server]')")


@pytest.fixture(scope="session", params=FRONTENDS)
def frontend(request: pytest.FixtureRequest) -> str:
    """Every server test runs on both fronts: grpcio, and the native (Rust) front."""
    if request.param == "native":
        require_native()
    return str(request.param)


@pytest.fixture(scope="session")
def serve(frontend: str) -> Callable[..., contextlib.AbstractContextManager[Any]]:
    """`running_server` on the front under test: `with serve(repo, **config) as srv`."""
    return functools.partial(running_server, frontend=frontend)


@pytest.fixture(scope="session")
def server(repo: Path, serve: Callable[..., Any]) -> Iterator[Any]:
    """A shared server over `repo` (default settings). Tests must not change `repo`."""
    with serve(repo) as srv:
        yield srv


@pytest.fixture(scope="session")
def local(digits_pkg: Path) -> Any:
    """digits_pkg loaded in this process: the reference the server's answers must match."""
    from latentwire.runtime import load

    return load(digits_pkg, providers="cpu")


@pytest.fixture(scope="session")
def other_local(other_pkg: Path) -> Any:
    """other_pkg loaded in this process (another fingerprint)."""
    from latentwire.runtime import load

    return load(other_pkg, providers="cpu")


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one `latentwire: error:` line a failed CLI call printed (and no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("latentwire: error:")]
    assert len(lines) == 1, err
    return lines[0]


# -- code formats (tests/test_formats.py, tests/test_formats_server.py) --------------------
FORMAT_NAMES = ("f32", "f16", "int8", "entropy")


@pytest.fixture(scope="session")
def format_pkgs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One briefly trained dense digits package (K=8) per code format, named digits-<fmt>."""
    from latentwire.training.data import load_data
    from latentwire.training.pipeline import train_and_export

    ds = load_data("digits")
    root = tmp_path_factory.mktemp("formats")
    pkgs: dict[str, Path] = {}
    for fmt in FORMAT_NAMES:
        out = root / f"digits-{fmt}"
        extra: dict[str, Any] = {"rate_lambda": 0.01} if fmt == "entropy" else {}
        train_and_export(
            ds,
            name=f"digits-{fmt}",
            out=out,
            checkpoint=None,
            resume=False,
            seed=0,
            progress=False,
            epochs=10,
            codec=fmt,
            **extra,
        )
        pkgs[fmt] = out
    return pkgs


@pytest.fixture(scope="session")
def format_repo(tmp_path_factory: pytest.TempPathFactory, format_pkgs: dict[str, Path]) -> Path:
    """A model repository DIR/digits-<fmt>/1/ holding the four format packages."""
    import shutil

    root = tmp_path_factory.mktemp("format-repo")
    for fmt, pkg in format_pkgs.items():
        shutil.copytree(pkg, root / f"digits-{fmt}" / "1")
    return root


def error_class(exc: Any) -> str | None:
    """The server's error class (trailing metadata "latentwire-error") of a grpc.RpcError."""
    for key, value in exc.trailing_metadata() or ():
        if key == "latentwire-error":
            return str(value)
    return None


def rpc_fails(call: Any, code: Any, *words: str, kind: str | None = None) -> str:
    """Run `call()`, check it fails with the grpc.StatusCode `code`, a message holding
    `words` and no traceback, and (when given) the error class `kind`; returns the message."""
    import grpc

    with pytest.raises(grpc.RpcError) as info:
        call()
    err = info.value
    details = err.details() or ""
    assert err.code() == code, f"{err.code()}: {details}"
    for word in words:
        assert word in details, f"{word!r} not in {details!r}"
    assert "Traceback" not in details
    if kind is not None:
        assert error_class(err) == kind
    return details


def concurrently(port: int, calls: Sequence[Callable[..., Any]]) -> list[Any]:
    """Run each `call(CodecStub)` at the same moment, each on a channel of its own; returns
    the answers (or the grpc.RpcError) in order."""
    import threading

    import grpc

    from latentwire.runtime._proto.v1 import codec_pb2_grpc

    barrier = threading.Barrier(len(calls))
    out: list[Any] = [None] * len(calls)

    def work(i: int) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = codec_pb2_grpc.CodecStub(ch)
            grpc.channel_ready_future(ch).result(timeout=10)
            barrier.wait(timeout=10)
            try:
                out[i] = calls[i](stub)
            except grpc.RpcError as exc:
                out[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return out


def free_port() -> int:
    """A TCP port nobody listens on right now (for servers started as subprocesses)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def health_of(port: int) -> int | None:
    """The health status a server on `port` answers with, or None while it cannot answer."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        try:
            stub = health_pb2_grpc.HealthStub(ch)
            return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status)
        except grpc.RpcError:
            return None


# -- secrets never reach logs -------------------------------------------------------------
TEST_TOKENS = ("s3cret", "t0k")
"""The bearer tokens the token and TLS tests use (distinct words, so a hit is a leak)."""


def secret_lines(*dirs: Path) -> set[str]:
    """The base64 body lines of every PEM private key in `dirs` (tests/certs by default)."""
    lines: set[str] = set()
    for folder in dirs or (Path(__file__).parent / "certs",):
        for key in Path(folder).glob("*.key"):
            body = key.read_text().splitlines()
            lines.update(line for line in body if line and not line.startswith("-----"))
    return lines


@pytest.fixture(autouse=True)
def _no_secrets_in_logs(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    """Every token and TLS test runs with debug logging, and no log record it produced may
    hold a bearer token or a line of a private key (ours or one the test made)."""
    name = request.node.name.lower()
    if "token" not in name and "tls" not in name:
        yield
        return
    caplog.set_level(logging.DEBUG)
    yield
    dirs = [Path(__file__).parent / "certs"]
    tmp = request.node.funcargs.get("tmp_path")
    if isinstance(tmp, Path):
        dirs.append(tmp)
    secrets = set(TEST_TOKENS) | secret_lines(*dirs)
    for when in ("setup", "call", "teardown"):
        for record in caplog.get_records(when):  # type: ignore[arg-type]
            text = record.getMessage() + (record.exc_text or "")
            leaked = [s for s in secrets if s in text]
            assert not leaked, f"a log record holds a secret: {text!r}"
