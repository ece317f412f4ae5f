"""deploy/docker images, built and run with podman from a locally bootstrapped Debian base.

Slow and opt-in (a few minutes): `LATENTWIRE_IMAGE_TESTS=1 pytest -m slow
tests/test_deploy_image.py`. Needs podman
(Debian: apt-get install podman runc uidmap fuse-overlayfs) and the base image made by
`deploy/docker/bootstrap-base.sh` (mmdebstrap + podman import: no registry pull); the
dependency wheels come from PyPI through `deploy/docker/build.sh --offline`, and the image
builds themselves run with --network=none --pull=never.

Server image: runs --read-only (not even a /tmp tmpfs), --cap-drop=ALL,
no-new-privileges, as uid 10001, with a trained digits package mounted read-only at
/models; the health service says SERVING, `Client.decode` through the published port equals
local decoding, `podman stop` (SIGTERM) drains and exits 0. Edge image: within its size
budget, no torch, `latentwire encode` works read-only. Neither image holds both onnxruntime
and onnxruntime-gpu (`pip list` inside).

Environment: LATENTWIRE_BASE_IMAGE (default localhost/bookworm-python:3.11);
LATENTWIRE_EDGE_NUMPY_WITHOUT_BLAS=1 builds the edge with a numpy without OpenBLAS
(`build.sh --numpy-without-blas`; its site-packages budget drops from 125 to 100 MB);
LATENTWIRE_PODMAN_ARGS, extra options for every build and run (default when runc is
installed, for VMs without CAP_SYS_RESOURCE and with hybrid cgroups: --runtime runc --ulimit
nofile=20000:20000 --ulimit nproc=32768:32768).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TypeAlias

import numpy as np
import pytest

from latentwire.runtime.client import Client
from latentwire.runtime.codes import read_codes_file
from latentwire.runtime.errors import Unavailable
from latentwire.runtime.model import load

from .conftest import free_port

pytestmark = pytest.mark.slow
Completed: TypeAlias = subprocess.CompletedProcess[str]

ROOT = Path(__file__).resolve().parents[1]
VERSION = "0.1.0"
SERVER = f"localhost/latentwire:{VERSION}"
EDGE = f"localhost/latentwire-edge:{VERSION}"
# the edge image's size budget (deploy/docker/README.md): the whole image on the bootstrapped
# bookworm base (178 MB), and latentwire's venv alone, whatever the base
EDGE_BUDGET_MB, EDGE_VENV_BUDGET_MB = 450, 250
NUMPY_WITHOUT_BLAS = os.environ.get("LATENTWIRE_EDGE_NUMPY_WITHOUT_BLAS") == "1"
"""Build the edge with `build.sh --numpy-without-blas` (numpy from source, ~3.5 min once)."""
EDGE_SITE_BUDGET_MB = 100 if NUMPY_WITHOUT_BLAS else 125
"""site-packages without pip/setuptools in the trimmed edge image (Dockerfile.edge TRIM=1):
118.6 MB measured with PyPI's numpy, 92.7 MB with numpy built without BLAS (2026-12-04)."""
SITE_BYTES = """
import os, sysconfig
site = sysconfig.get_paths()["purelib"]
total = pyc = 0
for root, _, files in os.walk(site):
    if os.path.relpath(root, site).split(os.sep)[0].split("-")[0] in ("pip", "setuptools"):
        continue
    for f in files:
        n = os.path.getsize(os.path.join(root, f))
        total += n
        pyc += n if f.endswith(".pyc") else 0
print(total, pyc)
"""
BASE = os.environ.get("LATENTWIRE_BASE_IMAGE", "localhost/bookworm-python:3.11")
WORKAROUNDS = "--runtime runc --ulimit nofile=20000:20000 --ulimit nproc=32768:32768"
EXTRA = shlex.split(
    os.environ.get("LATENTWIRE_PODMAN_ARGS", WORKAROUNDS if shutil.which("runc") else "")
)
# read-only root and no tmpfs anywhere unless a test adds one (podman's --read-only alone
# would mount /tmp, /var/tmp and /run writable)
SECURE = ["--read-only", "--read-only-tmpfs=false", "--cap-drop=ALL"]
SECURE += ["--security-opt=no-new-privileges"]
# the server's one writable path: its native front's Unix socket, a start-up log buffer
# (the Kubernetes Deployment mounts an emptyDir there)
SERVER_TMP = ["--tmpfs", "/tmp:rw,size=16m,mode=1777"]


def podman(*args: str, timeout: float = 120, check: bool = True) -> Completed:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    return done


def run(image: str, *args: str, options: tuple[str, ...] = (), check: bool = True) -> Completed:
    """`podman run --rm` of IMAGE, read-only, no capabilities, no network; `options` go
    before the image name (--entrypoint, -v, ...), `args` after it."""
    run_options = [*EXTRA, "--pull=never", "--network=none", *SECURE, *options]
    return podman("run", "--rm", *run_options, image, *args, check=check)


@pytest.fixture(scope="module")
def images() -> None:
    """Builds the server and edge images offline (podman's layer cache makes a rebuild of
    unchanged sources quick)."""
    if os.environ.get("LATENTWIRE_IMAGE_TESTS") != "1":
        # opt-in: building both images takes 4-7 minutes, which the default suite (and CI,
        # which runs slow-marked tests too) cannot spend
        pytest.skip("image builds are opt-in: LATENTWIRE_IMAGE_TESTS=1 pytest -m slow " + __file__)
    if shutil.which("podman") is None:
        pytest.skip("podman not installed (apt-get install podman runc uidmap fuse-overlayfs)")
    if podman("image", "exists", BASE, check=False).returncode != 0:
        pytest.skip(f"base image {BASE} missing: run deploy/docker/bootstrap-base.sh")
    build = [str(ROOT / "deploy/docker/build.sh"), "--tool", "podman", "--offline"]
    if NUMPY_WITHOUT_BLAS:
        build.append("--numpy-without-blas")
    build += ["--base", BASE, "server", "edge", "--", *EXTRA]
    done = subprocess.run(build, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def readable_copy(src: Path, dst: Path) -> Path:
    """A copy the container's uid 10001 can read (pytest's tmp dirs are 0700)."""
    shutil.copytree(src, dst)
    for path in [dst, *dst.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dst


@pytest.fixture()
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="latentwire-image-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def installed(image: str) -> set[str]:
    done = run(image, "list", "--format=json", options=("--entrypoint", "pip"))
    return {d["name"].lower() for d in json.loads(done.stdout)}


def wait_serving(client: Client, container: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if client.health("latentwire.v1.Codec", timeout=2) == "SERVING":
                return
        except Unavailable:
            pass  # not listening yet
        state = json.loads(podman("inspect", container).stdout)[0]["State"]
        logs = podman("logs", container)
        assert state["Running"], f"exited {state['ExitCode']}: {logs.stdout}{logs.stderr}"
        assert time.monotonic() < deadline, f"not SERVING after {seconds} s: {logs.stderr}"
        time.sleep(0.5)


def test_server_image_serves_read_only_as_non_root_and_drains_on_sigterm(
    images: None, digits_pkg: Path, digits_x: np.ndarray, scratch: Path
) -> None:
    models = scratch / "models"
    models.mkdir(mode=0o755)
    readable_copy(digits_pkg, models / "digits" / "1")
    names = installed(SERVER)
    assert "onnxruntime" in names and "onnxruntime-gpu" not in names, names
    assert "pygrpc-native" in names and "torch" not in names

    port, metrics = free_port(), free_port()
    name = f"latentwire-test-{os.getpid()}"
    options = [*EXTRA, "--pull=never", *SECURE, *SERVER_TMP, "-v", f"{models}:/models:ro"]
    options += ["-p", f"127.0.0.1:{port}:8001", "-p", f"127.0.0.1:{metrics}:8002"]
    podman("run", "-d", "--name", name, *options, SERVER)
    try:
        # the server process itself (PID 1): uid/gid 10001, no capabilities, no new privileges
        status = podman("exec", name, "cat", "/proc/1/status").stdout
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        assert fields["Uid"].split() == ["10001"] * 4 and fields["Gid"].split() == ["10001"] * 4
        assert int(fields["CapEff"], 16) == 0 and fields["NoNewPrivs"].strip() == "1"
        inspect = json.loads(podman("inspect", name).stdout)[0]
        assert inspect["HostConfig"]["ReadonlyRootfs"] is True
        assert inspect["Config"]["User"] == "10001:10001"
        local = load(digits_pkg)
        with Client(f"127.0.0.1:{port}", timeout=10, retries=3) as client:
            wait_serving(client, name)
            assert client.health(timeout=2) == "SERVING"
            result = client.decode(list(local.encode_codes(digits_x, chunk=30)))
        np.testing.assert_allclose(result.x, local.decode(local.encode(digits_x)), atol=1e-6)
        assert (result.model_name, result.model_version) == ("digits", "1")

        start = time.monotonic()
        podman("stop", "-t", "20", name, timeout=60)
        stop_s = time.monotonic() - start
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        logs = podman("logs", name)
        log = logs.stdout + logs.stderr
        print(f"podman stop (SIGTERM) took {stop_s:.1f} s")
        assert state["ExitCode"] == 0, log
        assert "SIGTERM: draining requests in flight" in log and "stopped" in log, log
        assert stop_s < 20, f"SIGTERM took {stop_s:.1f} s: podman had to SIGKILL"
    finally:
        podman("rm", "-f", name, check=False)


def test_edge_image_fits_its_budget_has_no_torch_and_encodes(
    images: None,
    digits_pkg: Path,
    format_pkgs: dict[str, Path],
    image_pkg: Path,
    digits_x: np.ndarray,
    scratch: Path,
) -> None:
    size_mb = int(podman("image", "inspect", "--format", "{{.Size}}", EDGE).stdout) / 1e6
    du = run(EDGE, "-sm", "/opt/latentwire", options=("--entrypoint", "du"))
    venv_mb = int(du.stdout.split()[0])
    sizes = run(EDGE, "-c", SITE_BYTES, options=("--entrypoint", "python3")).stdout.split()
    site_mb, pyc_mb = int(sizes[0]) / 1e6, int(sizes[1]) / 1e6
    print(
        f"edge image {size_mb:.0f} MB, venv {venv_mb} MB, site-packages {site_mb:.1f} MB "
        f"without pip ({site_mb - pyc_mb:.1f} MB without pyc)"
    )
    assert site_mb <= EDGE_SITE_BUDGET_MB, f"edge site-packages {site_mb:.1f} MB"
    if BASE == "localhost/bookworm-python:3.11":
        assert size_mb <= EDGE_BUDGET_MB, f"edge image {size_mb:.0f} MB > {EDGE_BUDGET_MB} MB"
    assert venv_mb <= EDGE_VENV_BUDGET_MB, f"edge venv {venv_mb} MB > {EDGE_VENV_BUDGET_MB} MB"
    names = installed(EDGE)
    assert "onnxruntime" in names and "onnxruntime-gpu" not in names, names
    assert not names & {"torch", "pygrpc-native", "onnx", "scikit-learn"}, names

    no_torch = run(EDGE, "-c", "import torch", options=("--entrypoint", "python3"), check=False)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr

    readable_copy(digits_pkg, scratch / "pkg")
    np.save(scratch / "x.npy", digits_x)
    (scratch / "x.npy").chmod(0o644)
    out = scratch / "out"
    out.mkdir()
    out.chmod(0o777)  # written by uid 10001
    encode = ["encode", "--model", "/data/pkg", "/data/x.npy", "--out", "/data/out/codes.lwc"]
    run(EDGE, *encode, options=("-v", f"{scratch}:/data"))  # read-only root, no /tmp
    local = load(digits_pkg)
    messages = read_codes_file(out / "codes.lwc")
    np.testing.assert_allclose(
        local.decode_codes(messages), local.decode(local.encode(digits_x)), atol=1e-6
    )
    # the trimmed image (no libonnxruntime.so, no ORT tools, no numpy tests) writes the
    # host's codes, byte for byte: dense f32/int8/entropy and a convolutional model
    rng = np.random.default_rng(0)
    cases = {f"digits-{f}": (format_pkgs[f], digits_x) for f in ("f32", "int8", "entropy")}
    cases["images"] = (image_pkg, rng.random((2, 3, 24, 36), dtype=np.float32))
    for name, (pkg, x) in cases.items():
        readable_copy(pkg, scratch / name)
        np.save(scratch / f"{name}.npy", x)
        (scratch / f"{name}.npy").chmod(0o644)
        argv = ["encode", "--model", f"/data/{name}", f"/data/{name}.npy"]
        run(EDGE, *argv, "--out", f"/data/out/{name}.lwc", options=("-v", f"{scratch}:/data"))
        mine = [m.SerializeToString() for m in read_codes_file(out / f"{name}.lwc")]
        host = [m.SerializeToString() for m in load(pkg, roles=("encoder",)).encode_codes(x)]
        assert mine == host, f"{name}: the edge image's codes differ from the host's"
