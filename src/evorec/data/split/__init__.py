"""Split protocols, one module each, registered under their ``data.split.method`` name:
``leave-one-out``, ``temporal``, ``cold-items`` and ``next-purchase``; ``make_split(dataset,
SplitConfig)`` runs the one a run config names."""

from evorec.data.split.base import EvalSet, Split, train_events
from evorec.data.split.cold_items import ColdItemSplit, cold_item_split
from evorec.data.split.leave_one_out import leave_one_out
from evorec.data.split.next_purchase import next_purchase_split
from evorec.data.split.registry import PROTOCOLS, make_split, register_protocol, split_methods
from evorec.data.split.temporal import temporal_split

__all__ = [
    "PROTOCOLS",
    "ColdItemSplit",
    "EvalSet",
    "Split",
    "cold_item_split",
    "leave_one_out",
    "make_split",
    "next_purchase_split",
    "register_protocol",
    "split_methods",
    "temporal_split",
    "train_events",
]
