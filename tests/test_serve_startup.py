"""`latentwire serve` mistakes give one clean error line: ports out of range are refused
by argparse, a port in use or bad TLS files by the server, with no grpc-core or native
log lines ahead of the error. Abbreviated flags are refused in every command."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from latentwire.runtime.cli import build_parser, main

from .conftest import FRONTENDS, require_native

CERTS = Path(__file__).parent / "certs"
NATIVE_LOG = re.compile(r"^[EWIF]\d{4} |could not bind|ssl_transport|add_port", re.MULTILINE)


def _serve(models: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "latentwire.runtime.cli", "serve", "--models", str(models), *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def _only_error(stderr: str) -> str:
    """The error line, after checking nothing but our own log lines came before it."""
    assert not NATIVE_LOG.search(stderr), stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("latentwire: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.fixture()
def busy_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize("front", FRONTENDS)
def test_a_port_in_use_is_one_clean_line(tmp_path: Path, busy_port: int, front: str) -> None:
    if front == "native":
        require_native()
    done = _serve(tmp_path, "--port", str(busy_port), "--frontend", front)
    assert done.returncode == 1
    line = _only_error(done.stderr)
    assert f":{busy_port}" in line and "in use" in line


@pytest.mark.parametrize(
    ("cert", "key", "ca", "words"),
    [
        ("garbage.pem", "server.key", None, ("--tls-cert", "garbage.pem", "not a PEM")),
        ("server.pem", "client.key", None, ("--tls-key", "client.key", "KEY_VALUES_MISMATCH")),
        ("server.pem", "server.key", "garbage.pem", ("--tls-client-ca", "garbage.pem")),
        ("server.pem", "missing.key", None, ("--tls-key", "missing.key", "no such file")),
    ],
)
def test_bad_tls_files_are_one_clean_line(
    tmp_path: Path, cert: str, key: str, ca: str | None, words: tuple[str, ...]
) -> None:
    (tmp_path / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    for name in ("server.pem", "server.key", "client.key"):
        (tmp_path / name).write_bytes((CERTS / name).read_bytes())
    args = ["--port", "0", "--tls-cert", str(tmp_path / cert), "--tls-key", str(tmp_path / key)]
    if ca:
        args += ["--tls-client-ca", str(tmp_path / ca)]
    models = tmp_path / "models"
    models.mkdir()
    done = _serve(models, *args)
    assert done.returncode == 1
    line = _only_error(done.stderr)
    for word in words:
        assert word in line, line
    secret = (CERTS / "server.key").read_text().splitlines()[1]
    assert secret not in done.stderr  # key material never in a message


@pytest.mark.parametrize("value", ["99999", "65536", "-1", "eighty", "8001.5"])
@pytest.mark.parametrize("flag", ["--port", "--metrics-port"])
def test_ports_out_of_range_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--models", str(tmp_path), flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and value in err


def test_ports_in_range_are_taken() -> None:
    args = build_parser().parse_args(["serve", "--models", "m", "--port", "0"])
    assert args.port == 0
    args = build_parser().parse_args(["serve", "--models", "m", "--port", "65535"])
    assert args.port == 65535


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--models", "m", "--grace=3"],  # --grace-seconds
        ["serve", "--models", "m", "--front", "grpcio"],  # --frontend
        ["train", "--epoch", "3"],  # --epochs
        ["--verb", "info", "pkg"],  # --verbose
        ["info", "pkg", "--js"],  # --json
        ["encode", "--model", "m", "x.npy", "--out", "c", "--chun", "3"],  # --chunk
    ],
)
def test_abbreviated_flags_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_every_command_refuses_abbreviations() -> None:
    import argparse

    def walk(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from walk(child)

    parsers = list(walk(build_parser()))
    assert len(parsers) > 10
    assert all(not p.allow_abbrev for p in parsers)
