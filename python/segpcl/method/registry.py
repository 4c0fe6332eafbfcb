"""Which class implements each `--method NAME`: SeGP-CL's rows (configurations of the Learner) and any method
registered with `register_method` (a subclass of segpcl.method.base.ContinualMethod)."""

from __future__ import annotations

from ..errors import ConfigError
from .base import ContinualMethod
from .learner import METHODS, Learner
from .peers.mgclip import MGCLIP
from .peers.moe_adapters import MoEAdapters
from .peers.rapf import RAPF
from .peers.zscl import ZSCL

PEERS: dict[str, type[ContinualMethod]] = {
    # the methods SeGP-CL is compared with, one module each under method/peers/
    "rapf": RAPF,
    "mgclip": MGCLIP,
    "zscl": ZSCL,
    "zscl-lora": ZSCL,
    "moe-adapters": MoEAdapters,
}
_REGISTERED: dict[str, type[ContinualMethod]] = dict(PEERS)


def register_method(name: str):
    """Class decorator: `@register_method("my-lora")` makes `--method my-lora` build that class."""

    def deco(cls: type[ContinualMethod]) -> type[ContinualMethod]:
        if not (isinstance(cls, type) and issubclass(cls, ContinualMethod)):
            raise TypeError(f"register_method({name!r}) takes a subclass of ContinualMethod, got {cls!r}")
        if name in METHODS or name in PEERS:
            raise ValueError(f"method name {name!r} is a built-in method; choose another name")
        _REGISTERED[name] = cls
        return cls

    return deco


def method_names() -> list[str]:
    """Every method `--method` accepts: SeGP-CL's rows first, then registered methods."""
    return list(METHODS) + [n for n in _REGISTERED if n not in METHODS]


def method_class(name: str) -> type[ContinualMethod]:
    """The class that implements `name`, or a one-line ConfigError listing the choices."""
    if name in METHODS:
        return Learner
    if name in _REGISTERED:
        return _REGISTERED[name]
    raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(method_names())}")
