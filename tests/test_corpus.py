"""The study's tokenized corpus: the content-addressed cache, tokenizers, and bad data."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from engines import TINY

from space.errors import ConfigError
from space.schema import SweepConfig, parse_config
from workers.corpus import BUILD_LOG, CORPUS_DIR, META_FILE, prepare
from workers.data import DataError, load_corpus
from workers.tokenizer import train_bpe


def _config(**sections: Any) -> SweepConfig:
    """The tiny sweep with ``sections`` merged over it (``score_`` replaces ``score``)."""
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY.items()}
    for key, value in sections.items():
        if key.endswith("_"):
            raw[key[:-1]] = value
        else:
            raw[key] = {**raw.get(key, {}), **value}
    return parse_config(raw)


def _folder(root: Path, n: int = 30, size: int = 3000) -> Path:
    """A folder of Python-like text files (a small corpus that builds in milliseconds)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    words = ["def", "return", "self", "import", "value", "x", "=", "(", ")", ":", "\n", "é"]
    for i in range(n):
        body = " ".join(words[int(k)] for k in rng.integers(len(words), size=size // 4))
        (root / f"mod{i}.py").write_text(body)
    return root


def _builds(cache: Path) -> list[dict]:
    log = cache / CORPUS_DIR / BUILD_LOG
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_prepare_bytes_cache_holds_the_byte_corpus_and_is_built_once(tmp_path):
    source = _folder(tmp_path / "src")
    config = _config(data={"source": str(source)})
    first = prepare(config, tmp_path / "cache", progress=False)
    built_at = json.loads((Path(first.entry) / META_FILE).read_text())["built_at"]
    second = prepare(config, tmp_path / "cache", progress=False)
    assert first == second and len(_builds(tmp_path / "cache")) == 1
    assert json.loads((Path(second.entry) / META_FILE).read_text())["built_at"] == built_at
    # The cached tokens are exactly what the byte loader gives (the demo's corpus).
    data = second.open()
    reference = load_corpus(source, min_tokens=1)
    np.testing.assert_array_equal(data.train, reference.train)
    np.testing.assert_array_equal(data.val, reference.val)
    assert isinstance(data.train, np.memmap) or isinstance(data.train.base, np.memmap)
    assert not data.train.flags.writeable  # trials only read


def test_prepare_a_changed_file_invalidates_the_cache_even_with_the_same_size_and_time(tmp_path):
    source = _folder(tmp_path / "src")
    config = _config(data={"source": str(source)})
    before = prepare(config, tmp_path / "cache", progress=False)
    target = source / "mod3.py"
    stat = target.stat()
    text = target.read_text()
    target.write_text(text[:-1] + ("y" if text[-1] != "y" else "z"))  # one byte, same size
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    after = prepare(config, tmp_path / "cache", progress=False)
    assert after.key != before.key and len(_builds(tmp_path / "cache")) == 2
    # The tokenizer is part of the key too.
    bpe = _config(data={"source": str(source), "tokenizer": {"bpe": {"vocab_size": 300}}})
    assert prepare(bpe, tmp_path / "cache", progress=False).key not in (before.key, after.key)


def _prepare_in_child(config: SweepConfig, cache: str, ready: Any, go: Any, out: Any) -> None:
    ready.put(os.getpid())  # imports done
    go.wait(60)
    out.put(prepare(config, cache, progress=False).key)


def test_prepare_two_processes_at_once_build_once(tmp_path):
    # Both children start preparing at the same instant; without the lock both would
    # find no entry and build (two lines in the build log).
    source = _folder(tmp_path / "src", n=60, size=20_000)
    config = _config(data={"source": str(source), "tokenizer": {"bpe": {"vocab_size": 400}}})
    ctx = multiprocessing.get_context("spawn")
    ready, go, queue = ctx.Queue(), ctx.Event(), ctx.Queue()
    args = (config, str(tmp_path / "cache"), ready, go, queue)
    children = [ctx.Process(target=_prepare_in_child, args=args) for _ in range(2)]
    for child in children:
        child.start()
    ready.get(timeout=120), ready.get(timeout=120)
    go.set()
    for child in children:
        child.join(timeout=120)
        assert child.exitcode == 0
    keys = {queue.get(timeout=5), queue.get(timeout=5)}
    assert len(keys) == 1 and len(_builds(tmp_path / "cache")) == 1
    entries = sorted(p.name for p in (tmp_path / "cache" / CORPUS_DIR).iterdir())
    assert [e for e in entries if ".tmp-" in e] == []  # no half-built folder left behind
    handle = prepare(config, tmp_path / "cache", progress=False)
    assert handle.key in keys and len(handle.train) > 0


def test_prepare_bpe_learns_from_the_training_split_only(tmp_path):
    source = _folder(tmp_path / "src", n=40, size=8000)
    split = load_corpus(source, min_tokens=1)
    for rel in split.val_sources:  # a word that only validation documents hold, often
        (source / rel).write_text("zqxjvk " * 2000)
    for rel in split.train_sources[:5]:
        (source / rel).write_text("plover " * 2000)
    config = _config(data={"source": str(source), "tokenizer": {"bpe": {"vocab_size": 320}}})
    data = prepare(config, tmp_path / "cache", progress=False).open()
    tok = data.tokenizer
    assert len(tok.encode(" plover")) == 1  # merged: seen in training
    assert len(tok.encode(" zqxjvk")) >= 3  # never merged: validation text only
    assert data.vocab.text_size == 320 and data.vocab.size == 384
    # Both splits round-trip to the text (byte-level: nothing lost), DOC between documents.
    assert (data.train == data.vocab.doc).sum() == len(split.train_sources)
    assert b"zqxjvk" in tok.text_bytes([int(t) for t in data.val if t < 320])


def test_prepare_tokenizer_file_keeps_its_special_tokens_out_of_the_text(tmp_path):
    source = _folder(tmp_path / "src")
    for i in range(3):  # text that spells the tokenizer's own special token
        (source / f"mod{i}.py").write_text("x = '<|endoftext|>'\n" * 200)
    trained = train_bpe(["def return self import value x = ( ) :"] * 50, 300)
    trained.backend.add_special_tokens(["<|endoftext|>"])
    trained.save(tmp_path / "tokenizer.json")
    special = trained.backend.token_to_id("<|endoftext|>")
    config = _config(data={"source": str(source), "tokenizer": {"file": str(tmp_path)}})
    assert config.vocabulary().text_size == special + 1  # read from the JSON, no torch
    assert config.base_shape().vocab_size == 320  # 301 + 8 controls, to a multiple of 64
    data = prepare(config, tmp_path / "cache", progress=False).open()
    assert special not in np.asarray(data.train) and special not in np.asarray(data.val)
    assert data.vocab.doc == special + 2 and (np.asarray(data.train) == data.vocab.doc).any()


def test_tokenizer_file_that_does_not_parse_is_a_clear_error(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="data.tokenizer.file") as info:
        _config(data={"tokenizer": {"file": str(bad)}})
    assert str(bad) in str(info.value)
    # JSON with a vocabulary, but not a tokenizer the library can build.
    bad.write_text(json.dumps({"model": {"type": "Nope", "vocab": {"a": 0, "b": 1}}}))
    config = _config(
        data={"source": str(_folder(tmp_path / "src")), "tokenizer": {"file": str(bad)}}
    )
    with pytest.raises(DataError, match="does not parse") as info:
        prepare(config, tmp_path / "cache", progress=False)
    assert str(bad) in str(info.value)


def test_prepare_corpus_smaller_than_one_batch_is_a_clear_error(tmp_path):
    (tmp_path / "small.txt").write_text("x = 1\n" * 40)  # 240 bytes
    config = _config(data={"source": str(tmp_path / "small.txt")}, train={"batch_size": 8})
    with pytest.raises(DataError, match="fewer than one batch") as info:
        prepare(config, tmp_path / "cache", progress=False)
    assert "small.txt" in str(info.value)


def test_prepare_tokenizer_length_check_names_the_task(tmp_path):
    source = _folder(tmp_path / "src")
    config = _config(
        data={"source": str(source), "tokenizer": {"bpe": {"vocab_size": 300}}},
        train={"seq_len": 32, "task_mix": {"vartrack": 1.0}},
        score={"task": "passkey"},
    )
    with pytest.raises(DataError, match="task 'vartrack' needs up to"):
        prepare(config, tmp_path / "cache", progress=False)


def test_uint32_token_file_with_a_50k_vocabulary_trains_one_step(tmp_path):
    from workers.candidate import run_candidate

    rng = np.random.default_rng(0)
    rng.integers(0, 50_000, size=30_000).astype(np.uint32).tofile(tmp_path / "ids.bin")
    config = _config(
        data={"source": str(tmp_path / "ids.bin"), "dtype": "uint32", "vocab_size": 50_000},
        train={"steps": 1, "lm_fraction": 1.0, "task_mix": {}, "eval_every": 1},
        score_={"tasks": [], "extrap": [2], "val_windows": 2, "attention_mass": False},
        study={"objectives": [{"metric": "short_bpb", "direction": "minimize"}]},
    )
    assert config.base_shape().vocab_size == 50_048  # 50,000 + 8 controls, to a multiple of 64
    handle = prepare(config, tmp_path / "cache", progress=False)
    assert handle.tokenizer_kind == "none" and handle.train.dtype == "uint32"
    candidate = config.candidate({"global_every": 1, "global_position": "rope"})
    result = run_candidate(config, candidate, seed=0, out_dir=tmp_path / "run", corpus=handle)
    assert result.status == "complete" and result.scores["steps"] == 1
    # Per token without a tokenizer: an untrained model is near-uniform over the vocabulary.
    assert result.scores["short_bpb"] == pytest.approx(np.log2(50_048), rel=0.05)
    # Ids beyond the declared vocabulary are refused before any trial.
    np.array([7] * 100 + [50_000], dtype=np.uint32).tofile(tmp_path / "bad.bin")
    bad = _config(
        data={"source": str(tmp_path / "bad.bin"), "dtype": "uint32", "vocab_size": 50_000},
        train={"lm_fraction": 1.0, "task_mix": {}},
        score_={"tasks": []},
        study={"objectives": [{"metric": "short_bpb", "direction": "minimize"}]},
    )
    with pytest.raises(DataError, match="beyond the declared vocabulary") as info:
        prepare(bad, tmp_path / "cache", progress=False)
    assert "bad.bin" in str(info.value)


def test_run_candidate_prepares_locally_when_the_handle_is_not_on_this_machine(
    tmp_path, monkeypatch
):
    # A cluster worker that does not share the driver's runs folder: the handle's shards
    # are not there, so the trial prepares the same corpus in its own cache.
    import dataclasses

    from workers.candidate import run_candidate
    from workers.corpus import TokenRef

    source = _folder(tmp_path / "src")
    config = _config(data={"source": str(source)}, train={"steps": 2, "eval_every": 2})
    driver_side = prepare(config, tmp_path / "driver-cache", progress=False)
    elsewhere = dataclasses.replace(
        driver_side,
        train=TokenRef("/nonexistent/train.bin", "uint16", 0, len(driver_side.train)),
        val=TokenRef("/nonexistent/val.bin", "uint16", 0, len(driver_side.val)),
    )
    assert driver_side.is_here() and not elsewhere.is_here()
    monkeypatch.setenv("ROPENOPE_HOME", str(tmp_path / "worker-runs"))
    candidate = config.candidate({"global_every": 1, "global_position": "rope"})
    result = run_candidate(config, candidate, seed=0, out_dir=tmp_path / "run", corpus=elsewhere)
    assert result.status == "complete"
    assert result.corpus["key"] == driver_side.key  # the same content, the same key
    assert result.corpus["entry"].startswith(str(tmp_path / "worker-runs"))
