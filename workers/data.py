"""Corpora as byte-token arrays, split into train and validation. Nothing is downloaded.

Sources (``load_corpus(source)``):

- ``None``: the embedded default, the running Python's standard-library ``.py``
  files (``sysconfig.get_paths()["stdlib"]``, without site-packages, test
  folders and the codec tables in ``encodings/``). Every machine with the same
  Python version gets the same corpus.
- a text file, a folder of text files (recursive), or a glob pattern;
- a pre-tokenized token file, ``.npy`` or ``.bin`` of uint8 / uint16, memory-mapped.

How the split is made:

- several text files: BY FILE. A file is in validation when a hash of its
  relative path falls below ``val_fraction``, so no file is in both splits and the
  split does not depend on the machine or on directory listing order. Files are
  taken in the order of a second hash until each split holds its share of
  ``max_tokens``, then joined (sorted by path) with a ``DOC`` token before each
  document. When the files cannot be split that way (one file, or every file
  hashed to one side), the last ``val_fraction`` of the joined stream is validation.
- one text file or a token file: the last ``val_fraction`` of the tokens.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import json
import os
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workers.tokens import DOC, N_BYTE_TOKENS, TOKEN_DTYPE

DEFAULT_MIN_TOKENS = 16_384
# A few MB of text is plenty for CPU-sized runs and cheap to hold in every worker.
DEFAULT_MAX_TOKENS = 4_000_000

TOKEN_FILE_SUFFIXES = (".npy", ".bin")
# Installed packages and tests are not the standard library proper; `encodings` is
# mostly generated codec tables, which would skew the loss towards trivia.
_SKIP_DIRS = frozenset(
    {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test", "encodings"}
)
_BINARY_SNIFF_BYTES = 8192
_CACHE_FORMAT = 1


class DataError(ValueError):
    """The data source is missing, empty, too small, or not usable text/tokens."""


@dataclass(frozen=True, eq=False)
class Corpus:
    """Train and validation token arrays of one source.

    ``train``/``val`` are uint16 arrays for text sources; token files keep their
    own dtype (uint8 or uint16) and stay memory-mapped. ``train_sources`` and
    ``val_sources`` name the files in each split (relative paths; one entry for a
    single-file source, which is then split by position).
    """

    train: np.ndarray
    val: np.ndarray
    description: str
    train_sources: tuple[str, ...] = field(default=())
    val_sources: tuple[str, ...] = field(default=())


def load_corpus(
    source: str | os.PathLike[str] | None = None,
    *,
    val_fraction: float = 0.1,
    min_tokens: int = DEFAULT_MIN_TOKENS,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    dtype: str | np.dtype | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Corpus:
    """Load ``source`` (see the module docstring) and split it deterministically.

    ``max_tokens`` caps how much text is read into memory (None = no cap); token
    files are memory-mapped and used whole. ``dtype`` overrides the element type of
    a ``.bin`` token file. With ``cache_dir``, the tokenized text corpus is stored
    there and reused while the files are unchanged; nothing is cached otherwise.
    Raises :class:`DataError` naming the path and the problem.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if max_tokens is not None and max_tokens < min_tokens:
        raise ValueError(f"max_tokens={max_tokens} is below min_tokens={min_tokens}")

    if source is None:
        root = Path(sysconfig.get_paths()["stdlib"])
        files = _stdlib_files(root)
        v = sys.version_info
        label = f"python-stdlib {v.major}.{v.minor}.{v.micro} ({root})"
        return _load_text_files(
            files, root, label, val_fraction, min_tokens, max_tokens, cache_dir, n_binary=0
        )

    path = Path(os.fspath(source)).expanduser()
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise DataError(f"data source {path}: folder contains no files")
        text_files, n_binary = _drop_binary(files)
        if not text_files:
            raise DataError(f"data source {path}: no text files ({n_binary} binary files skipped)")
        return _load_text_files(
            text_files,
            path,
            f"folder {path}",
            val_fraction,
            min_tokens,
            max_tokens,
            cache_dir,
            n_binary=n_binary,
        )
    if path.is_file():
        if path.suffix.lower() in TOKEN_FILE_SUFFIXES:
            return _load_token_file(path, val_fraction, min_tokens, dtype)
        return _load_text_files(
            [path],
            path.parent,
            f"text file {path}",
            val_fraction,
            min_tokens,
            max_tokens,
            cache_dir,
            n_binary=0,
        )
    if any(ch in str(source) for ch in "*?["):
        matches = sorted(Path(p) for p in globlib.glob(str(path), recursive=True))
        files = [p for p in matches if p.is_file()]
        if not files:
            raise DataError(f"data source {source}: glob pattern matches no files")
        text_files, n_binary = _drop_binary(files)
        if not text_files:
            raise DataError(
                f"data source {source}: no text files among the matches "
                f"({n_binary} binary files skipped)"
            )
        base = Path(os.path.commonpath([str(p.parent) for p in text_files]))
        return _load_text_files(
            text_files,
            base,
            f"glob {source}",
            val_fraction,
            min_tokens,
            max_tokens,
            cache_dir,
            n_binary=n_binary,
        )
    raise DataError(f"data source {path}: no such file or folder")


# --------------------------------------------------------------------------- text sources


def _stdlib_files(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DataError(f"data source python-stdlib: {root} is not a folder")
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
    if not out:
        raise DataError(f"data source python-stdlib: no .py files under {root}")
    return out


def is_binary(data: bytes) -> bool:
    """True for data that is not text: a NUL byte, or many control bytes at the start."""
    if b"\x00" in data:
        return True
    head = data[:_BINARY_SNIFF_BYTES]
    if not head:
        return False
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 12, 13, 27, 8))
    return controls / len(head) > 0.1


def _drop_binary(files: list[Path]) -> tuple[list[Path], int]:
    text, n_binary = [], 0
    for p in files:
        with open(p, "rb") as f:
            head = f.read(_BINARY_SNIFF_BYTES)
        if is_binary(head):
            n_binary += 1
        else:
            text.append(p)
    return text, n_binary


def _unit_hash(salt: str, rel: str) -> float:
    """A number in [0, 1) from a path; the same on every machine."""
    digest = hashlib.sha256(f"{salt}:{rel}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _read_text(path: Path, limit: int | None) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read() if limit is None else f.read(limit)
    except OSError as e:
        raise DataError(f"data source {path}: cannot read ({e.strerror})") from e
    if is_binary(data):
        raise DataError(f"data source {path}: binary file, not text")
    return data


def _join(docs: list[bytes]) -> np.ndarray:
    """Documents -> one token stream with a DOC token before each document."""
    if not docs:
        return np.zeros(0, dtype=TOKEN_DTYPE)
    total = sum(len(d) + 1 for d in docs)
    out = np.empty(total, dtype=TOKEN_DTYPE)
    pos = 0
    for d in docs:
        out[pos] = DOC
        out[pos + 1 : pos + 1 + len(d)] = np.frombuffer(d, dtype=np.uint8)
        pos += 1 + len(d)
    return out


def _load_text_files(
    files: list[Path],
    base: Path,
    label: str,
    val_fraction: float,
    min_tokens: int,
    max_tokens: int | None,
    cache_dir: str | os.PathLike[str] | None,
    *,
    n_binary: int,
) -> Corpus:
    rels = [p.relative_to(base).as_posix() for p in files]
    cache_path = None
    if cache_dir is not None:
        cache_path = _cache_path(Path(cache_dir), files, rels, val_fraction, max_tokens)
        if cache_path.exists():
            return _read_cache(cache_path)

    if len(files) == 1:
        data = _read_text(files[0], max_tokens)
        if not data:
            raise DataError(f"data source {files[0]}: file is empty")
        tokens = _join([data])[1:]  # a single document needs no separator
        if max_tokens is not None and len(data) == max_tokens:
            label += f" (first {max_tokens} bytes)"
        corpus = _split_tail(tokens, val_fraction, min_tokens, label, files[0], rels)
    else:
        corpus = _split_by_file(files, rels, label, val_fraction, min_tokens, max_tokens, n_binary)
    if cache_path is not None:
        _write_cache(cache_path, corpus)
    return corpus


def _split_by_file(
    files: list[Path],
    rels: list[str],
    label: str,
    val_fraction: float,
    min_tokens: int,
    max_tokens: int | None,
    n_binary: int,
) -> Corpus:
    caps = {
        "train": None if max_tokens is None else int(max_tokens * (1 - val_fraction)),
        "val": None if max_tokens is None else max_tokens - int(max_tokens * (1 - val_fraction)),
    }
    chosen: dict[str, list[tuple[str, bytes]]] = {"train": [], "val": []}
    sizes = {"train": 0, "val": 0}
    order = sorted(range(len(files)), key=lambda i: _unit_hash("order", rels[i]))
    for i in order:
        split = "val" if _unit_hash("split", rels[i]) < val_fraction else "train"
        cap = caps[split]
        if cap is not None and sizes[split] >= cap:
            if all(caps[s] is not None and sizes[s] >= caps[s] for s in caps):
                break
            continue
        data = _read_text(files[i], None)
        if not data:
            continue
        chosen[split].append((rels[i], data))
        sizes[split] += len(data) + 1
    total = sizes["train"] + sizes["val"]
    if total == 0:
        raise DataError(f"data source {label}: all {len(files)} files are empty")

    streams, sources = {}, {}
    for split in ("train", "val"):
        docs = sorted(chosen[split])
        sources[split] = tuple(rel for rel, _ in docs)
        stream = _join([d for _, d in docs])
        streams[split] = stream if caps[split] is None else stream[: caps[split]]

    if len(streams["train"]) < 2 or len(streams["val"]) < 2:
        # Too few files to split by file: fall back to the tail of the joined stream.
        everything = sorted(chosen["train"] + chosen["val"])
        tokens = _join([d for _, d in everything])
        if max_tokens is not None:
            tokens = tokens[:max_tokens]
        names = [rel for rel, _ in everything]
        return _split_tail(
            tokens, val_fraction, min_tokens, label + " (split by position)", None, names
        )

    n = len(streams["train"]) + len(streams["val"])
    if n < min_tokens:
        raise DataError(f"data source {label}: {n} tokens, fewer than min_tokens={min_tokens}")
    skipped = f", {n_binary} binary files skipped" if n_binary else ""
    description = (
        f"{label}: split by file, {len(sources['train'])} train / {len(sources['val'])} val files, "
        f"{len(streams['train'])} / {len(streams['val'])} tokens (max_tokens={max_tokens}{skipped})"
    )
    return Corpus(
        train=streams["train"],
        val=streams["val"],
        description=description,
        train_sources=sources["train"],
        val_sources=sources["val"],
    )


def _split_tail(
    tokens: np.ndarray,
    val_fraction: float,
    min_tokens: int,
    label: str,
    path: Path | None,
    names: list[str],
) -> Corpus:
    where = str(path) if path is not None else label
    n = len(tokens)
    if n < min_tokens:
        raise DataError(f"data source {where}: {n} tokens, fewer than min_tokens={min_tokens}")
    n_val = int(round(n * val_fraction))
    if n_val < 2 or n - n_val < 2:
        raise DataError(
            f"data source {where}: {n} tokens leave no usable validation split "
            f"at val_fraction={val_fraction}"
        )
    description = (
        f"{label}: last {val_fraction:g} of the tokens is validation, {n - n_val} / {n_val} tokens"
    )
    return Corpus(
        train=tokens[: n - n_val],
        val=tokens[n - n_val :],
        description=description,
        train_sources=tuple(names),
        val_sources=tuple(names),
    )


# --------------------------------------------------------------------------- token files


def _token_file_dtype(path: Path, dtype: str | np.dtype | None) -> np.dtype:
    if dtype is not None:
        dt = np.dtype(dtype)
    else:
        name = path.name.lower()
        dt = np.dtype(np.uint8) if name.endswith((".u8.bin", ".uint8.bin")) else np.dtype(np.uint16)
    if dt not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise DataError(f"data source {path}: token dtype {dt} is not uint8 or uint16")
    return dt


def _load_token_file(
    path: Path, val_fraction: float, min_tokens: int, dtype: str | np.dtype | None
) -> Corpus:
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"data source {path}: file is empty")
    if path.suffix.lower() == ".npy":
        try:
            tokens = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            raise DataError(f"data source {path}: not a readable .npy array ({e})") from e
        if tokens.ndim != 1 or tokens.dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
            raise DataError(
                f"data source {path}: expected a 1-D uint8/uint16 array, "
                f"got shape {tokens.shape} dtype {tokens.dtype}"
            )
        if dtype is not None and np.dtype(dtype) != tokens.dtype:
            raise DataError(f"data source {path}: file holds {tokens.dtype}, dtype={dtype} given")
    else:
        dt = _token_file_dtype(path, dtype)
        if size % dt.itemsize:
            raise DataError(f"data source {path}: {size} bytes is not a whole number of {dt}")
        tokens = np.memmap(path, dtype=dt, mode="r")
    _check_token_range(path, tokens)
    corpus = _split_tail(
        tokens, val_fraction, min_tokens, f"token file {path} ({tokens.dtype})", path, [path.name]
    )
    return corpus


def _check_token_range(path: Path, tokens: np.ndarray) -> None:
    """A corpus holds bytes and DOC separators only: task markers must stay unambiguous."""
    if tokens.dtype == np.uint8:
        return
    chunk = 1 << 22
    for start in range(0, len(tokens), chunk):
        part = np.asarray(tokens[start : start + chunk])
        bad = (part >= N_BYTE_TOKENS) & (part != DOC)
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"data source {path}: token {int(part[i])} at index {start + i} is outside the "
                f"byte vocabulary (allowed: 0..{N_BYTE_TOKENS - 1} and DOC={DOC}); a byte file "
                f"read as uint16? pass dtype='uint8' or name it *.u8.bin"
            )


# --------------------------------------------------------------------------- cache


def _cache_path(
    cache_dir: Path, files: list[Path], rels: list[str], val_fraction: float, max_tokens: int | None
) -> Path:
    h = hashlib.sha256()
    h.update(json.dumps([_CACHE_FORMAT, val_fraction, max_tokens]).encode())
    for p, rel in zip(files, rels, strict=True):
        st = p.stat()
        h.update(f"{p.resolve()}\0{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return cache_dir / f"corpus-{h.hexdigest()[:20]}.npz"


def _write_cache(path: Path, corpus: Corpus) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps(
        {
            "description": corpus.description,
            "train_sources": list(corpus.train_sources),
            "val_sources": list(corpus.val_sources),
        }
    )
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
    np.savez(tmp, train=corpus.train, val=corpus.val, meta=np.array(meta))
    os.replace(tmp, path)


def _read_cache(path: Path) -> Corpus:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        return Corpus(
            train=z["train"],
            val=z["val"],
            description=meta["description"] + " [cached]",
            train_sources=tuple(meta["train_sources"]),
            val_sources=tuple(meta["val_sources"]),
        )
