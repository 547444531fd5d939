"""Request and response bodies of the REST service."""

from __future__ import annotations

import time
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    StringConstraints,
    model_validator,
)

MAX_BATCH = 10_000
MAX_K = 1_000

# Ids travel as JSON strings or integers; the store keeps them as text.
Id = Annotated[StrictStr, StringConstraints(min_length=1, max_length=256)] | StrictInt


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventIn(Strict):
    """One user action."""

    user_id: Id
    item_id: Id
    timestamp: Annotated[int, Field(ge=0, le=2**62, description="unix seconds; default: now")] = (
        Field(default_factory=lambda: int(time.time()))
    )
    behavior: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    value: Annotated[float, Field(allow_inf_nan=False)] | None = None


EventBatch = Annotated[list[EventIn], Field(min_length=1, max_length=MAX_BATCH)]


class Ingested(BaseModel):
    ingested: int = Field(description="events committed to the store")


class ScoredItem(BaseModel):
    item_id: str | int
    score: float
    rank: int


class Recommendations(BaseModel):
    user_id: str | None = Field(None, description="null for a raw history")
    model_version: str
    source: str = Field(description="model, or popularity when no event was usable")
    items: list[ScoredItem]


class Similar(BaseModel):
    item_id: str | int
    model_version: str
    items: list[ScoredItem]


class HistoryIn(Strict):
    """A raw history (anonymous or session user), oldest first."""

    items: Annotated[list[Id], Field(max_length=MAX_BATCH)]
    timestamps: Annotated[list[int], Field(max_length=MAX_BATCH)] | None = None
    k: Annotated[int, Field(ge=1, le=MAX_K)] = 10
    exclude_seen: bool = True
    allow: list[Id] | None = None
    deny: list[Id] | None = None
    attributes: dict[str, str] = Field(
        default_factory=dict, description="item attribute filters, column -> value"
    )

    @model_validator(mode="after")
    def _aligned(self) -> HistoryIn:
        if self.timestamps is not None and len(self.timestamps) != len(self.items):
            raise ValueError("timestamps must have one value per item")
        return self


class StoredEvent(BaseModel):
    item_id: str | int
    timestamp: int
    behavior: str | None
    value: float | None


class History(BaseModel):
    user_id: str
    events: list[StoredEvent]


class Deleted(BaseModel):
    user_id: str
    deleted: int = Field(description="events erased")


class ReloadIn(Strict):
    model_dir: str | None = Field(None, description="default: the directory being served")


class Reloaded(BaseModel):
    model_version: str
    previous_version: str


class Health(BaseModel):
    status: str
    model_version: str
