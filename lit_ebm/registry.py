"""Networks by name, so that a checkpoint can rebuild the networks its module was given.

A LightningModule receives built networks. To load it again from a checkpoint with nothing but
the path, it saves a plain description of each network (:func:`describe`): the registered class
name and the arguments it was constructed with. :func:`rebuild` turns a description back into a
network (weights come from the checkpoint's state dict). Decorate your own generator or energy
with :func:`register` to get the same; an unregistered network is described as ``None``, and
``load_from_checkpoint`` then needs it passed again (``generator=...``, ``energy=...``).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, TypeVar

from torch import nn

NetworkSpec = dict[str, Any]
"""``{"network": registered name, "args": {argument: plain value or NetworkSpec}}``."""

_REGISTRY: dict[str, type[nn.Module]] = {}
T = TypeVar("T", bound=type[nn.Module])


def register(cls: T) -> T:
    """Register ``cls`` under its class name and record the arguments of each instance."""
    if _REGISTRY.get(cls.__name__, cls) is not cls:
        raise ValueError(f"a network named {cls.__name__} is already registered")
    _REGISTRY[cls.__name__] = cls
    init = cls.__init__
    signature = inspect.signature(init)

    @functools.wraps(init)
    def recording_init(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        if type(self) is cls:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            setattr(self, "_init_args", dict(list(bound.arguments.items())[1:]))  # noqa: B010

    cls.__init__ = recording_init  # type: ignore[method-assign]
    return cls


def _plain(value: Any) -> Any:
    if isinstance(value, nn.Module):
        return describe(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def describe(network: nn.Module) -> NetworkSpec | None:
    """The plain description of a registered network, or ``None`` for any other module."""
    args = getattr(network, "_init_args", None)
    if type(network).__name__ not in _REGISTRY or args is None:
        return None
    return {"network": type(network).__name__,
            "args": {name: _plain(value) for name, value in args.items()}}


def _is_spec(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"network", "args"}


def rebuild(spec: NetworkSpec) -> nn.Module:
    """The network a description stands for, with freshly initialised weights."""
    name = spec["network"]
    if name not in _REGISTRY:
        raise KeyError(f"no network named {name!r} is registered (import the module that "
                       f"defines it, decorated with lit_ebm.registry.register)")
    args = {key: rebuild(value) if _is_spec(value) else value
            for key, value in spec["args"].items()}
    return _REGISTRY[name](**args)


def as_network(value: nn.Module | NetworkSpec | None, role: str) -> nn.Module:
    """A network given either built or as the description a checkpoint holds."""
    if isinstance(value, nn.Module):
        return value
    if isinstance(value, dict) and _is_spec(value):
        return rebuild(value)
    raise TypeError(f"no {role} to build: this checkpoint's {role} is not a registered network; "
                    f"pass it again, e.g. load_from_checkpoint(path, {role}=MyNetwork(...))")
