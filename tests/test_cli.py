"""The CLI, called in-process: the README tour and one-line errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from latentwire.runtime import load
from latentwire.runtime.cli import main

from .conftest import error_line


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("train", "export", "encode", "decode", "info", "demo"):
        assert cmd in out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "--latent-dim" in capsys.readouterr().out


def test_tour_own_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Train on a CSV with a header, encode it on the 'edge', decode it on the 'server'."""
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(3, 12))
    data = rng.normal(size=(300, 3)) @ basis * 50 + 1000  # 12 features, rank 3, odd units
    csv = tmp_path / "sensors.csv"
    header = ",".join(f"s{i}" for i in range(12))
    np.savetxt(csv, data, delimiter=",", header=header, comments="", fmt="%.6f")
    pkg = tmp_path / "models" / "sensors"
    assert (
        main(
            [
                "-q",
                "train",
                "--data",
                str(csv),
                "--latent-dim",
                "3",
                "--epochs",
                "60",
                "--out",
                str(pkg),
                "--checkpoint",
                str(tmp_path / "ck.pt"),
                "--no-progress",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "trained sensors" in out and "fingerprint" in out

    codes = tmp_path / "sensors.codes"
    recon = tmp_path / "recon.npy"
    assert main(["encode", "--model", str(pkg), str(csv), "--out", str(codes)]) == 0
    assert main(["decode", "--model", str(pkg), str(codes), "--out", str(recon)]) == 0
    x_hat = np.load(recon)
    assert x_hat.shape == (300, 12)
    # the runtime un-normalises: reconstructions come back in the CSV's own units
    rel = np.sqrt(np.mean((x_hat - data) ** 2)) / data.std()
    assert rel < 0.5, rel
    model = load(pkg, providers="cpu")
    np.testing.assert_allclose(x_hat, model.decode(model.encode(data)), rtol=1e-5, atol=1e-3)

    assert main(["info", str(pkg)]) == 0
    info = capsys.readouterr().out
    assert model.fingerprint in info and "sha256 ok" in info and "standard" in info

    csv_out = tmp_path / "recon.csv"
    assert main(["decode", "--model", str(pkg), str(codes), "--out", str(csv_out)]) == 0
    assert np.loadtxt(csv_out, delimiter=",").shape == (300, 12)


def test_export_command(
    digits_pkg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = digits_pkg.parent / f"{digits_pkg.name}.ckpt"
    assert main(["export", str(ckpt), "--out", str(tmp_path / "re")]) == 0
    assert "exported digits-test" in capsys.readouterr().out
    assert (tmp_path / "re" / "manifest.json").exists()


def _bad_cases(
    tmp: Path, pkg: Path, other: Path, x: np.ndarray
) -> dict[str, tuple[list[str], str]]:
    np.save(tmp / "x.npy", x)
    np.save(tmp / "x63.npy", x[:, :63])
    nan = x.copy()
    nan[3, 4] = np.nan
    np.save(tmp / "nan.npy", nan)
    np.save(tmp / "complex.npy", x.astype(np.complex64))
    (tmp / "text.csv").write_text("a,b\n1,x\n")
    main(
        [
            "-q",
            "encode",
            "--model",
            str(other),
            str(tmp / "x.npy"),
            "--out",
            str(tmp / "other.codes"),
        ]
    )
    altered = tmp / "altered"
    shutil.copytree(pkg, altered)
    blob = bytearray((altered / "encoder.onnx").read_bytes())
    blob[-20] ^= 0x01
    (altered / "encoder.onnx").write_bytes(bytes(blob))
    enc = ["encode", "--model", str(pkg)]
    return {
        "missing input": ([*enc, str(tmp / "nope.npy"), "--out", str(tmp / "c")], "no such file"),
        "wrong features": ([*enc, str(tmp / "x63.npy"), "--out", str(tmp / "c")], "expects 64"),
        "nan": ([*enc, str(tmp / "nan.npy"), "--out", str(tmp / "c")], "NaN/Inf"),
        "wrong dtype": ([*enc, str(tmp / "complex.npy"), "--out", str(tmp / "c")], "numeric dtype"),
        "text column": (
            [*enc, str(tmp / "text.csv"), "--out", str(tmp / "c")],
            "'x' is not a number",
        ),
        "altered encoder": (
            ["encode", "--model", str(altered), str(tmp / "x.npy"), "--out", str(tmp / "c")],
            "changed after export",
        ),
        "other model's codes": (
            ["decode", "--model", str(pkg), str(tmp / "other.codes"), "--out", str(tmp / "r.npy")],
            "fingerprint",
        ),
        "not codes": (
            ["decode", "--model", str(pkg), str(tmp / "x.npy"), "--out", str(tmp / "r.npy")],
            "not a latentwire codes file",
        ),
        "bad output type": (
            ["decode", "--model", str(pkg), str(tmp / "other.codes"), "--out", str(tmp / "r.txt")],
            "write .npy or .csv, not '.txt'",
        ),
        "missing package": (["info", str(tmp / "nowhere")], "not a directory"),
        "unknown dataset": (
            ["train", "--data", "mnist", "--out", str(tmp / "m")],
            "unknown dataset 'mnist'",
        ),
        "bad noise": (
            ["train", "--noise", "salt:0.1", "--epochs", "1", "--out", str(tmp / "m")],
            "--noise must be",
        ),
        "output dir missing": (
            [*enc, str(tmp / "x.npy"), "--out", str(tmp / "no" / "dir" / "c")],
            "does not exist",
        ),
    }


def test_bad_inputs_give_one_line(
    digits_pkg: Path,
    other_pkg: Path,
    digits_x: np.ndarray,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cases = _bad_cases(tmp_path, digits_pkg, other_pkg, digits_x)
    capsys.readouterr()
    for label, (argv, expected) in cases.items():
        assert main(argv) == 1, label
        line = error_line(capsys)
        assert expected in line, (label, line)


def test_bad_flags_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    cases: list[tuple[list[str], str]] = [
        (["train", "--hidden", "12,x"], "comma-separated integers"),
        (["train", "--epochs", "0"], "must be > 0"),
        (["encode", "x.npy"], "--model"),
        (["frobnicate"], "invalid choice"),
        (["encode", "--model", "m", "x.npy", "--out", "c", "--chunk", "0"], "must be > 0"),
        (["encode", "--model", "m", "x.npy", "--out", "c", "--chunk", "-1"], "must be > 0"),
        (["train", "--clip-grad", "-1"], "must be >= 0"),
        (["train", "--lr", "nan"], "must be > 0"),
        (["serve", "--models", "m", "--max-delay-ms", "nan"], "must be >= 0"),
    ]
    for argv, expected in cases:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err


def test_train_checks_out_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "a-file"
    target.write_text("not a folder")
    ckpt = tmp_path / "ck.pt"
    argv = ["train", "--out", str(target), "--checkpoint", str(ckpt), "--no-progress"]
    assert main(argv) == 1
    assert "is a file; --out names a folder" in error_line(capsys)
    assert not ckpt.exists()  # no epoch ran


def test_info_reports_problems_without_a_traceback(
    digits_pkg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pkg = tmp_path / "pkg"
    shutil.copytree(digits_pkg, pkg)
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["model"] = None
    manifest["normalization"]["kind"] = "standard"  # a contract edit: fingerprint stale
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    assert main(["info", str(pkg)]) == 1  # a package with problems is not a success
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    assert "PROBLEM: does not match the manifest's contract" in out.out
    assert out.err.strip() == f"latentwire: error: {pkg}: 1 problem(s), marked PROBLEM above"


def test_info_exits_non_zero_on_a_corrupt_graph(
    digits_pkg: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pkg = tmp_path / "pkg"
    shutil.copytree(digits_pkg, pkg)
    with open(pkg / "decoder.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01")
    assert main(["info", str(pkg)]) == 1
    out = capsys.readouterr()
    assert "decoder.onnx" in out.out and "PROBLEM" in out.out
    assert "encoder" in out.out and "sha256 ok" in out.out  # the rest is still shown
    assert "1 problem(s)" in out.err


def test_output_into_a_closed_pipe_is_quiet(digits_pkg: Path) -> None:
    """`latentwire info PKG | head -1`: the reader leaving early is not an error."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "latentwire.runtime.cli", "info", str(digits_pkg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(1)  # read one byte, then leave
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) in (0, 141)
    assert err == ""


def test_packages_are_readable_by_others(digits_pkg: Path) -> None:
    """mkdtemp makes 0700 folders; a package must follow the umask like any other folder."""
    assert digits_pkg.stat().st_mode & 0o055 == 0o055 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
