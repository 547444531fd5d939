"""Request and response bodies of the REST service.

Every input field is strict (no coercion: ``true`` is not a timestamp, ``"123"`` not a
number) and bounded to what the store holds; strings never hold a NUL character (PostgreSQL
text cannot).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    Tag,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

MAX_BATCH = 10_000
MAX_K = 1_000
MAX_ID_LENGTH = 256
MAX_PATH_LENGTH = 4_096  # Linux PATH_MAX
MAX_ATTRIBUTES = 16
HISTORY_PAGE = 1_000  # events per history page by default
MAX_HISTORY_PAGE = 10_000
# JSON numbers are exact (and OpenAPI bounds comparable) up to 2**53: integers travel within
# that, well inside the store's int64; larger integer ids travel as strings
MAX_INT = 2**53 - 1
NO_NUL = r"^[^\x00]*$"


def _id(value: Any) -> str | int:
    if isinstance(value, str):
        if not 1 <= len(value) <= MAX_ID_LENGTH or "\x00" in value:
            raise PydanticCustomError(
                "id_text",
                "a text id has 1 to {max_length} characters, none of them NUL",
                {"max_length": MAX_ID_LENGTH},
            )
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if not -MAX_INT <= value <= MAX_INT:
            raise PydanticCustomError(
                "id_range", "an integer id lies within +-(2**53 - 1); send larger ones as text"
            )
        return value
    raise PydanticCustomError("id_type", "an id is a string or an integer")


# Ids travel as JSON strings or integers; the store keeps them as text.
Id = Annotated[
    str | int,
    PlainValidator(_id),
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_ID_LENGTH,
                    "pattern": NO_NUL,
                },
                {"type": "integer", "minimum": -MAX_INT, "maximum": MAX_INT},
            ]
        }
    ),
]
Timestamp = Annotated[StrictInt, Field(ge=0, le=MAX_INT, description="unix seconds")]
Text = Annotated[StrictStr, StringConstraints(min_length=1, max_length=64, pattern=NO_NUL)]
AttributeValue = Annotated[
    StrictStr, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=NO_NUL)
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventIn(Strict):
    """One user action."""

    user_id: Id
    item_id: Id
    timestamp: Annotated[Timestamp, Field(description="unix seconds; default: now")] = Field(
        default_factory=lambda: int(time.time())
    )
    behavior: Text | None = None
    value: Annotated[float, Field(strict=True, allow_inf_nan=False)] | None = None


EventBatch = Annotated[list[EventIn], Field(min_length=1, max_length=MAX_BATCH)]
# one event or a list, told apart by the JSON type, so that errors name one of them only
EVENT, BATCH = "event", "batch"
EventsIn = Annotated[
    Annotated[EventIn, Tag(EVENT)] | Annotated[EventBatch, Tag(BATCH)],
    Discriminator(lambda body: BATCH if isinstance(body, list) else EVENT),
]


class Ingested(BaseModel):
    ingested: int = Field(description="events committed to the store (by the first attempt)")
    replayed: bool = Field(
        False, description="true: a retry of an Idempotency-Key already stored; nothing added"
    )


MAX_EXPLAIN = 50  # explaining events per item


class ExplainingEvent(BaseModel):
    """A past event of the user and how much it drives the item."""

    item_id: str | int
    timestamp: int | None = Field(description="unix seconds, as stored")
    score_change: float = Field(
        description="the item's score from the history minus its score without this event"
    )
    attention: float | None = Field(
        description="the event's share of the interest vector's attention (Transformer "
        "models; null for the others)"
    )
    shared_attributes: list[str] = Field(
        description="`column=value` item attributes the event shares with the recommended item"
    )


class ScoredItem(BaseModel):
    item_id: str | int
    score: float
    rank: int
    explained_by: list[ExplainingEvent] | None = Field(
        None,
        description="with explain=true: the events that drive the item most, by score "
        "change (none for popularity); null otherwise",
    )


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
    timestamps: Annotated[list[Timestamp], Field(max_length=MAX_BATCH)] | None = None
    k: Annotated[StrictInt, Field(ge=1, le=MAX_K)] = 10
    exclude_seen: StrictBool = True
    allow: Annotated[list[Id], Field(max_length=MAX_BATCH)] | None = None
    deny: Annotated[list[Id], Field(max_length=MAX_BATCH)] | None = None
    attributes: Annotated[dict[Text, AttributeValue], Field(max_length=MAX_ATTRIBUTES)] = Field(
        default_factory=dict, description="item attribute filters, column -> value"
    )
    explain: StrictBool = Field(
        False, description="each item with the events of the history that drive it"
    )
    explain_top: Annotated[StrictInt, Field(ge=1, le=MAX_EXPLAIN)] = Field(
        3, description="explaining events per item"
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
    next: int | None = Field(
        description="the `after` value of the next page; null on the last page"
    )


class Deleted(BaseModel):
    user_id: str
    deleted: int = Field(description="events erased")
    forgetting: bool = Field(
        description="a background forget of the erased users the served model holds is "
        "running (serve --forget-on-delete; GET /admin/forget/status follows it)"
    )


class ReloadIn(Strict):
    model_dir: (
        Annotated[
            StrictStr,
            StringConstraints(min_length=1, max_length=MAX_PATH_LENGTH, pattern=NO_NUL),
        ]
        | None
    ) = Field(
        None,
        description="default: the directory being served; others only under the models root",
    )


class Reloaded(BaseModel):
    model_version: str
    previous_version: str


class Health(BaseModel):
    status: str
    model_version: str
    model_update: Literal["ok", "failing"] = Field(
        "ok", description="failing: the watched path names a version that does not load"
    )
    model_update_error: str | None = Field(None, description="why, naming the file")


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: body, query, path or header, then the field")
    msg: str
    type: str


class Invalid(BaseModel):
    """A request that names or holds something invalid (422). The input is never echoed."""

    detail: list[FieldError] = Field(description="the first errors, at most 20")
    errors: int = Field(description="how many errors there were in all")


class Refusal(BaseModel):
    """Any other error: what went wrong, in one line."""

    detail: str
