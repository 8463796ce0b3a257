"""One registry for every extension point: losses, models, retrievers and label jobs.

Built-in classes register under a short name (``@LOSSES.register("listwise_ce")``). A config may
also name a class outside the package as ``"module.path:ClassName"``; it is imported on first
use, checked against the registry's base class and cached, so a user adds a loss or a model
without editing rerankforge::

    loss:
      - name: my_package.losses:FocalListwise
        gamma: 2.0
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from rerankforge.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, base: type | None = None, name_attr: str = "name"):
        self.kind = kind
        self.base = base
        #: class attribute that records the registered name (``model_type`` for models)
        self.name_attr = name_attr
        self._items: dict[str, type[T]] = {}

    def register(self, name: str):
        """Class decorator; sets ``cls.<name_attr>`` to ``name``."""

        def wrap(cls):
            if name in self._items and self._items[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._check_base(cls, name)
            setattr(cls, self.name_attr, name)
            self._items[name] = cls
            return cls

        return wrap

    def _check_base(self, cls, name: str) -> None:
        if self.base is not None and not (inspect.isclass(cls) and issubclass(cls, self.base)):
            raise ConfigError(f"{self.kind} {name!r}: {cls!r} is not a subclass of {self.base.__name__}")

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``, or the class a ``module:Class`` path names."""
        if name in self._items:
            return self._items[name]
        if isinstance(name, str) and ":" in name:
            cls = _import_path(name, self.kind)
            self._check_base(cls, name)
            if not cls.__dict__.get(self.name_attr):
                # An outside class records its import path, so what it saves can be loaded again.
                setattr(cls, self.name_attr, name)
            self._items[name] = cls
            return cls
        raise ConfigError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())} "
                          f"(or a class outside the package as 'module:Class')")

    def build(self, name: str, /, **params: Any) -> T:
        """Instantiate ``name`` with ``params``; unknown or wrong parameters are a ConfigError
        that lists what the class accepts."""
        cls = self.get(name)
        accepted = accepted_params(cls)
        unknown = sorted(set(params) - set(accepted)) if not _takes_kwargs(cls) else []
        if unknown:
            raise ConfigError(f"{self.kind} {name!r}: unknown parameter(s) {', '.join(unknown)}; "
                              f"accepted: {', '.join(accepted) or 'none'}")
        try:
            return cls(**params)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{self.kind} {name!r}: {err}") from None

    def names(self) -> list[str]:
        return sorted(n for n in self._items if ":" not in n)

    def items(self) -> list[tuple[str, type[T]]]:
        return [(n, self._items[n]) for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __getitem__(self, name: str) -> type[T]:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


def _import_path(path: str, kind: str):
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"{kind} {path!r}: cannot import module {module_name!r} ({err})") from None
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise ConfigError(f"{kind} {path!r}: module {module_name!r} has no attribute {attr!r}") from None
    return obj


def accepted_params(cls: type) -> list[str]:
    sig = inspect.signature(cls.__init__)
    return [p.name for p in sig.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _takes_kwargs(cls: type) -> bool:
    return any(p.kind == p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())
