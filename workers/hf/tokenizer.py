"""The byte tokenizer (``workers.tokens``) as a Hugging Face ``tokenizers`` JSON.

Token ``b`` is byte ``b`` (a byte-level BPE with the 256-symbol byte alphabet and no merges, so
every byte of any UTF-8 text maps to itself and nothing else), then the control tokens of
:mod:`space.vocab` from 256 on, each a special token named as ``workers.tokens.decode`` shows
it (``<PAD>``, ``<DOC>``, ``<OPEN>``, ``<CLOSE>``, reserved ``<T260>`` ...).

Text never becomes a control token (DESIGN §7: a special token's name inside text would
otherwise turn into that token): ``tokenizer_config.json`` sets ``split_special_tokens``, so
``AutoTokenizer`` encodes every text as its bytes, exactly as the model was trained. Control
tokens are inserted by id (``tokenizer.convert_tokens_to_ids("<OPEN>")``), or parsed from a
trusted string with ``tokenizer(text, split_special_tokens=False)``; decoding shows their names,
so ``decode`` then ``split_special_tokens=False`` encoding gives the same ids back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from space.vocab import DOC, N_BYTE_TOKENS, PAD, SPECIAL_NAMES, VOCAB_SIZE


def control_token_names(vocab_size: int = VOCAB_SIZE) -> dict[int, str]:
    """Every id above the bytes -> its name (reserved ids are named ``<T260>`` ...)."""
    return {i: SPECIAL_NAMES.get(i, f"<T{i}>") for i in range(N_BYTE_TOKENS, vocab_size)}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte (the alphabet of ByteLevel pre-tokenization)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


def byte_tokenizer(vocab_size: int = VOCAB_SIZE) -> Any:
    """A ``tokenizers.Tokenizer``: byte b -> id b, control tokens -> their ids."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    symbol = _bytes_to_unicode()
    vocab = {symbol[b]: b for b in range(N_BYTE_TOKENS)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False, byte_fallback=False))
    # No regex split: with no merges, every pre-token falls apart into its bytes anyway.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    names = control_token_names(vocab_size)
    added = tok.add_special_tokens(
        [AddedToken(names[i], special=True, normalized=False) for i in sorted(names)]
    )
    if added != len(names) or tok.get_vocab_size() != vocab_size:
        raise RuntimeError(f"byte tokenizer has {tok.get_vocab_size()} tokens, not {vocab_size}")
    for i, name in names.items():
        if tok.token_to_id(name) != i:
            raise RuntimeError(f"control token {name} got id {tok.token_to_id(name)}, not {i}")
    return tok


def save_byte_tokenizer(
    out_dir: str | Path, *, max_length: int, vocab_size: int = VOCAB_SIZE
) -> list[Path]:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` for
    ``AutoTokenizer.from_pretrained(out_dir)`` (``max_length``: the model's context, its
    ``model_max_length``); returns the files written."""
    from transformers import PreTrainedTokenizerFast

    names = control_token_names(vocab_size)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=byte_tokenizer(vocab_size),
        bos_token=names[DOC],  # training text joins documents with <DOC> before each one
        eos_token=names[DOC],  # ... so a document ends where <DOC> begins the next
        pad_token=names[PAD],
        additional_special_tokens=[names[i] for i in sorted(names) if i not in (DOC, PAD)],
        split_special_tokens=True,
        clean_up_tokenization_spaces=False,
        model_max_length=int(max_length),
    )
    out_dir = Path(out_dir)
    written = fast.save_pretrained(str(out_dir))
    return [Path(p) for p in written if Path(p).is_file()]


__all__ = ["byte_tokenizer", "control_token_names", "save_byte_tokenizer"]
