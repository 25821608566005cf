"""``publish(PublishSpec) -> PublishResult``: put a model into the registry, atomically.

What a version holds is described in ``bgeflow.steps.publish.registry``. The steps, and why each is safe to
interrupt at any point:

1. Everything is gathered locally: the model files, ``metrics.json``, the resolved configs,
   ``lineage.json`` (each input object's URI, ETag or sha256, size and row count) and the model
   card ``README.md``; each file's sha256 is computed. The *content hash* is the sha256 over the
   sorted ``path<TAB>sha256`` lines of every file but the model card (which names the version).
2. The version is ``--version`` or ``<UTC timestamp>-<first 8 hex of the content hash>``. If a
   complete version already holds this content, nothing is uploaded (idempotent rerun).
3. Files are uploaded to the hidden staging prefix ``<name>/.staging/<content hash>/``. A rerun
   after an interruption finds the same prefix and skips objects already there intact (S3 ETag
   = MD5 of a single-part upload).
4. Files are moved into ``<name>/<version>/`` (S3: server-side copy; local: rename), then each
   is verified (size, and the MD5 ETag or a re-read sha256). Objects in that prefix that belong
   to no file of this version (left by an earlier, different attempt) are deleted.
5. ``manifest.json`` is written last, with a conditional put (S3 ``If-None-Match: *``, local
   ``link``): from this moment readers see the version, never before.
6. Pointers move only after the manifest: ``latest.json`` and, when asked (and the gate allows),
   ``champion.json``. The staging prefix is removed.
"""

from __future__ import annotations

from bgeflow.steps.publish.gather import lineage
from bgeflow.steps.publish.run import PublishResult, publish
from bgeflow.steps.publish.spec import CHAMPION_POLICIES, KINDS, PublishSettings, PublishSpec

__all__ = ["CHAMPION_POLICIES", "KINDS", "PublishResult", "PublishSettings", "PublishSpec", "lineage", "publish"]
