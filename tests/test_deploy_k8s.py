"""deploy/k8s and deploy/kserve: every kustomization renders, passes the Kubernetes API
schemas of the oldest and newest versions supported, and stays in sync with the server.

The sync checks read the rendered manifests and the server's own definitions: the `serve`
parser (exact option strings, no abbreviations), the health service names, the metrics
registry. A manifest naming a flag the server dropped, a probe on the wrong port, a grace
period shorter than the drain, or an autoscaling query on a metric that does not exist
fails here instead of in a cluster.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from latentwire.runtime.cli import build_parser
from latentwire.runtime.errors import LatentwireError
from latentwire.runtime.server.app import _SERVICES, choose_frontend
from latentwire.runtime.server.cli import config_from_args
from latentwire.runtime.server.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
KSERVE = ROOT / "deploy" / "kserve"
KUSTOMIZATIONS = ["base", *(f"overlays/{p.name}" for p in sorted((K8S / "overlays").iterdir()))]
K8S_VERSIONS = ("1.30.0", "1.37.0")
"""oldest (preStop sleep is beta and on by default from 1.30) and newest supported"""
CRD_KINDS = {"ServiceMonitor", "ScaledObject", "InferenceService"}
"""kinds with no schema in kubernetes-validate: checked by required keys below"""
SERVER = "latentwire"
"""the server container's name in the Deployment (KServe's is kserve-container)"""

Doc = dict[str, Any]


# -- rendering ---------------------------------------------------------------------------
@cache
def render(kustomization: str) -> list[Doc]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with kustomize) is not on PATH: cannot render deploy/k8s")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / kustomization)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, f"kubectl kustomize {kustomization} failed:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def kserve_docs() -> list[Doc]:
    docs = []
    for path in sorted(KSERVE.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    assert docs, "deploy/kserve holds no manifest"
    return docs


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in of_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def server_container(pod_spec: Doc, name: str = SERVER) -> Doc:
    return next(c for c in pod_spec["containers"] if c["name"] == name)


# -- the server's side -------------------------------------------------------------------
@cache
def serve_parser() -> argparse.ArgumentParser:
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            parser: argparse.ArgumentParser = action.choices["serve"]
            return parser
    raise AssertionError("latentwire has no serve command")


@cache
def serve_options() -> frozenset[str]:
    return frozenset(s for a in serve_parser()._actions for s in a.option_strings)


@cache
def server_metrics() -> frozenset[str]:
    return frozenset(family.name for family in Metrics().registry.collect())


def parse_serve(args: list[str]) -> argparse.Namespace:
    """The container args as the server parses them (argparse's own errors fail the test)."""
    for arg in args:
        assert arg.startswith("--"), f"container arg {arg!r} is not an option"
        option = arg.split("=", 1)[0]
        assert option in serve_options(), (
            f"container arg {arg!r}: {option} is not an exact `latentwire serve` option"
        )
    try:
        return build_parser().parse_args(["serve", *args])
    except SystemExit as exc:  # argparse printed why to stderr
        raise AssertionError(f"`latentwire serve {' '.join(args)}` does not parse") from exc


def metric_names(text: str) -> set[str]:
    """latentwire_* series named in a query, as metric family names."""
    names = set(re.findall(r"\blatentwire_[a-zA-Z0-9_]+", text))
    return {re.sub(r"_(sum|count|bucket|total)$", "", n) for n in names}


# -- checks ------------------------------------------------------------------------------
def check_server_pod(pod: Doc, container: Doc, *, models: str, port_name: str = "grpc") -> None:
    """What the server needs of its pod, whatever wraps it (Deployment, InferenceService)."""
    where = container["name"]
    args = parse_serve(container.get("args", []))
    assert args.cpu is None, f"{where}: --cpu pins to a host CPU number: not in a pod"
    assert str(args.models) == models, f"{where}: --models={args.models}, expected {models}"

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports.get(port_name) == args.port, f"{where}: port {port_name} != --port={args.port}"
    if "metrics" in ports:
        assert ports["metrics"] == args.metrics_port, f"{where}: metrics != --metrics-port"

    tls = args.tls_cert is not None
    try:  # the server's own choice of front, which refuses combinations it cannot run
        local = argparse.Namespace(**{**vars(args), "token_file": None})  # a pod's file
        choose_frontend(config_from_args(local))
    except LatentwireError as exc:
        raise AssertionError(f"{where}: the server would refuse to start: {exc}") from exc
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = container.get(kind)
        if probe is None:
            continue
        if "grpc" in probe:
            assert kind != "livenessProbe", (
                f"{where}: gRPC liveness probe: a busy server answers health late and the "
                "kubelet would restart it; use tcpSocket"
            )
            assert not tls, f"{where}: {kind} is a plaintext gRPC probe on a TLS port"
            assert probe["grpc"]["port"] == args.port, f"{where}: {kind} port != --port"
            service = probe["grpc"].get("service", "")
            assert service in _SERVICES, f"{where}: {kind} asks for {service!r}: not served"
        elif "tcpSocket" in probe:
            assert probe["tcpSocket"]["port"] in (args.port, port_name), f"{where}: {kind}"
        elif "exec" in probe:
            command = probe["exec"]["command"]
            given = [a.split("=", 1)[1] for a in command if a.startswith("--port=")]
            assert given == [str(args.port)], f"{where}: {kind} checks port {given}"
            service = [a.split("=", 1)[1] for a in command if a.startswith("--service=")]
            assert service and service[0] in _SERVICES, f"{where}: {kind} service {service}"
        else:
            raise AssertionError(f"{where}: {kind} of an unexpected kind: {probe}")
    assert "readinessProbe" in container, f"{where}: no readiness probe"

    grace = pod.get("terminationGracePeriodSeconds")
    if grace is not None:  # absent: the platform's (Knative: its revision timeout)
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {})
        sleep = pre_stop.get("seconds", 0)
        assert grace > sleep + args.grace_seconds, (
            f"{where}: terminationGracePeriodSeconds {grace} <= preStop sleep {sleep} + "
            f"--grace-seconds {args.grace_seconds}: the kubelet would kill requests in flight"
        )

    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    if models in mounts:
        assert mounts[models].get("readOnly"), f"{where}: {models} is mounted writable"

    pod_sec = pod.get("securityContext", {})
    sec = container.get("securityContext", {})
    assert pod_sec.get("runAsNonRoot") or sec.get("runAsNonRoot"), f"{where}: may run as root"
    assert sec.get("readOnlyRootFilesystem"), f"{where}: root filesystem writable"
    # the server needs a writable /tmp (native front's socket, captured native stderr): with
    # a read-only root and no volume there it exits at start (measured in the podman image)
    tmp = mounts.get("/tmp")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    assert tmp is not None and not tmp.get("readOnly"), f"{where}: no writable /tmp mount"
    assert "emptyDir" in volumes.get(tmp["name"], {}), f"{where}: /tmp is not an emptyDir"
    assert sec.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities kept"
    assert sec.get("allowPrivilegeEscalation") is False, f"{where}: privilege escalation"

    gpus = container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")
    gpu_image = container["image"].endswith("-gpu")
    cuda = args.providers == "cuda"
    assert bool(gpus) == cuda == gpu_image, (
        f"{where}: GPU settings disagree: nvidia.com/gpu limit {gpus}, --providers="
        f"{args.providers}, image {container['image']} (all three or none)"
    )


def check_deployment(docs: list[Doc]) -> None:
    deploy = one(docs, "Deployment", "latentwire")
    pod = deploy["spec"]["template"]["spec"]
    container = server_container(pod)
    check_server_pod(pod, container, models="/models")

    assert pod.get("automountServiceAccountToken") is False, "service account token mounted"
    assert pod["securityContext"].get("runAsUser") == 10001, "not the image's uid 10001"
    assert pod["securityContext"].get("seccompProfile") == {"type": "RuntimeDefault"}
    rolling = deploy["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0, "a rollout would drop below the serving replicas"

    models = next(m for m in container["volumeMounts"] if m["mountPath"] == "/models")
    volumes = {v["name"] for v in pod["volumes"]}
    assert models["name"] in volumes, "/models is mounted from a volume the pod lacks"

    ports = {p["name"] for p in container["ports"]}
    ports |= {p["containerPort"] for p in container["ports"]}
    selector = deploy["spec"]["selector"]["matchLabels"]
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    for svc in of_kind(docs, "Service"):
        assert svc["spec"]["selector"].items() <= labels.items(), f"{svc['metadata']['name']}"
        for p in svc["spec"]["ports"]:
            assert p["targetPort"] in ports, f"Service {svc['metadata']['name']}: {p}"
    headless = [s for s in of_kind(docs, "Service") if s["spec"].get("clusterIP") == "None"]
    assert headless, "no headless Service for dns:/// round_robin clients"


def check_crds(docs: list[Doc]) -> None:
    """Required keys of the CRD kinds kubernetes-validate has no schema for."""
    services = of_kind(docs, "Service")
    deployments = {d["metadata"]["name"] for d in of_kind(docs, "Deployment")}
    for sm in of_kind(docs, "ServiceMonitor"):
        assert sm["apiVersion"] == "monitoring.coreos.com/v1"
        want = sm["spec"]["selector"]["matchLabels"]
        picked = [s for s in services if want.items() <= s["metadata"].get("labels", {}).items()]
        assert picked, f"ServiceMonitor selects no Service: {want}"
        port_names = {p.get("name") for s in picked for p in s["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            assert ep["port"] in port_names, f"ServiceMonitor port {ep['port']!r}"
            assert re.fullmatch(r"(\d+(ms|s|m|h))+", ep.get("interval", "30s"))
    for so in of_kind(docs, "ScaledObject"):
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        assert so["spec"]["scaleTargetRef"]["name"] in deployments
        assert not of_kind(docs, "HorizontalPodAutoscaler"), "KEDA and an HPA both scale"
        assert so["spec"]["triggers"], "ScaledObject without triggers"
        for trigger in so["spec"]["triggers"]:
            assert trigger["type"] and trigger["metadata"]
            if trigger["type"] == "prometheus":
                meta = trigger["metadata"]
                assert {"serverAddress", "query", "threshold"} <= meta.keys()
                assert isinstance(meta["threshold"], str), "KEDA metadata values are strings"


def autoscaling_metrics(docs: list[Doc]) -> set[str]:
    names: set[str] = set()
    for so in of_kind(docs, "ScaledObject"):
        for trigger in so["spec"]["triggers"]:
            names |= metric_names(trigger["metadata"].get("query", ""))
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        for metric in hpa["spec"].get("metrics", []):
            if metric["type"] in ("Pods", "Object", "External"):
                names |= metric_names(metric[metric["type"].lower()]["metric"]["name"])
    return names


# -- tests -------------------------------------------------------------------------------
@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_renders(kustomization: str) -> None:
    docs = render(kustomization)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "PodDisruptionBudget"} <= kinds
    assert kinds & {"HorizontalPodAutoscaler", "ScaledObject"}, "nothing scales the Deployment"
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), "two objects of one kind share a name"


@cache
def _schema_error(doc_json: str, version: str) -> str | None:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(json.loads(doc_json), version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(p) for p in exc.path)
        return f"{path}: {exc.message}"
    return None


def _schema_checked(docs: list[Doc], version: str) -> Iterator[str]:
    """`kind/name: error` of every object the schema refuses (CRDs are skipped)."""
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        error = _schema_error(json.dumps(doc, sort_keys=True), version)
        if error is not None:
            yield f"{doc['kind']}/{doc['metadata']['name']}: {error}"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_schema_strict(version: str) -> None:
    """kubernetes-validate --strict (unknown fields are errors) for every rendered object."""
    pytest.importorskip("kubernetes_validate", reason="the dev extra's kubernetes-validate")
    errors = [f"{k}: {e}" for k in KUSTOMIZATIONS for e in _schema_checked(render(k), version)]
    assert not errors, f"Kubernetes {version} refuses:\n" + "\n".join(errors)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_tools_schema_strict(version: str) -> None:
    """deploy/k8s/tools (applied by hand, outside kustomize) against the same schemas."""
    pytest.importorskip("kubernetes_validate", reason="the dev extra's kubernetes-validate")
    for path in sorted((K8S / "tools").glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
        errors = list(_schema_checked(docs, version))
        assert not errors, f"{path.name}: {errors}"


def test_kserve_pod_spec_schema() -> None:
    """The predictor's pod fields checked as a Pod (no schema exists for InferenceService)."""
    pytest.importorskip("kubernetes_validate", reason="the dev extra's kubernetes-validate")
    kserve_only = {"minReplicas", "maxReplicas", "scaleMetric", "scaleTarget"}
    for isvc in kserve_docs():
        spec = {k: v for k, v in isvc["spec"]["predictor"].items() if k not in kserve_only}
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}
        for version in K8S_VERSIONS:
            errors = list(_schema_checked([pod], version))
            assert not errors, f"{isvc['metadata']['name']} predictor: {errors}"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_manifests_match_server(kustomization: str) -> None:
    docs = render(kustomization)
    check_deployment(docs)
    check_crds(docs)
    unknown = autoscaling_metrics(docs) - server_metrics()
    assert not unknown, f"autoscaling on metrics the server does not export: {unknown}"


def test_adapter_rules_name_server_metrics() -> None:
    values = K8S / "components" / "inflight-hpa" / "prometheus-adapter-values.yaml"
    rules = yaml.safe_load(values.read_text(encoding="utf-8"))["rules"]["custom"]
    assert rules
    hpa = one(render("overlays/inflight"), "HorizontalPodAutoscaler")
    published = set()
    for rule in rules:
        names = metric_names(rule["seriesQuery"]) | metric_names(rule["metricsQuery"])
        assert names and names <= server_metrics(), f"adapter rule on {names}"
        published.add(rule["name"]["as"])
    assert autoscaling_metrics([hpa]) <= published, "the HPA asks for a metric no rule makes"


def test_gpu_overlays_request_a_gpu() -> None:
    for kustomization in KUSTOMIZATIONS:
        if "gpu" not in kustomization:
            continue
        pod = one(render(kustomization), "Deployment")["spec"]["template"]["spec"]
        container = server_container(pod)
        assert container["resources"]["limits"].get("nvidia.com/gpu") == 1, kustomization
        assert "--providers=cuda" in container["args"], kustomization


@pytest.mark.parametrize("path", sorted(KSERVE.glob("*.yaml")), ids=lambda p: p.name)
def test_kserve_inferenceservice(path: Path) -> None:
    (isvc,) = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    mode = isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"]
    predictor = isvc["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    (port,) = container["ports"]  # KServe exposes exactly one port
    wanted = r"h2c" if mode == "Knative" else r"grpc(-.+)?"
    assert re.fullmatch(wanted, port["name"]), f"{mode} mode needs a port named {wanted}"
    check_server_pod(predictor, container, models="/mnt/models", port_name=port["name"])
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env.get("STORAGE_URI"), "no STORAGE_URI: nothing fills /mnt/models"
    annotations = isvc["metadata"]["annotations"]
    args = parse_serve(container["args"])
    assert annotations["prometheus.kserve.io/port"] == str(args.metrics_port)


def test_tls_probe_script(tmp_path: Path, repo: Path) -> None:
    """The TLS component's exec probe against a real TLS server: SERVING with a model,
    refused when its CA file did not sign the server's certificate."""
    from tests.conftest import running_server

    certs = ROOT / "tests" / "certs"
    script = K8S / "components" / "tls" / "tls_health_probe.py"
    with running_server(
        repo, frontend="grpcio", tls_cert=certs / "server.pem", tls_key=certs / "server.key"
    ) as server:
        probe = [sys.executable, str(script), "--host=127.0.0.1", f"--port={server.port}"]
        probe += ["--service=latentwire.v1.Codec", "--server-name=localhost"]
        ok = subprocess.run([*probe, f"--ca={certs / 'ca.pem'}"], capture_output=True, text=True)
        assert (ok.returncode, ok.stdout.strip()) == (0, "SERVING"), ok.stderr
        bad = subprocess.run(
            [*probe, f"--ca={certs / 'client.pem'}"], capture_output=True, text=True
        )
        assert bad.returncode == 1 and "UNAVAILABLE" in bad.stderr, bad.stderr


def test_model_sync_script(tmp_path: Path) -> None:
    """The model-sync sidecar's script, one pass with a stand-in rclone: versions are renamed
    in whole, versions gone from the source removed, hidden directories never copied."""
    script = K8S / "components" / "model-sync" / "sync-models.sh"
    bin_dir, src, stage, models = (tmp_path / n for n in ("bin", "src", "stage", "models"))
    bin_dir.mkdir()
    rclone = bin_dir / "rclone"
    rclone.write_text('#!/bin/sh\n[ "$1" = sync ] || exit 2\nrm -rf "$3"\ncp -R "$2" "$3"\n')
    rclone.chmod(0o755)
    for rel in ("digits/1", "digits/2", "digits/.3"):
        (src / rel).mkdir(parents=True)
        (src / rel / "manifest.json").write_text("{}")
    (src / "digits" / "4").mkdir()  # no manifest yet: not a version
    (models / "old" / "7").mkdir(parents=True)
    (models / "old" / "7" / "manifest.json").write_text("{}")
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "LATENTWIRE_MODELS_SOURCE": str(src),
        "LATENTWIRE_STAGING": str(stage),
        "LATENTWIRE_MODELS": str(models),
        "LATENTWIRE_SYNC_SECONDS": "0",
        "LATENTWIRE_SYNC_MARKER": str(tmp_path / "synced"),
    }
    out = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    versions = sorted(str(p.relative_to(models)) for p in models.glob("*/*"))
    assert versions == ["digits/1", "digits/2"], out.stdout
    assert (tmp_path / "synced").is_file()
