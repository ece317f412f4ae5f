"""`latentwire export-triton`: a Triton model repository checked offline.

Every config.pbtxt must parse into tritonclient's `ModelConfig`, agree with manifest.json
and with the folded ONNX graphs (names, dtypes, dims), ensembles must be wired completely,
and the folded graphs must answer what `Model.encode` / `Model.decode` answer, on every
code format (entropy through the Python-backend model's own decode function). The real
tritonserver runs in tests/test_triton_server.py (slow).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from latentwire.runtime import Model, load
from latentwire.runtime.manifest import Manifest, compute_fingerprint

from .conftest import FORMAT_NAMES, error_line

pytest.importorskip("onnx")
mc = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")

_ORT_TYPES = {
    "TYPE_FP32": "tensor(float)",
    "TYPE_FP16": "tensor(float16)",
    "TYPE_FP64": "tensor(double)",
    "TYPE_INT8": "tensor(int8)",
    "TYPE_UINT8": "tensor(uint8)",
    "TYPE_INT32": "tensor(int32)",
    "TYPE_INT64": "tensor(int64)",
}
_NUMPY_TYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "int8": "TYPE_INT8",
    "int32": "TYPE_INT32",
    "uint8": "TYPE_UINT8",
}


# -- offline validation of a repository (also used by tests/test_triton_server.py) ---------
def parse_configs(repo: Path) -> dict[str, Any]:
    """Every REPO/<model>/config.pbtxt parsed into tritonclient's ModelConfig."""
    configs = {}
    for folder in sorted(p for p in repo.iterdir() if p.is_dir()):
        cfg = text_format.Parse((folder / "config.pbtxt").read_text(), mc.ModelConfig())
        assert cfg.name == folder.name, f"{folder}: config names {cfg.name!r}"
        versions = [p.name for p in folder.iterdir() if p.is_dir()]
        assert versions and all(v.isdigit() for v in versions), f"{folder}: {versions}"
        configs[cfg.name] = cfg
    return configs


def _dtype(t: Any) -> str:
    return str(mc.DataType.Name(t.data_type))


def check_graph_io(cfg: Any, graph: Path) -> None:
    """The ONNX graph's inputs and outputs are the config's: names, dtypes, dims (with the
    batch axis in front when the model batches)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    for declared, actual in ((cfg.input, sess.get_inputs()), (cfg.output, sess.get_outputs())):
        assert [t.name for t in declared] == [a.name for a in actual], graph
        for t, a in zip(declared, actual, strict=True):
            assert _ORT_TYPES[_dtype(t)] == a.type, f"{graph} {t.name}: {_dtype(t)} vs {a.type}"
            dims = [d if isinstance(d, int) else -1 for d in a.shape]
            want = [-1, *t.dims] if cfg.max_batch_size > 0 else list(t.dims)
            assert dims == want, f"{graph} {t.name}: graph {a.shape}, config {want}"


def check_ensemble(cfg: Any, configs: dict[str, Any]) -> None:
    """Every step's input comes from an ensemble input or an earlier step's output, every
    step names a model of the repository and its real tensors, and every ensemble output is
    produced exactly once."""
    available = {t.name for t in cfg.input}
    produced: list[str] = []
    for step in cfg.ensemble_scheduling.step:
        model = configs.get(step.model_name)
        assert model is not None, f"{cfg.name}: step model {step.model_name!r} is not in the repo"
        assert set(step.input_map) == {t.name for t in model.input}, step.model_name
        assert set(step.output_map) <= {t.name for t in model.output}, step.model_name
        for key, value in step.input_map.items():
            assert value in available, f"{cfg.name}: {step.model_name}.{key} <- {value!r} unwired"
        for value in step.output_map.values():
            available.add(value)
            produced.append(value)
    for out in cfg.output:
        assert produced.count(out.name) == 1, f"{cfg.name}: output {out.name!r} produced {produced}"


def validate_repository(repo: Path) -> dict[str, Any]:
    """All the offline checks of a written repository; returns the parsed configs."""
    configs = parse_configs(repo)
    for name, cfg in configs.items():
        folder = repo / name
        if cfg.platform == "ensemble":
            check_ensemble(cfg, configs)
            continue
        assert cfg.version_policy.HasField("all"), name
        assert (cfg.max_batch_size > 0) == cfg.HasField("dynamic_batching"), name
        for version in (p for p in folder.iterdir() if p.is_dir()):
            if cfg.backend == "onnxruntime":
                check_graph_io(cfg, version / cfg.default_model_filename)
            else:
                assert cfg.backend == "python" and (version / "model.py").is_file()
                graph = cfg.parameters.get("latentwire.graph")
                if graph is not None:
                    check_graph_io(cfg, version / graph.string_value)
    return configs


def check_against_manifest(configs: dict[str, Any], name: str, manifest: Manifest) -> None:
    """Names, dtypes and per-sample dims of encoder and decoder are the manifest's."""
    enc, dec = configs[f"{name}.encoder"], configs[f"{name}.decoder"]
    codes = (manifest.latent.name, _NUMPY_TYPES[manifest.codes.wire_dtype], manifest.latent)
    x = (manifest.input.name, _NUMPY_TYPES[manifest.input.dtype], manifest.input)
    x_hat = (manifest.output.name, "TYPE_FP32", manifest.output)
    for (tensor,), (want_name, want_type, spec) in (
        (enc.input, x),
        (enc.output, codes),
        (dec.input, codes),
        (dec.output, x_hat),
    ):
        assert (tensor.name, _dtype(tensor)) == (want_name, want_type)
        assert list(tensor.dims) == [-1 if d is None else d for d in spec.shape]
    for cfg in (enc, dec):
        assert cfg.parameters["latentwire.fingerprint"].string_value == manifest.fingerprint


# -- helpers ------------------------------------------------------------------------------
def export(*argv: str) -> int:
    from latentwire.runtime import cli

    return cli.main(["-q", "export-triton", *argv])


def renormalised(pkg: Path, out: Path, kind: str, offset: Any, scale: Any) -> Path:
    """A copy of `pkg` whose manifest maps user units with another normalisation (a new,
    valid fingerprint, written into the graphs' metadata too)."""
    import onnx

    shutil.copytree(pkg, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["normalization"] = {"kind": kind, "offset": offset, "scale": scale}
    manifest["fingerprint"] = fp = compute_fingerprint(manifest)
    for role in ("encoder", "decoder"):
        path = out / manifest["files"][role]["path"]
        graph = onnx.load(str(path))
        onnx.helper.set_model_props(
            graph, {**{p.key: p.value for p in graph.metadata_props}, "latentwire.fingerprint": fp}
        )
        blob = graph.SerializeToString()
        path.write_bytes(blob)
        manifest["files"][role].update(sha256=hashlib.sha256(blob).hexdigest(), bytes=len(blob))
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def entropy_module(repo: Path, name: str) -> ModuleType:
    """The entropy_decode model.py as written into the repository, imported as a module."""
    path = repo / f"{name}.entropy_decode" / "1" / "model.py"
    spec = importlib.util.spec_from_file_location(f"entropy_decode_{abs(hash(repo))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(graph: Path, feed: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    out: np.ndarray = sess.run(None, feed)[0]
    return out


def check_folded(repo: Path, name: str, model: Model, x: np.ndarray, version: str = "1") -> None:
    """The folded encoder and decoder answer what Model.encode and Model.decode answer."""
    m = model.manifest
    w = model.encode(x)
    w_triton = _run(repo / f"{name}.encoder" / version / "encoder.onnx", {m.input.name: x})
    assert w_triton.dtype == w.dtype
    np.testing.assert_allclose(w_triton.astype(np.float64), w.astype(np.float64), atol=1e-5)
    x_hat = _run(repo / f"{name}.decoder" / version / "decoder.onnx", {m.latent.name: w})
    np.testing.assert_allclose(x_hat, model.decode(w), rtol=1e-5, atol=1e-5)


# -- the tests ----------------------------------------------------------------------------
def _variants(format_pkgs: dict[str, Path], tmp: Path) -> dict[str, Path]:
    """The four format packages, plus int8 with per-feature min-max normalisation and f16
    with a standardisation whose offset is large against its scale (float64 matters)."""
    rng = np.random.default_rng(0)
    pkgs = dict(format_pkgs)
    lo, span = rng.uniform(-3, 0, 64).tolist(), rng.uniform(0.5, 4, 64).tolist()
    pkgs["int8-minmax"] = renormalised(format_pkgs["int8"], tmp / "int8-minmax", "minmax", lo, span)
    pkgs["f16-standard"] = renormalised(
        format_pkgs["f16"], tmp / "f16-standard", "standard", [1000.0], [0.01]
    )
    return pkgs


def test_every_format_folds_and_validates(
    format_pkgs: dict[str, Path], tmp_path: Path, digits_x: np.ndarray
) -> None:
    pkgs = _variants(format_pkgs, tmp_path)
    assert set(FORMAT_NAMES) <= set(pkgs)
    for label, pkg in pkgs.items():
        repo = tmp_path / f"repo-{label}"
        assert export(str(pkg), "--out", str(repo), "--name", "m") == 0
        configs = validate_repository(repo)
        model = load(pkg, providers="cpu")
        check_against_manifest(configs, "m", model.manifest)
        m = model.manifest
        scale = 1.0 if m.normalization.kind == "none" else m.normalization.scale
        x = digits_x * scale + (0.0 if m.normalization.kind == "none" else m.normalization.offset)
        check_folded(repo, "m", model, x.astype(np.float32))
        entropy = m.codes.name == "entropy"
        assert ("m.entropy_decode" in configs) == entropy
        assert ("m.stream_decoder" in configs) == entropy


def test_entropy_stream_through_the_python_model(
    format_pkgs: dict[str, Path], tmp_path: Path, digits_x: np.ndarray
) -> None:
    """Stream -> entropy_decode's own function -> folded decoder == latentwire's decode of
    the same Codes message; a damaged stream is refused with latentwire's message."""
    from latentwire.runtime.codes import tensor_to_array
    from latentwire.runtime.errors import CodesError

    pkg, repo = format_pkgs["entropy"], tmp_path / "repo"
    assert export(str(pkg), "--out", str(repo)) == 0
    model = load(pkg, providers="cpu")
    name = model.name
    configs = validate_repository(repo)
    assert configs[f"{name}.stream_decoder"].platform == "ensemble"
    msg = model.to_codes(model.encode(digits_x[:40]))
    stream = tensor_to_array(msg.tensor)
    module = entropy_module(repo, name)
    fmt, output = module.load_format(repo / f"{name}.entropy_decode" / "1")
    assert output == model.manifest.latent.name == configs[f"{name}.entropy_decode"].output[0].name
    count, shape = np.array([msg.count], np.int32), np.array(msg.latent_shape, np.int32)
    symbols = module.decode(fmt, stream, count, shape)
    assert symbols.dtype == np.int32
    np.testing.assert_array_equal(symbols, model.from_codes(msg))
    x_hat = _run(repo / f"{name}.decoder" / "1" / "decoder.onnx", {output: symbols})
    np.testing.assert_allclose(x_hat, model.decode_codes([msg]), rtol=1e-5, atol=1e-5)
    with pytest.raises(CodesError, match=r"truncated or corrupted|cannot"):
        module.decode(fmt, stream[:-4], count, shape)
    with pytest.raises(CodesError, match="one non-negative integer"):
        module.decode(fmt, stream, np.array([-1, 2], np.int32), shape)


def test_versions_side_by_side(format_pkgs: dict[str, Path], tmp_path: Path) -> None:
    """A model repository DIR/<name>/<version>/ keeps its versions, each graph with its own
    fingerprint; versions whose signatures differ are refused in one line."""
    src = tmp_path / "models"
    shutil.copytree(format_pkgs["int8"], src / "digits" / "1")
    renormalised(format_pkgs["int8"], src / "digits" / "2", "scale", [0.0], [2.0])
    repo = tmp_path / "repo"
    assert export(str(src), "--out", str(repo)) == 0
    configs = validate_repository(repo)
    fps = {v: load(src / "digits" / v, providers="cpu").fingerprint for v in ("1", "2")}
    assert fps["1"] != fps["2"]
    params = configs["digits.decoder"].parameters
    assert params["latentwire.fingerprint"].string_value == fps["2"]
    assert {v: params[f"latentwire.fingerprint.{v}"].string_value for v in fps} == fps
    from latentwire.training.triton.graphs import fingerprint_of

    for v, fp in fps.items():
        for role in ("encoder", "decoder"):
            assert fingerprint_of((repo / f"digits.{role}" / v / f"{role}.onnx").read_bytes()) == fp


def test_mixed_versions_refused(
    format_pkgs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "models"
    shutil.copytree(format_pkgs["f32"], src / "digits" / "1")
    shutil.copytree(format_pkgs["int8"], src / "digits" / "2")
    assert export(str(src), "--out", str(tmp_path / "repo")) == 1
    assert "versions 1 and 2 differ" in error_line(capsys)
    assert not (tmp_path / "repo").exists()
    shutil.move(src / "digits" / "2", src / "digits" / "beta")
    assert export(str(src), "--out", str(tmp_path / "repo")) == 1
    assert "positive integers" in error_line(capsys)


def test_destination_rules(
    format_pkgs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pkg, repo = format_pkgs["f32"], tmp_path / "repo"
    assert export(str(pkg), "--out", str(repo)) == 0
    before = (repo / "digits-f32.decoder" / "config.pbtxt").read_text()
    assert export(str(pkg), "--out", str(repo), "--name", "other") == 1
    assert "already exists: pass --force" in error_line(capsys)
    assert export(str(pkg), "--out", str(repo), "--name", "other", "--force") == 0
    assert sorted(p.name for p in repo.iterdir()) == ["other.decoder", "other.encoder"]
    assert "digits-f32" in before and not list(tmp_path.glob(".repo.*"))
    mine = tmp_path / "mine"
    (mine / "notes").mkdir(parents=True)
    assert export(str(pkg), "--out", str(mine), "--force") == 1
    assert "not a Triton model repository" in error_line(capsys)
    assert (mine / "notes").is_dir()
    assert export(str(pkg), "--out", str(pkg / "triton")) == 1
    assert "overlaps" in error_line(capsys)
    assert export(str(tmp_path / "nothing"), "--out", str(tmp_path / "r2")) == 1
    assert "not a directory" in error_line(capsys)
    assert export(str(pkg), "--out", str(tmp_path / "r3"), "--name", "../up") == 1
    assert "cannot name a folder" in error_line(capsys)


def test_instance_groups_and_python_backend(format_pkgs: dict[str, Path], tmp_path: Path) -> None:
    pkg, repo = format_pkgs["f16"], tmp_path / "repo"
    argv = ["--kind", "gpu", "--instances", "2", "--max-batch", "64", "--backend", "python"]
    assert export(str(pkg), "--out", str(repo), *argv) == 0
    configs = validate_repository(repo)
    for role in ("encoder", "decoder"):
        cfg = configs[f"digits-f16.{role}"]
        assert cfg.backend == "python" and cfg.max_batch_size == 64
        group = cfg.instance_group[0]
        assert (mc.ModelInstanceGroup.Kind.Name(group.kind), group.count) == ("KIND_GPU", 2)
        assert (repo / cfg.name / "1" / f"{role}.onnx").is_file()


def test_checks_catch_broken_repositories(format_pkgs: dict[str, Path], tmp_path: Path) -> None:
    """The offline checks above fail on what they are meant to catch."""
    repo = tmp_path / "repo"
    assert export(str(format_pkgs["entropy"]), "--out", str(repo), "--name", "m") == 0
    configs = validate_repository(repo)
    ensemble = configs["m.stream_decoder"]
    ensemble.ensemble_scheduling.step[1].input_map["z"] = "symbolz"
    with pytest.raises(AssertionError, match="unwired"):
        check_ensemble(ensemble, configs)
    dec = configs["m.decoder"]
    dec.input[0].dims[0] = 16
    with pytest.raises(AssertionError, match="config"):
        check_graph_io(dec, repo / "m.decoder" / "1" / "decoder.onnx")
    dec.input[0].dims[0] = 8
    dec.input[0].data_type = mc.TYPE_FP32
    with pytest.raises(AssertionError, match="TYPE_FP32 vs tensor"):
        check_graph_io(dec, repo / "m.decoder" / "1" / "decoder.onnx")
    config = repo / "m.decoder" / "config.pbtxt"
    config.write_text(config.read_text().replace("max_batch_size", "max_batchsize"))
    with pytest.raises(text_format.ParseError):
        parse_configs(repo)


def test_image_model_has_free_dims(image_pkg: Path, tmp_path: Path) -> None:
    """A convolutional package: free height and width are -1 in the configs, and the folded
    graphs still answer what the runtime answers on images of another size."""
    repo = tmp_path / "repo"
    assert export(str(image_pkg), "--out", str(repo), "--name", "img") == 0
    configs = validate_repository(repo)
    model = load(image_pkg, providers="cpu")
    check_against_manifest(configs, "img", model.manifest)
    assert list(configs["img.decoder"].input[0].dims)[1:] == [-1, -1]
    x = np.random.default_rng(0).uniform(0, 255, (2, 3, 40, 24)).astype(np.float32)
    check_folded(repo, "img", model, x)
