"""Corpus loading: the embedded stdlib default, user sources, and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workers.data import Corpus, DataError, load_corpus
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


def test_load_corpus_cache_dir_roundtrips(tmp_path):
    first = load_corpus(max_tokens=SMALL, cache_dir=tmp_path)
    assert list(tmp_path.glob("corpus-*.npz"))
    second = load_corpus(max_tokens=SMALL, cache_dir=tmp_path)
    assert "[cached]" in second.description
    np.testing.assert_array_equal(first.train, second.train)
    assert first.val_sources == second.val_sources


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
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00" * 10)
    folder = load_corpus(tmp_path, min_tokens=1000, val_fraction=0.3)
    assert "1 binary files skipped" in folder.description
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
