"""The modeling and configuration files ``ropenope export --remote-code`` writes next to the
weights, for ``AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)``.

They are copied as they are (see ``workers.hf.export``) and never import ropenope: a reader of
the exported folder needs only torch and transformers. Importing this package imports nothing.
"""
