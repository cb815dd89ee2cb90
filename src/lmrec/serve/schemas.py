"""Requests and responses of the service (pydantic): bounds on every field, so bad input is a 422 naming it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt

MAX_TEXT = 2000  # characters of a message or an intention
MAX_TITLE = 300
MAX_ID = 200
MAX_LIST = 500
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
Title = Annotated[str, Field(min_length=1, max_length=MAX_TITLE)]
ItemId = Annotated[str, Field(min_length=1, max_length=MAX_ID)]


def _integral(value: object) -> object:
    """2.0 -> 2: JSON Schema counts a number with a zero fraction as an integer (bools and 2.5 stay refused)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


JsonInt = Annotated[StrictInt, BeforeValidator(_integral)]
AnyId = ItemId | JsonInt  # ids as strings or integers, as the Python API takes them ("42" and 42 are one id)
Retrieval = Literal["auto", "exact", "faiss"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorResponse(BaseModel):
    error: str = Field(description="what was wrong with the request")
    field: str | None = Field(None, description="the request field it was about, where one was")


class Health(BaseModel):
    status: Literal["ok"]
    models: int


class ModelInfo(BaseModel):
    name: str = Field(description="the name requests use (the run folder's name unless given)")
    model: str
    task: Literal["cf", "crs"]
    dataset: str
    items: int = Field(description="catalog size, items added through the service included")
    users: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict, description="test means of the run")
    retrieval: Literal["exact", "faiss"]
    features: list[str] = Field(description="what this run answers: user, new_user, intent, similar, add_item, "
                                            "conversation")
    writes: bool = Field(False, description="whether this server takes new items (lmrec serve --allow-writes; "
                                            "POST /models/{name}/items needs its bearer token)")


class Item(BaseModel):
    item_id: str
    title: str


class Because(Item):
    similarity: float = Field(description="cosine of the two items in the model's item space")


class Recommendation(Item):
    rank: int
    score: float = Field(description="the model's score of the item for this request: higher ranks first; its "
                                     "scale is the model's own (AlphaRec: a cosine; Pop: a count of users)")
    because: list[Because] = Field(default_factory=list, description="up to 3 of the user's items (history, or "
                                   "the items a conversation mentions) nearest to it in the model's item space; "
                                   "empty for a model without one")
    intent: str | None = Field(None, description="the stated intention, where it brought this item in (the item "
                                                 "is not in the top k of the same request without it)")
    reason: str = Field("", description="why, in a sentence")


class RecommendRequest(Strict):
    user: AnyId | None = Field(None, description="a known user's id (a string or an integer)")
    items: list[AnyId] = Field(default_factory=list, max_length=MAX_LIST, description="a new user's item ids")
    titles: list[Title] = Field(default_factory=list, max_length=50, description="a new user's titles")
    intent: Text | None = Field(None, description="a sentence stating what the user wants now (AlphaRec)")
    alpha: float | None = Field(None, ge=0.0, le=1.0, description="weight of the intention (default 0.5); only "
                                                                  "with intent")
    k: int = Field(10, ge=1, le=1000)
    exclude: list[AnyId] = Field(default_factory=list, max_length=MAX_LIST)
    exclude_seen: bool = True
    retrieval: Retrieval = "auto"


class Matched(BaseModel):
    """What a title of the request was matched to (exact, normalized or fuzzy, see lmrec.data.titles)."""

    query: str
    item_id: str
    title: str
    how: Literal["exact", "normalized", "fuzzy"]
    score: float


class RecommendResponse(BaseModel):
    model: str
    retrieval: Literal["exact", "faiss"]
    recommendations: list[Recommendation]
    matched: list[Matched] = Field(default_factory=list, description="what each title of the request named")


class SimilarResponse(BaseModel):
    model: str
    item: Item
    similar: list[Recommendation]


class ItemDetails(Item):
    model: str
    fields: dict[str, str] = Field(description="the item's other text in the catalog (genres, description, ...)")
    popularity: int | None = Field(description="how popular it is in the run's training data (see popularity_of)")
    popularity_of: str = Field(description="what popularity counts")
    added: bool = Field(description="added through the service (POST /models/{name}/items)")


class AddItemRequest(Strict):
    title: Title
    item_id: ItemId | None = Field(None, description="default: a new id derived from the title")


class AddItemResponse(BaseModel):
    model: str
    item: Item
    items: int = Field(description="catalog size after the addition")


class ItemsResponse(BaseModel):
    items: list[Item]


class UsersResponse(BaseModel):
    users: list[str]
    total: int = Field(description="users with training items whose id contains q")


class UserHistory(BaseModel):
    model: str
    user_id: str
    history: list[Item] = Field(description="the user's training items (what the model learned them from), the "
                                            "first `limit`")
    total: int = Field(description="how many training items the user has")
    held_out: int = Field(description="how many more the valid and test splits hold back from the model")


class SessionResponse(BaseModel):
    session_id: str
    model: str
    expires_in: float = Field(description="seconds without a message before the session is dropped")


class MessageRequest(Strict):
    text: Text
    role: Literal["user", "system"] = "user"
    k: int = Field(10, ge=1, le=100)


class Turn(BaseModel):
    role: Literal["user", "system"]
    text: str


class Mention(Item):
    start: int = Field(description="offset of the first character in the message")
    end: int = Field(description="offset after the last character")


class MessageResponse(BaseModel):
    session_id: str
    mentions: list[Mention] = Field(default_factory=list, description="the catalog items this message names, "
                                                                      "where it names them")
    mentioned: list[Item] = Field(description="catalog items named in the conversation so far")
    recommendations: list[Recommendation]
    turns: int


class Transcript(BaseModel):
    session_id: str
    model: str
    turns: list[Turn]
    mentioned: list[Item]
