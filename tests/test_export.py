"""Export: single-file graphs that pass the checker, tensor names, metadata, parity."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from latentwire.runtime import load
from latentwire.runtime.manifest import FINGERPRINT_KEY, compute_fingerprint
from latentwire.training.export import ExportError, check_parity, export_package
from latentwire.training.models import ModelConfig, build_model
from latentwire.training.pipeline import export_checkpoint


@pytest.mark.parametrize("pkg_name", ["digits_pkg", "image_pkg"])
def test_package_layout_and_graphs(pkg_name: str, request: pytest.FixtureRequest) -> None:
    pkg: Path = request.getfixturevalue(pkg_name)
    assert sorted(p.name for p in pkg.iterdir()) == [
        "decoder.onnx",
        "encoder.onnx",
        "manifest.json",
    ]
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert manifest["schema_version"] == 2
    assert compute_fingerprint(manifest) == manifest["fingerprint"]
    io = {"encoder": ("x", ["codes", "z"]), "decoder": ("z", ["x_hat"])}
    for role, (inp, out) in io.items():
        graph = onnx.load(str(pkg / f"{role}.onnx"), load_external_data=False)
        onnx.checker.check_model(graph, full_check=True)
        assert not any(
            t.data_location == onnx.TensorProto.EXTERNAL for t in graph.graph.initializer
        )
        assert [i.name for i in graph.graph.input] == [inp]
        assert [o.name for o in graph.graph.output] == out
        assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
        assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
        meta = {p.key: p.value for p in graph.metadata_props}
        assert meta[FINGERPRINT_KEY] == manifest["fingerprint"]
    parity = manifest["onnx"]["parity_max_abs_error"]
    assert parity["batches"] == [1, 7, 256]
    assert parity["encoder"] <= 1e-5 and parity["decoder"] <= 1e-5


def test_parity_check_fails_loudly_when_graph_and_torch_differ() -> None:
    cfg = ModelConfig("dense", (64,), 8)
    model = build_model(cfg).eval()
    samples = np.random.default_rng(0).random((300, 64), dtype=np.float32)
    from latentwire.training.export import _dynamic_axes, _to_onnx

    blob = _to_onnx(
        model.encoder, torch.from_numpy(samples[:2]), ("x", "z"), _dynamic_axes(cfg, False)
    ).SerializeToString()
    assert check_parity(model.encoder, blob, ("x", "z"), samples, label="encoder") <= 1e-5
    with torch.no_grad():
        layer = model.encoder[1]
        assert isinstance(layer, torch.nn.Linear)
        layer.bias.add_(1e-3)  # torch drifts away from the exported graph
    with pytest.raises(
        ExportError, match=r"disagree at batch 1: max abs error .* > .* \(1e-05 x max\(1, largest"
    ):
        check_parity(model.encoder, blob, ("x", "z"), samples, label="encoder")


def test_parity_limit_is_relative_for_large_outputs() -> None:
    """Integer latents reach tens or hundreds: float32 rounding there is far above 1e-5 in
    absolute terms, so the limit is 1e-5 x the largest |output| once outputs exceed 1."""
    cfg = ModelConfig("dense", (64,), 8)
    model = build_model(cfg).eval()
    samples = np.random.default_rng(0).random((300, 64), dtype=np.float32)
    from latentwire.training.export import _dynamic_axes, _to_onnx

    last = model.encoder[-1]
    assert isinstance(last, torch.nn.Linear)
    with torch.no_grad():
        last.weight.mul_(1e4)  # outputs in the thousands
    blob = _to_onnx(
        model.encoder, torch.from_numpy(samples[:2]), ("x", "z"), _dynamic_axes(cfg, False)
    ).SerializeToString()
    with torch.no_grad():
        peak = float(model.encoder(torch.from_numpy(samples)).abs().max())
        assert peak > 1e3
        last.bias.add_(peak * 1e-7)  # far above 1e-5 absolute, 1e-7 relative: fine
    assert check_parity(model.encoder, blob, ("x", "z"), samples, label="encoder") > 1e-5
    with torch.no_grad():
        last.bias.add_(peak * 1e-4)  # 1e-4 relative: a real disagreement
    with pytest.raises(ExportError, match="disagree"):
        check_parity(model.encoder, blob, ("x", "z"), samples, label="encoder")


def test_failed_export_after_training_points_at_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hours of training are not lost to a failed export: the error names the checkpoint
    and the command that exports it again."""
    from latentwire.training import export as export_mod
    from latentwire.training.data import load_data
    from latentwire.training.pipeline import train_and_export

    monkeypatch.setattr(export_mod, "PARITY_ATOL", 0.0)
    ckpt = tmp_path / "run.pt"
    with pytest.raises(ExportError, match="disagree") as info:
        train_and_export(
            load_data("digits"),
            name="d",
            out=tmp_path / "pkg",
            checkpoint=ckpt,
            resume=False,
            epochs=1,
            progress=False,
        )
    assert f"the trained weights are kept in {ckpt}" in str(info.value)
    assert f"latentwire export {ckpt} --out DIR" in str(info.value)
    assert ckpt.is_file() and not (tmp_path / "pkg").exists()


def test_failed_parity_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from latentwire.training import export as export_mod

    monkeypatch.setattr(export_mod, "PARITY_ATOL", 0.0)  # no graph is bit-exact to torch here
    cfg = ModelConfig("dense", (64,), 8)
    samples = np.random.default_rng(0).random((300, 64), dtype=np.float32)
    out = tmp_path / "pkg"
    norm = {"kind": "none", "offset": [0.0], "scale": [1.0]}
    with pytest.raises(ExportError, match="disagree"):
        export_package(
            build_model(cfg), cfg, out=out, name="t", normalization=norm, samples=samples
        )
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_to_overwrite_a_non_package(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    cfg = ModelConfig("dense", (64,), 8)
    with pytest.raises(ExportError, match="not a model package"):
        export_package(
            build_model(cfg),
            cfg,
            out=tmp_path,
            name="t",
            normalization={"kind": "none"},
            samples=np.zeros((4, 64), np.float32),
        )
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_reexport_from_checkpoint(digits_pkg: Path, tmp_path: Path, digits_x: np.ndarray) -> None:
    ckpt = digits_pkg.parent / f"{digits_pkg.name}.ckpt"
    manifest = export_checkpoint(ckpt, out=tmp_path / "again")
    original = load(digits_pkg, providers="cpu")
    again = load(tmp_path / "again", providers="cpu")
    assert manifest["name"] == original.name
    np.testing.assert_allclose(
        again.decode(again.encode(digits_x)), original.decode(original.encode(digits_x)), atol=1e-5
    )


@pytest.mark.parametrize("pkg_name", ["digits_pkg", "image_pkg"])
def test_graphs_carry_no_install_paths(pkg_name: str, request: pytest.FixtureRequest) -> None:
    """The exporter's stack traces name absolute paths: stripped, so that the same weights
    give the same fingerprint wherever latentwire is installed."""
    pkg: Path = request.getfixturevalue(pkg_name)
    for role in ("encoder", "decoder"):
        blob = (pkg / f"{role}.onnx").read_bytes()
        assert b"site-packages" not in blob and b'.py", line' not in blob
        graph = onnx.load_from_string(blob)
        assert all(not n.metadata_props for n in graph.graph.node)
        assert {p.key for p in graph.metadata_props} == {
            FINGERPRINT_KEY,
            "latentwire.name",
            "latentwire.role",
        }


def test_fingerprint_is_reproducible(tmp_path: Path) -> None:
    """Exporting the same weights twice, from different folders, gives one fingerprint."""
    cfg = ModelConfig("dense", (64,), 8, hidden=(16,))
    torch.manual_seed(0)
    model = build_model(cfg)
    samples = np.random.default_rng(0).random((300, 64), dtype=np.float32)
    norm = {"kind": "none", "offset": [0.0], "scale": [1.0]}
    a = export_package(
        model, cfg, out=tmp_path / "a", name="t", normalization=norm, samples=samples
    )
    b = export_package(
        model, cfg, out=tmp_path / "x" / "b", name="t", normalization=norm, samples=samples
    )
    assert a["fingerprint"] == b["fingerprint"]
    assert a["files"]["encoder"]["sha256"] == b["files"]["encoder"]["sha256"]


def test_gdn_matches_its_formula() -> None:
    """GDN: y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2); the inverse multiplies."""
    from latentwire.training.models import GDN

    torch.manual_seed(0)
    gdn, igdn = GDN(4), GDN(4, inverse=True)
    with torch.no_grad():
        for m in (gdn, igdn):
            m.beta.copy_(torch.rand(4) + 0.5)
            m.gamma.copy_(torch.rand(4, 4))
    x = torch.randn(2, 4, 3, 5)
    for module, expected in ((gdn, lambda n: x / n), (igdn, lambda n: x * n)):
        beta = module.beta.detach() ** 2 - GDN._PEDESTAL
        gamma = module.gamma.detach() ** 2 - GDN._PEDESTAL
        quad = torch.einsum("ij,bjhw->bihw", gamma, x * x)
        torch.testing.assert_close(
            module(x), expected(torch.sqrt(beta[None, :, None, None] + quad))
        )


def test_gdn_entropy_image_model_exports_and_codes_any_size(tmp_path: Path) -> None:
    """A GDN conv model with the entropy format: parity at export, the activation recorded,
    and a whole image whose sides are not multiples of the stride round-trips."""
    from latentwire.training.data import Dataset, load_data
    from latentwire.training.pipeline import train_and_export

    ds = load_data("sample-images", patch=16)
    ds = Dataset(ds.x[::16], ds.name, ds.source, True, ds.default_normalization)
    train_and_export(
        ds,
        name="gdn",
        out=tmp_path / "gdn",
        checkpoint=None,
        resume=False,
        channels=(8, 8),
        activation="gdn",
        latent_dim=6,
        codec="entropy",
        epochs=2,
        progress=False,
    )
    manifest = json.loads((tmp_path / "gdn" / "manifest.json").read_text())
    assert manifest["model"]["activation"] == "gdn"
    parity = manifest["onnx"]["parity_max_abs_error"]
    assert parity["encoder"] <= 1e-5 and parity["decoder"] <= 1e-5
    model = load(tmp_path / "gdn", providers="cpu")
    img = np.random.default_rng(0).integers(0, 256, (1, 3, 13, 22)).astype(np.float32)
    out = model.decode_codes(model.encode_codes(img))
    assert out.shape == img.shape and np.isfinite(out).all()
