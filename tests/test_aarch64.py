"""The edge on 64-bit ARM Linux (a Pi 4/5, a Jetson, Graviton), emulated: a Debian 12
arm64 userland under qemu-user (scripts/arm64_userland.sh) where pip installs the real
manylinux aarch64 wheels from PyPI for `latentwire[cpu]`, and latentwire encodes there and
sends to a server on this (x86_64) host.

Checked: the install holds aarch64 builds of onnxruntime, numpy, grpcio and protobuf and
no torch or constriction (which has no aarch64 wheel: entropy codes come from
runtime/ans.py there); its size; `latentwire encode` inside gives the codes files the host
gives for int8 and entropy, dense and conv packages (a .npy batch, and PNG files after
adding the `images` extra); `latentwire send` from inside to `latentwire serve` on the
host's loopback gets the reconstructions of those codes.

"The same codes" means byte-identical files, except where the float latent sits on a
rounding boundary: x86's and ARM's kernels (MLAS) add in other orders, so a latent can come
out 71.49999 on one and 71.50002 on the other (measured: 1 of 6,400 int8 values of a conv
package, |z| error 4e-7). Such values may differ by one step, nothing else may.

Slow and opt-in (build ~3 min, pip ~1 min, the tests ~2 min on a 2-core VM):
`LATENTWIRE_ARM64_TESTS=1 pytest -m slow tests/test_aarch64.py` builds the userland in a
temporary folder; `LATENTWIRE_ARM64_ROOT=/work/arm64-root` builds it there once and
reuses it (the venv is made afresh every run, from a wheel of the checkout). Needs root
(chroot and mounts), binfmt_misc, and Debian's mmdebstrap, qemu-user-static and binfmt-support;
network access to a Debian mirror (the build) and to PyPI (pip inside). QEMU_CPU picks the
emulated core (default cortex-a76).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latentwire.runtime import load
from latentwire.runtime.cli import main
from latentwire.runtime.codes import read_codes_file

from .conftest import _train, free_port, health_of

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "arm64_userland.sh"
VENV = "opt/latentwire"
# the edge venv's site-packages without pip/setuptools, MB = 10^6 B: 160.2 measured with
# pip's install-time pyc (137.7 without) on 2026-12-04 (onnxruntime 1.32.0, numpy 2.4.6,
# grpcio 1.85.3, protobuf 7.36.2)
EDGE_BUDGET_MB = 175
# packages (name: data, codec) and what each one encodes
PACKAGES = {
    "dense-int8": ("digits", "int8"),
    "dense-entropy": ("digits", "entropy"),
    "conv-int8": ("sample-images", "int8"),
    "conv-entropy": ("sample-images", "entropy"),
}
INPUTS = {"digits": "digits.npy", "sample-images": "patches.npy"}
PNGS = ("china64.png", "flower97x130.png")  # the second is padded to the stride


@dataclass
class Userland:
    root: Path
    work: Path  # the host folder seen as /work inside
    wheel: str = ""  # latentwire's wheel, made from this checkout
    timings: dict[str, float] = field(default_factory=dict)

    def run(
        self, *argv: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """ARGV inside the arm64 userland (the venv first on PATH), /work = self.work."""
        cmd = [str(SCRIPT), "run", str(self.root), "--bind", f"{self.work}:/work", "--", *argv]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, (
                f"{argv}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
            )
        return done

    def timed(self, what: str, *argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        t0 = time.perf_counter()
        done = self.run(*argv, **kwargs)
        self.timings[what] = round(time.perf_counter() - t0, 2)
        return done


def script(*argv: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        [str(SCRIPT), *argv], capture_output=True, text=True, timeout=timeout, env=env
    )
    assert done.returncode == 0, (
        f"{argv}: exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    )
    return done


@pytest.fixture(scope="module")
def userland(tmp_path_factory: pytest.TempPathFactory) -> Userland:
    """The arm64 userland with `latentwire[cpu]` from this checkout installed."""
    given = os.environ.get("LATENTWIRE_ARM64_ROOT")
    if not given and os.environ.get("LATENTWIRE_ARM64_TESTS") != "1":
        # opt-in: a first build takes 4-5 minutes and needs root and a Debian mirror
        pytest.skip(
            "the aarch64 userland is opt-in: LATENTWIRE_ARM64_TESTS=1 (or "
            f"LATENTWIRE_ARM64_ROOT=DIR) pytest -m slow {__file__}"
        )
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("needs Linux and root (chroot, mounts)")
    missing = [
        t for t in ("mmdebstrap", "qemu-aarch64-static", "unshare") if shutil.which(t) is None
    ]
    if missing:
        pytest.skip(
            f"{', '.join(missing)} not found: "
            "apt-get install mmdebstrap qemu-user-static binfmt-support"
        )
    root = Path(given) if given else tmp_path_factory.mktemp("arm64") / "root"
    land = Userland(root=root, work=tmp_path_factory.mktemp("arm64-work"))
    t0 = time.perf_counter()
    script("build", str(root))
    land.timings["build rootfs (0 = reused)"] = round(time.perf_counter() - t0, 1)
    dist = tmp_path_factory.mktemp("dist")
    wheel = script("wheel", str(dist)).stdout.split()[-1]
    land.wheel = wheel
    t0 = time.perf_counter()
    installed = script("install", str(root), wheel, "cpu")
    land.timings["pip install [cpu]"] = round(time.perf_counter() - t0, 1)
    print(installed.stdout[-3000:])
    return land


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Four small packages trained here: dense digits and conv sample-images patches, int8
    and entropy codes each."""
    out = tmp_path_factory.mktemp("arm64-pkgs")
    made = {}
    for name, (data, codec) in PACKAGES.items():
        kwargs: dict[str, Any] = (
            {"epochs": 5}
            if data == "digits"
            else {"epochs": 1, "channels": (8, 8), "latent_dim": 4}
        )
        made[name] = _train(out / name, seed=0, data=data, codec=codec, **kwargs)
    return made


@pytest.fixture(scope="module")
def shared(userland: Userland, pkgs: dict[str, Path]) -> Userland:
    """The packages and inputs under /work of the userland."""
    from PIL import Image
    from sklearn.datasets import load_digits, load_sample_images

    work = userland.work
    for name, pkg in pkgs.items():
        shutil.copytree(pkg, work / "pkgs" / name, dirs_exist_ok=True)
    (work / "in").mkdir(exist_ok=True)
    (work / "out").mkdir(exist_ok=True)
    np.save(work / "in" / "digits.npy", (load_digits().data[:200] / 16.0).astype(np.float32))
    china, flower = load_sample_images().images
    patches = [
        china[i : i + 32, j : j + 32].transpose(2, 0, 1)
        for i in range(0, 320, 64)
        for j in range(0, 320, 64)
    ]
    np.save(work / "in" / "patches.npy", np.stack(patches).astype(np.float32))
    Image.fromarray(china[:64, :64]).save(work / "in" / PNGS[0])
    Image.fromarray(flower[100:197, 200:330]).save(work / "in" / PNGS[1])
    return userland


def host_encode(pkg: Path, inputs: Sequence[Path], out: Path) -> Path:
    assert main(["-q", "encode", "--model", str(pkg), *map(str, inputs), "--out", str(out)]) == 0
    return out


def assert_same_codes(pkg: Path, x86: Path, arm: Path, latents: np.ndarray | None) -> str:
    """Byte-identical codes files, or (see the module docstring) one-step differences at
    rounding boundaries only. Returns "identical" or what differed."""
    if x86.read_bytes() == arm.read_bytes():
        return "identical"
    model = load(pkg)
    fmt = model.codes
    ours, theirs = read_codes_file(x86), read_codes_file(arm)
    assert len(ours) == len(theirs)
    differ, total = 0, 0
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        for f in ("model_name", "fingerprint", "format", "count", "input_shape"):
            assert getattr(a, f) == getattr(b, f), f"message {i}: {f} differs"
        wa, wb = model.from_codes(a).astype(np.int64), model.from_codes(b).astype(np.int64)
        where = np.argwhere(wa != wb)
        assert np.all(np.abs(wa - wb) <= 1), f"message {i}: codes differ by more than one step"
        differ, total = differ + len(where), total + wa.size
        if len(where) and latents is not None:
            # the value before rounding: z for entropy, (z - offset) / scale for int8
            z = latents.astype(np.float64)
            if fmt.name == "int8":
                assert fmt.offset is not None and fmt.scale is not None
                shape = (1, -1) + (1,) * (z.ndim - 2)
                u = (z - fmt.offset.reshape(shape)) / fmt.scale.reshape(shape)
            else:
                u = z
            for idx in map(tuple, where):
                frac = u[idx] - np.floor(u[idx])
                assert abs(frac - 0.5) < 1e-3, (
                    f"codes differ at {idx}, {u[idx]!r} is no rounding boundary"
                )
    assert differ <= max(1, total // 1000), f"{differ} of {total} code values differ"
    return f"{differ} of {total} values one step apart at rounding boundaries"


def test_installs_real_aarch64_wheels(userland: Userland) -> None:
    probe = textwrap.dedent("""
        import json, platform, sys, importlib.metadata as md
        import numpy, onnxruntime, grpc, google.protobuf
        import latentwire.runtime
        from latentwire.runtime import entropy
        def tags(dist):
            wheel = md.distribution(dist).read_text("WHEEL").splitlines()
            return [line.split(": ", 1)[1] for line in wheel if line.startswith("Tag: ")]
        print(json.dumps({
            "machine": platform.machine(), "python": sys.version.split()[0],
            "tags": {d: tags(d) for d in ("numpy", "onnxruntime", "grpcio", "protobuf")},
            "names": sorted(d.metadata["Name"].lower() for d in md.distributions()),
            "coder": entropy.default_coder(),
            "providers": onnxruntime.get_available_providers(),
        }))
    """)
    info = json.loads(
        userland.timed(
            "first import (python, numpy, ORT, grpc, latentwire)", "python", "-c", probe
        ).stdout
    )
    userland.timed(
        "second import", "python", "-c", "import onnxruntime, grpc, latentwire.runtime.cli"
    )
    assert info["machine"] == "aarch64" and info["python"].startswith("3.11")
    for dist, tags in info["tags"].items():
        assert tags and all("aarch64" in t or t.endswith("-any") for t in tags), (dist, tags)
        assert any("aarch64" in t for t in tags), f"{dist} is no aarch64 build: {tags}"
    names = set(info["names"])
    assert {"latentwire", "onnxruntime", "numpy", "grpcio", "protobuf"} <= names
    for absent in ("torch", "onnxruntime-gpu", "constriction", "pillow", "pygrpc-native"):
        assert absent not in names, f"{absent} got into the aarch64 edge install"
    assert info["coder"] == "python"  # runtime/ans.py, as constriction has no aarch64 wheel
    assert "CPUExecutionProvider" in info["providers"]
    assert "No broken requirements" in userland.run("pip", "check").stdout
    print(json.dumps(info, indent=1))


def test_edge_size(userland: Userland) -> None:
    """du -sb of the venv's site-packages without pip and setuptools (MB = 10^6 B)."""
    site = next((userland.root / VENV / "lib").glob("python3*/site-packages"))
    tooling = {"pip", "setuptools", "_distutils_hack", "pkg_resources", "distutils-precedence.pth"}
    total = pyc = 0
    per: dict[str, int] = {}
    for entry in site.iterdir():
        if entry.name in tooling or entry.name.split("-")[0] in ("pip", "setuptools"):
            continue
        files = (
            [entry]
            if entry.is_file()
            else [p for p in entry.rglob("*") if p.is_file() and not p.is_symlink()]
        )
        size = sum(p.stat().st_size for p in files)
        pyc += sum(p.stat().st_size for p in files if p.suffix == ".pyc")
        per[entry.name] = size
        total += size
    top = ", ".join(f"{k} {v / 1e6:.1f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1])[:5])
    mb, no_pyc = total / 1e6, (total - pyc) / 1e6
    print(f"aarch64 edge site-packages: {mb:.1f} MB ({no_pyc:.1f} without pyc); {top}")
    assert total / 1e6 < EDGE_BUDGET_MB


@pytest.mark.parametrize("name", list(PACKAGES))
def test_encode_gives_the_hosts_codes(shared: Userland, pkgs: dict[str, Path], name: str) -> None:
    data = PACKAGES[name][0]
    x = shared.work / "in" / INPUTS[data]
    mine = host_encode(pkgs[name], [x], shared.work / "out" / f"{name}.x86.codes")
    shared.timed(
        f"encode {name}",
        "latentwire",
        "encode",
        "--model",
        f"/work/pkgs/{name}",
        f"/work/in/{x.name}",
        "--out",
        f"/work/out/{name}.arm64.codes",
    )
    z = load(pkgs[name]).encode_latents(np.load(x))
    verdict = assert_same_codes(pkgs[name], mine, shared.work / "out" / f"{name}.arm64.codes", z)
    print(f"{name}: {verdict}")


@pytest.mark.parametrize("name", ["conv-int8", "conv-entropy"])
def test_encode_images(shared: Userland, pkgs: dict[str, Path], name: str) -> None:
    """PNG files (Pillow from the `images` extra, an aarch64 wheel too), one padded."""
    if "pillow" not in shared.run("pip", "list").stdout.lower():
        wheel = next((shared.root / "root" / "dist").glob("latentwire-*.whl"))
        shared.timed(
            "pip install [cpu,images]",
            "pip",
            "install",
            "-q",
            "--only-binary=:all:",
            f"/root/dist/{wheel.name}[cpu,images]",
        )
    images = [shared.work / "in" / p for p in PNGS]
    mine = host_encode(pkgs[name], images, shared.work / "out" / f"{name}.png.x86.codes")
    shared.run(
        "latentwire",
        "encode",
        "--model",
        f"/work/pkgs/{name}",
        *(f"/work/in/{p}" for p in PNGS),
        "--out",
        f"/work/out/{name}.png.arm64.codes",
    )
    verdict = assert_same_codes(
        pkgs[name], mine, shared.work / "out" / f"{name}.png.arm64.codes", None
    )
    print(f"{name} PNG: {verdict}")


@contextlib.contextmanager
def latentwire_serve(repo: Path) -> Iterator[int]:
    """`latentwire serve --models REPO` on 127.0.0.1 in a subprocess; yields its port once
    its health service says SERVING."""
    port = free_port()
    argv = [sys.executable, "-m", "latentwire.runtime.cli", "serve", "--models", str(repo)]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while health_of(port) != 1:  # SERVING
            assert proc.poll() is None, f"latentwire serve exited: {proc.communicate()[0]}"
            assert time.monotonic() < deadline, "latentwire serve did not become SERVING"
            time.sleep(0.2)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_send_to_a_server_on_the_host(
    shared: Userland, pkgs: dict[str, Path], tmp_path: Path
) -> None:
    """`latentwire send` inside, `latentwire serve` here: the server decodes the ARM
    encoder's codes into what this host's decoder makes of the same codes."""
    repo = tmp_path / "repo"
    for name, pkg in pkgs.items():
        shutil.copytree(pkg, repo / name / "1")
    with latentwire_serve(repo) as port:
        for name in PACKAGES:
            x = INPUTS[PACKAGES[name][0]]
            sent = shared.timed(
                f"send {name}",
                *("latentwire", "send", "--server", f"127.0.0.1:{port}"),
                *("--model", f"/work/pkgs/{name}", f"/work/in/{x}"),
                *("--out", f"/work/out/{name}.recon.npy"),
            )
            recon = np.load(shared.work / "out" / f"{name}.recon.npy")
            # the ARM codes of the same input (test_encode_gives_the_hosts_codes writes them;
            # made again here so that this test stands alone)
            codes = shared.work / "out" / f"{name}.send.arm64.codes"
            shared.run(
                *("latentwire", "encode", "--model", f"/work/pkgs/{name}", f"/work/in/{x}"),
                *("--out", f"/work/out/{codes.name}"),
            )
            model = load(pkgs[name])
            expect = np.concatenate(
                [model.decode(model.from_codes(m)) for m in read_codes_file(codes)]
            )
            np.testing.assert_allclose(recon, expect, rtol=1e-5, atol=1e-5)
            report = (sent.stdout + sent.stderr).strip().splitlines()
            print(f"{name}: {report[-1] if report else '(no report)'}")


def test_an_arm64_server_decodes_for_the_host(
    shared: Userland, pkgs: dict[str, Path], tmp_path: Path
) -> None:
    """latentwire[cpu,server] on aarch64 (a Graviton server): pygrpc-native has an aarch64
    wheel, constriction none. `latentwire serve` inside, on its native front, decodes the
    host's codes (entropy ones with latentwire's own coder) into the host's
    reconstructions. Runs last but one: it adds the server extra to the edge venv."""
    t0 = time.perf_counter()
    script("install", str(shared.root), shared.wheel, "cpu,server")
    shared.timings["pip install [cpu,server]"] = round(time.perf_counter() - t0, 1)
    repo = shared.work / "repo"
    for name, pkg in pkgs.items():
        shutil.copytree(pkg, repo / name / "1", dirs_exist_ok=True)
    port = free_port()
    serve = ["latentwire", "serve", "--models", "/work/repo", "--host", "127.0.0.1"]
    cmd = [str(SCRIPT), "run", str(shared.root), "--bind", f"{shared.work}:/work", "--"]
    log = tmp_path / "serve.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [*cmd, *serve, "--port", str(port)], stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        t0 = time.perf_counter()
        while health_of(port) != 1:  # SERVING
            assert proc.poll() is None, log.read_text()
            assert time.perf_counter() - t0 < 180, f"not SERVING after 180 s: {log.read_text()}"
            time.sleep(1)
        shared.timings["serve: start to SERVING"] = round(time.perf_counter() - t0, 1)
        assert "native front" in log.read_text()
        from latentwire.runtime.client import Client

        with Client(f"127.0.0.1:{port}", timeout=120) as client:
            for name, (data, _) in PACKAGES.items():
                model = load(pkgs[name])
                messages = list(model.encode_codes(np.load(shared.work / "in" / INPUTS[data])))
                got = client.decode(messages)
                assert got.model_name == name
                np.testing.assert_allclose(
                    got.x, model.decode_codes(messages), rtol=1e-5, atol=1e-5
                )
                print(f"{name}: the arm64 server's reconstructions match this host's")
    finally:
        # SIGTERM to the server (and its wrapper), which drains and says "stopped"; the
        # server may outlive the wrapper by a moment, so wait until no process matches
        pattern = " ".join([*serve, "--port", str(port)])
        subprocess.run(["pkill", "-TERM", "-f", pattern])
        deadline = time.perf_counter() + 60
        while subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0:
            if time.perf_counter() > deadline:
                subprocess.run(["pkill", "-KILL", "-f", pattern])
                break
            time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert "stopped" in log.read_text(), log.read_text()


def test_timings(shared: Userland) -> None:
    """Not a check: the timings of this run, for the record (pytest -s shows them)."""
    print(json.dumps(shared.timings, indent=1))
