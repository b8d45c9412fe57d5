"""Reading the file formats a corpus comes in, for :mod:`workers.data`: documents out of
JSON Lines, Parquet and Hugging Face ``save_to_disk`` folders (Arrow streams, read with
pyarrow), and token ids out of pre-tokenized ``.npy`` / ``.bin`` files. Every problem is
a :class:`DataError` naming the file (and the line, for JSON Lines)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from workers.tokens import DOC, N_BYTE_TOKENS

TOKEN_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32))
# What save_to_disk writes: a Dataset folder, and a DatasetDict folder of Dataset folders.
HF_DATASET_STATE = "state.json"
HF_DATASET_DICT = "dataset_dict.json"


class DataError(ValueError):
    """The data source is missing, empty, too small, or not usable text/tokens."""


# --------------------------------------------------------------------------- records


def hf_dataset_files(folder: Path) -> list[Path]:
    """Every file a ``save_to_disk`` folder's content comes from, in reading order: per
    Dataset folder its ``state.json`` then its Arrow files."""
    if (folder / HF_DATASET_DICT).is_file():
        meta = _read_json(folder / HF_DATASET_DICT)
        splits = meta.get("splits") if isinstance(meta, dict) else None
        if not isinstance(splits, list) or not splits:
            raise DataError(f"data source {folder / HF_DATASET_DICT}: no 'splits' list")
        out: list[Path] = []
        for split in splits:
            out += hf_dataset_files(folder / str(split))
        return out
    state_path = folder / HF_DATASET_STATE
    if not state_path.is_file():
        raise DataError(f"data source {folder}: no {HF_DATASET_STATE} (not a save_to_disk folder)")
    state = _read_json(state_path)
    entries = state.get("_data_files") if isinstance(state, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DataError(f"data source {state_path}: no '_data_files' list")
    arrows = []
    for entry in entries:
        name = entry.get("filename") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not (folder / name).is_file():
            raise DataError(f"data source {state_path}: data file {name!r} is missing")
        arrows.append(folder / name)
    return [state_path, *arrows]


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"data source {path}: not readable JSON ({err})") from None


def records(kind: str, files: list[Path], base: Path, text_field: str) -> Iterator[tuple[str, str]]:
    """``(name, text)`` of every document, in file order then row order."""
    for path in files:
        rel = path.relative_to(base).as_posix()
        if kind == "jsonl":
            yield from _jsonl_records(path, rel, text_field)
        elif kind == "parquet":
            yield from _parquet_records(path, rel, text_field)
        elif path.suffix == ".arrow":  # hf_dataset: state.json files hold no rows
            yield from _arrow_records(path, rel, text_field)


def _jsonl_records(path: Path, rel: str, text_field: str) -> Iterator[tuple[str, str]]:
    with open(path, encoding="utf-8", errors="strict") as f:
        for line_no, line in enumerate(_lines(f, path), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"data source {path} line {line_no}: not JSON ({err})") from None
            if not isinstance(record, dict):
                raise DataError(f"data source {path} line {line_no}: expected a JSON object")
            if text_field not in record:
                raise DataError(
                    f"data source {path} line {line_no}: no field {text_field!r} "
                    f"(fields: {sorted(record)}); set data.text_field"
                )
            text = record[text_field]
            if not isinstance(text, str):
                raise DataError(
                    f"data source {path} line {line_no}: field {text_field!r} is "
                    f"{type(text).__name__}, not text"
                )
            yield f"{rel}#{line_no - 1}", text


def _lines(f, path: Path) -> Iterator[str]:
    try:
        yield from f
    except UnicodeDecodeError as err:
        raise DataError(f"data source {path}: not UTF-8 text ({err})") from None


def _text_column(path: Path, names: list[str], types: list, text_field: str, what: str) -> None:
    import pyarrow as pa

    if text_field not in names:
        raise DataError(
            f"data source {path}: no column {text_field!r} (columns: {names}); set data.text_field"
        )
    kind = types[names.index(text_field)]
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f"data source {path}: {what} {text_field!r} holds {kind}, not text")


def _parquet_records(path: Path, rel: str, text_field: str) -> Iterator[tuple[str, str]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"data source {path}: not a Parquet file ({err})") from None
    schema = reader.schema_arrow
    _text_column(path, schema.names, list(schema.types), text_field, "column")
    row = 0
    for batch in reader.iter_batches(columns=[text_field]):
        for text in batch.column(0).to_pylist():
            if text is not None:
                yield f"{rel}#{row}", text
            row += 1


def _arrow_records(path: Path, rel: str, text_field: str) -> Iterator[tuple[str, str]]:
    import pyarrow as pa

    try:
        source = pa.memory_map(str(path), "r")
        reader = pa.ipc.open_stream(source)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"data source {path}: not an Arrow stream ({err})") from None
    schema = reader.schema
    _text_column(path, schema.names, list(schema.types), text_field, "column")
    index = schema.names.index(text_field)
    row = 0
    for batch in reader:
        for text in batch.column(index).to_pylist():
            if text is not None:
                yield f"{rel}#{row}", text
            row += 1


# --------------------------------------------------------------------------- token files


def _token_file_dtype(path: Path, dtype: str | np.dtype | None) -> np.dtype:
    if dtype is not None:
        dt = np.dtype(dtype)
    else:
        name = path.name.lower()
        if name.endswith((".u8.bin", ".uint8.bin")):
            dt = np.dtype(np.uint8)
        elif name.endswith((".u32.bin", ".uint32.bin")):
            dt = np.dtype(np.uint32)
        else:
            dt = np.dtype(np.uint16)
    if dt not in TOKEN_DTYPES:
        raise DataError(f"data source {path}: token dtype {dt} is not uint8, uint16 or uint32")
    return dt


def read_token_file(path: Path, dtype: str | np.dtype | None, vocab_size: int | None) -> np.ndarray:
    """A pre-tokenized ``.npy`` or ``.bin`` file, memory-mapped and range-checked:
    ``dtype`` overrides the element type of a ``.bin`` file (else its name says it:
    ``*.u8.bin``, ``*.u32.bin``, uint16 otherwise)."""
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"data source {path}: file is empty")
    if path.suffix.lower() == ".npy":
        try:
            tokens = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            raise DataError(f"data source {path}: not a readable .npy array ({e})") from e
        if tokens.ndim != 1 or tokens.dtype not in TOKEN_DTYPES:
            raise DataError(
                f"data source {path}: expected a 1-D uint8/uint16/uint32 array, "
                f"got shape {tokens.shape} dtype {tokens.dtype}"
            )
        if dtype is not None and np.dtype(dtype) != tokens.dtype:
            raise DataError(f"data source {path}: file holds {tokens.dtype}, dtype={dtype} given")
    else:
        dt = _token_file_dtype(path, dtype)
        if size % dt.itemsize:
            raise DataError(f"data source {path}: {size} bytes is not a whole number of {dt}")
        tokens = np.memmap(path, dtype=dt, mode="r")
    check_token_range(path, tokens, vocab_size)
    return tokens


def check_token_range(path: Path | str, tokens: np.ndarray, vocab_size: int | None) -> None:
    """Byte token files hold bytes and DOC separators only (task markers must stay
    unambiguous); other token files hold ids below their declared ``vocab_size``."""
    if vocab_size is None and tokens.dtype == np.uint8:
        return
    chunk = 1 << 22
    for start in range(0, len(tokens), chunk):
        part = np.asarray(tokens[start : start + chunk])
        bad = (part >= N_BYTE_TOKENS) & (part != DOC) if vocab_size is None else part >= vocab_size
        if bad.any():
            i = int(np.argmax(bad))
            if vocab_size is None:
                raise DataError(
                    f"data source {path}: token {int(part[i])} at index {start + i} is outside "
                    f"the byte vocabulary (allowed: 0..{N_BYTE_TOKENS - 1} and DOC={DOC}); a "
                    f"byte file read as uint16? pass dtype='uint8' or name it *.u8.bin; ids "
                    f"of another tokenizer need data.vocab_size"
                )
            raise DataError(
                f"data source {path}: token {int(part[i])} at index {start + i} is beyond the "
                f"declared vocabulary (data.vocab_size={vocab_size}: ids 0..{vocab_size - 1})"
            )
