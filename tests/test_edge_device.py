"""An encoder-only device, provisioned from a live server, does everything an edge does.

For each kind of package (every code format, a convolutional image model, an anomaly
package with an edge scorer) `latentwire fetch-encoder` writes a device folder; from it
`load(..., roles=("encoder",))`, `latentwire encode`, `send` and `send --score` work and
give the codes the whole package gives, byte for byte; `info` says what the folder holds
and can do. `fetch-encoder --scorer` also brings scorer.onnx and anomaly.npz, and then
`latentwire score` runs on the device with the package's own numbers.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latentwire.runtime import IntegrityError, load
from latentwire.runtime._proto.v1 import codec_pb2
from latentwire.runtime.cli import main
from latentwire.runtime.client import _write_encoder_package
from latentwire.runtime.codes import read_codes_file

from .conftest import running_server


@pytest.fixture(scope="module")
def kinds(format_pkgs: dict[str, Path], image_pkg: Path, anomaly_pkg: Path) -> dict[str, Path]:
    return {
        **{f"digits-{fmt}": pkg for fmt, pkg in format_pkgs.items()},
        "images": image_pkg,
        "anomaly": anomaly_pkg,
    }


@pytest.fixture(scope="module")
def live(kinds: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("edge-repo")
    for name, pkg in kinds.items():
        shutil.copytree(pkg, root / name / "1")
    with running_server(root) as server:
        yield f"127.0.0.1:{server.port}"


def _inputs(kind: str, digits_x: np.ndarray) -> np.ndarray:
    if kind == "images":
        rng = np.random.default_rng(0)
        return rng.random((3, 3, 24, 36), dtype=np.float32)  # sides: multiples of 4
    if kind == "anomaly":
        from sklearn.datasets import load_breast_cancer

        x: np.ndarray = load_breast_cancer().data[:40].astype(np.float64)
        return x
    return digits_x


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


KINDS = ["digits-f32", "digits-f16", "digits-int8", "digits-entropy", "images", "anomaly"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_provisioned_device_encodes_and_sends(
    kind: str,
    kinds: dict[str, Path],
    live: str,
    digits_x: np.ndarray,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    device = tmp_path / "device"
    code, _, err = _run(
        capsys, "fetch-encoder", "--server", live, "--name", kind, "--out", str(device)
    )
    assert code == 0, err
    assert sorted(p.name for p in device.iterdir()) == ["encoder.onnx", "manifest.json"]

    code, out, err = _run(capsys, "info", str(device))
    assert code == 0, out + err
    assert "an edge device's files (no decoder)" in out
    assert "decoder.onnx" in out and "not in this folder" in out
    assert "can          encode, send" in out and "PROBLEM" not in out
    if kind == "anomaly":
        assert "send --score" in out

    x = _inputs(kind, digits_x)
    edge = load(device, roles=("encoder",))
    whole = load(kinds[kind])
    assert edge.fingerprint == whole.fingerprint
    mine = [m.SerializeToString() for m in edge.encode_codes(x)]
    assert mine == [m.SerializeToString() for m in whole.encode_codes(x)]

    np.save(tmp_path / "x.npy", x)
    codes = tmp_path / "x.codes"
    code, _, err = _run(
        capsys, "encode", "--model", str(device), str(tmp_path / "x.npy"), "--out", str(codes)
    )
    assert code == 0, err
    assert [m.SerializeToString() for m in read_codes_file(codes)] == mine

    send = ["send", "--server", live, "--model", str(device), str(tmp_path / "x.npy")]
    if kind == "anomaly":
        code, out, err = _run(capsys, *send, "--score")
        assert code == 0, err
        assert out.splitlines()[0] == "index,score,is_anomaly,p_value"
        assert len(out.splitlines()) == 1 + len(x)
    else:
        code, _, err = _run(capsys, *send, "--out", str(tmp_path / "x_hat.npy"))
        assert code == 0, err
        x_hat = np.load(tmp_path / "x_hat.npy")
        np.testing.assert_allclose(x_hat, whole.decode_codes(whole.encode_codes(x)), atol=1e-5)


def test_fetch_with_the_scorer_scores_on_the_device(
    kinds: dict[str, Path], live: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    device = tmp_path / "device"
    argv = ["fetch-encoder", "--server", live, "--name", "anomaly", "--out", str(device)]
    code, _, err = _run(capsys, *argv, "--scorer")
    assert code == 0, err
    names = sorted(p.name for p in device.iterdir())
    assert names == ["anomaly.npz", "encoder.onnx", "manifest.json", "scorer.onnx"]
    for name in names[:2] + names[3:]:
        assert (device / name).read_bytes() == (kinds["anomaly"] / name).read_bytes()

    code, out, err = _run(capsys, "info", str(device))
    assert code == 0, out + err
    assert "score here (every score)" in out

    x = _inputs("anomaly", np.zeros(0))
    np.save(tmp_path / "x.npy", x)
    scored = []
    for pkg in (device, kinds["anomaly"]):
        out_csv = tmp_path / f"{pkg.name}.csv"
        code, _, err = _run(
            capsys, "score", "--model", str(pkg), str(tmp_path / "x.npy"), "--out", str(out_csv)
        )
        assert code == 0, err
        scored.append(out_csv.read_text())
    assert scored[0] == scored[1]


def test_asking_a_package_without_a_scorer_for_one_is_one_line(
    live: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["fetch-encoder", "--server", live, "--name", "digits-int8", "--scorer"]
    code, _, err = _run(capsys, *argv, "--out", str(tmp_path / "d"))
    assert code == 1
    assert err.count("\n") == 1 and "has no scorer graph" in err
    assert not (tmp_path / "d").exists()


def _response(anomaly_pkg: Path, **changes: Any) -> codec_pb2.FetchEncoderResponse:
    enc = (anomaly_pkg / "encoder.onnx").read_bytes()
    scorer = (anomaly_pkg / "scorer.onnx").read_bytes()
    resp = codec_pb2.FetchEncoderResponse(
        encoder_onnx=enc,
        sha256=hashlib.sha256(enc).hexdigest(),
        files=[
            codec_pb2.PackageFile(
                role="scorer", data=scorer, sha256=hashlib.sha256(scorer).hexdigest()
            )
        ],
    )
    resp.model.manifest_json = (anomaly_pkg / "manifest.json").read_text()
    for key, value in changes.items():
        setattr(resp.files[0], key, value)
    return resp


def test_a_damaged_extra_file_writes_nothing(anomaly_pkg: Path, tmp_path: Path) -> None:
    assert _write_encoder_package(_response(anomaly_pkg), tmp_path / "ok") / "scorer.onnx"
    for change, words in (
        ({"data": b"\0" * 10}, "the server says"),
        ({"sha256": "0" * 64}, "the server says"),
        ({"role": "decoder"}, "sha256"),
        ({"role": "nonsense"}, "its manifest does not name"),
        ({"role": "encoder"}, "its manifest does not name"),
    ):
        out = tmp_path / f"bad-{len(list(tmp_path.iterdir()))}"
        with pytest.raises(IntegrityError, match=words):
            _write_encoder_package(_response(anomaly_pkg, **change), out)
        assert not out.exists()


def test_a_device_without_constriction_writes_the_same_entropy_codes(
    format_pkgs: dict[str, Path], digits_x: np.ndarray, tmp_path: Path
) -> None:
    """64-bit ARM Linux has no constriction wheel: there `latentwire encode` uses the
    package's own coder (runtime/ans.py) and the codes file is byte for byte the same."""
    pkg = format_pkgs["entropy"]
    np.save(tmp_path / "x.npy", digits_x)
    files = []
    for blocked in (False, True):
        out = tmp_path / f"x-{blocked}.codes"
        script = (
            "import sys\n"
            + ("sys.modules['constriction'] = None\n" if blocked else "")
            + "from latentwire.runtime import cli, entropy\n"
            + "print(entropy.default_coder())\n"
            + f"sys.exit(cli.main(['-q', 'encode', '--model', {str(pkg)!r}, "
            + f"{str(tmp_path / 'x.npy')!r}, '--out', {str(out)!r}]))\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == ("python" if blocked else "constriction")
        files.append(out.read_bytes())
    assert files[0] == files[1]
    whole = load(pkg)
    assert whole.decode_codes(read_codes_file(tmp_path / "x-True.codes")).shape == digits_x.shape
