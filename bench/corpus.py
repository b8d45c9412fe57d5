"""Corpus preparation: what tokenizing the study's corpus once costs, and what a cache hit costs.

    python bench/corpus.py                          # the embedded corpus, bytes and BPE 512
    python bench/corpus.py --source corpus/ --bpe 512 4096 --max-text-bytes 20000000

For each tokenizer, in a fresh temporary cache: the first ``prepare`` (load, train the BPE
on the training split, tokenize both splits, write the shards), a second ``prepare`` of
the unchanged corpus (hashes every source file's content, then finds the entry), and
``open`` in a new process's place (memory-mapping the shards, loading the tokenizer).
Prints a Markdown table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default=None, help="data.source (default: the embedded corpus)")
    p.add_argument("--bpe", type=int, nargs="*", default=[512], help="BPE vocabulary sizes")
    p.add_argument("--max-text-bytes", type=int, default=4_000_000)
    args = p.parse_args()

    from space.schema import parse_config
    from workers import corpus as corpus_module
    from workers.corpus import META_FILE, prepare

    tokenizers: list[object] = ["bytes", *({"bpe": {"vocab_size": n}} for n in args.bpe)]
    print("| tokenizer | build s | hit s | open s | train tokens | bytes per token |")
    print("| --- | --- | --- | --- | --- | --- |")
    for tok in tokenizers:
        config = parse_config(
            {
                "study": {"name": "bench"},
                "model": {"layers": 1, "d_model": 8, "heads": 1, "mlp_hidden": 8},
                "train": {"seq_len": 64, "batch_size": 1, "steps": 1, "task_mix": {"passkey": 1}},
                "score": {"task": "passkey"},
                "data": {
                    "source": args.source,
                    "tokenizer": tok,
                    "max_text_bytes": args.max_text_bytes,
                },
            }
        )
        with tempfile.TemporaryDirectory() as cache:
            t0 = time.perf_counter()
            handle = prepare(config, cache, progress=False)
            t1 = time.perf_counter()
            again = prepare(config, cache, progress=False)
            t2 = time.perf_counter()
            corpus_module._open.cache_clear()  # as a fresh trial process would
            again.open()
            t3 = time.perf_counter()
            meta = json.loads((Path(handle.entry) / META_FILE).read_text())
        name = tok if isinstance(tok, str) else f"bpe {tok['bpe']['vocab_size']}"
        ratio = meta["train_bytes"] / max(1, meta["train_tokens"])
        print(
            f"| {name} | {t1 - t0:.2f} | {t2 - t1:.2f} | {t3 - t2:.3f} | "
            f"{meta['train_tokens']:,} | {ratio:.2f} |"
        )


if __name__ == "__main__":
    main()
