"""Corpora from local files, split into train and validation. Nothing is downloaded.

Sources (``load_corpus(source)``):

- ``None``: the embedded default, the running Python's standard-library ``.py``
  files (``sysconfig.get_paths()["stdlib"]``, without site-packages, test
  folders and the codec tables in ``encodings/``). Every machine with the same
  Python version gets the same corpus.
- a text file, a folder of text files (recursive), or a glob pattern;
- JSON Lines (``.jsonl``, ``.ndjson``): one document per line, its text in the field
  ``text_field``; Parquet (``.parquet``): one document per row of the column
  ``text_field``; a glob of either;
- a Hugging Face ``datasets`` folder written by ``save_to_disk`` (a ``Dataset`` or a
  ``DatasetDict``, every split read): one document per row of ``text_field``, read from
  its Arrow files with pyarrow (the ``datasets`` package is not needed);
- a pre-tokenized token file, ``.npy`` or ``.bin`` of uint8 / uint16 / uint32,
  memory-mapped: byte tokens (with ``DOC`` separators) by default, or the ids of
  another tokenizer when ``vocab_size`` is given.

Text sources give byte tokens (uint16, a ``DOC`` token before each document); another
tokenizer re-encodes them (:mod:`workers.corpus`), document by document.

How the split is made:

- several documents (files, records): BY DOCUMENT. A document is in validation when a
  hash of its name (relative path, ``path#row`` for records) falls below
  ``val_fraction``, so no document is in both splits and the split does not depend on
  the machine or on listing order. Text files are taken in the order of a second hash,
  records in file order, until each split holds its share of ``max_tokens`` bytes; then
  each split is joined with a ``DOC`` token before each document. When the documents
  cannot be split that way (one document, or every one hashed to one side), the last
  ``val_fraction`` of the joined stream is validation.
- one text file or a token file: the last ``val_fraction`` of the tokens.
"""

from __future__ import annotations

import glob as globlib
import hashlib
import os
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workers.data_files import (
    HF_DATASET_DICT,
    HF_DATASET_STATE,
    DataError,
    hf_dataset_files,
    read_token_file,
    records,
)
from workers.tokens import DOC, TOKEN_DTYPE

DEFAULT_MIN_TOKENS = 16_384
# A few MB of text is plenty for CPU-sized runs and cheap to hold in every worker.
DEFAULT_MAX_TOKENS = 4_000_000

TOKEN_FILE_SUFFIXES = (".npy", ".bin")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)
# Installed packages and tests are not the standard library proper; `encodings` is
# mostly generated codec tables, which would skew the loss towards trivia.
_SKIP_DIRS = frozenset(
    {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test", "encodings"}
)
_BINARY_SNIFF_BYTES = 8192


@dataclass(frozen=True, eq=False)
class Corpus:
    """Train and validation token arrays of one source.

    ``train``/``val`` are uint16 byte tokens for text sources (``is_text``); token files
    keep their own dtype and stay memory-mapped. ``train_sources`` and ``val_sources``
    name the documents in each split (relative paths, ``path#row`` for records; one
    entry for a single-file source, which is then split by position).
    """

    train: np.ndarray
    val: np.ndarray
    description: str
    train_sources: tuple[str, ...] = field(default=())
    val_sources: tuple[str, ...] = field(default=())
    is_text: bool = True  # byte tokens of text (False: a pre-tokenized file)


def load_corpus(
    source: str | os.PathLike[str] | None = None,
    *,
    val_fraction: float = 0.1,
    min_tokens: int = DEFAULT_MIN_TOKENS,
    max_tokens: int | None = DEFAULT_MAX_TOKENS,
    dtype: str | np.dtype | None = None,
    text_field: str = "text",
    vocab_size: int | None = None,
) -> Corpus:
    """Load ``source`` (see the module docstring) and split it deterministically.

    ``max_tokens`` caps how much text is read, in bytes (None = no cap); token files
    are memory-mapped and used whole. ``dtype`` overrides the element type of a ``.bin``
    token file; ``vocab_size`` declares that a token file holds ids below it (of some
    other tokenizer) rather than bytes. Raises :class:`DataError` naming the path and
    the problem.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if max_tokens is not None and max_tokens < min_tokens:
        raise ValueError(f"max_tokens={max_tokens} is below min_tokens={min_tokens}")
    kind, files, base, label = resolve_source(source)
    if kind == "tokens":
        return _load_token_file(files[0], val_fraction, min_tokens, dtype, vocab_size)
    if vocab_size is not None:
        raise DataError(f"data source {label}: vocab_size is for pre-tokenized .npy/.bin files")
    if kind in ("jsonl", "parquet", "hf_dataset"):
        docs = records(kind, files, base, text_field)
        return _split_records(docs, label, val_fraction, min_tokens, max_tokens)
    if kind == "stdlib":
        return _load_text_files(files, base, label, val_fraction, min_tokens, max_tokens)
    text_files = _refuse_binary(files, label)
    return _load_text_files(text_files, base, label, val_fraction, min_tokens, max_tokens)


def resolve_source(
    source: str | os.PathLike[str] | None,
) -> tuple[str, list[Path], Path, str]:
    """``(kind, files, base, label)``: what ``source`` is and every file its content
    comes from (what a content-addressed cache must hash). ``kind`` is one of
    ``stdlib``, ``text``, ``jsonl``, ``parquet``, ``hf_dataset``, ``tokens``."""
    if source is None:
        root = Path(sysconfig.get_paths()["stdlib"])
        v = sys.version_info
        label = f"python-stdlib {v.major}.{v.minor}.{v.micro} ({root})"
        return "stdlib", _stdlib_files(root), root, label

    path = Path(os.fspath(source)).expanduser()
    if path.is_dir():
        if (path / HF_DATASET_STATE).is_file() or (path / HF_DATASET_DICT).is_file():
            return "hf_dataset", hf_dataset_files(path), path, f"datasets folder {path}"
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise DataError(f"data source {path}: folder contains no files")
        return "text", files, path, f"folder {path}"
    if path.is_file():
        kind = _file_kind(path)
        label = {"tokens": "token file", "text": "text file"}.get(kind, f"{kind} file")
        return kind, [path], path.parent, f"{label} {path}"
    if any(ch in str(source) for ch in "*?["):
        matches = sorted(Path(p) for p in globlib.glob(str(path), recursive=True))
        files = [p for p in matches if p.is_file()]
        if not files:
            raise DataError(f"data source {source}: glob pattern matches no files")
        kinds = {_file_kind(p) for p in files}
        if len(kinds) > 1:
            raise DataError(
                f"data source {source}: the glob mixes kinds of files ({sorted(kinds)}); "
                "narrow it to one kind (e.g. *.jsonl)"
            )
        kind = kinds.pop()
        if kind == "tokens":
            raise DataError(f"data source {source}: name one token file, not a glob")
        base = Path(os.path.commonpath([str(p.parent) for p in files]))
        return kind, files, base, f"glob {source}"
    raise DataError(f"data source {path}: no such file or folder")


def _file_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in TOKEN_FILE_SUFFIXES:
        return "tokens"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    return "text"


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


def _refuse_binary(files: list[Path], label: str) -> list[Path]:
    """Text sources hold text: a binary file among them is an error naming it (a corpus
    silently missing files, or training on image bytes, is worse than stopping)."""
    binary = []
    for p in files:
        with open(p, "rb") as f:
            if is_binary(f.read(_BINARY_SNIFF_BYTES)):
                binary.append(p)
    if binary:
        more = f" and {len(binary) - 1} more" if len(binary) > 1 else ""
        raise DataError(
            f"data source {binary[0]}: binary file, not text{more} (in {label}); "
            "select the text files with a glob, e.g. 'folder/**/*.txt'"
        )
    return files


def _unit_hash(salt: str, rel: str) -> float:
    """A number in [0, 1) from a name; the same on every machine."""
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


def _caps(max_tokens: int | None, val_fraction: float) -> dict[str, int | None]:
    return {
        "train": None if max_tokens is None else int(max_tokens * (1 - val_fraction)),
        "val": None if max_tokens is None else max_tokens - int(max_tokens * (1 - val_fraction)),
    }


def _load_text_files(
    files: list[Path],
    base: Path,
    label: str,
    val_fraction: float,
    min_tokens: int,
    max_tokens: int | None,
) -> Corpus:
    rels = [p.relative_to(base).as_posix() for p in files]
    if len(files) == 1:
        data = _read_text(files[0], max_tokens)
        if not data:
            raise DataError(f"data source {files[0]}: file is empty")
        tokens = _join([data])[1:]  # a single document needs no separator
        if max_tokens is not None and len(data) == max_tokens:
            label += f" (first {max_tokens} bytes)"
        return _split_tail(tokens, val_fraction, min_tokens, label, files[0], rels)

    caps = _caps(max_tokens, val_fraction)
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
    if sizes["train"] + sizes["val"] == 0:
        raise DataError(f"data source {label}: all {len(files)} files are empty")
    for split in chosen:
        chosen[split].sort()
    return _split_documents(chosen, caps, label, val_fraction, min_tokens, max_tokens, "file")


def _split_documents(
    chosen: dict[str, list[tuple[str, bytes]]],
    caps: dict[str, int | None],
    label: str,
    val_fraction: float,
    min_tokens: int,
    max_tokens: int | None,
    unit: str,
) -> Corpus:
    streams, sources = {}, {}
    for split in ("train", "val"):
        docs = chosen[split]
        sources[split] = tuple(name for name, _ in docs)
        stream = _join([d for _, d in docs])
        streams[split] = stream if caps[split] is None else stream[: caps[split]]

    if len(streams["train"]) < 2 or len(streams["val"]) < 2:
        # Too few documents to split by document: fall back to the tail of the stream.
        everything = sorted(chosen["train"] + chosen["val"])
        tokens = _join([d for _, d in everything])
        if max_tokens is not None:
            tokens = tokens[:max_tokens]
        names = [name for name, _ in everything]
        return _split_tail(
            tokens, val_fraction, min_tokens, label + " (split by position)", None, names
        )

    n = len(streams["train"]) + len(streams["val"])
    if n < min_tokens:
        raise DataError(f"data source {label}: {n} tokens, fewer than min_tokens={min_tokens}")
    description = (
        f"{label}: split by {unit}, {len(sources['train'])} train / {len(sources['val'])} val "
        f"{unit}s, {len(streams['train'])} / {len(streams['val'])} tokens "
        f"(max_tokens={max_tokens})"
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
    is_text: bool = True,
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
        is_text=is_text,
    )


def _split_records(
    docs: Iterator[tuple[str, str]],
    label: str,
    val_fraction: float,
    min_tokens: int,
    max_tokens: int | None,
) -> Corpus:
    """By document, in reading order, until each split holds its share of the cap."""
    caps = _caps(max_tokens, val_fraction)
    chosen: dict[str, list[tuple[str, bytes]]] = {"train": [], "val": []}
    sizes = {"train": 0, "val": 0}
    n_docs = 0
    for name, text in docs:
        n_docs += 1
        split = "val" if _unit_hash("split", name) < val_fraction else "train"
        cap = caps[split]
        if cap is not None and sizes[split] >= cap:
            if all(caps[s] is not None and sizes[s] >= caps[s] for s in caps):
                break
            continue
        data = text.encode("utf-8")
        if not data:
            continue
        chosen[split].append((name, data))
        sizes[split] += len(data) + 1
    if n_docs == 0:
        raise DataError(f"data source {label}: no records")
    if sizes["train"] + sizes["val"] == 0:
        raise DataError(f"data source {label}: all {n_docs} records are empty")
    return _split_documents(chosen, caps, label, val_fraction, min_tokens, max_tokens, "record")


# --------------------------------------------------------------------------- token files


def _load_token_file(
    path: Path,
    val_fraction: float,
    min_tokens: int,
    dtype: str | np.dtype | None,
    vocab_size: int | None,
) -> Corpus:
    tokens = read_token_file(path, dtype, vocab_size)
    what = "bytes" if vocab_size is None else f"vocabulary {vocab_size}"
    return _split_tail(
        tokens,
        val_fraction,
        min_tokens,
        f"token file {path} ({tokens.dtype}, {what})",
        path,
        [path.name],
        is_text=vocab_size is None,
    )
