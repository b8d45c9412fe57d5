"""MLflow ``python_function`` loader of an exported ropenope model.

``ropenope export --register`` copies this file into the MLflow model's ``code/`` folder; its
``MLmodel`` names it as the ``loader_module`` with the Hugging Face folder as ``data``, so
``mlflow.pyfunc.load_model("models:/NAME/VERSION")`` returns a text generator. It imports torch
and transformers only when the model is loaded, and never imports ropenope.

``predict`` takes prompts (a list of strings, a string, or a one-column DataFrame) and returns
one greedy continuation per prompt; ``params={"max_new_tokens": N}``.
"""

from __future__ import annotations

import json
import os
from typing import Any

DEFAULT_MAX_NEW_TOKENS = 32


def _prompts(model_input: Any) -> list[str]:
    if isinstance(model_input, str):
        return [model_input]
    columns = getattr(model_input, "columns", None)
    if columns is not None:  # a pandas DataFrame: its (first) column
        return [str(v) for v in model_input[columns[0]].tolist()]
    return [str(v) for v in model_input]


class HfGenerator:
    """Greedy text continuation with the exported model and its tokenizer."""

    def __init__(self, folder: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with open(os.path.join(folder, "config.json")) as f:
            remote_code = "auto_map" in json.load(f)  # our own modeling file, not a stock class
        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(
            folder, trust_remote_code=remote_code, dtype=torch.float32
        ).eval()
        if not os.path.exists(os.path.join(folder, "tokenizer.json")):
            raise ValueError(f"{folder} has no tokenizer: this model reads pre-tokenized ids")
        # a folder with remote code asks for trust to read its config, also for the tokenizer
        self.tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=remote_code)

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> list[str]:
        n_new = int((params or {}).get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
        tok = self.tokenizer
        out = []
        for prompt in _prompts(model_input):
            # Every training document starts with the document token: so does a prompt.
            ids = [tok.bos_token_id, *tok(prompt)["input_ids"]]
            with self.torch.no_grad():
                seq = self.model.generate(
                    self.torch.tensor([ids]),
                    max_new_tokens=n_new,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                )
            out.append(tok.decode(seq[0, len(ids) :], skip_special_tokens=True))
        return out


def _load_pyfunc(data_path: str) -> HfGenerator:
    return HfGenerator(data_path)
