"""Bearer tokens and TLS keys never appear in logs or error messages. The in-process token
and TLS tests are checked by conftest's `_no_secrets_in_logs` (debug logging, every record
grepped); here the real command line, at debug verbosity, with TLS, a token and mistakes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import free_port, secret_lines

CERTS = Path(__file__).parent / "certs"
TOKEN = "tok-9f3b2c7d1e"


def test_the_log_check_is_armed_for_token_tests(caplog: pytest.LogCaptureFixture) -> None:
    assert caplog.handler.level <= logging.DEBUG or logging.getLogger().level <= logging.DEBUG
    assert len(secret_lines()) >= 2  # server.key and client.key bodies


def _wait_healthy(port: int) -> None:
    from latentwire.runtime.client import Client

    deadline = time.monotonic() + 60
    while True:
        try:
            with Client(
                f"127.0.0.1:{port}",
                root_certificates=(CERTS / "ca.pem").read_bytes(),
                certificate_chain=(CERTS / "client.pem").read_bytes(),
                private_key=(CERTS / "client.key").read_bytes(),
                server_name_override="localhost",
                timeout=2,
                retries=0,
            ) as c:
                if c.health() == "SERVING":
                    return
        except Exception:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.3)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "latentwire.runtime.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_token_and_tls_keys_stay_out_of_the_command_lines_output(
    repo: Path, digits_pkg: Path, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    samples = tmp_path / "x.npy"
    from sklearn.datasets import load_digits

    np.save(samples, load_digits().data[:5].astype(np.float32))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "LATENTWIRE_TOKEN"}
    server = subprocess.Popen(
        [sys.executable, "-m", "latentwire.runtime.cli", "-v", "serve", "--models", str(repo),
         "--host", "127.0.0.1", "--port", str(port), "--token-file", str(token_file),
         "--tls-cert", str(CERTS / "server.pem"), "--tls-key", str(CERTS / "server.key"),
         "--tls-client-ca", str(CERTS / "ca.pem")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    outputs: list[str] = []
    try:
        tls = ["--server", f"127.0.0.1:{port}", "--ca", str(CERTS / "ca.pem"),
               "--server-name", "localhost"]  # fmt: skip
        mtls = [*tls, "--cert", str(CERTS / "client.pem"), "--key", str(CERTS / "client.key")]
        send = ["-v", "send", "--model", str(digits_pkg), str(samples), "--timeout", "20"]
        _wait_healthy(port)
        runs = {
            "right token": _cli(*send, *mtls, "--token", TOKEN, env=env),
            "wrong token": _cli(*send, *mtls, "--token", TOKEN + "x", env=env),
            "no token": _cli(*send, *mtls, env=env),
            "no client certificate": _cli(*send, *tls, "--token", TOKEN, env=env),
            "client key of another certificate": _cli(
                *send,
                *tls,
                "--cert",
                str(CERTS / "client.pem"),
                "--key",
                str(CERTS / "server.key"),
                "--token",
                TOKEN,
                env=env,
            ),
        }
        assert runs["right token"].returncode == 0, runs["right token"].stderr
        for what, run in runs.items():
            if what != "right token":
                assert run.returncode != 0, what
                assert "Traceback" not in run.stderr, (what, run.stderr)
            outputs += [run.stdout, run.stderr]
        assert "wrong bearer token" in runs["wrong token"].stderr
        assert "missing bearer token" in runs["no token"].stderr
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=60)
        outputs += [out, err]
    assert server.returncode == 0, err
    assert "listening on" in err  # the server did log at debug level
    secrets = {TOKEN} | secret_lines()
    for text in outputs:
        leaked = [s for s in secrets if s in text]
        assert not leaked, text
