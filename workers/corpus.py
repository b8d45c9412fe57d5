"""The tokenized corpus of a study: built once, before any trial, then only read.

``prepare(config, cache_dir)`` loads the ``data:`` source, trains or loads the tokenizer,
tokenizes both splits and writes them as memory-mappable token shards into a
content-addressed cache entry; it returns a small, picklable :class:`CorpusHandle`
that the sweep driver hands to every trial, and that trials ``open()`` read-only (local
or on cluster workers sharing the runs volume). Nothing is ever downloaded.

The entry's key is a hash of every source file's *content* (not its modification time),
the data options that shape the corpus, and the tokenizer (its settings, or the
content of its file). Rebuilding is skipped when the entry exists; a changed file
gives a new key. Building takes a lock file next to the entry and finishes with an
atomic rename, so two processes building at once neither corrupt nor duplicate it: the
second waits and then reads what the first built. Every build appends one line to
``builds.log`` in the cache folder as it starts (what the tests count).

Layout of an entry ``<cache_dir>/corpus/<key>/``: ``train.bin`` and ``val.bin`` (raw
token ids, uint16 or uint32), ``meta.json`` (dtype, counts, description, vocabulary) and,
for a trained or file tokenizer, ``tokenizer.json``.

Pre-tokenized ``.npy``/``.bin`` sources are not copied: the handle points into the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from space.schema import SweepConfig
from space.tasks import min_length, task_params
from space.vocab import BYTES, Vocabulary, subword_vocabulary, tokenizer_file_path
from workers.data import DataError, load_corpus, resolve_source
from workers.tokenizer import (
    BYTE_TOKENIZER,
    IdsOnlyTokenizer,
    Tokenizer,
    TokenizerError,
    load_tokenizer_file,
    train_bpe,
)
from workers.tokens import DOC as BYTE_DOC

CACHE_FORMAT = 1
CORPUS_DIR = "corpus"  # under the cache folder
BUILD_LOG = "builds.log"
META_FILE = "meta.json"
TOKENIZER_FILE = "tokenizer.json"
HOME_ENV = "ROPENOPE_HOME"  # the runs folder, as search.study.runs_dir() reads it
_HASH_CHUNK = 1 << 20
_ENCODE_CHUNK_BYTES = 1 << 20  # text per encode_batch call (and progress-bar step)


@dataclass(frozen=True)
class TokenRef:
    """Tokens ``[start, stop)`` of a raw or ``.npy`` token file, opened memory-mapped."""

    path: str
    dtype: str
    start: int
    stop: int

    def open(self) -> np.ndarray:
        if self.path.endswith(".npy"):
            tokens = np.load(self.path, mmap_mode="r", allow_pickle=False)
        else:
            tokens = np.memmap(self.path, dtype=np.dtype(self.dtype), mode="r")
        return tokens[self.start : self.stop]

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class CorpusHandle:
    """Where a prepared corpus lies and how to read it (small; pickled to every trial)."""

    key: str
    description: str
    train: TokenRef
    val: TokenRef
    vocab: Vocabulary
    tokenizer_kind: str  # bytes | bpe | file | none (ids of an unknown tokenizer)
    tokenizer_path: str | None = None
    entry: str | None = None  # the cache entry folder (None: a token file read in place)

    def open(self) -> PreparedCorpus:
        """The corpus, memory-mapped read-only (one per process: cached)."""
        return _open(self)

    def is_here(self) -> bool:
        """Whether this machine sees the shards (a cluster worker without the shared runs
        volume does not)."""
        return Path(self.train.path).is_file() and Path(self.val.path).is_file()


@dataclass(frozen=True, eq=False)
class PreparedCorpus:
    """What a trial trains and scores on: both splits and the tokenizer that made them."""

    train: np.ndarray
    val: np.ndarray
    tokenizer: Tokenizer  # IdsOnlyTokenizer for pre-tokenized ids of an unknown tokenizer
    vocab: Vocabulary
    description: str


def default_cache_dir() -> Path:
    """``$ROPENOPE_HOME/cache``, else ``./runs/cache`` (the runs folder of a study)."""
    home = os.environ.get(HOME_ENV)
    runs = Path(home).expanduser() if home else Path.cwd() / "runs"
    return (runs / "cache").resolve()


# --------------------------------------------------------------------------- prepare


def prepare(
    config: SweepConfig, cache_dir: str | os.PathLike[str] | None = None, *, progress: bool = True
) -> CorpusHandle:
    """Build (or find) the tokenized corpus of ``config.data`` and check it fits the sweep.

    Raises :class:`DataError` naming the file and the problem (a missing field or
    column, a binary file among text, token ids beyond the declared vocabulary, a
    tokenizer file that does not parse, a corpus smaller than one batch ...).
    """
    d = config.data
    kind, files, base, label = resolve_source(d.source)
    if kind == "tokens":
        handle = _token_file_handle(config, files[0])
    else:
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        key = _cache_key(config, kind, files, base)
        entry = cache / CORPUS_DIR / key
        if not (entry / META_FILE).is_file():
            with _locked(entry, label, progress):
                if not (entry / META_FILE).is_file():
                    _build(config, entry, key, label, progress)
        handle = _read_handle(entry, key)
    check_fits(config, handle)
    return handle


def _token_file_handle(config: SweepConfig, path: Path) -> CorpusHandle:
    d = config.data
    tokenizer: Tokenizer | None = None
    vocab_size = d.vocab_size
    if d.tokenizer.file is not None:
        tokenizer = _load_file_tokenizer(d.tokenizer.file)
        vocab_size = tokenizer.vocab.text_size
    corpus = load_corpus(
        path, val_fraction=d.val_fraction, min_tokens=1, dtype=d.dtype, vocab_size=vocab_size
    )
    n_train = len(corpus.train)
    total = n_train + len(corpus.val)
    dtype, where = str(corpus.train.dtype), str(path.resolve())
    train, val = TokenRef(where, dtype, 0, n_train), TokenRef(where, dtype, n_train, total)
    if tokenizer is not None:
        vocab, kind, tok_path = tokenizer.vocab, "file", str(tokenizer_file_path(d.tokenizer.file))
    elif d.vocab_size is not None:
        vocab, kind, tok_path = subword_vocabulary(d.vocab_size), "none", None
    else:
        vocab, kind, tok_path = BYTES, "bytes", None
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()
    return CorpusHandle(
        key=key[:20],
        description=corpus.description,
        train=train,
        val=val,
        vocab=vocab,
        tokenizer_kind=kind,
        tokenizer_path=tok_path,
    )


def _load_file_tokenizer(path: str, text_size: int | None = None) -> Tokenizer:
    try:
        return load_tokenizer_file(path, text_size=text_size)
    except TokenizerError as err:
        raise DataError(f"data.tokenizer: {err}") from None


# --------------------------------------------------------------------------- cache key


def file_digest(path: Path) -> str:
    """sha256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_HASH_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _cache_key(config: SweepConfig, kind: str, files: list[Path], base: Path) -> str:
    d = config.data
    tok = d.tokenizer
    tokenizer: dict[str, Any] = {"kind": tok.kind}
    if tok.bpe is not None:
        tokenizer.update(tok.bpe.model_dump())
    if tok.file is not None:
        file = tokenizer_file_path(tok.file)
        if not file.is_file():
            raise DataError(f"data.tokenizer: tokenizer {file}: no such file")
        tokenizer["sha256"] = file_digest(file)
    h = hashlib.sha256()
    options = {
        "format": CACHE_FORMAT,
        "kind": kind,
        "val_fraction": d.val_fraction,
        "max_text_bytes": d.max_text_bytes,
        "text_field": d.text_field if kind in ("jsonl", "parquet", "hf_dataset") else None,
        "tokenizer": tokenizer,
    }
    h.update(json.dumps(options, sort_keys=True).encode())
    for path in files:
        rel = path.relative_to(base).as_posix()
        h.update(f"\n{rel}\0{path.stat().st_size}\0{file_digest(path)}".encode())
    return h.hexdigest()[:24]


# --------------------------------------------------------------------------- building


@contextlib.contextmanager
def _locked(entry: Path, label: str, progress: bool) -> Iterator[None]:
    """An exclusive lock on ``<entry>.lock``; waits (and says so) while another holds it."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.with_name(entry.name + ".lock"), "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(progress, f"corpus cache: another process is building {entry.name}; waiting")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def _build(config: SweepConfig, entry: Path, key: str, label: str, progress: bool) -> None:
    d = config.data
    t0 = time.perf_counter()
    _say(progress, f"corpus cache: building {entry} from {label}")
    with open(entry.parent / BUILD_LOG, "a") as log:
        log.write(json.dumps({"key": key, "pid": os.getpid(), "at": time.time()}) + "\n")
    corpus = load_corpus(
        d.source,
        val_fraction=d.val_fraction,
        min_tokens=1,
        max_tokens=d.max_text_bytes,
        text_field=d.text_field,
    )
    tmp = entry.with_name(f"{entry.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    tmp.mkdir(parents=True)
    try:
        tok = d.tokenizer
        if tok.kind == "bytes":
            tokenizer: Tokenizer = BYTE_TOKENIZER
            train = np.asarray(corpus.train, dtype=np.uint16)
            val = np.asarray(corpus.val, dtype=np.uint16)
        else:
            train_docs = list(_documents(corpus.train))
            if tok.bpe is not None:
                n_bytes = sum(len(b) for _, b in train_docs)
                _say(
                    progress,
                    f"corpus cache: training a byte-level BPE of {tok.bpe.vocab_size} tokens "
                    f"on the training split ({n_bytes / 1e6:.1f} MB)",
                )
                tokenizer = train_bpe(
                    (b.decode("utf-8", errors="replace") for _, b in train_docs),
                    tok.bpe.vocab_size,
                    min_frequency=tok.bpe.min_frequency,
                    length=len(train_docs),
                )
            else:
                tokenizer = _load_file_tokenizer(tok.file)
            tokenizer.save(tmp / TOKENIZER_FILE)
            train = _encode(train_docs, tokenizer, "train", progress)
            val = _encode(list(_documents(corpus.val)), tokenizer, "val", progress)
        dtype = tokenizer.token_dtype
        description = corpus.description
        if tok.kind != "bytes":  # the loader counted byte tokens
            description += (
                f"; {tok.kind} tokenizer ({tokenizer.vocab.text_size} ids): "
                f"{len(train)} / {len(val)} tokens"
            )
        train.astype(dtype, copy=False).tofile(tmp / "train.bin")
        val.astype(dtype, copy=False).tofile(tmp / "val.bin")
        meta = {
            "format": CACHE_FORMAT,
            "key": key,
            "description": description,
            "dtype": str(dtype),
            "train_tokens": int(len(train)),
            "val_tokens": int(len(val)),
            "train_bytes": int(tokenizer.count_bytes(train)),
            "val_bytes": int(tokenizer.count_bytes(val)),
            "tokenizer": tok.kind,
            "vocab": {"text_size": tokenizer.vocab.text_size, "size": tokenizer.vocab.size},
            "built_at": time.time(),
            "build_seconds": time.perf_counter() - t0,
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        try:
            os.rename(tmp, entry)  # atomic: readers see all of the entry or none of it
        except OSError:
            if not (entry / META_FILE).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another machine won; same content
            return
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    ratio = meta["train_bytes"] / max(1, meta["train_tokens"])
    _say(
        progress,
        f"corpus cache: {meta['train_tokens']} train / {meta['val_tokens']} val tokens "
        f"({ratio:.2f} bytes per token) in {meta['build_seconds']:.1f} s",
    )


def _documents(byte_tokens: np.ndarray) -> Iterator[tuple[bool, bytes]]:
    """A byte-token stream -> ``(starts with DOC, text bytes)`` per document piece."""
    stream = np.asarray(byte_tokens)
    cuts = np.flatnonzero(stream == BYTE_DOC)
    if len(cuts) == 0 or cuts[0] != 0:
        head = stream[: cuts[0] if len(cuts) else len(stream)]
        yield False, head.astype(np.uint8).tobytes()
    for k, start in enumerate(cuts):
        stop = cuts[k + 1] if k + 1 < len(cuts) else len(stream)
        yield True, stream[start + 1 : stop].astype(np.uint8).tobytes()


def _encode(
    docs: list[tuple[bool, bytes]], tokenizer: Tokenizer, split: str, progress: bool
) -> np.ndarray:
    """Documents -> one token stream, ``DOC`` before each document that had one."""
    from tqdm import tqdm

    total = sum(len(b) for _, b in docs)
    out: list[np.ndarray] = []
    doc = np.array([tokenizer.vocab.doc], dtype=np.int64)
    with tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        desc=f"tokenizing {split}",
        disable=not progress,
        file=sys.stderr,
    ) as bar:
        batch: list[tuple[bool, bytes]] = []
        size = 0
        for item in [*docs, None]:
            if item is not None:
                batch.append(item)
                size += len(item[1])
                if size < _ENCODE_CHUNK_BYTES:
                    continue
            if not batch:
                break
            texts = [b.decode("utf-8", errors="replace") for _, b in batch]
            for (has_doc, _), ids in zip(batch, tokenizer.encode_batch(texts), strict=True):
                if has_doc:
                    out.append(doc)
                out.append(ids)
            bar.update(size)
            batch, size = [], 0
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


# --------------------------------------------------------------------------- reading


def _read_handle(entry: Path, key: str) -> CorpusHandle:
    meta = json.loads((entry / META_FILE).read_text())
    vocab = Vocabulary(text_size=meta["vocab"]["text_size"], size=meta["vocab"]["size"])
    tok_path = entry / TOKENIZER_FILE
    return CorpusHandle(
        key=key,
        description=meta["description"],
        train=TokenRef(str(entry / "train.bin"), meta["dtype"], 0, meta["train_tokens"]),
        val=TokenRef(str(entry / "val.bin"), meta["dtype"], 0, meta["val_tokens"]),
        vocab=vocab,
        tokenizer_kind=meta["tokenizer"],
        tokenizer_path=str(tok_path) if tok_path.is_file() else None,
        entry=str(entry),
    )


@lru_cache(maxsize=4)
def _open(handle: CorpusHandle) -> PreparedCorpus:
    # One open per process: trials reuse it (Ray reuses worker processes).
    tokenizer: Tokenizer
    if handle.tokenizer_kind == "bytes":
        tokenizer = BYTE_TOKENIZER
    elif handle.tokenizer_kind == "none":
        tokenizer = IdsOnlyTokenizer(handle.vocab)
    else:
        if handle.tokenizer_path is None:
            raise DataError(f"corpus cache {handle.entry}: the tokenizer file is missing")
        tokenizer = load_tokenizer_file(
            handle.tokenizer_path, kind=handle.tokenizer_kind, text_size=handle.vocab.text_size
        )
    return PreparedCorpus(
        train=handle.train.open(),
        val=handle.val.open(),
        tokenizer=tokenizer,
        vocab=handle.vocab,
        description=handle.description,
    )


# --------------------------------------------------------------------------- checks


def check_fits(config: SweepConfig, handle: CorpusHandle) -> None:
    """The corpus must hold a batch, the longest scoring window, and every task's example
    at the training length under its tokenizer. Raises DataError saying which."""
    t, s = config.train, config.score
    where = handle.description.split(":")[0]
    if handle.vocab.size > config.base_shape().vocab_size:
        raise DataError(
            f"data source {where}: its vocabulary of {handle.vocab.size} does not fit "
            f"model.vocab_size={config.base_shape().vocab_size}"
        )
    batch = t.batch_size * (t.seq_len + 1)
    if len(handle.train) < batch:
        raise DataError(
            f"data source {where}: the training split holds {len(handle.train)} tokens, "
            f"fewer than one batch ({t.batch_size} x {t.seq_len + 1} = {batch}); "
            "use a larger corpus or a smaller train.batch_size / seq_len"
        )
    longest = max([*s.extrap, *(s.lengths if s.families else ()), 1]) * t.final_seq_len + 1
    if len(handle.val) < longest:
        raise DataError(
            f"data source {where}: the validation split holds {len(handle.val)} tokens; "
            f"scoring needs {longest} (the longest of score.lengths / score.extrap times "
            f"train.final_seq_len); use a larger corpus or data.val_fraction"
        )
    if handle.tokenizer_kind in ("bytes", "none"):
        return  # the byte lengths were checked by the schema; no tasks without a tokenizer
    from workers.tasks import token_bounds

    tokenizer = handle.open().tokenizer
    bounds = token_bounds(tokenizer)
    for task in dict.fromkeys([*t.task_mix, *s.families]):
        params = t.task_params.get(task, {})
        need = min_length(task, bounds, **task_params(task, **params))
        if need > t.seq_len + 1:
            raise DataError(
                f"task {task!r} needs up to {need} tokens of the {handle.tokenizer_kind} "
                f"tokenizer; train.seq_len={t.seq_len} holds {t.seq_len + 1}"
            )
