"""The split protocols by name, the values of ``data.split.method``: each protocol module
registers a function that splits a dataset with the settings of a ``SplitConfig``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from evorec.data.dataset import Dataset
from evorec.data.split.base import Split
from evorec.errors import ConfigError

if TYPE_CHECKING:
    from evorec.config import SplitConfig

Protocol = Callable[[Dataset, "SplitConfig"], Split]

PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(method: str) -> Callable[[Protocol], Protocol]:
    """Register the decorated function as the protocol ``data.split.method: <method>``."""

    def add(protocol: Protocol) -> Protocol:
        if method in PROTOCOLS:
            raise ValueError(f"the split method {method!r} is taken")
        PROTOCOLS[method] = protocol
        return protocol

    return add


def split_methods() -> list[str]:
    """The registered split methods, by name."""
    return sorted(PROTOCOLS)


def make_split(dataset: Dataset, config: SplitConfig) -> Split:
    """Split ``dataset`` by the protocol that ``config.method`` names."""
    protocol = PROTOCOLS.get(config.method)
    if protocol is None:
        raise ConfigError(
            f"unknown split method {config.method!r}; use one of {', '.join(split_methods())}"
        )
    return protocol(dataset, config)
