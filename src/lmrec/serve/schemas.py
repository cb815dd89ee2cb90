"""Requests and responses of the service (pydantic): bounds on every field, so bad input is a 422 naming it."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_TEXT = 2000  # characters of a message or an intention
MAX_TITLE = 300
MAX_ID = 200
MAX_LIST = 500
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
Title = Annotated[str, Field(min_length=1, max_length=MAX_TITLE)]
ItemId = Annotated[str, Field(min_length=1, max_length=MAX_ID)]
Retrieval = Literal["auto", "exact", "faiss"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorResponse(BaseModel):
    error: str = Field(description="what was wrong with the request")


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


class Item(BaseModel):
    item_id: str
    title: str


class Recommendation(Item):
    rank: int
    score: float


class RecommendRequest(Strict):
    user: ItemId | None = Field(None, description="a known user's id")
    items: list[ItemId] = Field(default_factory=list, max_length=MAX_LIST, description="a new user's item ids")
    titles: list[Title] = Field(default_factory=list, max_length=50, description="a new user's titles")
    intent: Text | None = Field(None, description="a sentence stating what the user wants now (AlphaRec)")
    alpha: float = Field(0.5, ge=0.0, le=1.0, description="weight of the intention")
    k: int = Field(10, ge=1, le=1000)
    exclude: list[ItemId] = Field(default_factory=list, max_length=MAX_LIST)
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
    total: int


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


class MessageResponse(BaseModel):
    session_id: str
    mentioned: list[Item] = Field(description="catalog items named in the conversation so far")
    recommendations: list[Recommendation]
    turns: int


class Transcript(BaseModel):
    session_id: str
    model: str
    turns: list[Turn]
    mentioned: list[Item]
