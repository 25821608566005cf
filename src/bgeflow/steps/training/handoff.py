"""The files a torchrun worker leaves for its pod (``worker`` writes them, ``pod`` reads them).

Their names live here, not in ``worker``: the pod importing ``worker`` would put it in
``sys.modules`` before ``python -m bgeflow.steps.training.worker`` runs it, and runpy then warns
("found in sys.modules ... unpredictable behaviour") in every training log.
"""

from __future__ import annotations

#: ``<output_dir>/bgeflow-history.json``: loss log, steps, world size (rank 0, after training).
HISTORY_FILE = "bgeflow-history.json"
#: ``<dir of the runner args>/failure-rank<RANK>.json``: what ended a worker.
FAILURE_PREFIX = "failure-rank"
