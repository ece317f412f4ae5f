"""A model package or repository that points outside itself is refused before loading.

Refused with a PackageError naming the file and the problem, before ONNX Runtime sees a
byte: package files that are symlinks leading out of the package folder (and version
folders leading out of the repository), graphs with external data (the onnx
CVE-2024-27318 class: a tensor's `location` ONNX Runtime would open), graphs over the size
limit, bytes that are not an ONNX graph, FIFOs and devices. The server's repository goes
through the same loading path: it logs such a version and skips it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from latentwire.runtime import IntegrityError, Model, PackageError, load
from latentwire.runtime.model import _KINDS, _SUBMESSAGES, MAX_GRAPH_BYTES, check_graph

from ._fuzz import fuzz, mutated

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _copy(pkg: Path, dst: Path) -> Path:
    shutil.copytree(pkg, dst)
    return dst


def _put_graph(pkg: Path, role: str, blob: bytes) -> None:
    """Replace a package's graph, with the manifest's sha256 updated to match."""
    (pkg / f"{role}.onnx").write_bytes(blob)
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["files"][role]["sha256"] = hashlib.sha256(blob).hexdigest()
    (pkg / "manifest.json").write_text(json.dumps(manifest))


def _external(tensor: Any, location: str) -> None:
    """Make `tensor` keep its data in the external file `location`."""
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "256")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


# -- symlinks ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["encoder.onnx", "decoder.onnx", "manifest.json"])
def test_a_file_symlinked_out_of_the_package_is_refused(
    digits_pkg: Path, tmp_path: Path, name: str
) -> None:
    pkg = _copy(digits_pkg, tmp_path / "pkg")
    outside = tmp_path / "elsewhere" / name
    outside.parent.mkdir()
    shutil.copyfile(pkg / name, outside)  # the same bytes: only where they live is wrong
    (pkg / name).unlink()
    (pkg / name).symlink_to(outside)
    with pytest.raises(PackageError, match=rf"{name} resolves to .*outside the package folder"):
        load(pkg, providers="cpu")


def test_a_dangling_or_relative_escape_is_refused(digits_pkg: Path, tmp_path: Path) -> None:
    pkg = _copy(digits_pkg, tmp_path / "pkg")
    (pkg / "decoder.onnx").unlink()
    (pkg / "decoder.onnx").symlink_to("../../../../../../etc/passwd")
    with pytest.raises(PackageError, match=r"decoder\.onnx resolves to /etc/passwd, outside"):
        load(pkg, providers="cpu")


def test_a_symlink_inside_the_package_is_fine(digits_pkg: Path, tmp_path: Path) -> None:
    pkg = _copy(digits_pkg, tmp_path / "pkg")
    (pkg / "decoder.onnx").rename(pkg / "decoder-v3.onnx")
    (pkg / "decoder.onnx").symlink_to("decoder-v3.onnx")
    assert load(pkg, providers="cpu").decode(np.zeros((1, 8), np.float32)).shape == (1, 64)
    linked = tmp_path / "linked"  # the package folder itself may be a link
    linked.symlink_to(pkg)
    assert load(linked, providers="cpu").fingerprint


def test_a_version_folder_symlinked_out_of_the_repository(digits_pkg: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "digits").mkdir(parents=True)
    (repo / "digits" / "1").symlink_to(digits_pkg, target_is_directory=True)
    with pytest.raises(PackageError, match=r"resolves to .*outside the model repository"):
        load(repo / "digits" / "1", providers="cpu", root=repo)
    assert load(repo / "digits" / "1", providers="cpu").fingerprint  # no root: a package


# -- external data, size, what a graph is ------------------------------------------------
def _graph_with_initializer(location: str | None) -> Any:
    w = numpy_helper.from_array(np.ones((8, 8), np.float32), "w")
    if location is not None:
        _external(w, location)
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    return helper.make_graph([node], "g", [x], [y], [w])


def _places_for_a_tensor() -> dict[str, Callable[[str], Any]]:
    """Every kind of place onnx.proto keeps a tensor, each made to hold external data."""

    def initializer(loc: str) -> Any:
        return helper.make_model(_graph_with_initializer(loc))

    def constant(loc: str) -> Any:
        t = numpy_helper.from_array(np.ones(4, np.float32), "c")
        _external(t, loc)
        g = _graph_with_initializer(None)
        g.node.insert(0, helper.make_node("Constant", [], ["c"], value=t))
        return helper.make_model(g)

    def attribute_tensors(loc: str) -> Any:
        t = numpy_helper.from_array(np.ones(4, np.float32), "c")
        _external(t, loc)
        g = _graph_with_initializer(None)
        node = g.node[0]
        node.attribute.append(helper.make_attribute("ts", [t]))
        return helper.make_model(g)

    def sparse(loc: str) -> Any:
        values = numpy_helper.from_array(np.ones(2, np.float32), "v")
        _external(values, loc)
        idx = numpy_helper.from_array(np.array([0, 3], np.int64), "i")
        g = _graph_with_initializer(None)
        g.sparse_initializer.append(helper.make_sparse_tensor(values, idx, [8]))
        return helper.make_model(g)

    def subgraph(loc: str) -> Any:
        inner = _graph_with_initializer(loc)
        cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
        node = helper.make_node(
            "If", ["cond"], ["y"], then_branch=inner, else_branch=_graph_with_initializer(None)
        )
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
        return helper.make_model(helper.make_graph([node], "outer", [cond], [y]))

    def function(loc: str) -> Any:
        t = numpy_helper.from_array(np.ones(4, np.float32), "c")
        _external(t, loc)
        fn = helper.make_function(
            "local", "f", [], ["c"], [helper.make_node("Constant", [], ["c"], value=t)], []
        )
        return helper.make_model(_graph_with_initializer(None), functions=[fn])

    def training_info(loc: str) -> Any:
        model = helper.make_model(_graph_with_initializer(None))
        info = model.training_info.add()
        info.initialization.CopyFrom(_graph_with_initializer(loc))
        return model

    return {f.__name__: f for f in (initializer, constant, attribute_tensors, sparse, subgraph,
                                    function, training_info)}  # fmt: skip


PLACES = _places_for_a_tensor()


@pytest.mark.parametrize("place", sorted(PLACES))
@pytest.mark.parametrize("location", ["../../etc/passwd", "/etc/passwd", "weights.bin"])
def test_external_data_anywhere_is_refused(place: str, location: str) -> None:
    blob = PLACES[place](location).SerializeToString()
    with pytest.raises(PackageError, match=rf"keeps its data in an external file '{location}'"):
        check_graph(blob, "g.onnx")


def test_the_graphs_without_external_data_pass() -> None:
    check_graph(helper.make_model(_graph_with_initializer(None)).SerializeToString(), "g.onnx")


def test_a_package_graph_with_external_data_is_refused_before_loading(
    digits_pkg: Path, tmp_path: Path
) -> None:
    """The CVE-2024-27318 shape: ONNX Runtime, given these bytes, would open
    ../../etc/passwd relative to the working directory."""
    pkg = _copy(digits_pkg, tmp_path / "pkg")
    graph = onnx.load(str(pkg / "decoder.onnx"))
    _external(graph.graph.initializer[0], "../../etc/passwd")
    _put_graph(pkg, "decoder", graph.SerializeToString())
    name = graph.graph.initializer[0].name
    with pytest.raises(
        PackageError,
        match=rf"decoder\.onnx: tensor '{name}' keeps its data in an external file "
        r"'\.\./\.\./etc/passwd'; a model package holds single-file graphs",
    ):
        load(pkg, providers="cpu")


def test_the_walker_knows_every_place_onnx_keeps_a_tensor() -> None:
    """_SUBMESSAGES must list every field, in every message that can (transitively) hold a
    TensorProto, that leads to such a message: checked against onnx's own descriptors, so a
    new onnx that adds a place for tensors fails here."""
    from onnx import onnx_ml_pb2

    root = onnx_ml_pb2.ModelProto.DESCRIPTOR
    holds: dict[str, bool] = {}

    def can_hold(desc: Any, seen: frozenset[str] = frozenset()) -> bool:
        if desc.name == "TensorProto":
            return True
        if desc.name in seen:
            return False
        if desc.name not in holds:
            holds[desc.name] = any(
                f.message_type is not None and can_hold(f.message_type, seen | {desc.name})
                for f in desc.fields
            )
        return holds[desc.name]

    want: dict[str, dict[int, str]] = {}
    todo, done = [root], set()
    while todo:
        desc = todo.pop()
        if desc.name in done:
            continue
        done.add(desc.name)
        for f in desc.fields:
            if f.message_type is not None and can_hold(f.message_type):
                want.setdefault(desc.name, {})[f.number] = f.message_type.name
                todo.append(f.message_type)
    have = {
        _KINDS[kind]: {n: _KINDS[sub] for n, sub in fields.items()}
        for kind, fields in _SUBMESSAGES.items()
        if fields
    }
    assert have == want
    fields = onnx_ml_pb2.TensorProto.DESCRIPTOR.fields_by_name
    assert (fields["name"].number, fields["external_data"].number) == (8, 13)
    assert fields["data_location"].number == 14 and TensorProto.EXTERNAL == 1


def test_an_oversized_graph_is_refused_before_reading(digits_pkg: Path) -> None:
    size = (digits_pkg / "decoder.onnx").stat().st_size
    with pytest.raises(PackageError, match=rf"decoder graph: .*decoder\.onnx is {size:,} bytes, "
                       r"over the limit of 1,000"):  # fmt: skip
        load(digits_pkg, providers="cpu", max_graph_bytes=1000, roles=("decoder",))
    assert MAX_GRAPH_BYTES == 1 << 30


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda g: g[: len(g) // 2], r"is not an ONNX graph \(.*\): ONNX Runtime .* cannot load"),
        (lambda g: b"\xff" * 64, r"is not an ONNX graph"),
        (lambda g: b"\x00\x00\x00\x00ORTM" + bytes(32), "is an ORT-format model"),
    ],
)
def test_bytes_that_are_not_an_onnx_graph(
    digits_pkg: Path, tmp_path: Path, make: Callable[[bytes], bytes], match: str
) -> None:
    pkg = _copy(digits_pkg, tmp_path / "pkg")
    _put_graph(pkg, "decoder", make((pkg / "decoder.onnx").read_bytes()))
    with pytest.raises(PackageError, match=match):
        load(pkg, providers="cpu")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("name", ["decoder.onnx", "manifest.json"])
def test_a_fifo_is_refused_without_blocking(digits_pkg: Path, tmp_path: Path, name: str) -> None:
    pkg = _copy(digits_pkg, tmp_path / "pkg")
    (pkg / name).unlink()
    os.mkfifo(pkg / name)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            load(pkg, providers="cpu")
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), f"loading blocked on the FIFO {name}"
    (error,) = errors
    assert isinstance(error, PackageError) and f"{name} is not a regular file" in str(error)


def test_absurd_sizes_with_a_matching_fingerprint_are_refused(
    digits_pkg: Path, tmp_path: Path
) -> None:
    """A hand-edited manifest (fingerprint recomputed) cannot size a buffer past the limits."""
    from latentwire.runtime.manifest import compute_fingerprint

    pkg = _copy(digits_pkg, tmp_path / "pkg")
    manifest = json.loads((pkg / "manifest.json").read_text())
    manifest["latent"]["shape"] = [8, 1 << 20, 1 << 20]
    manifest["fingerprint"] = compute_fingerprint(manifest)
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match=r"manifest\.json: latent: samples of shape"):
        load(pkg, providers="cpu")


@fuzz(150)
@given(data=st.data())
def test_what_the_walker_calls_malformed_onnx_runtime_cannot_load(
    data: st.DataObject, digits_pkg: Path
) -> None:
    """check_graph says "ONNX Runtime cannot load the graph" only when that is true, and
    never refuses (as malformed) bytes ONNX Runtime loads."""
    import onnxruntime as ort

    blob = data.draw(mutated((digits_pkg / "decoder.onnx").read_bytes(), max_ops=2))
    try:
        check_graph(blob, "g.onnx")
        malformed = False
    except PackageError as exc:
        if "external file" in str(exc) or "ORT-format" in str(exc):
            return  # never handed to ONNX Runtime
        malformed = True
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        ort.InferenceSession(blob, sess_options=options, providers=["CPUExecutionProvider"])
        loaded = True
    except Exception:
        loaded = False
    assert not (malformed and loaded)


# -- the server's repository: the same path ----------------------------------------------
def _registry(root: Path) -> Any:
    from latentwire.runtime.server.batcher import BatchPolicy
    from latentwire.runtime.server.registry import Registry

    return Registry(root, policy=BatchPolicy(), providers="cpu", warmup=False)


def test_the_repository_skips_unsafe_versions(
    digits_pkg: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = tmp_path / "repo"
    good = _copy(digits_pkg, repo / "digits" / "1")
    linked = _copy(digits_pkg, repo / "digits" / "2")
    outside = tmp_path / "outside.onnx"
    shutil.copyfile(good / "encoder.onnx", outside)
    (linked / "encoder.onnx").unlink()
    (linked / "encoder.onnx").symlink_to(outside)
    external = _copy(digits_pkg, repo / "digits" / "3")
    graph = onnx.load(str(external / "decoder.onnx"))
    _external(graph.graph.initializer[0], "/etc/passwd")
    _put_graph(external, "decoder", graph.SerializeToString())
    with caplog.at_level(logging.WARNING, logger="latentwire.server"):
        registry = _registry(repo)
        registry.scan()
    assert [v.version for v in registry.versions()] == ["1"]
    assert "cannot load digits/2" in caplog.text and "outside the package folder" in caplog.text
    assert "cannot load digits/3" in caplog.text and "'/etc/passwd'" in caplog.text


def test_the_repository_skips_a_version_folder_linked_from_outside(
    digits_pkg: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = tmp_path / "repo"
    _copy(digits_pkg, repo / "digits" / "1")
    (repo / "digits" / "2").symlink_to(digits_pkg, target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="latentwire.server"):
        registry = _registry(repo)
        registry.scan()
    assert "outside the model repository" in caplog.text
    assert [v.version for v in registry.versions()] == ["1"]


def test_integrity_errors_still_come_first(digits_pkg: Path, tmp_path: Path) -> None:
    """A changed graph is reported as changed (sha256) before anything else is looked at."""
    pkg = _copy(digits_pkg, tmp_path / "pkg")
    (pkg / "decoder.onnx").write_bytes(b"\xff" * 64)
    with pytest.raises(IntegrityError, match="changed after export"):
        load(pkg, providers="cpu")


def test_model_takes_the_new_arguments(digits_pkg: Path) -> None:
    m = Model(digits_pkg, providers="cpu", root=digits_pkg.parent, max_graph_bytes=1 << 20)
    assert m.decode(np.zeros((2, 8), np.float32)).shape == (2, 64)
