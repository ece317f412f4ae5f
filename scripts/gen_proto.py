"""Regenerate the committed gRPC/protobuf stubs from proto/latentwire/**/*.proto.

    python scripts/gen_proto.py            # writes runtime/_proto/v1/ and kserve/v2/
    python scripts/gen_proto.py --out DIR  # writes under DIR (the stub test diffs against it)

protoc's virtual-path mapping (-Ilatentwire/runtime/_proto=proto/latentwire) makes the
generated imports read `latentwire.runtime._proto.v1`, so nothing is rewritten afterwards.
Needs grpcio-tools (the dev extra), pinned in pyproject.toml.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto" / "latentwire"
VIRTUAL = "latentwire/runtime/_proto"


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc  # type: ignore[import-untyped]

    protos = sorted(PROTO_DIR.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{VIRTUAL}={PROTO_DIR}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *[str(p) for p in protos],
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        generated = Path(tmp) / VIRTUAL
        written = []
        for src in sorted(generated.rglob("*.py*")):
            dst = out / src.relative_to(generated)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            written.append(dst)
    packages = {out}
    for path in written:
        packages.update(d for d in path.parents if d.is_relative_to(out))
    for pkg in packages:
        (pkg / "__init__.py").touch()
    return written


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runtime" / "_proto")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path.relative_to(args.out))


if __name__ == "__main__":
    main(sys.argv[1:])
