"""The ``ropenope`` commands, apart from the sweep engine they drive.

One module per command (or family of commands), each with its arguments (``add_parser``)
and its handler; :mod:`search.cli` builds the parser from them and dispatches through one
lazy table. A module imports nothing heavy at its top: the engines load inside handlers.

- ``space``: ``ropenope space``; ``train``: ``ropenope train``;
- ``sweep``: ``submit``, ``resume``, ``status``; ``remote``: the same on a Ray cluster
  through the Ray Jobs API, and ``logs``, ``job-status``;
- ``report``, ``export``, ``gc``, ``dashboard``; ``tracking``: ``pareto``, ``sync``, ``ui``.
"""
