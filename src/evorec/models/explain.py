"""Which past events drove a recommendation, and how much.

Occlusion works for every model through the contract: the history is encoded again without
each of its events (all the leave-one-out histories in one ``encode`` call) and an event's
attribution is the score it takes away, ``s = i · v`` of the recommended item with the full
history minus with the event left out. The Transformer trunks (SASRec, BERT4Rec, TiSASRec and
the models on their trunk) add an attention view: the share of the interest vector's
attention that reaches each event, rolled out over the blocks (Abnar & Zuidema, 2020) from
the weights each block's ``scaled_dot_product_attention`` applies, recomputed from the
block's own modules while the network runs, so the model's outputs are untouched. Where the
catalogue has categorical attributes, each explaining event lists those it shares with the
recommended item.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl
import torch

from evorec.data.dataset import ITEM_IDX, Dataset
from evorec.data.histories import Histories
from evorec.errors import EvorecError
from evorec.features.items import item_columns
from evorec.retrieval.ranking import dense, exclude_seen

if TYPE_CHECKING:
    from evorec.models.base import Recommender

RECENT = 200  # events scored by occlusion by default: the latest ones
Aggregation = Literal["rollout", "last"]


@dataclass(frozen=True)
class ExplainingEvent:
    """One past event and what it contributed to the recommended item's score."""

    position: int  # in the history, 0 = oldest
    item_id: Any  # original id
    timestamp: int | None  # unix seconds; None when the data only gives order
    score_change: float  # s(history) - s(history without the event); > 0: it drove the item
    attention: float | None  # share of the interest vector's attention (Transformers only)
    shared_attributes: tuple[str, ...]  # ``column=value`` tokens shared with the item


@dataclass(frozen=True)
class Explanation:
    """Why ``item_id`` scores ``score`` for a history: its events by attribution, best first."""

    item_id: Any
    score: float
    user_id: Any | None
    events: tuple[ExplainingEvent, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (ids keep their type)."""
        out = asdict(self)
        for event in out["events"]:
            event["shared_attributes"] = list(event["shared_attributes"])
        return out


# -- occlusion --------------------------------------------------------------------------


def drop_events(history: Histories, dropped: np.ndarray) -> Histories:
    """Row ``r``: the one-row ``history`` without the events where ``dropped[r]`` (a
    ``[rows, length]`` mask) is true, with the aligned timestamps, behaviours and user."""
    keep = ~np.asarray(dropped, dtype=bool)
    events = history.offsets[0] + np.nonzero(keep)[1]
    offsets = np.zeros(len(keep) + 1, dtype=np.int64)
    np.cumsum(keep.sum(1), out=offsets[1:])

    def pick(values: np.ndarray | None) -> np.ndarray | None:
        return None if values is None else values[events]

    users = None if history.users is None else np.repeat(history.users[:1], len(keep))
    return Histories(
        offsets, history.items[events], pick(history.timestamps), pick(history.behaviors), users
    )


def leave_one_out(history: Histories, positions: np.ndarray) -> Histories:
    """Row ``r``: the one-row ``history`` without its event ``positions[r]`` (-1: whole)."""
    n = int(history.lengths[0])
    return drop_events(history, np.arange(n)[None, :] == np.asarray(positions)[:, None])


@dataclass(frozen=True)
class Occlusion:
    """Scores of items with one history and with each of its events left out."""

    positions: np.ndarray  # occluded events (history positions), ``[m]``
    full: np.ndarray  # interest vector of the whole history, ``[dim]``
    without: np.ndarray  # interest vectors without each event, ``[m, dim]``

    def score_changes(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For item vectors ``[k, dim]``: the full-history scores ``[k]`` and each event's
        score change ``[m, k]`` (full minus without)."""
        full = vectors @ self.full
        return full, full[None, :] - self.without @ vectors.T


def occlude(model: Recommender, history: Histories, recent: int | None = RECENT) -> Occlusion:
    """Encode the one-row ``history`` whole and without each of its latest ``recent``
    events (all of them with None), in one ``encode`` call."""
    n = int(history.lengths[0])
    first = 0 if recent is None else max(n - recent, 0)
    positions = np.arange(first, n, dtype=np.int64)
    vectors = np.asarray(model.encode(leave_one_out(history, np.append(positions, -1))))
    return Occlusion(positions, vectors[-1].astype(np.float64), vectors[:-1].astype(np.float64))


# -- attention --------------------------------------------------------------------------


def block_weights(block: torch.nn.Module, x: torch.Tensor, mask: Any) -> torch.Tensor:
    """The attention weights ``[batch, heads, L, L]`` that a self-attention block's
    ``scaled_dot_product_attention`` applies to its input ``x``: the same queries and keys
    (``attn_norm``, ``qkv``) and mask (causal without one, boolean keep, or float bias)."""
    batch, length, dim = x.shape
    heads = block.heads
    q, k, _ = (
        block.qkv(block.attn_norm(x))
        .view(batch, length, 3, heads, dim // heads)
        .permute(2, 0, 3, 1, 4)
        .float()
    )
    logits = q @ k.transpose(-2, -1) / math.sqrt(dim // heads)
    if mask is None:
        causal = torch.ones(length, length, dtype=torch.bool, device=x.device).tril()
        logits = logits.masked_fill(~causal, -torch.inf)
    elif mask.dtype == torch.bool:
        logits = logits.masked_fill(~mask, -torch.inf)
    else:
        logits = logits + mask.float()
    return logits.softmax(-1)


def attention_blocks(model: Recommender) -> Sequence[torch.nn.Module] | None:
    """The self-attention blocks of the model's network (the attention trunk), or None."""
    network = getattr(model, "network", None)
    blocks = getattr(network, "blocks", None)
    if blocks is None or not hasattr(model, "inference_batch"):
        return None
    if not all(hasattr(b, name) for b in blocks for name in ("qkv", "attn_norm", "heads")):
        return None
    return list(blocks)


def block_attention(
    model: Recommender, histories: Histories
) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Run the network on ``histories`` as ``encode`` does; its hidden states, each block's
    head-mean attention weights, the padded inputs and the read position of every row."""
    blocks = attention_blocks(model)
    if blocks is None:
        raise EvorecError(f"the {model.name} model has no attention trunk to explain with")
    network = model.network
    device = next(network.parameters()).device
    maps: list[torch.Tensor] = []

    def capture(block: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else kwargs["x"]
        mask = args[1] if len(args) > 1 else kwargs.get("attn_mask")
        maps.append(block_weights(block, x, mask).mean(1))

    handles = [b.register_forward_pre_hook(capture, with_kwargs=True) for b in blocks]
    was_training = network.training
    network.eval()
    try:
        with torch.inference_mode():
            items, features, read = model.inference_batch(histories, device)
            hidden = network(items, features)
    finally:
        for handle in handles:
            handle.remove()
        network.train(was_training)
    return hidden, maps, items, read


def attention_weights(
    model: Recommender, history: Histories, how: Aggregation = "rollout"
) -> np.ndarray:
    """Per event of the one-row ``history``, the share of attention that its interest
    vector pays it (sums to 1; 0 for events older than the model reads): rolled out over the
    blocks with the residual as half of each (``rollout``), or the last block's (``last``).
    Tokens that are no event (BERT4Rec's ``[MASK]``) are left out and the rest renormalised."""
    _, maps, items, read = block_attention(model, history)
    if how == "rollout":
        eye = torch.eye(items.shape[1], device=items.device)
        flow = eye.expand_as(maps[0])
        for weights in maps:
            flow = (0.5 * weights + 0.5 * eye) @ flow
    else:
        flow = maps[-1]
    row = flow[0, read[0]].double().cpu().numpy()
    tokens = items[0].cpu().numpy()
    events = np.flatnonzero((tokens > 0) & (tokens <= model.n_items))
    out = np.zeros(int(history.lengths[0]))
    shares = row[events]
    out[len(out) - len(events) :] = shares / shares.sum()
    return out


# -- attributes -------------------------------------------------------------------------


def item_tokens(dataset: Dataset, items: Iterable[int]) -> dict[int, set[str]]:
    """The ``column=value`` categorical attribute tokens of the given internal items."""
    wanted = sorted(set(int(i) for i in items))
    out: dict[int, set[str]] = {i: set() for i in wanted}
    columns = item_columns(dataset)["attributes"]
    if dataset.items is None or not columns:
        return out
    rows = dataset.items.filter(pl.col(ITEM_IDX).is_in(wanted))
    for column in columns:
        part = rows.select(ITEM_IDX, pl.col(column))
        if isinstance(rows.schema[column], pl.List):
            part = part.explode(column)
        for item, value in part.drop_nulls(column).iter_rows():
            out[item].add(f"{column}={value}")
    return out


# -- explanations -----------------------------------------------------------------------


def explain_history(
    model: Recommender,
    history: Histories,
    items: Sequence[int] | None = None,
    *,
    top: int = 10,
    recent: int | None = RECENT,
    user_id: Any | None = None,
) -> list[Explanation]:
    """Explanations of internal ``items`` (default: the top recommendation, seen items
    left out) for the one-row ``history``, each with its ``top`` events by score change."""
    dataset = model.fitted_dataset()
    if int(history.lengths[0]) == 0:
        raise EvorecError("the history holds no event the model knows: nothing to explain")
    occlusion = occlude(model, history, recent)
    vectors = dense(model.item_vectors()).astype(np.float64)
    if items is None:
        scores = torch.from_numpy(vectors @ occlusion.full)[None, :]
        exclude_seen(scores, history)
        items = [int(scores.argmax())]
    items = [int(i) for i in items]
    full, changes = occlusion.score_changes(vectors[items])
    attention = attention_weights(model, history) if attention_blocks(model) is not None else None
    # ties (events the model does not read) go to the most recent event first
    order = np.lexsort((-occlusion.positions[:, None].repeat(len(items), 1), -changes), axis=0)
    chosen = order[: max(top, 0)]
    start, stop = history.offsets[0], history.offsets[1]
    row_items = history.items[start:stop]
    times = None
    if dataset.has_time and history.timestamps is not None:
        times = history.timestamps[start:stop]
    tokens = item_tokens(dataset, [*items, *row_items[occlusion.positions[chosen.ravel()]]])
    explanations = []
    for column, item in enumerate(items):
        events = []
        for row in chosen[:, column]:
            position = int(occlusion.positions[row])
            event_item = int(row_items[position])
            events.append(
                ExplainingEvent(
                    position=position,
                    item_id=dataset.item_ids[event_item],
                    timestamp=None if times is None else int(times[position]),
                    score_change=float(changes[row, column]),
                    attention=None if attention is None else float(attention[position]),
                    shared_attributes=tuple(sorted(tokens[event_item] & tokens[item])),
                )
            )
        explanations.append(
            Explanation(dataset.item_ids[item], float(full[column]), user_id, tuple(events))
        )
    return explanations


def explain(
    model: Recommender,
    user: Any | None = None,
    *,
    history: Iterable[Any] | None = None,
    timestamps: Iterable[int] | None = None,
    item: Any | None = None,
    top: int = 10,
    recent: int | None = RECENT,
) -> Explanation:
    """:meth:`Recommender.explain`: a known ``user``'s stored history, or a raw ``history``
    of original item ids (oldest first, optionally with ``timestamps``)."""
    dataset = model.fitted_dataset()
    if (user is None) == (history is None):
        raise EvorecError("give either user or history")
    if user is not None:
        row = dataset.histories.take(dataset.encode_users([user]))
        user_id = dataset.user_ids[int(row.users[0])]
    else:
        items = list(history)
        times = None if timestamps is None else [list(timestamps)]
        if times is not None and len(times[0]) != len(items):
            raise EvorecError("timestamps must have one value per history item")
        row = Histories.from_lists([dataset.encode_items(items)], times)
        user_id = None
    targets = None if item is None else dataset.encode_items([item]).tolist()
    return explain_history(model, row, targets, top=top, recent=recent, user_id=user_id)[0]
