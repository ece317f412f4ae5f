"""The model repository a server serves: DIR/<name>/<version>/ packages, loaded side by side.

Every loaded version keeps its own ONNX Runtime sessions and batchers. Codes are routed by
the fingerprint they carry, so codes made by an old encoder keep decoding with the old
version after a new one is dropped in. `scan()` picks up new version directories and drops
removed ones; `watch()` runs it in the background. Lookups read one immutable snapshot,
replaced whole on every change, so requests in flight never see a half-updated registry
and keep the version they started with.

A version that fails to load (a missing or damaged file, a provider that does not load, a
graph that fails its warm-up) is skipped: the versions already loaded keep serving, the
failure is logged once with its reason, reported to `on_failure` (a metric) and listed in
`failures()` until the version loads or its directory goes. It is tried again when its files
change (e.g. a version still being copied in), not on every poll.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import _ort
from ..errors import FingerprintMismatch, LatentwireError, ModelNotFound
from ..manifest import MANIFEST_FILE
from ..model import Model, read_verified
from .batcher import Batcher, BatchPolicy, Observer

log = logging.getLogger("latentwire.server")

ObserverFactory = Callable[[str, str, str], Observer]
"""(model name, version, role) -> metrics observer for that graph's batcher."""
FailureHook = Callable[[str, str, str], None]
"""(model name, version, reason): called once for every failed attempt to load a version."""


def _version_key(version: str) -> tuple[int, int, str]:
    """Numeric versions sort numerically and after non-numeric ones."""
    return (1, int(version), "") if version.isdigit() else (0, 0, version)


@dataclass
class Version:
    """One loaded model package."""

    name: str
    version: str
    path: Path
    model: Model
    manifest_json: str
    encoder_onnx: bytes
    encoder_sha256: str
    decoder: Batcher
    """codes (wire values) -> reconstructions in the user's units"""
    encoder: Batcher
    """samples in the user's units -> codes"""
    cache: dict[object, object] = field(default_factory=dict)
    """what services work out once per loaded version (e.g. V2's tensor specs)"""

    @property
    def fingerprint(self) -> str:
        return self.model.fingerprint


@dataclass(frozen=True)
class _Snapshot:
    versions: dict[tuple[str, str], Version] = field(default_factory=dict)
    ordered: tuple[Version, ...] = ()
    """By name, then version (numeric versions numerically): what lookups list."""
    by_fingerprint: dict[str, Version] = field(default_factory=dict)
    latest: dict[str, Version] = field(default_factory=dict)
    by_name: dict[str, tuple[Version, ...]] = field(default_factory=dict)
    """Each model's versions, oldest first."""

    @classmethod
    def of(cls, versions: dict[tuple[str, str], Version]) -> _Snapshot:
        ordered = sorted(versions.values(), key=lambda v: (v.name, _version_key(v.version)))
        by_fp = {v.fingerprint: v for v in ordered}  # a duplicate fingerprint: newest wins
        latest = {v.name: v for v in ordered}
        by_name = {n: tuple(v for v in ordered if v.name == n) for n in latest}
        return cls(dict(versions), tuple(ordered), by_fp, latest, by_name)


class Registry:
    """Loads and serves the packages under `root`."""

    def __init__(
        self,
        root: str | Path,
        *,
        policy: BatchPolicy,
        providers: _ort.Providers = "auto",
        ort_threads: int = 1,
        observer: ObserverFactory | None = None,
        warmup: bool = True,
        on_change: Callable[[], None] | None = None,
        on_failure: FailureHook | None = None,
    ) -> None:
        self.root = Path(root)
        self.policy = policy
        self.providers: _ort.Providers = providers
        self.ort_threads = ort_threads
        self._observer = observer or (lambda name, version, role: Observer())
        self._warmup = warmup
        self._on_change = on_change
        """Called after every scan that loaded or dropped a version (health follows it)."""
        self._on_failure = on_failure
        self._snap = _Snapshot()
        self._failed: dict[Path, object] = {}  # path -> _signature(path) when loading failed
        self._failures: dict[tuple[str, str], str] = {}
        """(name, version) -> why it did not load, for versions whose directory is there"""
        self._scan_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if not self.root.is_dir():
            raise ModelNotFound(f"--models {self.root} is not a directory")

    # -- lookups (lock-free: one snapshot read) ----------------------------------------
    def versions(self) -> list[Version]:
        return list(self._snap.ordered)

    def versions_of(self, name: str) -> tuple[Version, ...]:
        """The loaded versions of model `name`, oldest first (none: empty)."""
        return self._snap.by_name.get(name, ())

    def is_latest(self, v: Version) -> bool:
        return self._snap.latest.get(v.name) is v

    def names(self) -> list[str]:
        return sorted(self._snap.latest)

    def failures(self) -> dict[tuple[str, str], str]:
        """(name, version) -> reason, for every version directory that failed to load and
        has not loaded since (in name, version order)."""
        with self._scan_lock:
            items = list(self._failures.items())
        return dict(sorted(items, key=lambda kv: (kv[0][0], _version_key(kv[0][1]))))

    def resolve(self, name: str, version: str = "") -> Version:
        """The named model's version, or its latest when `version` is empty."""
        snap = self._snap
        found = snap.versions.get((name, version)) if version else snap.latest.get(name)
        if found is None:
            raise ModelNotFound(self._not_found(snap, name, version))
        return found

    def route(self, model_name: str, fingerprint: str) -> Version:
        """The version whose encoder made these codes."""
        snap = self._snap
        found = snap.by_fingerprint.get(fingerprint)
        if found is not None:
            return found
        same_name = [v for v in snap.ordered if model_name in (v.name, v.model.name)]
        if same_name:
            loaded = ", ".join(f"{v.version} ({v.fingerprint})" for v in same_name)
            raise FingerprintMismatch(
                f"codes carry fingerprint {fingerprint or '(none)'}, which matches no loaded "
                f"version of model {model_name!r} (loaded: {loaded}); they were made by "
                "another encoder"
            )
        raise ModelNotFound(
            f"no loaded model made codes with fingerprint {fingerprint or '(none)'}"
            + (f" and name {model_name!r}" if model_name else "")
            + f"; loaded models: {', '.join(sorted(snap.latest)) or 'none'}"
        )

    def graph(
        self,
        v: Version,
        role: str,
        run: Callable[[np.ndarray], np.ndarray],
        prepare: Callable[[np.ndarray], np.ndarray],
    ) -> Batcher:
        """A Batcher for another graph of a loaded version (e.g. an anomaly scorer), with
        this registry's batch policy and metrics labels (name, version, role)."""
        return Batcher(
            run,
            self.policy,
            self._observer(v.name, v.version, role),
            label=f"{v.name}/{v.version} {role}",
            prepare=prepare,
        )

    def _not_found(self, snap: _Snapshot, name: str, version: str) -> str:
        if version and name in snap.latest:
            have = ", ".join(v.version for v in snap.ordered if v.name == name)
            return f"model {name!r} has no version {version!r} (loaded: {have})"
        loaded = ", ".join(sorted(snap.latest)) or "none"
        return f"no model named {name!r} is loaded; loaded models: {loaded}"

    # -- loading -------------------------------------------------------------------------
    def _candidates(self) -> list[tuple[str, str, Path]]:
        """(name, version, path) of every package directory under root."""
        if (self.root / MANIFEST_FILE).is_file():  # --models pointing at one package
            return [(self.root.name, "1", self.root)]
        found = []
        for model_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if model_dir.name.startswith("."):
                continue
            for ver_dir in sorted(p for p in model_dir.iterdir() if p.is_dir()):
                if not ver_dir.name.startswith(".") and (ver_dir / MANIFEST_FILE).is_file():
                    found.append((model_dir.name, ver_dir.name, ver_dir))
        return found

    def _load(self, name: str, version: str, path: Path) -> Version:
        model = Model(path, providers=self.providers, threads=self.ort_threads, root=self.root)
        if model.name != name:
            log.info(
                "%s/%s: package calls itself %r; served as %r", name, version, model.name, name
            )
        # served to edge devices by FetchEncoder; read_verified refuses a file changed since
        encoder_onnx = read_verified(path, model.manifest, "encoder")
        pol = self.policy
        obs = self._observer
        v = Version(
            name=name,
            version=version,
            path=path,
            model=model,
            manifest_json=(path / MANIFEST_FILE).read_text(encoding="utf-8"),
            encoder_onnx=encoder_onnx,
            encoder_sha256=model.manifest.files["encoder"]["sha256"],
            decoder=Batcher(
                model.run_decoder,
                pol,
                obs(name, version, "decoder"),
                label=f"{name}/{version} decoder",
                prepare=model.prepare_codes,
            ),
            encoder=Batcher(
                model.run_encoder,
                pol,
                obs(name, version, "encoder"),
                label=f"{name}/{version} encoder",
                prepare=model.prepare_inputs,
            ),
        )
        if self._warmup:
            _warm_up(v, pol.max_batch)
        return v

    def scan(self) -> list[str]:
        """Load new version directories and drop removed ones; returns what changed."""
        with self._scan_lock:
            snap = self._snap
            changes: list[str] = []
            current = dict(snap.versions)
            seen = set()
            for name, version, path in self._candidates():
                seen.add((name, version))
                if (name, version) in current:
                    continue
                mtime = _signature(path)
                if self._failed.get(path) == mtime:
                    continue  # failed before and unchanged since: don't retry every poll
                try:
                    v = self._load(name, version, path)
                except Exception as exc:  # whatever breaks a package: skip it, keep serving
                    self._failed[path] = mtime
                    self._failed_to_load(name, version, exc, current)
                    continue
                self._failed.pop(path, None)
                self._failures.pop((name, version), None)
                current[(name, version)] = v
                changes.append(f"loaded {name}/{version} (fingerprint {v.fingerprint})")
            for key in [k for k in self._failures if k not in seen]:
                del self._failures[key]  # its directory is gone: nothing to report any more
            for key in [k for k in current if k not in seen]:
                changes.append(f"unloaded {key[0]}/{key[1]} (its directory is gone)")
                del current[key]
            if changes:
                self._snap = _Snapshot.of(current)
                for line in changes:
                    log.info("%s", line)
                if self._on_change is not None:
                    self._on_change()
            return changes

    def _failed_to_load(
        self, name: str, version: str, exc: Exception, current: dict[tuple[str, str], Version]
    ) -> None:
        """Record, log (one line, with the reason) and count a version that did not load."""
        reason = _reason(exc)
        self._failures[(name, version)] = reason
        serving = [v for (n, _), v in current.items() if n == name]
        still = ""
        if serving:
            latest = max(serving, key=lambda v: _version_key(v.version))
            still = f" ({name}/{latest.version} keeps serving)"
        log.warning("cannot load %s/%s: %s%s", name, version, reason, still)
        if not isinstance(exc, (LatentwireError, OSError)):  # not one we foresaw: keep where
            log.debug("%s/%s failed to load", name, version, exc_info=exc)
        if self._on_failure is not None:
            self._on_failure(name, version, reason)

    def watch(self, interval: float) -> None:
        """Rescan every `interval` seconds in a daemon thread until `stop()`."""

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.scan()
                except Exception:  # a scan must never kill the watcher
                    log.exception("model repository scan failed")

        self._thread = threading.Thread(target=loop, name="latentwire-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _reason(exc: BaseException) -> str:
    """One line saying why a load failed (our errors say it themselves; others get their
    class name, e.g. an ONNX Runtime error during the warm-up)."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, LatentwireError) and first:
        return first
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _signature(path: Path) -> object:
    """Names, sizes and mtimes of a package's files: a failed load is retried once it
    changes (e.g. a version directory still being copied in file by file)."""
    try:
        return sorted(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file()
        )
    except OSError:
        return None


_WARM_UP_BYTES = 64 << 20
"""The full-batch warm-up input stays under this, whatever sample size a manifest gives."""


def _warm_up(v: Version, max_batch: int) -> None:
    """Run both graphs once at batch 1 and once at a full batch, so the first real
    requests do not pay for ONNX Runtime's lazy allocations."""
    m = v.model.manifest
    for spec, run in ((m.latent, v.model.run_decoder), (m.input, v.model.run_encoder)):
        shape = tuple(d if d is not None else 4 * spec.multiple_of for d in spec.shape)
        per_sample = 4 * math.prod(shape)
        full = max(1, min(max_batch, 256, _WARM_UP_BYTES // max(per_sample, 1)))
        for n in sorted({1, full}):
            run(np.zeros((n, *shape), dtype=np.float32))
