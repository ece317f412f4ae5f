"""`latentwire train | export | demo`. Registered into the runtime's parser; this module
imports nothing heavy at import time, so `latentwire --help` stays fast and torch-free."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from latentwire.runtime.argtypes import non_negative, positive
from latentwire.runtime.errors import DataError

log = logging.getLogger("latentwire")


def _ints(text: str) -> tuple[int, ...]:
    """A comma-separated list of positive integers like 128,64 (spaces around items are
    fine; an empty item, zero or a negative number is an error, never skipped)."""
    items = text.split(",")
    try:
        values = tuple(int(v) for v in items)
    except ValueError:
        values = ()
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers like 128,64, each > 0, got {text!r}"
        )
    return values


def _hidden(text: str) -> tuple[int, ...]:
    """`--hidden`: widths like 128,64, or `none` for no hidden layers (input -> code)."""
    if text.strip().lower() == "none":
        return ()
    return _ints(text)


def _need_torch() -> None:
    try:
        import onnx  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise DataError(
            f"this command needs the training extra ({exc.name} is missing): "
            "pip install torch==2.13.0 'latentwire[cpu,train]'"
        ) from None


_PARSERS: dict[str, argparse.ArgumentParser] = {}
"""The subcommand parsers, for rebuilding a command line (the resume hint after Ctrl-C)."""


def _add_threads_arg(p: Any) -> None:
    p.add_argument(
        "--threads",
        type=positive(int),
        metavar="N",
        help="CPU threads for torch (default: half the CPU cores, at most 4, at least 1). "
        "More threads than free cores make small models many times slower: 20 digits "
        "epochs took 2-6 s on 1 thread and 28-135 s on 2 while other jobs ran on a 2-core "
        "VM (2.4 s when it was idle)",
    )


def _add_force_arg(p: Any, what: str) -> None:
    p.add_argument(
        "--force",
        action="store_true",
        help=f"replace {what} (refused otherwise, so that an earlier run is never lost)",
    )


def _add_training_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        choices=["auto", "dense", "conv"],
        default="auto",
        help="architecture: auto = conv for images, dense otherwise (default: auto)",
    )
    g.add_argument(
        "--latent-dim",
        type=positive(int),
        metavar="K",
        help="latent size (dense) or latent channels (conv) (default: 8 dense, 16 conv)",
    )
    g.add_argument(
        "--hidden",
        type=_hidden,
        metavar="W1,W2,...",
        help="dense hidden widths, encoder side; the decoder mirrors them; none = no hidden "
        "layers, a single linear map each way (default: 256,128 with --codec entropy, "
        "else 128,64)",
    )
    g.add_argument(
        "--channels",
        type=_ints,
        default=(64, 96, 128),
        metavar="C1,C2,...",
        help="conv channels of the stride-2 stages (default: 64,96,128 = stride 8)",
    )
    g.add_argument(
        "--activation",
        choices=["gelu", "gdn"],
        default="gelu",
        help="conv nonlinearity: gelu, or gdn (generalised divisive normalisation, as in "
        "Ballé et al.'s learned image codecs; the better choice for photos) (default: gelu)",
    )
    g = p.add_argument_group("training")
    g.add_argument(
        "--loss",
        choices=["auto", "mse", "bce"],
        default="auto",
        help="reconstruction loss (default: auto = mse)",
    )
    g.add_argument(
        "--noise",
        metavar="SPEC",
        help="denoising: corrupt the inputs, the target stays clean. gaussian:SIGMA adds "
        "N(0, SIGMA^2); gaussian:LO..HI is blind, sigma ~ U(LO, HI) per sample, one model "
        "for every noise level (e.g. gaussian:0..0.6); mask:P zeroes each value with "
        "probability P. SIGMA is in the model's units (after --normalize): a fraction of "
        "the full range for digits and 8-bit images (0.1 = 25.5 grey levels), standard "
        "deviations with --normalize standard. Noisy values of [0, 1] data are clipped to "
        "[0, 1] (a saturating sensor); add :noclip to keep them (gaussian:0.3:noclip). "
        "The manifest records the spec (training.noise)",
    )
    g.add_argument(
        "--embed-loss",
        metavar="SPEC",
        help="latents as features (dimensionality reduction): add neighbourhood-preserving "
        "terms to the loss, NAME:WEIGHT joined by +. local:W keeps distances between "
        "neighbours (latents stay in the data's units); sne:W matches neighbour "
        "probabilities. Measured on digits (local:5+sne:0.01, --batch-size 128, 3 seeds): at "
        "16 dims trustworthiness@5 0.998 (PCA's; MSE alone 0.993) and +1.5 dB over PCA, kNN "
        "accuracy 0.973 (PCA 0.983, MSE alone 0.960); at 2 dims it collapsed the codes, so "
        "use MSE alone there. The exported graphs are unchanged",
    )
    g.add_argument(
        "--normalize",
        choices=["auto", "none", "minmax", "standard", "scale"],
        default="auto",
        help="fitted on the training split and applied by the runtime (default: auto = "
        "none for digits, /255 for 8-bit images, /peak for deeper ones, standard otherwise; "
        "with --task anomaly, minmax where it would be standard)",
    )
    g.add_argument(
        "--epochs",
        type=positive(int),
        default=300,
        help="maximum epochs; the first epoch logs an estimate of the whole run and, past "
        "10 minutes, how many epochs fit in 10 (digits: 300 take about 30 s; "
        "sample-images --codec entropy: 8-13 s an epoch on one core of a 2-core VM, so "
        "300 take 40-65 min) (default: 300)",
    )
    g.add_argument("--batch-size", type=positive(int), default=64, help="(default: 64)")
    g.add_argument(
        "--lr", type=positive(float), default=2e-3, help="Adam learning rate (default: 0.002)"
    )
    g.add_argument("--weight-decay", type=float, default=0.0, help="Adam weight decay (default: 0)")
    g.add_argument(
        "--prior-lr-scale",
        type=positive(float),
        default=10.0,
        metavar="X",
        help="entropy models: the prior's learning rate is X times --lr, so the rate it "
        "measures keeps up with the latents (default: 10)",
    )
    g.add_argument(
        "--clip-grad",
        type=non_negative(float),
        default=1.0,
        metavar="NORM",
        help="clip the gradient's global norm before each step, 0 = off; steps with a "
        "non-finite loss are skipped, and 50 in a row stop training (default: 1.0)",
    )
    g.add_argument(
        "--patience",
        type=positive(int),
        default=30,
        help="early stopping: epochs without a better validation loss (default: 30)",
    )
    g.add_argument(
        "--val-fraction", type=float, default=0.2, help="validation split (default: 0.2)"
    )
    g.add_argument(
        "--seed", type=int, default=0, help="seeds the split, init and batches (default: 0)"
    )
    g.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto = CUDA when torch sees a GPU (mixed precision there) (default: auto)",
    )
    _add_threads_arg(g)
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("codes")
    _add_codec_args(p, g, training=True)


def _add_codec_args(p: argparse.ArgumentParser, g: Any, *, training: bool) -> None:
    g.add_argument(
        "--codec",
        choices=["f32", "f16", "int8", "entropy"],
        default=None if not training else "f32",
        help="code format: f32 (4 bytes/value), f16 (2), int8 (1, affine per latent channel, "
        "calibrated on the training split) or entropy (integer latents trained with a "
        "learned prior, entropy-coded; fewest bytes)"
        + (" (default: f32)" if training else " (default: entropy if trained with it, else f32)"),
    )
    if training:
        g.add_argument(
            "--rate-lambda",
            type=float,
            default=0.01,
            metavar="L",
            help="--codec entropy: weight of the rate term, loss = MSE + L * bits per input "
            "value; larger = fewer bytes, lower PSNR (default: 0.01)",
        )
    g.add_argument(
        "--int8-weights",
        action="store_true",
        help="store the encoder's weights as int8 (onnxruntime.quantization): a smaller "
        "edge graph; its size and PSNR cost are recorded in the manifest",
    )


def _add_anomaly_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "anomaly detection",
        "--task anomaly: train on NORMAL data (the default workflow: an autoencoder trained "
        "on data holding anomalies learns to reconstruct them too; measured mean AP 0.40 vs "
        "0.75 trained clean), then fit densities of the codes (GMM, Mahalanobis, kNN) and "
        "calibrate thresholds on the validation split; `latentwire score` uses them",
    )
    g.add_argument(
        "--task",
        choices=["reconstruct", "anomaly"],
        default="reconstruct",
        help="anomaly: also fit code densities and calibrated thresholds into the package; "
        "--data is taken as normal samples, every row (built-in breast-cancer, digits and "
        "wine are split by their labels; see --normal); defaults: --hidden 128,64, "
        "--latent-dim 8, --epochs 150 unless given (default: reconstruct)",
    )
    g.add_argument(
        "--normal",
        metavar="CLASS",
        help="built-in labelled data: the normal class (digits/wine: a class number, default "
        "the largest; breast-cancer: benign); the other classes are the anomalies",
    )
    g.add_argument(
        "--protocol",
        choices=["clean", "unsup"],
        default="clean",
        help="built-in labelled data: clean = train on normals only; unsup = with anomalies "
        "left in at the data's rate (ADBench's protocol; see --robust) (default: clean)",
    )
    rate = g.add_mutually_exclusive_group()
    rate.add_argument(
        "--fpr",
        type=float,
        metavar="RATE",
        help="thresholds flag this share of held-out normal samples (the validation split); "
        "hundreds of validation samples make 0.01 reliable (default: 0.01)",
    )
    rate.add_argument(
        "--contamination",
        type=float,
        metavar="RATE",
        help="the data holds about this share of anomalies (PyOD style): thresholds flag "
        "that share of the validation split; with --robust, the share dropped",
    )
    g.add_argument(
        "--robust",
        action="store_true",
        help="for data that may hold anomalies: train once, drop the share of samples "
        "reconstructed worst (--contamination, default 0.05), train again on the rest",
    )
    g.add_argument(
        "--edge-score",
        action="store_true",
        help="also export scorer.onnx: codes and the reconstruction-error score in one ONNX "
        "Runtime call on the edge (about the decoder's size on top of the encoder)",
    )


def add_command(sub: Any, name: str) -> None:
    _add_command(sub, name)
    if name in sub.choices:
        _PARSERS[name] = sub.choices[name]


def _add_command(sub: Any, name: str) -> None:
    if name == "train":
        p = sub.add_parser(
            "train",
            help="train an autoencoder and export a model package",
            description="Train an autoencoder on DATA and write a model package "
            "(encoder.onnx, decoder.onnx, manifest.json) to --out. Several processes: run it "
            "under torchrun (`torchrun --standalone --nproc-per-node N -m "
            "latentwire.runtime.cli train ...`): DistributedDataParallel, gloo on CPU and "
            "nccl on GPU, --batch-size stays the global batch, rank 0 writes the checkpoint "
            "and the package.",
        )
        p.add_argument(
            "--data",
            default="digits",
            metavar="DATA",
            help="digits | breast-cancer | sample-images[:china|:flower] | photos (patches of "
            "seven photos that ship with scikit-learn, matplotlib and scikit-image; flower.jpg "
            "is left out for testing) | PATH.npy | PATH.npz | PATH.csv | FOLDER of PNG/JPEG "
            "images (default: digits)",
        )
        p.add_argument("--key", help="array name inside an .npz holding several")
        p.add_argument(
            "--patch",
            type=positive(int),
            default=32,
            help="patch size for sample-images (2 .. 427) and photos (2 .. 300) (default: 32)",
        )
        p.add_argument(
            "--out", type=Path, metavar="DIR", help="model package to write (default: models/NAME)"
        )
        p.add_argument("--name", help="model name (default: the data's name)")
        p.add_argument(
            "--checkpoint",
            type=Path,
            metavar="PATH",
            help="checkpoint written every epoch (default: runs/NAME/checkpoint.pt)",
        )
        p.add_argument(
            "--resume", action="store_true", help="continue from --checkpoint if it exists"
        )
        _add_force_arg(p, "an existing package at --out and start over an existing --checkpoint")
        _add_training_args(p)
        _add_anomaly_args(p)
        p.set_defaults(func=run_train)
    elif name == "export":
        p = sub.add_parser(
            "export",
            help="re-export a checkpoint as a model package",
            description="Export the best weights of a training checkpoint as a "
            "model package, with the same parity checks as `train`.",
        )
        p.add_argument(
            "checkpoint",
            type=Path,
            metavar="CHECKPOINT",
            help="checkpoint.pt from `latentwire train`",
        )
        p.add_argument(
            "--out", type=Path, required=True, metavar="DIR", help="model package to write"
        )
        p.add_argument("--name", help="model name (default: the checkpoint's)")
        _add_force_arg(p, "an existing package at --out")
        _add_threads_arg(p)
        _add_codec_args(p, p.add_argument_group("codes"), training=False)
        p.set_defaults(func=run_export)
    elif name == "export-triton":
        _add_export_triton(sub)
    elif name == "evaluate":
        p = sub.add_parser(
            "evaluate",
            help="rate-distortion report: models vs PCA, JPEG, WebP, zlib/zstd",
            description="Measure bytes per sample (bits per pixel for images) against "
            "PSNR (and SSIM for images) for each model's code formats and for PCA at the "
            "same bytes and quantisation, JPEG and WebP (payload-only and whole-file "
            "bytes) and zlib/zstd, on test samples no model trained on. Writes "
            "OUTDIR/report.json (schema: latentwire.training.report), rd.png and report.md.",
        )
        p.add_argument(
            "--model",
            action="append",
            required=True,
            type=Path,
            metavar="DIR",
            help="model package; repeat to put several models on one plot",
        )
        p.add_argument(
            "--data",
            required=True,
            metavar="DATA",
            help="array data: the models' training data (its validation split is the "
            "test set), e.g. digits; image models: whole images they did not train on, "
            "e.g. sample-images:flower, a PNG/JPEG file or a folder",
        )
        p.add_argument(
            "--report", required=True, type=Path, metavar="OUTDIR", help="folder to write"
        )
        p.add_argument("--json", action="store_true", help="print report.json instead of the table")
        t = p.add_argument_group("applications")
        t.add_argument(
            "--task",
            choices=EVALUATE_TASKS,
            help="rd: rate-distortion (the default); anomaly: detection quality against "
            "IsolationForest, ECOD, PyOD's AutoEncoder and PCA (needs --labels for your own "
            "data); denoise: "
            "denoising against scikit-image's denoisers (implied by --noise); embed: codes as "
            "features against PCA; retrieval: nearest-neighbour recall of decoded vectors "
            "against faiss",
        )
        t.add_argument(
            "--labels",
            metavar="PATH",
            help="one label per sample of --data (.npy or .csv): anomaly 1 = anomaly, 0 = "
            "normal; embed: class labels. Built-in data (digits, breast-cancer, wine) "
            "carries its own",
        )
        t.add_argument(
            "--noise",
            metavar="SPEC",
            help="denoise: the noise to add to the test data, e.g. gaussian:0.1,0.3,0.5",
        )
        for task in EVALUATE_TASKS[1:]:
            _task_module(task).add_arguments(t)
        p.set_defaults(func=run_evaluate)
    elif name == "demo":
        p = sub.add_parser(
            "demo",
            help="train on digits, export, encode/decode the held-out split, compare with PCA",
            description="End to end on scikit-learn's digits: train, export, encode "
            "the held-out split through a codes file, decode it, and report bytes "
            "per sample, compression ratio and PSNR against PCA.",
        )
        p.add_argument(
            "--out",
            type=Path,
            default=Path("models/digits-demo"),
            metavar="DIR",
            help="model package to write (default: models/digits-demo)",
        )
        p.add_argument(
            "--latent-dim", type=positive(int), default=8, metavar="K", help="(default: 8)"
        )
        p.add_argument("--seed", type=int, default=0, help="(default: 0)")
        p.add_argument("--epochs", type=positive(int), default=300, help="(default: 300)")
        p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
        p.add_argument(
            "--force",
            action="store_true",
            help="replace a package at --out that another command made (the demo's own "
            "earlier output is always replaced)",
        )
        _add_threads_arg(p)
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.set_defaults(func=run_demo)


def run_train(args: argparse.Namespace) -> int:
    _need_torch()
    from .data import load_data
    from .pipeline import train_and_export
    from .trainer import use_threads

    use_threads(args.threads)
    anomaly = None
    if args.task == "anomaly":
        from .anomaly import ANOMALY_DEFAULTS, anomaly_data
        from .pipeline import AnomalyOptions

        data, spec = anomaly_data(
            args.data, normal=args.normal, protocol=args.protocol, seed=args.seed, key=args.key
        )
        anomaly = AnomalyOptions(
            fpr=args.fpr,
            contamination=args.contamination,
            robust=args.robust,
            edge_score=args.edge_score,
            split=spec,
        )
        if args.epochs == _PARSERS["train"].get_default("epochs"):
            args.epochs = ANOMALY_DEFAULTS["epochs"]
    else:
        used = [f for f, v in _ANOMALY_FLAGS.items() if getattr(args, v) not in (None, False)]
        if used:
            verb = "needs" if len(used) == 1 else "need"
            raise DataError(f"{', '.join(used)} {verb} --task anomaly")
        data = load_data(args.data, key=args.key, patch=args.patch)
    name = args.name or data.name
    checkpoint = args.checkpoint or Path("runs") / name / "checkpoint.pt"
    started = time.time()
    try:
        result = train_and_export(
            data,
            name=name,
            out=args.out or Path("models") / name,
            checkpoint=checkpoint,
            resume=args.resume,
            force=args.force,
            model=args.model,
            latent_dim=args.latent_dim,
            hidden=args.hidden,
            channels=args.channels,
            activation=args.activation,
            normalize=args.normalize,
            loss=args.loss,
            noise=args.noise,
            embed_loss=args.embed_loss,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=args.weight_decay,
            patience=args.patience,
            val_fraction=args.val_fraction,
            seed=args.seed,
            device=args.device,
            progress=not args.no_progress,
            codec=args.codec,
            rate_lambda=args.rate_lambda,
            clip_grad=args.clip_grad,
            prior_lr_scale=args.prior_lr_scale,
            int8_weights=args.int8_weights,
            data_options={"key": args.key, "patch": args.patch},
            anomaly=anomaly,
        )
    except KeyboardInterrupt:
        if sys.stderr.isatty():  # below the progress bar's line, not on it
            print(file=sys.stderr)
        print(f"latentwire: {_interrupted(args, checkpoint, started)}", file=sys.stderr)
        return 130
    print(result.summary())
    return 0


_ANOMALY_FLAGS = {
    "--normal": "normal",
    "--fpr": "fpr",
    "--contamination": "contamination",
    "--robust": "robust",
    "--edge-score": "edge_score",
}


def _interrupted(args: argparse.Namespace, checkpoint: Path, started: float) -> str:
    """The one line after Ctrl-C in `train`: what the checkpoint holds and the command
    that resumes from it."""
    try:
        fresh = checkpoint.stat().st_mtime > started - 1.0  # (coarse file clocks)
    except OSError:
        fresh = False
    if not (fresh or (args.resume and checkpoint.exists())):
        kept = f"; {checkpoint} from an earlier run is untouched" if checkpoint.exists() else ""
        return f"interrupted before the first epoch ended; nothing was saved{kept}"
    from .trainer import load_checkpoint

    try:
        epoch = f"epoch {load_checkpoint(checkpoint)['epoch']} of {args.epochs}"
    except Exception:  # the hint must not fail: a checkpoint it cannot read is still named
        epoch = "the last finished epoch"
    return f"interrupted; {checkpoint} holds {epoch}: resume with: {_command_line(args)}"


def _command_line(args: argparse.Namespace) -> str:
    """`latentwire train ...` with the flags given this time (those that differ from the
    defaults) and --resume: the command that continues this run."""
    parts = ["latentwire", "train"]
    for action in _PARSERS["train"]._actions:
        if not action.option_strings or action.dest in ("help", "resume"):
            continue
        value = getattr(args, action.dest, None)
        if value is None or value == action.default:
            continue
        flag = action.option_strings[-1]
        if action.nargs == 0:  # store_true
            parts.append(flag)
        elif isinstance(value, tuple):
            parts += [flag, ",".join(str(v) for v in value) or "none"]
        else:
            parts += [flag, str(value)]
    parts.append("--resume")
    return " ".join(shlex.quote(p) for p in parts)


def run_export(args: argparse.Namespace) -> int:
    _need_torch()
    from .pipeline import export_checkpoint
    from .trainer import use_threads

    use_threads(args.threads)
    manifest = export_checkpoint(
        args.checkpoint,
        out=args.out,
        name=args.name,
        codec=args.codec,
        int8_weights=args.int8_weights,
        force=args.force,
    )
    print(
        f"exported {manifest['name']} (fingerprint {manifest['fingerprint']}, codes "
        f"{manifest['codes']['format']}) -> {args.out}"
    )
    return 0


def _add_export_triton(sub: Any) -> None:
    p = sub.add_parser(
        "export-triton",
        help="write a Triton Inference Server model repository from model packages",
        description="Write a Triton model repository from PKG: one model package (served as "
        "version 1) or a model repository DIR/<name>/<version>/ as `latentwire serve` reads "
        "it (every version side by side, version_policy all). Each model NAME becomes "
        "NAME.encoder (x -> codes) and NAME.decoder (codes -> x_hat) for Triton's onnxruntime "
        "backend, with the normalisation, dequantisation and denormalisation that "
        "latentwire's runtime does in numpy folded into the ONNX graphs, so Triton's answers "
        "equal `latentwire decode`'s; dynamic batching, instance groups, the package "
        "fingerprint as a parameter. Entropy-coded packages also get NAME.entropy_decode (a "
        "Python-backend model running latentwire's ANS decoder; Triton's Python environment "
        "needs latentwire[cpu]) and the ensemble NAME.stream_decoder (stream -> x_hat). "
        "Needs onnx (the training extra), not torch.",
    )
    p.add_argument("package", type=Path, metavar="PKG", help="model package or model repository")
    p.add_argument("--out", type=Path, required=True, metavar="REPO", help="folder to write")
    p.add_argument("--name", help="Triton model name prefix (default: the package's name)")
    p.add_argument(
        "--max-batch",
        type=positive(int),
        default=1024,
        metavar="N",
        help="max_batch_size of the encoder and decoder; an entropy stream must hold at most "
        "N samples (default: 1024)",
    )
    p.add_argument(
        "--instances",
        type=positive(int),
        default=1,
        metavar="N",
        help="model instances per device (instance_group count) (default: 1)",
    )
    p.add_argument(
        "--kind",
        choices=["cpu", "gpu"],
        default="cpu",
        help="instance_group kind of the encoder and decoder: KIND_CPU or KIND_GPU (on every "
        "GPU); entropy decoding always runs on CPU (default: cpu)",
    )
    p.add_argument(
        "--backend",
        choices=["onnxruntime", "python"],
        default="onnxruntime",
        help="onnxruntime: Triton's ONNX Runtime backend (NGC tritonserver images). python: "
        "run the same folded graphs with onnxruntime inside Triton's Python backend, for a "
        "tritonserver without the onnxruntime backend, e.g. the one the nvidia-pytriton "
        "wheel bundles (default: onnxruntime)",
    )
    _add_force_arg(p, "an existing model repository at --out")
    p.set_defaults(func=run_export_triton)


def run_export_triton(args: argparse.Namespace) -> int:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise DataError(
            "export-triton needs onnx from the training extra: pip install 'latentwire[cpu,train]'"
        ) from None
    from .triton import Options, export_repository

    opts = Options(args.max_batch, args.instances, args.kind, args.backend)
    configs = export_repository(
        args.package, args.out, name=args.name, force=args.force, opts=opts
    )
    models = ", ".join(c.parent.name for c in configs)
    print(f"wrote Triton model repository {args.out}: {models}")
    return 0


EVALUATE_TASKS = ("rd", "anomaly", "denoise", "embed", "retrieval")


def _task_module(task: str) -> Any:
    """training/eval_<task>.py: `add_arguments(group)` (flags beyond --task, --labels and
    --noise; imports nothing heavy at module level) and `run(args) -> int`."""
    return importlib.import_module(f"latentwire.training.eval_{task}")


_TASK_NEEDS = {"anomaly": ("pyod",), "denoise": ("skimage",)}
"""Modules of the training extra a task needs beyond matplotlib and scikit-learn."""


def _need_evaluate_extra(task: str) -> None:
    """One line naming the training extra when a module the task needs is missing."""
    for module in ("matplotlib", "sklearn", *_TASK_NEEDS.get(task, ())):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            what = "evaluate" if task == "rd" else f"evaluate --task {task}"
            raise DataError(
                f"{what} needs the training extra ({exc.name} is missing): "
                "pip install torch==2.13.0 'latentwire[cpu,train]'"
            ) from None


def run_evaluate(args: argparse.Namespace) -> int:
    task = args.task or ("denoise" if args.noise else "rd")
    _need_evaluate_extra(task)
    if task != "rd":
        return int(_task_module(task).run(args))
    from .evaluate import evaluate, format_table

    result = evaluate(args.model, args.data, args.report)
    if args.json:
        print(Path(result["paths"]["json"]).read_text(), end="")
        return 0
    print(format_table(result["points"], result["is_image"]))
    print(json.dumps(result["summary"], indent=2))
    print(f"report: {', '.join(result['paths'].values())}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    _need_torch()
    from .demo import format_report, run
    from .trainer import use_threads

    use_threads(args.threads)
    report = run(
        out=args.out,
        latent_dim=args.latent_dim,
        seed=args.seed,
        epochs=args.epochs,
        progress=not args.no_progress,
        force=args.force,
    )
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0
