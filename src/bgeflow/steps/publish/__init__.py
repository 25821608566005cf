"""``publish(PublishSpec) -> PublishResult``: put a model into the registry, atomically.

What a version holds is described in ``bgeflow.steps.publish.registry``. The steps, and why each is safe to
interrupt at any point:

1. Everything is gathered locally: the model files, ``metrics.json``, the resolved configs,
   ``lineage.json`` (each input object's URI, ETag or sha256, size and row count) and the model
   card ``model/README.md``; each file's sha256 is computed. The *content hash* is the sha256 over the
   sorted ``path<TAB>sha256`` lines of every file but the model card (which names the version).
2. The version is ``--version`` or ``<UTC timestamp>-<first 8 hex of the content hash>``. If a
   complete version already holds this content, nothing is uploaded (idempotent rerun).
3. The version is claimed: a conditional put of ``<name>/.claims/<version>.json`` naming the
   content hash. A claim of another content refuses this publish (ConflictError, nothing
   written); a claim of the same content (a concurrent or interrupted attempt) lets it write the
   same bytes beside it. So a version folder never holds files of two contents.
4. Files are uploaded into ``<name>/<version>/`` (each object atomic; a rerun skips S3 objects
   already intact by MD5 ETag), then each is verified (size, and the MD5 ETag or a re-read
   sha256). Objects there that belong to no file of this version are deleted.
5. ``manifest.json`` is written last, with a conditional put (S3 ``If-None-Match: *``, local
   ``link``): from this moment readers see the version, never before. A concurrent publish of
   the same content that lost this race returns the winner's version (a no-op).
6. Pointers move only after the manifest: ``latest.json`` and, when asked (and the gate allows),
   ``champion.json``.

What an interrupted publish leaves (a version folder without manifest, ``.staging/`` of older
releases, ``bgeflow-publish-*`` temp folders) is listed and reclaimed by ``bgeflow models gc``
(``bgeflow.steps.publish.maintenance``).
"""

from __future__ import annotations

from bgeflow.steps.publish.gather import lineage
from bgeflow.steps.publish.run import PublishResult, publish
from bgeflow.steps.publish.spec import CHAMPION_POLICIES, KINDS, PublishSettings, PublishSpec

__all__ = ["CHAMPION_POLICIES", "KINDS", "PublishResult", "PublishSettings", "PublishSpec", "lineage", "publish"]
