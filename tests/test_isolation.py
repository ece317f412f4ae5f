"""The runtime stays torch-free and onnx-free, and fails helpfully without ONNX Runtime."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_runtime_never_imports_torch_or_onnx(digits_pkg: Path, tmp_path: Path) -> None:
    proc = _run(f"""
        import sys
        import numpy as np
        import latentwire.runtime as rt
        from latentwire.runtime import cli  # the CLI module too
        from latentwire.runtime import client  # the gRPC client SDK
        from latentwire.runtime.server import app  # and the server
        m = rt.load({str(digits_pkg)!r}, providers="cpu")
        x_hat = m.decode_codes(list(m.encode_codes(np.random.rand(5, 64))))
        assert x_hat.shape == (5, 64)
        # the edge CLI path too: encode and decode through latentwire.runtime.cli.main
        np.save({str(tmp_path / "x.npy")!r}, np.random.rand(5, 64))
        for argv in (["-q", "encode", "--model", {str(digits_pkg)!r}, {str(tmp_path / "x.npy")!r},
                      "--out", {str(tmp_path / "x.codes")!r}],
                     ["-q", "decode", "--model", {str(digits_pkg)!r}, {str(tmp_path / "x.codes")!r},
                      "--out", {str(tmp_path / "r.npy")!r}]):
            assert cli.main(argv) == 0
        assert np.load({str(tmp_path / "r.npy")!r}).shape == (5, 64)
        heavy = sorted(k for k in sys.modules if k.split(".")[0] in ("torch", "onnx", "onnxscript"))
        print("HEAVY", heavy)
    """)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout


def test_missing_onnxruntime_names_the_extras() -> None:
    proc = _run("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "onnxruntime":
                    raise ImportError("No module named 'onnxruntime'")
        sys.meta_path.insert(0, Block())
        try:
            import latentwire.runtime
        except ImportError as exc:
            print("MSG", exc)
    """)
    assert proc.returncode == 0, proc.stderr
    assert "latentwire[cpu]" in proc.stdout and "latentwire[gpu]" in proc.stdout


def test_embed_needs_neither_torch_nor_sklearn(digits_pkg: Path, tmp_path: Path) -> None:
    """`latentwire embed` and the transformer run on an edge install (no torch, no
    scikit-learn: the transformer only imports scikit-learn's tags when sklearn asks)."""
    x, z = tmp_path / "x.npy", tmp_path / "z.csv"
    proc = _run(f"""
        import sys
        import numpy as np
        from latentwire.runtime import LatentwireTransformer, cli
        np.save({str(x)!r}, np.random.rand(5, 64))
        assert cli.main(["-q", "embed", "--model", {str(digits_pkg)!r}, {str(x)!r},
                         "--out", {str(z)!r}]) == 0
        t = LatentwireTransformer({str(digits_pkg)!r})
        assert t.inverse_transform(t.fit_transform(np.load({str(x)!r}))).shape == (5, 64)
        heavy = sorted(k for k in sys.modules
                       if k.split(".")[0] in ("torch", "onnx", "onnxscript", "sklearn"))
        print("HEAVY", heavy)
    """)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout


def test_score_needs_neither_torch_nor_sklearn(anomaly_pkg: Path, tmp_path: Path) -> None:
    """`latentwire score` and Model.score run on an edge install: numpy + ONNX Runtime."""
    x, out = tmp_path / "x.npy", tmp_path / "s.csv"
    proc = _run(f"""
        import sys
        import numpy as np
        import latentwire.runtime as rt
        from latentwire.runtime import cli
        np.save({str(x)!r}, np.random.rand(5, 30))
        assert cli.main(["-q", "score", "--model", {str(anomaly_pkg)!r}, {str(x)!r},
                         "--out", {str(out)!r}]) == 0
        for roles in (("scorer",), ("encoder",), ("encoder", "decoder")):
            m = rt.load({str(anomaly_pkg)!r}, providers="cpu", roles=roles)
            assert m.score(np.load({str(x)!r})).scores.shape == (5,)
        heavy = sorted(k for k in sys.modules
                       if k.split(".")[0] in ("torch", "onnx", "onnxscript", "sklearn"))
        print("HEAVY", heavy)
    """)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout


def test_server_scoring_needs_neither_torch_nor_sklearn() -> None:
    """Anomaly scores on the server (Score, V2 <name>.scorer) and `send --score` are numpy
    on top of the runtime: no torch, onnx or scikit-learn."""
    proc = _run("""
        import sys
        from latentwire.runtime import client_cli
        from latentwire.runtime.server import app, scoring, v2_scorer
        heavy = sorted(k for k in sys.modules
                       if k.split(".")[0] in ("torch", "onnx", "onnxscript", "sklearn"))
        print("HEAVY", heavy)
    """)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout


def test_denoise_needs_neither_torch_nor_sklearn(digits_pkg: Path, tmp_path: Path) -> None:
    proc = _run(f"""
        import sys
        import numpy as np
        from latentwire.runtime import cli
        np.save({str(tmp_path / "n.npy")!r}, np.random.rand(4, 64))
        assert cli.main(["-q", "denoise", "--model", {str(digits_pkg)!r},
                         {str(tmp_path / "n.npy")!r}, "--out", {str(tmp_path / "d.npy")!r}]) == 0
        assert np.load({str(tmp_path / "d.npy")!r}).shape == (4, 64)
        heavy = sorted(k for k in sys.modules
                       if k.split(".")[0] in ("torch", "onnx", "onnxscript", "sklearn", "skimage"))
        print("HEAVY", heavy)
    """)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout


def test_edge_commands_load_no_grpc_pillow_or_server(digits_pkg: Path, tmp_path: Path) -> None:
    """`--help`, encode, decode and info load neither grpcio, Pillow nor the server's
    packages: an edge install that lacks an extra still runs them, and they start faster."""
    proc = _run(f"""
        import sys
        import numpy as np
        from latentwire.runtime import cli
        np.save({str(tmp_path / "x.npy")!r}, np.random.rand(5, 64))
        cli.build_parser()
        for argv in (["-q", "encode", "--model", {str(digits_pkg)!r}, {str(tmp_path / "x.npy")!r},
                      "--out", {str(tmp_path / "x.codes")!r}],
                     ["-q", "decode", "--model", {str(digits_pkg)!r}, {str(tmp_path / "x.codes")!r},
                      "--out", {str(tmp_path / "r.npy")!r}],
                     ["info", {str(digits_pkg)!r}]):
            assert cli.main(argv) == 0
        tops = ("grpc", "grpc_health", "grpc_reflection", "prometheus_client", "PIL",
                "pygrpc_native")
        loaded = sorted(k for k in sys.modules if k.split(".")[0] in tops)
        loaded += [k for k in sys.modules if k.startswith("latentwire.runtime.server.")
                   and k != "latentwire.runtime.server.cli"]
        print("LOADED", loaded)
    """)
    assert proc.returncode == 0, proc.stderr
    assert "LOADED []" in proc.stdout


def test_serve_without_the_server_extra_is_one_line(tmp_path: Path) -> None:
    proc = _run(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("grpc_health", "prometheus_client"):
                    raise ImportError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, Block())
        from latentwire.runtime import cli
        sys.exit(cli.main(["serve", "--models", {str(tmp_path)!r}]))
    """)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "latentwire: error: latentwire serve needs the server extra (grpc_health is not "
        "installed): pip install 'latentwire[server]'"
    ]
