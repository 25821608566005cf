"""The evaluation set: a corpus, queries, and graded judgements (qrels).

Accepted inputs:

- ``eval_data``: a directory or prefix with ``corpus.jsonl`` and ``queries.jsonl`` (ingest's
  ``eval/``; ``.jsonl.gz`` works too), optionally ``qrels.tsv`` / ``qrels.jsonl``, or BEIR's
  ``qrels/test.tsv`` (else ``qrels/dev.tsv``, else the folder's only file);
- or explicit ``corpus`` and ``queries`` URIs, plus optional ``qrels``.

Corpus lines are ``{"id", "text"}`` (BEIR's ``{"_id", "title", "text"}`` also works; a title is
prepended to the text). Query lines are ``{"id", "text", "relevant": {doc_id: grade}}`` with an
optional ``prompt`` (an instruction for that query); with separate qrels, ``relevant`` may be
left out. Qrels are BEIR-style TSV ``query_id<TAB>doc_id<TAB>grade`` (a header line is skipped)
or JSONL ``{"query_id", "doc_id", "grade"}``; they replace the queries' own ``relevant``.

Every problem raises DataError naming the URI and line (or the query and document ids).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bgeflow.core.errors import ConfigError, NotFoundError
from bgeflow.core.spec import absolute_local
from bgeflow.core.storage import (
    files_digest,
    iter_lines,
    join_uri,
    object_sha256,
    open_store,
    resolve_sources,
)
from bgeflow.core.storage.sources import DATA_SUFFIXES
from bgeflow.data import DataError, EvalQuery, iter_json, loads_line

QRELS_SUFFIXES = (".tsv", ".tsv.gz", ".jsonl", ".jsonl.gz")
#: The objects a role's prefix contributes (``read_qrels``'s; corpus and queries: ``iter_json``'s, the default).
_ROLE_SUFFIXES = {"qrels": QRELS_SUFFIXES}


@dataclass
class EvalSet:
    corpus_ids: list[str]
    corpus_texts: list[str]
    queries: list[EvalQuery]
    uris: dict[str, str]

    @property
    def qrels(self) -> dict[str, dict[str, int]]:
        return {q.id: q.relevant for q in self.queries}

    def sizes(self) -> dict[str, int]:
        return {
            "corpus": len(self.corpus_ids),
            "queries": len(self.queries),
            "judgements": sum(len(q.relevant) for q in self.queries),
        }

    def sha256(self) -> dict[str, str]:
        """Each role's (``corpus``, ``queries``, ``qrels``) content hash: ``files_digest`` of the objects it was
        read from, as ``load_eval_set`` read them (a prefix: each of its data files).

        What says two evaluations ran on the same eval set whatever the paths were called, and that a
        set rewritten in place is another set (``bgeflow compare``).

        Raises:
            StorageError: an object cannot be read.
        """
        return {role: files_digest({source.key: object_sha256(source.store, source.key)
                                    for source in resolve_sources([uri], _ROLE_SUFFIXES.get(role, DATA_SUFFIXES))})
                for role, uri in self.uris.items()}


def _find(directory: str, stem: str, suffixes: tuple[str, ...], required: bool) -> str | None:
    store = open_store(directory)
    for suffix in suffixes:
        if store.exists(stem + suffix):
            return join_uri(directory, stem + suffix)
    if required:
        raise NotFoundError(f"eval data {directory}: no {stem}{' or '.join(suffixes)} in it")
    return None


def _beir_qrels(directory: str) -> str | None:
    """BEIR's ``qrels/<split>.tsv``: ``test``, else ``dev``, else the folder's only file.

    Raises:
        ConfigError: several splits and none is ``test`` or ``dev`` (name one with ``qrels``).
    """
    folder = join_uri(directory, "qrels")
    store = open_store(folder)
    names = sorted(info.key for info in store.list(QRELS_SUFFIXES) if "/" not in info.key)
    for split in ("test", "dev"):
        for name in names:
            if name.split(".", 1)[0] == split:
                return join_uri(folder, name)
    if len(names) > 1:
        raise ConfigError(f"eval data {directory}: qrels/ holds {', '.join(names)}; name the split's file with qrels")
    return join_uri(folder, names[0]) if names else None


def _require(uri: str, what: str) -> None:
    store = open_store(uri)
    if store.stat("") is None and not store.list():
        raise NotFoundError(f"{what} {uri}: no such file or prefix")


def resolve_eval_uris(
    eval_data: str | None, corpus: str | None, queries: str | None, qrels: str | None
) -> dict[str, str]:
    """The corpus, queries (and qrels) URIs the options name, checked to exist; local paths made absolute.

    Absolute: they are recorded in ``metrics.json``, which is read from other folders (``bgeflow compare``).

    Raises:
        ConfigError: neither ``eval_data`` nor both ``corpus`` and ``queries``; several BEIR qrels splits.
        NotFoundError: a named file or prefix that is not there.
    """
    eval_data, corpus, queries, qrels = (absolute_local(u) if u else u for u in (eval_data, corpus, queries, qrels))
    uris: dict[str, str] = {}
    if eval_data:
        _require(eval_data, "--eval-data")
        uris["corpus"] = _find(eval_data, "corpus", DATA_SUFFIXES, True)  # type: ignore[assignment]
        uris["queries"] = _find(eval_data, "queries", DATA_SUFFIXES, True)  # type: ignore[assignment]
        found_qrels = _find(eval_data, "qrels", QRELS_SUFFIXES, False) or _beir_qrels(eval_data)
        if found_qrels:
            uris["qrels"] = found_qrels
    if corpus:
        uris["corpus"] = corpus
    if queries:
        uris["queries"] = queries
    if qrels:
        uris["qrels"] = qrels
    if "corpus" not in uris or "queries" not in uris:
        raise ConfigError("evaluation needs --eval-data, or both --corpus and --queries")
    for what, uri in uris.items():
        _require(uri, f"--{what}")
    return uris


def _str_field(obj: dict[str, Any], names: tuple[str, ...], where: str) -> str:
    for name in names:
        value = obj.get(name)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value) != "":
            return str(value)
    raise DataError(f"{where}: missing or empty field {names[0]!r}")


def read_corpus(uri: str) -> tuple[list[str], list[str]]:
    ids: list[str] = []
    texts: list[str] = []
    seen: dict[str, str] = {}
    for where, obj in iter_json(uri):
        doc_id = _str_field(obj, ("id", "_id"), where)
        text = obj.get("text")
        if not isinstance(text, str):
            raise DataError(f"{where}: field 'text' must be a string")
        title = obj.get("title")
        if isinstance(title, str) and title.strip():
            text = f"{title.strip()} {text}"
        if doc_id in seen:
            raise DataError(f"{where}: duplicate corpus id {doc_id!r} (first at {seen[doc_id]})")
        seen[doc_id] = where
        ids.append(doc_id)
        texts.append(text)
    if not ids:
        raise DataError(f"corpus {uri} is empty")
    return ids, texts


def read_queries(uri: str, *, need_relevant: bool) -> list[EvalQuery]:
    queries: list[EvalQuery] = []
    seen: set[str] = set()
    for where, obj in iter_json(uri):
        query_id = _str_field(obj, ("id", "_id"), where)
        if not isinstance(obj.get("text"), str) or not obj["text"].strip():
            raise DataError(f"{where}: field 'text' must be a non-empty string")
        relevant = obj.get("relevant")
        if relevant is None:
            if need_relevant:
                raise DataError(f"{where}: field 'relevant' is missing (or give --qrels)")
            relevant = {}
        if not isinstance(relevant, dict | list):
            raise DataError(f"{where}: field 'relevant' must be an object {{doc_id: grade}} or a list of ids")
        prompt = obj.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise DataError(f"{where}: field 'prompt' must be a string")
        try:
            query = EvalQuery.from_dict({**obj, "id": query_id, "relevant": relevant})
        except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: a grade of 1e999
            raise DataError(f"{where}: field 'relevant' must map ids to integer grades ({exc})") from exc
        if query_id in seen:
            raise DataError(f"{where}: duplicate query id {query_id!r}")
        seen.add(query_id)
        queries.append(query)
    if not queries:
        raise DataError(f"queries {uri} are empty")
    return queries


def read_qrels(uri: str) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for source, line_no, raw in iter_lines(resolve_sources([uri], QRELS_SUFFIXES)):
        where = f"{source.uri}:{line_no}"
        line = raw.decode("utf-8", errors="replace").strip()
        if not line:
            continue
        if source.uri.endswith((".jsonl", ".jsonl.gz")) or line.startswith("{"):
            obj, problem = loads_line(raw, where)
            if problem is not None:
                raise DataError(str(problem))
            if not isinstance(obj, dict):
                raise DataError(f"{where}: expected a JSON object")
            parts = [obj.get("query_id", obj.get("query-id")), obj.get("doc_id", obj.get("corpus-id")),
                     obj.get("grade", obj.get("score", 1))]
            if parts[0] is None or parts[1] is None:
                raise DataError(f"{where}: needs 'query_id' and 'doc_id'")
        else:
            parts = line.split("\t") if "\t" in line else line.split()
            if len(parts) == 4:  # TREC qrels: query iteration doc grade
                parts = [parts[0], parts[2], parts[3]]
            if len(parts) not in (2, 3):
                raise DataError(f"{where}: expected 'query_id<TAB>doc_id<TAB>grade'")
        try:
            grade = int(float(parts[2])) if len(parts) == 3 else 1
        except (TypeError, ValueError, OverflowError):  # OverflowError: "inf", or an int past float's range
            if line_no == 1:
                continue  # a header line
            raise DataError(f"{where}: grade {parts[2]!r} is not a number") from None
        qrels.setdefault(str(parts[0]), {})[str(parts[1])] = grade
    if not qrels:
        raise DataError(f"qrels {uri} are empty")
    return qrels


def load_eval_set(uris: dict[str, str]) -> EvalSet:
    """Read and cross-check the corpus, queries and qrels named by ``uris``."""
    corpus_ids, corpus_texts = read_corpus(uris["corpus"])
    queries = read_queries(uris["queries"], need_relevant="qrels" not in uris)
    if "qrels" in uris:
        qrels = read_qrels(uris["qrels"])
        known = {q.id for q in queries}
        unknown = sorted(set(qrels) - known)
        if unknown:
            raise DataError(f"qrels {uris['qrels']}: query id {unknown[0]!r} is not in {uris['queries']} "
                            f"({len(unknown)} unknown)")
        for query in queries:
            query.relevant = qrels.get(query.id, {})
        # BEIR ships qrels for a split; queries of other splits are simply not evaluated.
        queries = [q for q in queries if q.relevant]
    in_corpus = set(corpus_ids)
    for query in queries:
        if not any(g > 0 for g in query.relevant.values()):
            raise DataError(f"query {query.id!r} ({uris['queries']}) has no relevant document (grade > 0)")
        missing = [doc for doc in query.relevant if doc not in in_corpus]
        if missing:
            raise DataError(f"query {query.id!r}: relevant document {missing[0]!r} is not in the corpus "
                            f"{uris['corpus']}")
    if not queries:
        raise DataError(f"no query in {uris['queries']} has judgements in {uris.get('qrels')}")
    return EvalSet(corpus_ids, corpus_texts, queries, uris)
