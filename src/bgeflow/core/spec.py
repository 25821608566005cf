"""Typed settings: each step declares its options once, as a ``Spec`` (pydantic v2), and derives the rest.

A field is declared with ``setting(default, help, ...)``: its type, default, help text, range
constraints and CLI spellings live in that one line. From the declaration follow:

- validation with errors that name the field (``Spec.build``), for YAML, JSON, dicts and flags;
- the command line (``bgeflow.cli._options``): one flag per scalar field, FlagEmbedding's
  spellings as aliases, ``--config FILE`` and ``--set KEY=VALUE`` for every verb;
- the KFP component and pipeline parameter docs (``describe``) and the Helm chart's JSON schema
  (``model_json_schema``).

Nested specs (``nested(...)``) group settings that several steps share (the encoder's, a
teacher's); their fields become flat flags (optionally prefixed). Layers of settings merge
deeply: a mapping given for a nested block changes only the keys it names (``deep_merge``).
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from typing_extensions import Self

from bgeflow.core.errors import ConfigError, did_you_mean

KeyPath = tuple[str, ...]


def _uri_list(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


#: One or more URIs: a list, or one string holding them comma-separated (how KFP passes a list).
UriList = Annotated[list[str], BeforeValidator(_uri_list), WithJsonSchema({
    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]})]


def not_a_folder(value: str) -> str | None:
    """Why the folder-valued output ``value`` cannot be written, or None: it is, or lies under, a file.

    Left to the writer, such a path fails deep inside a step (FileExistsError from the output lock,
    NotADirectoryError writing a report) and reads as a bug; checked up front it is bad input naming
    the setting. Remote URIs (s3://, ...) have no files in the way of a prefix; a path not there yet is made.
    """
    # storage.base.is_remote's rule, inlined: importing the storage package here would load boto3.
    if not value or ("://" in value and not value.startswith("file://")):
        return None
    path = Path(value.removeprefix("file://")).expanduser()
    # The nearest existing ancestor must be a folder too: occupied/notes.txt/run fails just the same.
    for candidate in (path, *path.parents):
        if candidate.exists():
            if candidate.is_dir():
                return None
            return f"{value if candidate == path else f'{candidate} (in {value})'} is a file, not a folder"
    return None


def absolute_local(value: str) -> str:
    """A local path (or ``file://`` URI) made absolute against the current folder; remote URIs and "" unchanged.

    For paths that outlive the command line's folder: a registry root written into model cards and
    run summaries (``bgeflow models download demo-output/registry/...`` worked only from one folder),
    or handed to steps that run elsewhere (kfp.local's tasks).
    """
    if not value or ("://" in value and not value.startswith("file://")):
        return value
    scheme = "file://" if value.startswith("file://") else ""
    return scheme + os.path.abspath(os.path.expanduser(value.removeprefix("file://")))


def _folder(value: str) -> str:
    problem = not_a_folder(value)
    if problem:
        raise ValueError(problem)
    return value


#: A local folder or a remote prefix that a step writes into (an output, a registry root).
FolderUri = Annotated[str, AfterValidator(_folder)]


@dataclass(frozen=True)
class Cli:
    """How a field appears on the command line (kept in the field's metadata, not in its schema).

    ``aliases``: extra full spellings (``--normlized``, ``--model_name_or_path``); ``flag``: the
    main spelling when it is not ``--<name-with-dashes>``; ``prefix``: for a nested spec, put
    before each of its fields' flags; ``hidden``: no flag (settable through --config/--set only).
    """

    aliases: tuple[str, ...] = ()
    flag: str | None = None
    prefix: str = ""
    metavar: str | None = None
    unit: str | None = None
    hidden: bool = False


def setting(default: Any = PydanticUndefined, help: str = "", *, default_factory: Any = None,
            aliases: tuple[str, ...] = (), flag: str | None = None, metavar: str | None = None,
            unit: str | None = None, hidden: bool = False, **constraints: Any) -> Any:
    """One option: its default, its help sentence and (optionally) ``ge``/``gt``/``le``/``lt`` bounds.

    ``unit`` (``"tokens"``, ``"s"``, ``"bytes"``) is shown in help texts and docs. No ``default``
    (and no ``default_factory``): the option is required.
    """
    info: FieldInfo = (Field(default_factory=default_factory, description=help, **constraints)
                       if default_factory is not None else Field(default, description=help, **constraints))
    info.metadata.append(Cli(aliases=aliases, flag=flag, metavar=metavar, unit=unit, hidden=hidden))
    return info


def nested(spec: type[Spec], help: str = "", *, prefix: str = "", default_factory: Any = None) -> Any:
    """A block of settings of another spec; its fields become flags ``--<prefix><name>``."""
    info: FieldInfo = Field(default_factory=default_factory or spec, description=help or _summary(spec))
    info.metadata.append(Cli(prefix=prefix))
    return info


class Spec(BaseModel):
    """Base of every settings block: unknown keys are refused, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)

    @classmethod
    def build(cls, *layers: Mapping[str, Any] | None, where: str = "settings", cli: bool = False,
              sources: Sequence[str] = ()) -> Self:
        """Deep-merge ``layers`` (later ones win) and validate them into this spec.

        Keys may be field names, flag names (``query-max-len``) or aliases, at any level.
        ``sources``: what each layer is (``--config m.yaml``; ``""`` for none), in the same order: a
        value at fault is named with the layer it came from.

        Raises:
            ConfigError: one line per problem, each naming the field (``mine.negative_number``),
                plus its flag (``--negative-number``) when ``cli`` is true, and its layer's source.
        """
        canonical = [cls.canonical(layer, where=where) if layer else {} for layer in layers]
        merged: dict[str, Any] = {}
        for layer in canonical:
            merged = deep_merge(merged, layer)
        try:
            return cls.model_validate(merged)
        except ValidationError as exc:
            named = list(zip(canonical, sources, strict=False))
            raise config_error(cls, exc, where=where, cli=cli, origin=lambda loc: _origin(loc, named)) from None

    @classmethod
    def of(cls, **settings: Any) -> Self:
        """``build`` from keyword arguments (field, flag or alias names; nested settings flat or as mappings)."""
        return cls.build(settings, where=cls.__name__)

    @classmethod
    def canonical(cls, data: Mapping[str, Any], *, where: str = "settings") -> dict[str, Any]:
        """``data`` with every key turned into its field path (flag names and aliases accepted).

        Raises:
            ConfigError: a key names no field of this spec (the message suggests close ones).
        """
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping of {cls.__name__} settings, got {type(data).__name__}")
        names = flat_names(cls)
        out: dict[str, Any] = {}
        for key, value in data.items():
            path = names.get(_key(key))
            if path is None:
                path = cls.unknown_key(str(key), value, where=where)
                if path is None:
                    continue
            if len(path) == 1 and isinstance(value, Mapping) and _nested_spec(cls, path[0]) is not None:
                value = _nested_spec(cls, path[0]).canonical(value, where=f"{where}: {path[0]}")  # type: ignore[union-attr]
            out = deep_merge(out, _at(path, value))
        return out

    @classmethod
    def unknown_key(cls, key: str, value: Any, *, where: str) -> KeyPath | None:
        """What an unknown key means; the default refuses it. Specs with open-ended options override."""
        names = flat_names(cls)
        # One suggestion per setting, by its dotted name (a flag spelling and the path name the same one).
        hint = did_you_mean(_key(key), names, show=lambda name: ".".join(names[name]))
        raise ConfigError(f"{where}: unknown setting {key!r} for {cls.__name__}{hint}")

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (what a resolved config file holds)."""
        return self.model_dump(mode="json")

    def changed(self) -> dict[str, Any]:
        """Only the fields that differ from their defaults, JSON-ready (nested blocks likewise)."""
        return self.model_dump(mode="json", exclude_defaults=True)


# --------------------------------------------------------------------------- merging


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: mappings merge key by key, any other value replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _at(path: KeyPath, value: Any) -> dict[str, Any]:
    for name in reversed(path[1:]):
        value = {name: value}
    return {path[0]: value}


def _key(key: Any) -> str:
    return str(key).strip().lstrip("-").replace("-", "_")


# --------------------------------------------------------------------------- introspection


@dataclass(frozen=True)
class Option:
    """One leaf setting of a spec, with where it sits and how it is spelled on the command line."""

    path: KeyPath
    info: FieldInfo
    cli: Cli
    #: The main spelling, then the declared aliases (see ``spellings`` for every accepted one).
    flags: tuple[str, ...]
    #: Accepted, not shown in help (aliases under a block prefix).
    hidden: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return ".".join(self.path)

    @property
    def flag(self) -> str:
        return self.flags[0]

    @property
    def spellings(self) -> tuple[str, ...]:
        """Every accepted flag: ``flags`` plus the underscore form of each (FlagEmbedding/HF style)."""
        shown = [*self.flags, *self.hidden]
        return tuple(dict.fromkeys([*shown, *("--" + f.removeprefix("--").replace("-", "_") for f in shown)]))

    @property
    def annotation(self) -> Any:
        return self.info.annotation

    @property
    def required(self) -> bool:
        return self.info.is_required()

    @property
    def default(self) -> Any:
        return None if self.required else self.info.get_default(call_default_factory=True)

    @property
    def help(self) -> str:
        return self.info.description or ""


def cli_meta(info: FieldInfo) -> Cli:
    return next((m for m in info.metadata if isinstance(m, Cli)), Cli())


def _nested_spec(cls: type[Spec], name: str) -> type[Spec] | None:
    info = cls.model_fields.get(name)
    if info is None:
        return None
    annotation = _unwrap_optional(info.annotation)
    return annotation if isinstance(annotation, type) and issubclass(annotation, Spec) else None


def options(cls: type[Spec], *, _path: KeyPath = (), _prefix: str = "") -> Iterator[Option]:
    """Every leaf setting of ``cls``, nested blocks flattened, in declaration order."""
    for name, info in cls.model_fields.items():
        meta = cli_meta(info)
        inner = _nested_spec(cls, name)
        if inner is not None:
            yield from options(inner, _path=(*_path, name), _prefix=_prefix + meta.prefix)
            continue
        main = "--" + _prefix + (meta.flag.removeprefix("--") if meta.flag else name.replace("_", "-"))
        # Aliases are spelled relative to the block (a teacher's "--reranker" is "--teacher-reranker");
        # under a prefix they are accepted but not shown, the main spelling being the documented one.
        aliases = tuple("--" + _prefix + a.removeprefix("--") for a in meta.aliases)
        flags = (main, *aliases) if not _prefix else (main,)
        hidden = () if not _prefix else aliases
        yield Option((*_path, name), info, meta, flags, hidden)


def flat_names(cls: type[Spec]) -> dict[str, KeyPath]:
    """Every key a mapping may use for ``cls``: field names (top level), flag names, aliases."""
    names: dict[str, KeyPath] = {name: (name,) for name in cls.model_fields}
    for opt in options(cls):
        names.setdefault(opt.name, opt.path)
        for flag in opt.spellings:
            names.setdefault(_key(flag), opt.path)
    return names


def _unwrap_optional(annotation: Any) -> Any:
    """``X | None`` → ``X``; ``Annotated[X, ...]`` → ``X``."""
    if typing.get_origin(annotation) is Annotated:
        return _unwrap_optional(typing.get_args(annotation)[0])
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return _unwrap_optional(args[0])
    return annotation


def value_kind(annotation: Any) -> tuple[str, Any]:
    """How a value of this type is given on a command line.

    ``("scalar", type)``, ``("bool", bool)``, ``("choice", literals)``, ``("list", item type)`` or
    ``("other", annotation)`` (mappings and unions: through --config/--set only).
    """
    annotation = _unwrap_optional(annotation)
    origin = typing.get_origin(annotation)
    if annotation is bool:
        return "bool", bool
    if annotation in (int, float, str):
        return "scalar", annotation
    if origin is Literal:
        return "choice", typing.get_args(annotation)
    if origin is list and typing.get_args(annotation) and typing.get_args(annotation)[0] in (str, int, float):
        return "list", typing.get_args(annotation)[0]
    return "other", annotation


def type_name(annotation: Any) -> str:
    kind, detail = value_kind(annotation)
    if kind == "choice":
        return " | ".join(map(str, detail))
    if kind == "list":
        return f"list of {detail.__name__}"
    if kind in ("scalar", "bool"):
        return str(detail.__name__)
    return "mapping" if typing.get_origin(_unwrap_optional(annotation)) is dict else str(annotation)


# --------------------------------------------------------------------------- errors and docs


def config_error(cls: type[Spec], exc: ValidationError, *, where: str, cli: bool,
                 origin: Callable[[tuple[Any, ...]], str] | None = None) -> ConfigError:
    """A ValidationError as one line per problem: ``where: [source: ]field (--flag): message (got value)``.

    ``origin``: the source of the value at a location (``--config m.yaml``), or ``""``.
    """
    flags = {opt.path: opt.flag for opt in options(cls)} if cli else {}
    lines = []
    for error in exc.errors(include_url=False):
        loc = tuple(str(p) for p in error.get("loc", ()))
        name = ".".join(loc)
        flag = flags.get(loc)
        label = f"{name} ({flag})" if flag else name
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        got = "" if error.get("type") in ("missing", "value_error", "assertion_error") else f" (got {error.get('input')!r})"
        source = origin(tuple(error.get("loc", ()))) if origin else ""
        lines.append((f"{source}: " if source else "") + (f"{label}: {message}{got}" if label else f"{message}{got}"))
    return ConfigError((f"{where}: " if where else "") + "; ".join(lines))


def _origin(loc: tuple[Any, ...], layers: Sequence[tuple[Mapping[str, Any], str]]) -> str:
    """The source of the last of ``layers`` that sets the value at ``loc`` (``""``: none named, or no field)."""
    if not loc:  # a check of the whole spec: no one layer is at fault
        return ""
    for layer, source in reversed(layers):
        node: Any = layer
        for part in loc:
            if not isinstance(node, Mapping):
                break  # the layer sets a whole value (a list) that holds loc
            if part not in node:
                node = _MISSING
                break
            node = node[part]
        if node is not _MISSING:
            return source
    return ""


_MISSING = object()


def describe(cls: type[Spec], *, indent: str = "") -> list[str]:
    """``name: help (type, default X)`` for every setting of ``cls``: the KFP parameter docs."""
    lines = []
    for opt in options(cls):
        default = "required" if opt.required else "optional" if opt.default is None else f"default {opt.default!r}"
        unit = f", {opt.cli.unit}" if opt.cli.unit else ""
        lines.append(f"{indent}{opt.name}: {opt.help} ({type_name(opt.annotation)}{unit}, {default})")
    return lines


def _summary(cls: type) -> str:
    return (cls.__doc__ or cls.__name__).strip().splitlines()[0]
