"""MLflow ``python_function`` loader of an exported ropenope model.

``ropenope export --register`` copies this file into the MLflow model's ``code/`` folder; its
``MLmodel`` names it as the ``loader_module`` with the Hugging Face folder as ``data``, so
``mlflow.pyfunc.load_model("models:/NAME/VERSION")`` returns a text generator. It imports torch
and transformers only when the model is loaded, and never imports ropenope.

``predict`` takes prompts (a list of strings, a string, or a one-column DataFrame) and returns
one greedy continuation per prompt; ``params={"max_new_tokens": N}``, an integer from 1 to
``MAX_NEW_TOKENS``, and prompt plus continuation within the model's
``max_position_embeddings``: a served model is never asked for an unbounded amount of work.

Before anything is read, every file of the folder is checked against the sha256 that
``ropenope export`` recorded in ``ropenope.json``: a changed, added or missing file is
refused, naming it. A folder with its own modeling code (``auto_map`` in its config) runs
that code only when the caller says so:
``mlflow.pyfunc.load_model(uri, model_config={"trust_remote_code": True})``.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
from typing import Any

DEFAULT_MAX_NEW_TOKENS = 32
MAX_NEW_TOKENS = 1024  # the most a request may ask for
INFO_NAME = "ropenope.json"  # the export's record, holding the files' sha256 (not itself)


class UntrustedModel(ValueError):
    """The folder is not the one that was exported, or asks for trust it was not given."""


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_folder(folder: str) -> None:
    """Refuse ``folder`` unless its files are exactly the exported ones, byte for byte.
    (Self-contained: this file runs where ropenope is not installed.)"""
    info_path = os.path.join(folder, INFO_NAME)
    try:
        with open(info_path) as f:
            expected = json.load(f)["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UntrustedModel(
            f"{info_path}: no file hashes ({type(err).__name__}); export the model again with "
            "this version of ropenope"
        ) from None
    present = set()
    for root, _, names in os.walk(folder):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
            if rel != INFO_NAME and "__pycache__" not in rel.split("/"):
                present.add(rel)
    for rel in sorted(present - set(expected)):
        raise UntrustedModel(
            f"{os.path.join(folder, rel)}: not part of the export; refusing to load"
        )
    for rel, digest in sorted(expected.items()):
        path = os.path.join(folder, rel)
        if rel not in present:
            raise UntrustedModel(f"{path}: missing from the exported folder; refusing to load")
        actual = _sha256(path)
        if actual != digest:
            raise UntrustedModel(
                f"{path}: sha256 {actual[:16]}... differs from the export's {digest[:16]}... "
                "(changed after export); refusing to load"
            )


def max_new_tokens(params: dict[str, Any] | None) -> int:
    """The request's ``max_new_tokens``, checked: a whole number from 1 to ``MAX_NEW_TOKENS``."""
    value = (params or {}).get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != int(value):
        raise ValueError(f"max_new_tokens must be a whole number, not {value!r}")
    if not 1 <= value <= MAX_NEW_TOKENS:
        raise ValueError(
            f"max_new_tokens={int(value)} is outside 1..{MAX_NEW_TOKENS}, the most this served "
            "model generates per request"
        )
    return int(value)


def _prompts(model_input: Any) -> list[str]:
    if isinstance(model_input, str):
        return [model_input]
    columns = getattr(model_input, "columns", None)
    if columns is not None:  # a pandas DataFrame: its (first) column
        return [str(v) for v in model_input[columns[0]].tolist()]
    return [str(v) for v in model_input]


class HfGenerator:
    """Greedy text continuation with the exported model and its tokenizer."""

    def __init__(self, folder: str, trust_remote_code: bool = False) -> None:
        verify_folder(folder)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with open(os.path.join(folder, "config.json")) as f:
            remote_code = "auto_map" in json.load(f)  # our own modeling file, not a stock class
        if remote_code and not trust_remote_code:
            raise UntrustedModel(
                f"{folder} runs its own modeling code (modeling_ropenope.py); read it, then load "
                'with mlflow.pyfunc.load_model(uri, model_config={"trust_remote_code": True})'
            )
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(
            folder, trust_remote_code=remote_code, dtype=torch.float32
        ).eval()
        if not os.path.exists(os.path.join(folder, "tokenizer.json")):
            raise ValueError(f"{folder} has no tokenizer: this model reads pre-tokenized ids")
        # a folder with remote code asks for trust to read its config, also for the tokenizer
        self.tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=remote_code)

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> list[str]:
        n_new = max_new_tokens(params)
        tok = self.tokenizer
        limit = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        out = []
        for prompt in _prompts(model_input):
            # Every training document starts with the document token: so does a prompt.
            ids = [tok.bos_token_id, *tok(prompt)["input_ids"]]
            if limit and len(ids) + n_new > limit:
                raise ValueError(
                    f"a prompt of {len(ids)} tokens plus max_new_tokens={n_new} exceeds the "
                    f"model's max_position_embeddings={limit}, the longest context it was "
                    "scored at: shorten the prompt or ask for fewer tokens"
                )
            with self.torch.no_grad():
                seq = self.model.generate(
                    self.torch.tensor([ids]),
                    max_new_tokens=n_new,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                )
            out.append(tok.decode(seq[0, len(ids) :], skip_special_tokens=True))
        return out


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> HfGenerator:
    trust = (model_config or {}).get("trust_remote_code", False)
    return HfGenerator(data_path, trust_remote_code=trust is True)
