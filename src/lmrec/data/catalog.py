"""Item catalog: external item ids <-> dense indices, titles and other text fields."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from lmrec.errors import UnknownIdError

_TITLE_NOISE = re.compile(r"[^\w\s]")


def normalize_title(title: str) -> str:
    """Lowercase, drop punctuation and collapse spaces: ``"Se7en (1995)!" -> "se7en 1995"``."""
    return " ".join(_TITLE_NOISE.sub(" ", title.lower()).split())


@dataclass
class ItemCatalog:
    """The items of one dataset.

    ``ids[i]`` is the external id of internal item ``i`` (a dense index in ``[0, len(catalog))``);
    ``titles[i]`` its title; ``fields[name][i]`` any further text (genres, tags, brand, description...).
    External ids are strings everywhere, so ``"42"`` from a CSV and ``42`` from JSON meet.
    """

    ids: list[str]
    titles: list[str]
    fields: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ids = [str(i) for i in self.ids]
        if len(self.titles) != len(self.ids):
            raise ValueError(f"catalog has {len(self.ids)} ids but {len(self.titles)} titles")
        for name, values in self.fields.items():
            if len(values) != len(self.ids):
                raise ValueError(f"catalog field {name!r} has {len(values)} values, expected {len(self.ids)}")
        self._index = {item_id: i for i, item_id in enumerate(self.ids)}
        if len(self._index) != len(self.ids):
            seen: set[str] = set()
            dup = next(i for i in self.ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise ValueError(f"duplicate item id {dup!r} in catalog")

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item_id: object) -> bool:
        return str(item_id) in self._index

    def index(self, item_id: str | int) -> int:
        """Dense index of an external id; :class:`UnknownIdError` names the id when it is not in the catalog."""
        try:
            return self._index[str(item_id)]
        except KeyError:
            raise UnknownIdError(
                f"unknown item id {item_id!r}: not among the {len(self)} items of the catalog"
            ) from None

    def indices(self, item_ids: Iterable[str | int]) -> list[int]:
        return [self.index(i) for i in item_ids]

    def text(self, fields: Sequence[str] = ("title",), sep: str = ". ") -> list[str]:
        """One text per item, the chosen fields joined by ``sep`` (empty values skipped)."""
        columns = [self.titles if name == "title" else self.fields[name] for name in fields]
        return [sep.join(v for v in values if v) for values in zip(*columns)]

    def subset(self, keep: Sequence[int]) -> ItemCatalog:
        """A new catalog of the items at positions ``keep`` (re-indexed densely in that order)."""
        return ItemCatalog(
            ids=[self.ids[i] for i in keep],
            titles=[self.titles[i] for i in keep],
            fields={name: [values[i] for i in keep] for name, values in self.fields.items()},
        )

    def checksum(self) -> str:
        """sha256 over ids and titles: identifies the catalog in run records and caches."""
        digest = hashlib.sha256()
        for item_id, title in zip(self.ids, self.titles):
            digest.update(f"{item_id}\t{title}\n".encode())
        return digest.hexdigest()[:16]
