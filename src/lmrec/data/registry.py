"""Dataset registry: names -> folders, formats and default splits; ``load_dataset`` turns a name or path into SplitData.

A name is looked up, in order, in ``data_dir`` (when given), in each folder of the ``LMREC_DATA`` environment
variable (``os.pathsep``-separated), then in the package's ``bundled`` folder (ml-latest-small ships there).
A path to a folder is loaded with ``format`` or, when None, the format detected from its files.

Default split of the registry datasets: ``ratio:0.4,0.3,0.3`` with seed 2024, i.e. AlphaRec's per-user
random 4:3:3 protocol. ``split="fixed"`` uses a source's own split (LightGCN text files, UniSRec); a LightGCN
folder given by path uses its fixed split by default. Other split strings go through
:func:`lmrec.data.splits.parse_split` (``ratio:0.8,0.1,0.1``, ``temporal-user:0.8,0.1,0.1``, ``temporal-global``,
``loo``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lmrec.data import frames
from lmrec.data.conversations import CRSData
from lmrec.data.interactions import Interactions, SplitData
from lmrec.data.loaders import amazon, lightgcn_txt, movielens, recbole
from lmrec.data.splits import parse_split, split_modifier, thin_train
from lmrec.errors import Argument, ArgumentError, LmrecError

DEFAULT_SPLIT = "ratio:0.4,0.3,0.3"
DEFAULT_SEED = 2024
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled"


class DatasetNotFoundError(LmrecError, FileNotFoundError):
    """A dataset name or path that resolves to no folder; the message lists the folders searched."""


@dataclass(frozen=True)
class DatasetSpec:
    """A known dataset: where its files live (relative to a data root), their format, and how it is split."""

    name: str
    format: str
    folder: str
    split: str = DEFAULT_SPLIT
    description: str = ""
    licence: str = ""
    url: str = ""
    note: str = ""
    aliases: tuple[str, ...] = ()
    task: str = "cf"  # "cf": interactions -> SplitData; "crs": conversations -> CRSData


_GROUPLENS = "GroupLens usage licence: research use, acknowledge in publications, no commercial use"
DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "movielens-latest-small", "movielens-latest", "movielens-latest-small",
            description="610 users, 9,742 movies (title, year, genres, tags), 100,836 ratings 0.5-5 with timestamps",
            licence=_GROUPLENS + "; redistribution allowed under the same terms (README.txt)",
            url="https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",
            note="bundled with lmrec (src/lmrec/bundled/ml-latest-small)",
            aliases=("ml-latest-small",),
        ),
        DatasetSpec(
            "movielens-100k", "movielens-100k", "movielens-100k",
            description="943 users, 1,682 movies (title, year, genres), 100,000 ratings 1-5 with timestamps",
            licence=_GROUPLENS + "; no redistribution", aliases=("ml-100k",),
            url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        ),
        DatasetSpec(
            "movielens-1m", "movielens-1m", "movielens-1m",
            description="6,040 users, 3,883 movies (title, year, genres), 1,000,209 ratings 1-5 with timestamps",
            licence=_GROUPLENS + "; no redistribution", aliases=("ml-1m",),
            url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
            note="AlphaRec's zero-shot target (its Table 6 lists 6,040 users / 3,043 items after its own filtering)",
        ),
        DatasetSpec(
            "amazon-industrial-scientific-2018", "lcrec", "amazon-industrial-scientific-2018/lcrec_format",
            description="Amazon 2018 Industrial & Scientific 5-core, LC-Rec preprocessing: 8,317 users, 4,344 items, "
            "58,492 interactions; title, description, brand, categories",
            licence="Amazon review data (Ni, Li, McAuley 2019): research use",
            url="https://nijianmo.github.io/amazon/index.html",
            note="full chronological sequences and a separate title field (what AlphaRec's title-only embeddings "
            "need); ids are LC-Rec indices; raw data from the URL, preprocessing as in LC-Rec (RUCAIBox/LC-Rec)",
        ),
        DatasetSpec(
            "amazon-industrial-scientific-2018-unisrec", "unisrec", "amazon-industrial-scientific-2018/unisrec_format",
            description="Amazon 2018 Industrial & Scientific, UniSRec 'Scientific': 8,442 users, 4,385 items, "
            "59,427 interactions; one text per item (title, categories, brand)",
            licence="Amazon review data (Ni, Li, McAuley 2019): research use",
            url="https://github.com/RUCAIBox/UniSRec",
            note="own leave-one-out split available with split='fixed'; ids are asins and reviewer ids",
        ),
        DatasetSpec(
            "amazon-video-games-2018", "recbole", "amazon-video-games-2018",
            description="Amazon 2018 Video Games 5-core, LLMRank's Games-6k preprocessing: 50,546 users, 16,859 "
            "items with titles, 440,264 interactions in time order",
            licence="Amazon review data (Ni, Li, McAuley 2019): research use; LLMRank repository MIT",
            url="https://github.com/RUCAIBox/LLMRank",
            note="AlphaRec's Games category (the paper's own files, 40,834 users / 14,344 items / 390,013 "
            "interactions, are not released offline); full sequences rebuilt from the valid / test files; "
            "split='fixed' is LLMRank's leave-one-out",
            aliases=("games",),
        ),
        DatasetSpec(
            "inspired", "inspired", "inspired", split="fixed", task="crs",
            description="INSPIRED movie-recommendation dialogues, UniCRS split: 801 / 99 / 99 conversations",
            licence="not stated by its authors (sweetpeach/Inspired)", url="https://github.com/sweetpeach/Inspired",
        ),
        DatasetSpec(
            "redial", "redial", "redial", split="fixed", task="crs",
            description="ReDIAL dialogues: the official test split; train / valid from the 901 training "
            "conversations available here (see lmrec.data.loaders.redial)",
            licence="CC BY 4.0", url="https://redialdata.github.io/website/",
        ),
    )
}
_ALIASES = {alias: spec.name for spec in DATASETS.values() for alias in (spec.name, *spec.aliases)}

Loader = Callable[..., Interactions]  # loader(folder, name=..., min_rating=...)


def _no_ratings(load: Callable[[Path, str], Interactions], fmt: str) -> Loader:
    def wrapped(folder: Path, name: str, min_rating: float | None = None) -> Interactions:
        if min_rating is not None:
            raise ArgumentError(f"format {fmt!r} has no ratings: leave out ", Argument("min_rating"))
        return load(folder, name)

    return wrapped


#: format name -> loader(folder, name=..., min_rating=...) returning all interactions.
FORMATS: dict[str, Loader] = {
    "lightgcn": _no_ratings(lightgcn_txt.load_lightgcn_interactions, "lightgcn"),
    "movielens-100k": movielens.load_movielens_100k,
    "movielens-latest": movielens.load_movielens_latest,
    "movielens-1m": movielens.load_movielens_1m,
    "amazon-2014": amazon.load_amazon_2014,
    "amazon-2018": amazon.load_amazon_2018,
    "unisrec": _no_ratings(amazon.load_unisrec_interactions, "unisrec"),
    "lcrec": _no_ratings(amazon.load_lcrec, "lcrec"),
    "recbole": recbole.load_recbole,
    "lmrec": frames.load_canonical,
}
def _crs_loader(module: str, function: str) -> Callable[[Path], CRSData]:
    def load(folder: Path) -> CRSData:
        import importlib

        return getattr(importlib.import_module(module), function)(folder)

    return load


#: conversational formats: folder -> CRSData (always their own split).
CRS_FORMATS: dict[str, Callable[[Path], CRSData]] = {
    "inspired": _crs_loader("lmrec.data.loaders.inspired", "load_inspired"),
    "redial": _crs_loader("lmrec.data.loaders.redial", "load_redial"),
}
#: formats whose files carry their own split, loadable with ``split="fixed"``.
FIXED_SPLITS: dict[str, Callable[[Path, str, int], SplitData]] = {
    "lightgcn": lambda folder, name, seed: lightgcn_txt.load_lightgcn_txt(folder, name, seed=seed),
    "unisrec": lambda folder, name, seed: amazon.load_unisrec_split(folder, name),
    "recbole": lambda folder, name, seed: recbole.load_recbole_split(folder, name),
}


def list_datasets() -> list[DatasetSpec]:
    """The registered datasets (whether or not their files are present)."""
    return list(DATASETS.values())


def data_roots(data_dir: str | Path | None = None) -> list[Path]:
    """Folders searched for named datasets, in order: ``data_dir``, ``$LMREC_DATA`` entries, the bundled folder."""
    roots = [Path(data_dir)] if data_dir is not None else []
    roots += [Path(p) for p in os.environ.get("LMREC_DATA", "").split(os.pathsep) if p]
    return [*roots, BUNDLED_DIR]


def is_registered(name: str) -> bool:
    """Whether ``name`` is a registered dataset name or alias."""
    return str(name) in _ALIASES


def get_spec(name: str) -> DatasetSpec:
    """The spec of a registered name or alias; :class:`DatasetNotFoundError` lists the known names otherwise."""
    if name not in _ALIASES:
        raise DatasetNotFoundError(f"unknown dataset {name!r}: known names are {', '.join(_ALIASES)}")
    return DATASETS[_ALIASES[name]]


def find_dataset_dir(name: str, data_dir: str | Path | None = None) -> Path:
    """The folder of a registered dataset: the first ``root/<spec.folder>`` or ``root/<alias>`` that exists."""
    spec = get_spec(name)
    searched = []
    for root in data_roots(data_dir):
        for folder in dict.fromkeys((spec.folder, *spec.aliases)):
            candidate = root / folder
            if candidate.is_dir():
                return candidate
            searched.append(str(candidate))
    hint = f"; download it from {spec.url}" if spec.url else ""
    raise DatasetNotFoundError(
        f"dataset {spec.name!r} not found; searched {', '.join(searched)} "
        f"(add a data folder with LMREC_DATA or data_dir){hint}"
    )


def detect_format(folder: str | Path) -> str:
    """The format of a folder, from the files it holds."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetNotFoundError(f"{folder}: not a folder")
    names = {p.name for p in folder.iterdir() if p.is_file()}
    has = lambda *options: any(n in names for n in options)  # noqa: E731
    if frames.is_dataset_folder(folder):
        return "lmrec"
    if (folder / "unicrs_processed").is_dir():
        return "inspired"
    if has("movies_with_mentions.csv"):
        return "redial"
    if has("train.txt", "train.txt.gz"):
        return "lightgcn"
    if has("u.data"):
        return "movielens-100k"
    if has("ratings.csv") and has("movies.csv"):
        return "movielens-latest"
    if has("ratings.dat"):
        return "movielens-1m"
    if any(n.endswith(".train.inter") for n in names) and any(n.endswith(".item2index") for n in names):
        return "unisrec"
    if any(n.endswith((".inter", ".inter.gz")) for n in names):
        return "recbole"
    if any(n.endswith((".inter.json", ".inter.json.gz")) for n in names):
        return "lcrec"
    if any(n.endswith((".json", ".json.gz")) for n in names):
        return f"amazon-{amazon.amazon_release(folder)}"
    raise DatasetNotFoundError(
        f"{folder}: cannot tell the format from its files ({', '.join(sorted(names)[:10]) or 'none'}); pass ",
        Argument("format"), f" one of {', '.join([*FORMATS, *CRS_FORMATS])}"
    )


def _resolve(
    name_or_path: str | Path, format: str | None, data_dir: str | Path | None
) -> tuple[Path, str, str, DatasetSpec | None]:
    """(folder, format, dataset name, spec or None) of a registered name or a folder path."""
    if str(name_or_path) in _ALIASES:
        spec = get_spec(str(name_or_path))
        return find_dataset_dir(spec.name, data_dir), format or spec.format, spec.name, spec
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path, format or detect_format(path), path.name, None
    raise DatasetNotFoundError(
        f"{name_or_path!r} is neither a known dataset ({', '.join(_ALIASES)}) nor an existing folder"
    )


def load_interactions(
    name_or_path: str | Path,
    format: str | None = None,
    data_dir: str | Path | None = None,
    min_rating: float | None = None,
) -> Interactions:
    """All interactions of a registered dataset or a folder (before any split)."""
    folder, fmt, name, _ = _resolve(name_or_path, format, data_dir)
    if fmt not in FORMATS:
        raise ArgumentError(Argument("format", fmt), f": expected one of {', '.join(FORMATS)} "
                            f"(conversational: {', '.join(CRS_FORMATS)}, loaded by load_dataset)")
    return FORMATS[fmt](folder, name=name, min_rating=min_rating)


def load_dataset(
    name_or_path: str | Path,
    format: str | None = None,
    split: str | None = None,
    seed: int = DEFAULT_SEED,
    data_dir: str | Path | None = None,
    min_rating: float | None = None,
) -> SplitData | CRSData:
    """A registered dataset or a folder, split by ``split`` (None: the dataset's default, see module docstring).

    Interaction data gives a :class:`SplitData`; conversational data (``inspired``, ``redial``) a
    :class:`CRSData` with its own split. ``split="fixed"`` needs a format with its own split (lightgcn, unisrec);
    any other split string is applied by :func:`lmrec.data.splits.parse_split` with ``seed`` to
    :func:`load_interactions`' result.
    """
    folder, fmt, name, spec = _resolve(name_or_path, format, data_dir)
    if fmt in CRS_FORMATS:
        if split not in (None, "fixed") or min_rating is not None:
            given = Argument("split", split) if split not in (None, "fixed") else Argument("min_rating", min_rating)
            raise ArgumentError(f"conversational dataset {name!r} has its own split: leave out ", given)
        return CRS_FORMATS[fmt](folder)
    if fmt not in FORMATS:
        raise ArgumentError(Argument("format", fmt), f": expected one of {', '.join([*FORMATS, *CRS_FORMATS])}")
    if split is None and fmt == "lmrec":  # an imported folder's own default split and seed
        manifest = frames.read_manifest(folder)
        split, seed = manifest.get("split", DEFAULT_SPLIT), seed if seed != DEFAULT_SEED else manifest.get("seed",
                                                                                                        seed)
    if split is None:
        split = spec.split if spec else ("fixed" if fmt == "lightgcn" else DEFAULT_SPLIT)
    base, keep = split_modifier(split)
    if base == "fixed":
        if fmt not in FIXED_SPLITS:
            raise ArgumentError(f"format {fmt!r} has no split of its own: use e.g. ", Argument("split", DEFAULT_SPLIT))
        if min_rating is not None:
            raise ArgumentError(f"format {fmt!r} has no ratings: leave out ", Argument("min_rating"))
        data = FIXED_SPLITS[fmt](folder, name, seed)
    else:
        data = parse_split(base, FORMATS[fmt](folder, name=name, min_rating=min_rating), seed)
    return data if keep is None else thin_train(data, keep, seed)


@dataclass
class DataRef:
    """How to load a dataset again: a registry name or a folder path, with its format, split and seed.

    A run folder records its DataRef; a registered name loads anywhere its data is found, a path where it exists.
    """

    dataset: str
    format: str | None = None
    split: str | None = None
    seed: int = DEFAULT_SEED

    def load(self) -> SplitData | CRSData:
        return load_dataset(self.dataset, format=self.format, split=self.split, seed=self.seed)

    @classmethod
    def of(cls, dataset: str | Path, format: str | None = None, split: str | None = None,
           seed: int = DEFAULT_SEED) -> DataRef:
        """A reference that loads the same data from any working folder (a path is made absolute)."""
        name = str(dataset)
        if name not in _ALIASES and Path(name).expanduser().is_dir():
            name = str(Path(name).expanduser().resolve())
        return cls(name, format, split, seed)
