"""The one configuration system: typed dataclasses <- YAML file <- command-line flags <- ``key=value``.

    cfg = load_config(TrainConfig, "configs/scifact_listwise.yaml", ["optim.lr=2e-5"])

Every verb takes ``--config FILE`` and dotted ``key=value`` overrides; the flags a verb has beyond
those are declared on the dataclass fields themselves (``option(..., flag="--negatives")``) and
turned into argparse arguments by :func:`add_flags`, so a flag and its config key cannot drift
apart. YAML syntax errors name the file and line; unknown keys and wrongly typed values name the
file and the dotted key. After loading, every dataclass in the tree that defines ``validate()``
is asked to check itself, so a bad value fails before any model is built.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rerankforge.errors import ConfigError

T = TypeVar("T")

_DEST = "cfg:"
_NONE_WORDS = {"none", "null", "off"}


def option(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING, flag: str | Sequence[str] | None = None,
           help: str | None = None, choices: Sequence[Any] | None = None, metavar: str | None = None,
           parse: Any = None, repeat: bool = False) -> Any:
    """A dataclass field that may also be a command-line flag.

    ``flag`` names the flag (or several aliases); a bool field whose flag starts with ``--no-``
    stores False, other bool flags are ``--x/--no-x``. ``help`` and ``choices`` go to argparse;
    ``parse`` turns the flag's text into the field's value (e.g. ``"1:1,2:3"`` into a dict); a
    list field with ``repeat`` takes the flag several times (``--run A --run B``)."""
    meta = {"flag": flag, "help": help, "choices": choices, "metavar": metavar, "parse": parse, "repeat": repeat}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


# ------------------------------------------------------------------------------------- loading
def load_config(schema: type[T], path: str | Path | None = None, overrides: Sequence[str] = (),
                values: Mapping[str, Any] | None = None) -> T:
    """``schema`` defaults <- YAML ``path`` <- ``values`` (nested dict, e.g. from flags) <- dotted
    ``key=value`` ``overrides``; returns a ``schema`` instance, validated."""
    merged = OmegaConf.structured(schema)
    where = str(path) if path else "command line"
    if path is not None:
        merged = _merge(merged, _read_yaml(path), str(path))
    if values:
        merged = _merge(merged, OmegaConf.create(dict(values)), "command-line flag")
    if overrides:
        bad = [o for o in overrides if "=" not in o]
        if bad:
            raise ConfigError(f"override {bad[0]!r} is not of the form key=value")
        try:
            dotlist = OmegaConf.from_dotlist(list(overrides))
        except OmegaConfBaseException as err:
            raise ConfigError(f"command-line override: {_message(err)}") from None
        merged = _merge(merged, dotlist, "command-line override")
    return _finish(merged, where)


def config_from_dict(schema: type[T], data: Mapping[str, Any] | Any, where: str = "config") -> T:
    """A ``schema`` instance from a plain nested dict (or an instance, returned validated)."""
    if isinstance(data, schema):
        validate_tree(data, where)
        return data
    return _finish(_merge(OmegaConf.structured(schema), OmegaConf.create(dict(data or {})), where), where)


def _finish(merged, where: str):
    try:
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{where}: {_message(err)}") from None
    validate_tree(cfg, where)
    return cfg


def require(cfg: Any, *keys: str) -> None:
    """A ConfigError naming the flag of the first of ``keys`` that ``cfg`` leaves empty."""
    for key in keys:
        if getattr(cfg, key) in (None, "", [], ()):
            field = next(f for f in dataclasses.fields(cfg) if f.name == key)
            flag = field.metadata.get("flag")
            name = (flag if isinstance(flag, str) else (flag or [None])[0]) or key
            raise ConfigError(f"{name} is required (flag, YAML key {key!r} or {key}=...)")


def _read_yaml(path: str | Path):
    import yaml

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"config file {p} not found")
    try:
        return OmegaConf.load(p)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}{line}: YAML syntax error: {err.problem}") from None
    except (yaml.YAMLError, OmegaConfBaseException) as err:
        raise ConfigError(f"{p}: {str(err).splitlines()[0]}") from None


def _merge(base, other, where: str):
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{where}: {_message(err)}") from None


def _message(err: OmegaConfBaseException) -> str:
    first = str(err).splitlines()[0]
    key = getattr(err, "full_key", None)
    return f"key {key!r}: {first}" if key else first


def validate_tree(obj: Any, where: str = "config", prefix: str = "") -> None:
    """Call ``validate()`` on every dataclass in ``obj`` (depth first); its ConfigError is
    re-raised prefixed with where it came from and the dotted path of the section."""
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        child = getattr(obj, f.name)
        if dataclasses.is_dataclass(child):
            validate_tree(child, where, f"{prefix}{f.name}.")
    check = getattr(obj, "validate", None)
    if callable(check):
        try:
            check()
        except ConfigError as err:
            section = f" (section {prefix[:-1]!r})" if prefix else ""
            raise ConfigError(f"{where}{section}: {err}") from None


def command_line(verb: str, cfg: Any) -> str:
    """``rerankforge VERB key=value ...``: every setting of ``cfg`` that differs from its schema's
    defaults, so the "reproduce" line of a report or model card is explicit."""
    import shlex

    ours = to_dict(cfg)
    defaults = to_dict(type(cfg)())
    parts = ["rerankforge", *verb.split()]
    for key, value in _leaves(ours):
        if _lookup(defaults, key) != value:
            parts.append(f"{key}={_yaml_value(value)}")
    return shlex.join(parts)


def _leaves(d: Mapping[str, Any], prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _lookup(d: Mapping[str, Any], key: str) -> Any:
    node: Any = d
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return object()
        node = node[part]
    return node


def _yaml_value(value: Any) -> str:
    import json

    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: Any) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(cfg))


# ------------------------------------------------------------------------------ command line
def add_config_args(parser: argparse.ArgumentParser, schema: type, config_required: bool = False,
                    example: str = "optim.lr=2e-5") -> None:
    """``--config FILE``, the schema's own flags and positional ``key=value`` overrides."""
    parser.add_argument("--config", required=config_required, metavar="FILE", help="YAML config")
    add_flags(parser, schema)
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help=f"dotted config overrides applied last, e.g. {example}")


def add_flags(parser: argparse.ArgumentParser, schema: type, prefix: str = "", group=None) -> None:
    """One argparse argument per field declared with ``option(flag=...)``, recursively through
    nested sections; an optional section (``Optional[Section] = None``) is off by default and is
    set from YAML or ``key=value`` only, so its flags do not reach the verb's command line."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        typ = hints[f.name]
        path = prefix + f.name
        nested = _dataclass_type(typ)
        if nested is not None:
            if _strip_optional(typ) is typ:
                add_flags(parser, nested, path + ".", group)
            continue
        flag = f.metadata.get("flag")
        if not flag:
            continue
        names = [flag] if isinstance(flag, str) else list(flag)
        kwargs = _argparse_kwargs(typ, f, names)
        (group or parser).add_argument(*names, dest=_DEST + path, default=argparse.SUPPRESS, **kwargs)


def flag_values(args: argparse.Namespace) -> dict[str, Any]:
    """The nested dict of the flags the user gave (others are absent, not None)."""
    out: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if not dest.startswith(_DEST):
            continue
        node = out
        *parents, leaf = dest[len(_DEST):].split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return out


def config_from_args(schema: type[T], args: argparse.Namespace) -> T:
    return load_config(schema, getattr(args, "config", None), getattr(args, "overrides", None) or (),
                       flag_values(args))


def _dataclass_type(typ) -> type | None:
    typ = _strip_optional(typ)
    return typ if dataclasses.is_dataclass(typ) else None


def _strip_optional(typ):
    if typing.get_origin(typ) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return typ


def _argparse_kwargs(typ, f: dataclasses.Field, names: list[str]) -> dict[str, Any]:
    meta = f.metadata
    optional = _strip_optional(typ) is not typ
    base = _strip_optional(typ)
    kw: dict[str, Any] = {"help": _help(meta.get("help"), f)}
    if meta.get("choices") is not None:
        kw["choices"] = list(meta["choices"])
    if base is bool:
        if names[0].startswith("--no-"):
            kw.update(action="store_const", const=False)
        elif f.default is False:
            kw.update(action="store_true")
        else:
            kw.update(action=argparse.BooleanOptionalAction)
        return kw
    origin = typing.get_origin(base)
    if meta.get("parse") is not None:
        kw["type"] = _wrap_parse(meta["parse"])
    elif origin in (list, tuple, Sequence):
        (item,) = typing.get_args(base)[:1] or (str,)
        kw["type"] = _parser(_strip_optional(item), False)
        if meta.get("repeat"):
            kw["action"] = "append"
        else:
            kw["nargs"] = "+"
    else:
        kw["type"] = _parser(base, optional)
    if meta.get("metavar"):
        kw["metavar"] = meta["metavar"]
    elif "choices" not in kw:
        kw["metavar"] = names[0].lstrip("-").upper().replace("-", "_")
    return kw


def _wrap_parse(fn):
    def parse(text: str):
        try:
            return fn(text)
        except (ValueError, ConfigError) as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = getattr(fn, "__name__", "value")
    return parse


def _help(text: str | None, f: dataclasses.Field) -> str:
    text = text or ""
    default = f.default if f.default is not dataclasses.MISSING else None
    if isinstance(default, str) and len(default) > 40:  # prompts: too long to repeat in --help
        default = None
    if default not in (None, "", dataclasses.MISSING) and "%(default)" not in text and "default" not in text:
        text = f"{text} (default {default})" if text else f"default {default}"
    return text.replace("%", "%%")


def _parser(typ, optional: bool):
    """argparse ``type=``: converts the string; 'none'/'null'/'off' mean None for optional fields."""
    if typ in (int, float):
        conv = typ
    else:
        conv = str

    def parse(text: str):
        if optional and text.strip().lower() in _NONE_WORDS | {""}:
            return None
        try:
            return conv(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {conv.__name__}, got {text!r}") from None

    parse.__name__ = conv.__name__
    return parse
