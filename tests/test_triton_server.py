"""Slow: an exported repository in the real tritonserver, answers checked against latentwire.

The `nvidia-pytriton==0.7.0` wheel bundles tritonserver 2.51 and its Python backend, but
not the onnxruntime backend (NGC images only), so the encoder and decoder run as
`export-triton --backend python` stand-ins: the same folded graphs, run by onnxruntime
inside the Python backend. entropy_decode and the ensemble are the real ones.

Needs a virtual environment named by LATENTWIRE_TRITON_VENV (opt-in: without it the test
skips at once, so a plain `pytest` never starts a tritonserver), made with

    python3 -m venv V
    V/bin/pip install nvidia-pytriton==0.7.0 "numpy<2" onnxruntime
    V/bin/pip install -e ".[cpu]" "numpy<2"        # latentwire, for entropy_decode

(numpy<2: with numpy 2 every Python-backend output of this stub arrives empty). Skipped,
saying so, when it is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latentwire.runtime import load

from .conftest import free_port
from .test_triton_export import export, validate_repository

pytestmark = pytest.mark.slow

RECIPE = (
    'python3 -m venv V && V/bin/pip install nvidia-pytriton==0.7.0 "numpy<2" onnxruntime && '
    'V/bin/pip install -e ".[cpu]" "numpy<2"; then LATENTWIRE_TRITON_VENV=V'
)
_PROBE = (
    "import os, sys, sysconfig, pytriton, latentwire.runtime, onnxruntime, numpy; "
    "print(os.path.dirname(pytriton.__file__)); print(sysconfig.get_config_var('LIBDIR')); "
    "print(f'{sys.version_info[0]}.{sys.version_info[1]}'); print(numpy.__version__)"
)


TritonVenv = tuple[Path, Path, str, str]
"""(venv, pytriton package dir, the interpreter's LIBDIR, its X.Y version)"""


@pytest.fixture(scope="session")
def triton_venv() -> TritonVenv:
    """The Triton venv, or skip (before any package is trained for the test)."""
    return _triton_venv()


def _triton_venv() -> TritonVenv:
    named = os.environ.get("LATENTWIRE_TRITON_VENV")
    if not named:
        pytest.skip(f"LATENTWIRE_TRITON_VENV is not set; to run this test: {RECIPE}")
    venv = Path(named)
    python = venv / "bin" / "python"
    if not python.exists():
        pytest.skip(f"no Triton venv at {venv} (LATENTWIRE_TRITON_VENV): {RECIPE}")
    probe = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"{venv} cannot run Triton's Python models ({last}): {RECIPE}")
    package, libdir, version, numpy_version = probe.stdout.split()
    if int(numpy_version.split(".")[0]) >= 2:
        pytest.skip(f"{venv} has numpy {numpy_version}; the Python backend stub needs numpy<2")
    return venv, Path(package), libdir, version


@contextlib.contextmanager
def tritonserver(repo: Path, work: Path, triton: TritonVenv) -> Iterator[tuple[int, Path]]:
    """The bundled tritonserver on `repo` (gRPC on a free port, HTTP and metrics off):
    yields (port, log file); stopped with SIGTERM (SIGKILL after 20 s)."""
    venv, package, libdir, version = triton
    server = package / "tritonserver"
    backends = work / "backends" / "python"
    backends.mkdir(parents=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy(server / "backends" / "python" / name, backends)
    shutil.copy(server / "python_backend_stubs" / version / "triton_python_backend_stub", backends)
    env = dict(os.environ)
    libs = [libdir, str(package.parent / "nvidia_pytriton.libs"), env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = ":".join(p for p in libs if p)
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"  # the stub finds its prefix here
    env["PYTHONPATH"] = str(package.parent)
    env["OMP_NUM_THREADS"] = "1"
    port = free_port()
    cmd = [
        str(server / "bin" / "tritonserver"),
        f"--model-repository={repo}",
        f"--backend-directory={work / 'backends'}",
        "--disable-auto-complete-config",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={port}",
        "--allow-http=false",
        "--allow-metrics=false",
        "--exit-on-error=true",
    ]
    log = work / "tritonserver.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield port, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _wait_ready(client: Any, models: list[str], log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if client.is_server_ready() and all(client.is_model_ready(m) for m in models):
                return
        time.sleep(0.5)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
    pytest.fail(f"tritonserver did not get {models} ready in {timeout:.0f} s:\n{tail}")


def test_real_tritonserver_answers_like_latentwire(
    triton_venv: TritonVenv, format_pkgs: dict[str, Path], tmp_path: Path, digits_x: np.ndarray
) -> None:
    grpcclient = pytest.importorskip("tritonclient.grpc")
    from tritonclient.utils import InferenceServerException

    from latentwire.runtime.codes import tensor_to_array

    src = tmp_path / "models"
    for fmt in ("int8", "entropy"):
        shutil.copytree(format_pkgs[fmt], src / f"digits-{fmt}" / "1")
    repo = tmp_path / "repo"
    assert export(str(src), "--out", str(repo), "--backend", "python", "--max-batch", "256") == 0
    names = sorted(validate_repository(repo))
    assert names == [
        "digits-entropy.decoder",
        "digits-entropy.encoder",
        "digits-entropy.entropy_decode",
        "digits-entropy.stream_decoder",
        "digits-int8.decoder",
        "digits-int8.encoder",
    ]
    int8, entropy = (load(src / f"digits-{f}" / "1", providers="cpu") for f in ("int8", "entropy"))
    x = digits_x[:50]

    with tritonserver(repo, tmp_path / "triton", triton_venv) as (port, log):
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        _wait_ready(client, names, log)

        def infer(model: str, output: str, **arrays: np.ndarray) -> np.ndarray:
            inputs = []
            for key, arr in arrays.items():
                t = grpcclient.InferInput(key, list(arr.shape), _V2[arr.dtype.name])
                t.set_data_from_numpy(arr)
                inputs.append(t)
            result = client.infer(model, inputs, outputs=[grpcclient.InferRequestedOutput(output)])
            out: np.ndarray = result.as_numpy(output)
            return out

        # int8: encoder and decoder (dynamic batching) against Model.encode / Model.decode
        w = int8.encode(x)
        np.testing.assert_array_equal(infer("digits-int8.encoder", "z", x=x), w)
        x_hat = infer("digits-int8.decoder", "x_hat", z=w)
        np.testing.assert_allclose(x_hat, int8.decode(w), rtol=1e-5, atol=1e-5)

        # entropy: one stream through the ensemble (entropy_decode -> decoder)
        msg = entropy.to_codes(entropy.encode(x))
        stream = tensor_to_array(msg.tensor)
        count = np.array([msg.count], np.int32)
        shape = np.array(msg.latent_shape, np.int32)
        x_hat = infer(
            "digits-entropy.stream_decoder", "x_hat", stream=stream, count=count, latent_shape=shape
        )
        np.testing.assert_allclose(x_hat, entropy.decode_codes([msg]), rtol=1e-5, atol=1e-5)

        # a damaged stream is refused with latentwire's own message
        with pytest.raises(InferenceServerException, match=r"entropy stream"):
            infer(
                "digits-entropy.stream_decoder",
                "x_hat",
                stream=stream[:-4],
                count=count,
                latent_shape=shape,
            )

        # the fingerprint travels in the served configuration
        config = client.get_model_config("digits-entropy.decoder", as_json=True)["config"]
        assert config["parameters"]["latentwire.fingerprint"]["string_value"] == (
            entropy.fingerprint
        )
        client.close()


_V2 = {"float32": "FP32", "int8": "INT8", "int32": "INT32", "uint8": "UINT8"}
