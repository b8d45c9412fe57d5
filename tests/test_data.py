"""Corpus loading: the embedded stdlib default, user sources, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from workers.data import Corpus, DataError, load_corpus, resolve_source
from workers.tokens import (
    DOC,
    NEEDLE_CLOSE,
    NEEDLE_OPEN,
    PAD,
    VOCAB_SIZE,
    decode,
    encode,
)

SMALL = 200_000  # keeps the default-corpus tests fast


def _text(n_bytes: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    words = ["def", "return", "self", "import", "class", "value", "x", "=", "(", ")", ":"]
    out, size = [], 0
    while size < n_bytes:
        w = words[int(rng.integers(len(words)))]
        out.append(w)
        size += len(w) + 1
    return " ".join(out)


def test_tokens_encode_decode_roundtrip_and_specials_above_bytes():
    text = "def f(x):\n    return 'é'\n"
    tokens = encode(text)
    assert tokens.dtype == np.uint16 and len(tokens) == len(text.encode())
    assert decode(tokens) == text
    assert min(PAD, DOC, NEEDLE_OPEN, NEEDLE_CLOSE) >= 256
    assert len({PAD, DOC, NEEDLE_OPEN, NEEDLE_CLOSE}) == 4
    assert max(PAD, DOC, NEEDLE_OPEN, NEEDLE_CLOSE) < VOCAB_SIZE
    assert decode([NEEDLE_OPEN, ord("K"), NEEDLE_CLOSE]) == "<OPEN>K<CLOSE>"


def test_load_corpus_default_is_stdlib_deterministic_and_split_by_file():
    a = load_corpus(max_tokens=SMALL)
    b = load_corpus(max_tokens=SMALL)
    assert isinstance(a, Corpus) and "python-stdlib" in a.description
    assert a.train.dtype == np.uint16 and a.val.dtype == np.uint16
    np.testing.assert_array_equal(a.train, b.train)
    np.testing.assert_array_equal(a.val, b.val)
    assert len(a.train) + len(a.val) == SMALL
    assert 0.05 < len(a.val) / SMALL < 0.15
    # By file: no file in both splits, no test folders, no site-packages.
    assert a.train_sources and a.val_sources
    assert not set(a.train_sources) & set(a.val_sources)
    for rel in a.train_sources + a.val_sources:
        assert rel.endswith(".py")
        parts = rel.split("/")
        assert "site-packages" not in parts and "test" not in parts and "tests" not in parts
    # Documents start with the separator; text is bytes only.
    assert a.train[0] == DOC and a.val[0] == DOC
    assert ((a.train < 256) | (a.train == DOC)).all()


def test_load_corpus_default_split_is_stable_as_the_cap_grows():
    small = load_corpus(max_tokens=SMALL)
    bigger = load_corpus(max_tokens=2 * SMALL)
    # A file's split depends only on its path, never on the cap.
    assert set(small.val_sources) <= set(bigger.val_sources)
    assert not set(small.val_sources) & set(bigger.train_sources)


def test_load_corpus_text_file_splits_by_position(tmp_path):
    text = _text(20_000)
    path = tmp_path / "corpus.txt"
    path.write_text(text)
    c = load_corpus(path, min_tokens=1000, val_fraction=0.25)
    tokens = encode(text)
    assert len(c.train) + len(c.val) == len(tokens)
    np.testing.assert_array_equal(np.concatenate([c.train, c.val]), tokens)
    assert len(c.val) == round(0.25 * len(tokens))


def test_load_corpus_folder_and_glob_split_by_file(tmp_path):
    for i in range(40):
        sub = tmp_path / f"pkg{i % 3}"
        sub.mkdir(exist_ok=True)
        (sub / f"mod{i}.txt").write_text(_text(500, seed=i))
    folder = load_corpus(tmp_path, min_tokens=1000, val_fraction=0.3)
    assert "split by file" in folder.description
    assert len(folder.train_sources) + len(folder.val_sources) == 40
    assert not set(folder.train_sources) & set(folder.val_sources)
    globbed = load_corpus(str(tmp_path / "pkg*" / "*.txt"), min_tokens=1000, val_fraction=0.3)
    assert sorted(globbed.train_sources + globbed.val_sources) == sorted(
        folder.train_sources + folder.val_sources
    )
    np.testing.assert_array_equal(globbed.val, folder.val)


@pytest.mark.parametrize(
    "suffix, dtype", [(".npy", np.uint16), (".bin", np.uint16), (".u8.bin", np.uint8)]
)
def test_load_corpus_token_file_is_memory_mapped(tmp_path, suffix, dtype):
    tokens = (np.arange(5000) % 256).astype(dtype)
    path = tmp_path / f"tokens{suffix}"
    if suffix == ".npy":
        np.save(path, tokens)
    else:
        tokens.tofile(path)
    c = load_corpus(path, min_tokens=1000, val_fraction=0.1)
    assert c.train.dtype == dtype
    assert isinstance(c.train.base, np.memmap) or isinstance(c.train, np.memmap)
    np.testing.assert_array_equal(np.concatenate([c.train, c.val]), tokens)
    assert len(c.val) == 500


def test_load_corpus_token_file_dtype_argument_overrides_extension(tmp_path):
    tokens = (np.arange(4000) % 256).astype(np.uint8)
    path = tmp_path / "tokens.bin"
    tokens.tofile(path)
    c = load_corpus(path, min_tokens=1000, dtype="uint8")
    assert len(c.train) + len(c.val) == 4000


def _bad_source(root: Path, kind: str) -> Path:
    if kind == "missing":
        return root / "missing.txt"
    if kind == "empty":
        (root / "empty.txt").write_text("")
        return root / "empty.txt"
    if kind == "too_small":
        (root / "small.txt").write_text("tiny")
        return root / "small.txt"
    if kind == "binary":
        (root / "blob.dat").write_bytes(bytes(range(256)) * 100)
        return root / "blob.dat"
    if kind == "empty_folder":
        (root / "d").mkdir()
        return root / "d"
    if kind == "glob_no_match":
        return root / "nothing*.txt"
    if kind == "tokens_out_of_vocab":
        np.save(root / "big.npy", np.array([1, 2, 300] * 100, dtype=np.uint16))
        return root / "big.npy"
    if kind == "tokens_float":
        np.save(root / "f.npy", np.zeros(5000, dtype=np.float32))
        return root / "f.npy"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "no such file"),
        ("empty", "empty"),
        ("too_small", "fewer than min_tokens"),
        ("binary", "binary"),
        ("empty_folder", "no files"),
        ("glob_no_match", "matches no files"),
        ("tokens_out_of_vocab", "outside the byte vocabulary"),
        ("tokens_float", "uint8/uint16"),
    ],
)
def test_load_corpus_bad_source_raises_data_error_naming_path(tmp_path, kind, message):
    path = _bad_source(tmp_path, kind)
    with pytest.raises(DataError, match=message) as info:
        load_corpus(path, min_tokens=100)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


# --------------------------------------------------------------------------- record sources


@pytest.fixture(scope="module")
def stdlib_docs() -> list[str]:
    """Documents of the embedded corpus (the first standard-library files), as text."""
    _, files, _, _ = resolve_source(None)
    texts = []
    for path in files[:60]:
        text = path.read_text(encoding="utf-8")
        if 0 < len(text.encode()) < 40_000:
            texts.append(text)
    assert len(texts) >= 20
    return texts


def _documents(tokens: np.ndarray) -> list[bytes]:
    """A byte-token stream split back into its documents (each opens with DOC)."""
    stream = np.asarray(tokens)
    cuts = [*np.flatnonzero(stream == DOC).tolist(), len(stream)]
    return [
        stream[a + 1 : b].astype(np.uint8).tobytes()
        for a, b in zip(cuts[:-1], cuts[1:], strict=True)
    ]


def _write_jsonl(path: Path, texts: list[str], field: str = "text") -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"id": i, field: text}) + "\n")
    return path


def _write_parquet(path: Path, texts: list[str], field: str = "text") -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": list(range(len(texts))), field: texts}), path, row_group_size=7)
    return path


def _write_hf(path: Path, texts: list[str], field: str = "text", splits: bool = False) -> Path:
    import datasets

    half = len(texts) // 2
    if splits:
        data = datasets.DatasetDict(
            {
                "train": datasets.Dataset.from_dict({field: texts[:half]}),
                "test": datasets.Dataset.from_dict({field: texts[half:]}),
            }
        )
    else:
        data = datasets.Dataset.from_dict({field: texts, "n": list(range(len(texts)))})
    data.save_to_disk(str(path))
    return path


@pytest.mark.parametrize("kind", ["jsonl", "parquet", "hf_dataset", "hf_dataset_dict", "glob"])
def test_load_corpus_record_sources_hold_every_document_once(tmp_path, stdlib_docs, kind):
    if kind == "jsonl":
        source = _write_jsonl(tmp_path / "docs.jsonl", stdlib_docs, field="content")
    elif kind == "parquet":
        source = _write_parquet(tmp_path / "docs.parquet", stdlib_docs, field="content")
    elif kind == "glob":
        half = len(stdlib_docs) // 2
        _write_jsonl(tmp_path / "a.jsonl", stdlib_docs[:half], field="content")
        _write_jsonl(tmp_path / "b.jsonl", stdlib_docs[half:], field="content")
        source = tmp_path / "*.jsonl"
    else:
        source = _write_hf(
            tmp_path / "ds", stdlib_docs, field="content", splits=kind == "hf_dataset_dict"
        )
    c = load_corpus(str(source), text_field="content", max_tokens=None, val_fraction=0.2)
    assert "split by record" in c.description
    assert c.train.dtype == np.uint16 and c.train[0] == DOC and c.val[0] == DOC
    # Split by document: every document in exactly one split, none lost or cut.
    assert not set(c.train_sources) & set(c.val_sources)
    assert len(c.train_sources) + len(c.val_sources) == len(stdlib_docs)
    found = sorted(_documents(c.train) + _documents(c.val))
    assert found == sorted(t.encode() for t in stdlib_docs)
    assert 0.05 < len(c.val_sources) / len(stdlib_docs) < 0.45


def test_load_corpus_record_split_depends_on_names_not_on_the_machine(tmp_path, stdlib_docs):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _write_jsonl(tmp_path / "a" / "docs.jsonl", stdlib_docs)
    b = _write_jsonl(tmp_path / "b" / "docs.jsonl", stdlib_docs)
    first, second = load_corpus(a, min_tokens=1000), load_corpus(b, min_tokens=1000)
    np.testing.assert_array_equal(first.train, second.train)
    np.testing.assert_array_equal(first.val, second.val)
    # The cap keeps a document's split: a smaller corpus's validation stays validation.
    small = load_corpus(a, min_tokens=1000, max_tokens=100_000)
    assert set(small.val_sources) <= set(first.val_sources)


def test_load_corpus_uint32_token_file_with_declared_vocabulary(tmp_path):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50_000, size=20_000).astype(np.uint32)
    tokens[5] = 49_999
    for name in ("ids.npy", "ids.bin"):
        path = tmp_path / name
        if name.endswith(".npy"):
            np.save(path, tokens)
        else:
            tokens.tofile(path)
        c = load_corpus(path, min_tokens=1000, dtype="uint32", vocab_size=50_000)
        assert c.train.dtype == np.uint32 and not c.is_text
        np.testing.assert_array_equal(np.concatenate([c.train, c.val]), tokens)
        assert "vocabulary 50000" in c.description


def _bad_data(root: Path, kind: str) -> tuple[Path | str, Path, dict]:
    """(source, the file the error must name, load_corpus options)."""
    if kind == "jsonl_missing_field":
        path = root / "d.jsonl"
        path.write_text('{"text": "fine"}\n{"body": "no text here"}\n')
        return path, path, {}
    if kind == "jsonl_not_json":
        path = root / "d.jsonl"
        path.write_text('{"text": "fine"}\nnot json\n')
        return path, path, {}
    if kind == "parquet_missing_column":
        path = _write_parquet(root / "d.parquet", ["a", "b"], field="body")
        return path, path, {}
    if kind == "parquet_not_text":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = root / "d.parquet"
        pq.write_table(pa.table({"text": [1, 2, 3]}), path)
        return path, path, {}
    if kind == "hf_missing_column":
        folder = _write_hf(root / "ds", ["a", "b", "c"], field="body")
        return folder, next(folder.glob("*.arrow")), {}
    if kind == "binary_in_text_folder":
        for i in range(5):
            (root / f"m{i}.txt").write_text("text " * 400)
        (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00" * 10)
        return root, root / "image.png", {}
    if kind == "ids_beyond_vocabulary":
        path = root / "ids.bin"
        np.array([1, 2, 50_000, 3] * 500, dtype=np.uint32).tofile(path)
        return path, path, {"dtype": "uint32", "vocab_size": 50_000}
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind, message",
    [
        ("jsonl_missing_field", "line 2: no field 'text'"),
        ("jsonl_not_json", "line 2: not JSON"),
        ("parquet_missing_column", "no column 'text'"),
        ("parquet_not_text", "not text"),
        ("hf_missing_column", "no column 'text'"),
        ("binary_in_text_folder", "binary file, not text"),
        ("ids_beyond_vocabulary", "token 50000 at index 2 is beyond the declared vocabulary"),
    ],
)
def test_load_corpus_bad_data_names_the_file_and_the_problem(tmp_path, kind, message):
    source, culprit, options = _bad_data(tmp_path, kind)
    with pytest.raises(DataError, match=message) as info:
        load_corpus(source, min_tokens=1, **options)
    assert str(culprit) in str(info.value)
