"""The pipeline's steps, one package each: ingest → mining → training → evaluation → publish.

A step is a library function over a typed spec (``bgeflow.steps.<step>.spec``); the CLI verbs,
the KFP components and ``bgeflow run`` all call it. Steps depend on ``core``, ``data`` and
``retrieval``, never on ``platform`` or ``cli``.
"""
