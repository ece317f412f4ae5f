"""benchmarks/soak.py runs end to end: a few seconds of mixed load on a `latentwire serve`
subprocess, every kind of call made, the bad requests refused with their status, no
unexpected error, the server sampled from /proc and stopped cleanly, the reports written."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"


def test_soak_smoke(digits_pkg: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, str(SOAK), "--minutes", "0.1", "--clients", "8", "--procs", "1"]
    cmd += ["--bad-every", "10", "--sample-seconds", "1", "--package", str(digits_pkg)]
    cmd += ["--out", str(tmp_path), "--base-port", str(port)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads((tmp_path / "soak.json").read_text())
    s = record["summary"]
    assert s["passed"] and s["problems"] == [], s["problems"]
    assert s["unexpected_errors"] == 0, s["unexpected_samples"]
    calls = s["requests_by_kind"]
    for kind in ("Decode", "ModelInfer", "DecodeStream"):
        assert calls.get(kind, 0) > 0, calls
    assert s["stream_messages"] == 8 * calls["DecodeStream"]
    assert s["expected_by_kind"] == {
        "bad_foreign_codes": {"FAILED_PRECONDITION": calls["bad_foreign_codes"]},
        "bad_not_a_message": {"INVALID_ARGUMENT": calls["bad_not_a_message"]},
        "bad_unknown_model": {"NOT_FOUND": calls["bad_unknown_model"]},
        "bad_wrong_shape": {"INVALID_ARGUMENT": calls["bad_wrong_shape"]},
    }
    assert s["server_exit_code"] == 0
    assert len(record["samples"]) >= 4 and all(x["rss"] > 0 for x in record["samples"])
    assert s["rss_drift"] is not None and not s["rss_drift_judged"]
    assert (tmp_path / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| unexpected errors | **0** |" in (tmp_path / "soak.md").read_text()
