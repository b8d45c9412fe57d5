"""The Hugging Face export of a trained candidate (``ropenope export``).

- ``export``: the folder (config, weights renamed to the stock class, tokenizer, card) and
  its logits check against our model;
- ``layout``: the stock transformers class that reproduces a candidate, and its config;
- ``reasons``: why no stock class fits (``NotExpressible``);
- ``tokenizer``: the byte tokenizer; ``card``: the model card;
- ``remote/``: the modeling and configuration files ``--remote-code`` copies next to the
  weights (they never import ropenope).
"""
