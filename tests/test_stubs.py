"""The committed gRPC/protobuf stubs are exactly what scripts/gen_proto.py makes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_committed_stubs_match_the_protos(tmp_path: Path) -> None:
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.fail("grpcio-tools is missing: install the dev extra (pip install -e '.[dev]')")
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gen_proto
    finally:
        sys.path.pop(0)
    gen_proto.generate(tmp_path)
    committed = ROOT / "runtime" / "_proto"
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    assert fresh == sorted(
        p.relative_to(committed) for p in committed.rglob("*.py*") if "__pycache__" not in p.parts
    )
    for rel in fresh:
        assert (tmp_path / rel).read_text() == (committed / rel).read_text(), (
            f"{rel} is stale: run python scripts/gen_proto.py and commit the result"
        )
