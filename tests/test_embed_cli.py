"""`latentwire embed`: float latents to .npy/.csv/.parquet, in chunks, one-line errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from latentwire.runtime import load
from latentwire.runtime.cli import main

from .conftest import error_line


def _embed(pkg: Path, inp: Path, out: Path, *extra: str) -> int:
    return main(["-q", "embed", "--model", str(pkg), str(inp), "--out", str(out), *extra])


def test_npy_in_npy_out_in_chunks(
    digits_pkg: Path, digits_x: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "x.npy", digits_x)
    assert _embed(digits_pkg, tmp_path / "x.npy", tmp_path / "z.npy", "--chunk", "7") == 0
    z = np.load(tmp_path / "z.npy")
    assert z.dtype == np.float32 and z.shape == (100, 8)
    np.testing.assert_array_equal(z, load(digits_pkg).encode_latents(digits_x))
    assert "embedded 100 samples of shape (64,)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy", "z.npy"]  # no leftovers


def test_csv_with_header_to_csv_and_npz(
    digits_pkg: Path, digits_x: np.ndarray, tmp_path: Path
) -> None:
    header = ",".join(f"p{i}" for i in range(64))
    np.savetxt(tmp_path / "x.csv", digits_x, delimiter=",", header=header, comments="")
    assert _embed(digits_pkg, tmp_path / "x.csv", tmp_path / "z.csv", "--chunk", "30") == 0
    lines = (tmp_path / "z.csv").read_text().splitlines()
    assert lines[0] == ",".join(f"latent{i}" for i in range(8)) and len(lines) == 101
    z = np.loadtxt(tmp_path / "z.csv", delimiter=",", skiprows=1)
    want = load(digits_pkg).encode_latents(digits_x)
    np.testing.assert_allclose(z, want, rtol=1e-6, atol=1e-6)
    np.savez(tmp_path / "x.npz", data=digits_x)
    assert _embed(digits_pkg, tmp_path / "x.npz", tmp_path / "z2.npy") == 0
    np.testing.assert_array_equal(np.load(tmp_path / "z2.npy"), want)


def test_parquet(
    digits_pkg: Path, digits_x: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "x.npy", digits_x)
    code = _embed(digits_pkg, tmp_path / "x.npy", tmp_path / "z.parquet", "--chunk", "40")
    if importlib.util.find_spec("pyarrow") is None:
        assert code == 1
        assert "pip install pyarrow" in error_line(capsys)
        assert not (tmp_path / "z.parquet").exists()
        return
    import pyarrow.parquet as pq

    assert code == 0
    table = pq.read_table(tmp_path / "z.parquet")
    assert table.column_names == [f"latent{i}" for i in range(8)]
    z = np.stack([table.column(i).to_numpy() for i in range(8)], axis=1)
    np.testing.assert_array_equal(z, load(digits_pkg).encode_latents(digits_x))


def test_existing_output_needs_force(
    digits_pkg: Path, digits_x: np.ndarray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "x.npy", digits_x)
    (tmp_path / "z.npy").write_bytes(b"mine")
    assert _embed(digits_pkg, tmp_path / "x.npy", tmp_path / "z.npy") == 1
    assert "pass --force" in error_line(capsys)
    assert (tmp_path / "z.npy").read_bytes() == b"mine"
    assert _embed(digits_pkg, tmp_path / "x.npy", tmp_path / "z.npy", "--force") == 0
    assert np.load(tmp_path / "z.npy").shape == (100, 8)


@pytest.mark.parametrize(
    ("make", "out", "words"),
    [
        (lambda p: np.save(p / "x.npy", np.zeros((3, 10))), "z.npy", "expects 64"),
        (lambda p: np.save(p / "x.npy", np.full((3, 64), np.nan)), "z.npy", "NaN"),
        (lambda p: np.save(p / "x.npy", np.zeros((3, 64))), "z.txt", "write .npy or .csv"),
        (lambda p: (p / "x.csv").write_text("a,b\n1,2\n3,x\n"), "z.npy", "line 3, column 2"),
        (lambda p: (p / "x.csv").write_text("a,b\n"), "z.npy", "header but no data"),
        (lambda p: None, "z.npy", "no such file"),
    ],
)
def test_errors_are_one_line_and_leave_nothing(
    digits_pkg: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: object,
    out: str,
    words: str,
) -> None:
    make(tmp_path)  # type: ignore[operator]
    inp = next(tmp_path.glob("x.*"), tmp_path / "x.npy")
    before = sorted(tmp_path.iterdir())
    assert _embed(digits_pkg, inp, tmp_path / out) == 1
    assert words in error_line(capsys)
    assert sorted(tmp_path.iterdir()) == before


def test_help_explains(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["embed", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "float latents" in text and ".parquet" in text and "chunks" in text
