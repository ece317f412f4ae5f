"""Processes and the machine: start/stop server trees by PID, CPU used by a process tree,
free ports, and what the machine is (for the report)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
STOP_GRACE_S = 20.0


def log(msg: str) -> None:
    print(f"[serve-bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _proc_table() -> dict[int, tuple[int, int]]:
    """{pid: (ppid, start time in clock ticks)} for every process in /proc."""
    table: dict[int, tuple[int, int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2 :].split()
        table[int(d)] = (int(rest[1]), int(rest[19]))
    return table


def descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, start time) of every descendant of pid, so a later kill can check identity."""
    table = _proc_table()
    kids: dict[int, list[int]] = {}
    for p, (pp, _) in table.items():
        kids.setdefault(pp, []).append(p)
    out: list[tuple[int, int]] = []
    stack = list(kids.get(pid, []))
    while stack:
        p = stack.pop()
        out.append((p, table[p][1]))
        stack.extend(kids.get(p, []))
    return out


def _same_process(pid: int, start: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    rest = stat[stat.rfind(")") + 2 :].split()
    return int(rest[19]) == start and rest[0] != "Z"


def stop_tree(proc: subprocess.Popen[bytes], name: str, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM proc, SIGKILL it after `grace` s, then kill its leftover descendants by PID."""
    kids = descendants(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log(f"{name}: pid {proc.pid} still alive after {grace:.0f} s, sending SIGKILL")
            proc.kill()
            proc.wait()
    leftovers = [(p, s) for p, s in kids if _same_process(p, s)]
    if leftovers:
        time.sleep(3.0)  # Triton's stubs exit on their own shortly after the server
    for p, s in leftovers:
        if _same_process(p, s):
            log(f"{name}: leftover child {p}, SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)


def orphan_safe(cmd: list[str]) -> list[str]:
    """`cmd` run so that it gets SIGTERM if this script dies (setpriv --pdeathsig; setpriv
    execs, so the PID is the command's). Not a preexec_fn: forking a threaded Python
    process and running Python in the child can deadlock."""
    if shutil.which("setpriv") is None:
        return cmd
    return ["setpriv", "--pdeathsig", "TERM", "--", *cmd]


def free_port_block(start: int, width: int = 3) -> int:
    """First port p >= start (step 10) with p .. p+width-1 free on 127.0.0.1."""
    port = start
    while port < 65000:
        ok = True
        for p in range(port, port + width):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
        port += 10
    raise RuntimeError(f"no free port block from {start}")


def tree_cpu_ticks(pid: int) -> int:
    """utime + stime (clock ticks) of a process and all its descendants, alive now."""
    total = 0
    for p in [pid, *(q for q, _ in descendants(pid))]:
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2 :].split()
        total += int(rest[11]) + int(rest[12])
    return total


TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- machine


def cpu_times() -> list[int] | None:
    try:
        return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None


def steal_pct(a: list[int] | None, b: list[int] | None) -> float | None:
    """Steal time between two /proc/stat samples, in % of all CPU time (None if unknown)."""
    if not a or not b or len(a) < 8 or len(b) < 8:
        return None
    total = sum(b[:8]) - sum(a[:8])
    return round(100.0 * (b[7] - a[7]) / total, 2) if total > 0 else None


def _first_match(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def venv_versions(python: Path) -> dict[str, str]:
    """Versions of the packages that matter, read from a venv's dist-info names."""
    want = (
        "onnxruntime",
        "grpcio",
        "tritonclient",
        "numpy",
        "mlserver",
        "nvidia_pytriton",
        "pygrpc_native",
    )
    out: dict[str, str] = {}
    for sp in python.parent.parent.glob("lib/python*/site-packages"):
        for d in sp.glob("*.dist-info"):
            name, _, version = d.name[: -len(".dist-info")].rpartition("-")
            if name.lower() in want:
                out[name.lower()] = version
    return out


def machine_info() -> dict[str, Any]:
    import grpc
    import onnxruntime as ort

    mem = _first_match("/proc/meminfo", "MemTotal")
    ram_gib = round(int(mem.split()[0]) / 1024**2, 1) if mem else None
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:
        affinity = []
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    try:
        h2load = subprocess.run(["h2load", "--version"], capture_output=True, text=True)
        h2load_version = h2load.stdout.strip().splitlines()[0] if h2load.stdout else None
    except OSError:
        h2load_version = None
    return {
        "cpu_model": _first_match("/proc/cpuinfo", "model name") or platform.processor(),
        "cores": os.cpu_count(),
        "affinity": affinity,
        "ram_gib": ram_gib,
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "grpcio": grpc.__version__,
        "h2load": h2load_version,
        "latentwire_git": commit,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_at_start": list(os.getloadavg()),
        "steal_in_proc_stat": cpu_times() is not None,
    }


def latentwire_command() -> list[str]:
    """How to run `latentwire` with this interpreter's installation."""
    exe = Path(sys.executable).parent / "latentwire"
    if exe.exists():
        return [str(exe)]
    code = "from latentwire.runtime.cli import main; raise SystemExit(main())"
    return [sys.executable, "-c", code]
