"""User intention (paper §2.7): a user states what they want in a sentence, and AlphaRec mixes it into the
user's layer-0 embedding:

    ẽ_u⁽⁰⁾ = (1 − α)·e_u⁽⁰⁾ + α·MLP(LM(intention)),   e_u⁽⁰⁾ = MLP(z_u)

then propagates as usual. Only user u's layer-0 row changes, and the propagation E = P·E⁽⁰⁾ with
P = mean(I, Â, …, Âᴸ) is linear, so the EXACT result is E' = E + P[:, u]·δᵀ with δ = ẽ_u⁽⁰⁾ − e_u⁽⁰⁾: u's final
vector and the final vectors of the items within L hops of u move (here computed exactly, not approximated by
mixing the final user vector). Scores are cosines of the final vectors, as in AlphaRec.

Evaluation (the paper's intention data and generation scripts were not released): for every user with test
items, one held-out test item is the target and an intention sentence describing it WITHOUT naming it is made
from the item's own catalog fields (:func:`intention_sentence`):

- movies (genres / tags): a template over the genres, the decade from the title's year, and tags;
- products (Amazon categories / description): the most specific categories and the first words of the
  description (:func:`item_text_sentence`);
- or, for a catalog of titles only, an LLM writes it from the title (:class:`LLMWriter`; the paper's intentions were
  probably LLM-written).

Any descriptor or word sharing a non-stopword token with the title is dropped, and a sentence that still shares
one is rejected. The target is ranked over the full catalog
with the user's other items of every split masked; HR@5 = 1[rank < 5], NDCG@5 = 1/log₂(rank + 2) for rank < 5
(rank 0 = top), mean ± SE over users, for α = 0 (no intention) and the α reported.

α is either given, and then the α grid is read on the test cases (an optimistic curve), or chosen on validation
(``alpha="valid"``): the same construction with one held-out VALIDATION item per user picks the α of the grid
with the highest HR@5 (ties: NDCG@5, then the smaller α), and the test cases are read once, at α = 0 and that α.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import ttest_rel

from lmrec.data.catalog import ItemCatalog, normalize_title
from lmrec.data.interactions import SplitData
from lmrec.errors import LmrecError
from lmrec.eval.ranking import MASKED_KEY, tie_break_keys
from lmrec.eval.report import estimate_cell
from lmrec.eval.stats import estimate
from lmrec.io import atomic_write, write_json
from lmrec.llm.prompts import INTENTION_PREFIX, INTENTION_REQUEST, intention_prompt
from lmrec.models.cf.alpharec import AlphaRec, IntentScorer

Encode = Callable[[Sequence[str]], np.ndarray]  # texts -> (n, d) LM vectors (the model's encoder)
ALPHAS = tuple(round(0.1 * i, 1) for i in range(11))
K = 5
# Tokens that may be shared with a title without naming it (articles, prepositions, clitics after normalization).
STOPWORDS = frozenset(
    "a an the of and or in on at to for with from by i im m s t d ll re ve is it its me my this that "
    "de la le les el los das der die und".split()
)
_YEAR = re.compile(r"\((\d{4})\)\s*$")
_TEMPLATES = ("I'm in the mood for {desc} movie{extra}.", "Recommend me {desc} film{extra}.")
_PRODUCT_TEMPLATES = ("I'm looking for {what}{extra}.", "Show me {what}{extra}.")


# -- intention sentences -----------------------------------------------------------------------------------
def title_tokens(title: str) -> set[str]:
    """Non-stopword tokens of the normalized title (the words an intention must not contain)."""
    return set(normalize_title(title).split()) - STOPWORDS


def leaks_title(sentence: str, title: str) -> bool:
    """True when the sentence shares a non-stopword token with the title."""
    return bool(title_tokens(sentence) & title_tokens(title))


def first_not_naming(title: str, templates: Sequence[str], **fields: str) -> str | None:
    """The first of ``templates`` filled with ``fields`` that does not leak ``title`` (:func:`leaks_title`), else
    None."""
    return next((s for s in (t.format(**fields) for t in templates) if not leaks_title(s, title)), None)


def first_sentence(text: str) -> str:
    """``text`` up to the end of its first sentence (a ``.``, ``!`` or ``?`` followed by white space)."""
    return re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0]


def _split_list(text: str) -> list[str]:
    return list(dict.fromkeys(v.strip().lower() for v in text.split(",") if v.strip()))


NO_TEXT_HINT = ("genres/tags, or categories/description; for a catalog of titles only an LLM can write them: "
                "[run.writer] in a table, --llm on the command line")
#: what intentions are written from, per kind of catalog (:func:`intention_kind`)
SOURCES = {"movie": "a template over genres, decade and tags",
           "product": "the item's own text (its most specific categories and the first words of its description)"}


def intention_kind(catalog: ItemCatalog) -> str | None:
    """``"movie"`` where the catalog has genres or tags, ``"product"`` where it has categories or a description
    (Amazon), else None."""
    if "genres" in catalog.fields or "tags" in catalog.fields:
        return "movie"
    if "categories" in catalog.fields or "description" in catalog.fields:
        return "product"
    return None


def intention_sentence(catalog: ItemCatalog, item: int) -> str | None:
    """A sentence describing ``item`` from its own catalog fields, never containing a title word
    (:func:`movie_sentence` or :func:`item_text_sentence`, by :func:`intention_kind`); None where nothing does."""
    kind = intention_kind(catalog)
    if kind == "movie":
        return movie_sentence(catalog, item)
    return item_text_sentence(catalog, item) if kind == "product" else None


Writer = Callable[[Sequence[int]], list[str | None]]
"""Items -> an intention sentence for each, never naming the item; None where there is none."""


def catalog_writer(catalog: ItemCatalog) -> Writer:
    """Intentions written by rule from each item's own catalog fields (:func:`intention_sentence`)."""
    return lambda items: [intention_sentence(catalog, int(i)) for i in items]


class LLMWriter:
    """Intentions an LLM writes from each item's title, for catalogs of titles only (:class:`Writer`).

    The LLM is asked, greedily, what a shopper wanting the item would say without naming it
    (:func:`lmrec.llm.prompts.intention_prompt`); its answer starts with "I'm looking for", and the first sentence is
    kept with every word naming the title removed (:func:`words_not_naming`): for "Imagine Party Babyz - Nintendo
    Wii" SmolLM2-135M answers "I'm looking for a game that combines the excitement of a Nintendo Wii with the fun of
    a party.", kept as "I'm looking for a game that combines the excitement of a with the fun of a." None when only
    stopwords are left, or when the sentence still names the title (:func:`leaks_title`: a title with "looking").

    Each title is written once; the LLM's answers are kept in ``cache`` (JSON: the writer's identity and the answer
    per title, rewritten whole after each ``chunk`` of titles), so an interrupted run resumes. A cache written by
    another writer (LLM, request, prefix, domain, token budget or batch size) is not read, and the first chunk
    written replaces it.
    """

    CACHE = "intentions-llm.json"  # the cache's name in an output folder (:meth:`load`)

    def __init__(self, lm: Any, catalog: ItemCatalog, cache: Path, domain: str = "product",
                 max_new_tokens: int = 40, batch_size: int = 16, chunk: int = 256):
        self.lm, self.catalog, self.cache, self.domain = lm, catalog, Path(cache), domain
        self.max_new_tokens, self.batch_size, self.chunk = max_new_tokens, batch_size, chunk
        self.identity = {"llm": getattr(lm, "identity", repr(lm)), "request": INTENTION_REQUEST,
                         "prefix": INTENTION_PREFIX, "domain": domain, "max_new_tokens": max_new_tokens,
                         "batch_size": batch_size}  # batches are left-padded: their size can change greedy answers
        saved = json.loads(self.cache.read_text(encoding="utf-8")) if self.cache.exists() else {}
        self.answers: dict[str, str] = saved["answers"] if saved.get("writer") == self.identity else {}

    @classmethod
    def load(cls, folder: Path, catalog: ItemCatalog, llm: str = "smollm2-135m", dtype: str = "float32",
             **options: Any) -> LLMWriter:
        """A writer with the registered causal LM ``llm`` (:meth:`lmrec.llm.CausalLM.load`) and its cache in
        ``folder``; ``options``: ``domain``, ``max_new_tokens``, ``batch_size``."""
        from lmrec.llm import CausalLM

        return cls(CausalLM.load(llm, dtype=dtype), catalog, Path(folder) / cls.CACHE, **options)

    @property
    def source(self) -> str:
        """What the intentions are written from, for reports."""
        return (f"{self.identity['llm']} writing from each target's title (greedy, at most "
                f"{self.max_new_tokens} new tokens, the first sentence kept)")

    def __call__(self, items: Sequence[int]) -> list[str | None]:
        titles = [self.catalog.titles[int(i)] for i in items]
        todo = sorted(set(titles) - set(self.answers))
        for start in range(0, len(todo), self.chunk):
            part = todo[start : start + self.chunk]
            prompts = [intention_prompt(title, self.lm.tokenizer, self.domain) for title in part]
            answers = self.lm.generate(prompts, formatted=True, answer_prefix=INTENTION_PREFIX, progress=False,
                                       max_new_tokens=self.max_new_tokens, batch_size=self.batch_size)
            self.answers.update(zip(part, answers, strict=True))
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.cache, {"writer": self.identity, "answers": self.answers})
        return [self.sentence(title) for title in titles]

    def sentence(self, title: str) -> str | None:
        """The kept intention for the item ``title`` from the LLM's answer (the first sentence, title words
        removed)."""
        answer = self.answers[title].strip().split("\n", 1)[0].removeprefix(INTENTION_PREFIX)
        words = words_not_naming(first_sentence(answer), title)
        sentence = f"{INTENTION_PREFIX} {' '.join(words)}."
        return None if not title_tokens(" ".join(words)) or leaks_title(sentence, title) else sentence


def _forms(token: str) -> set[str]:
    """The token and, for a plural, its singular forms: 'brushes' -> brush, 'batteries' -> battery, 'knives' ->
    knife (so that a plural names the title's singular, and the other way round)."""
    if len(token) <= 3 or not token.endswith("s") or token.endswith("ss"):
        return {token}
    forms = {token, token[:-1]}
    if token.endswith("es"):
        forms.add(token[:-2])
    if token.endswith("ies"):
        forms.add(token[:-3] + "y")
    if token.endswith("ves"):
        forms |= {token[:-3] + "f", token[:-3] + "fe"}
    return forms


def naming(title: str) -> Callable[[str], bool]:
    """A test of whether a text names ``title``: it shares a non-stopword token with it, singular and plural alike
    (:func:`_forms`)."""
    banned = set().union(*map(_forms, title_tokens(title)))
    return lambda text: any(_forms(t) & banned for t in title_tokens(text))


def words_not_naming(text: str, title: str, max_words: int | None = None) -> list[str]:
    """The lower-cased words of ``text`` (punctuation dropped) that do not name ``title`` (:func:`naming`), the first
    ``max_words`` of them."""
    names = naming(title)
    return [w for w in re.findall(r"[\w'&%-]+", text.lower()) if not names(w)][:max_words]


def item_text_sentence(catalog: ItemCatalog, item: int, n_categories: int = 2, max_words: int = 16) -> str | None:
    """A product described by its own text, title words removed: the ``n_categories`` most specific categories
    (the root category, which every item shares, left out) and the first ``max_words`` words of the description's
    first sentence that share no non-stopword token with the title (singular and plural alike).

    ``"I'm looking for abrasive & finishing products: maintains shape & will not rust."`` (title: "Dico
    Nyalox Cup Brush 21/2-Inch Grey 80 Grit.")
    None when nothing is left once title words are removed.
    """
    title = catalog.titles[item]
    names = naming(title)
    field = lambda name: catalog.fields[name][item] if name in catalog.fields else ""  # noqa: E731
    categories = [c for c in reversed(_split_list(field("categories"))[1:]) if not names(c)][:n_categories]
    words = words_not_naming(first_sentence(field("description")), title, max_words)
    if not categories and not words:
        return None
    what = " and ".join(categories) if categories else "something"
    extra = f": {' '.join(words)}" if words else ""
    return first_not_naming(title, _PRODUCT_TEMPLATES, what=what, extra=extra)


def movie_sentence(catalog: ItemCatalog, item: int, max_tags: int = 3) -> str | None:
    """A sentence describing ``item`` from its genres, decade and tags, never containing a title word.

    ``"I'm in the mood for a 1990s adventure, animation and comedy movie, something people call pixar, fun."``
    None when nothing describes the item once title words are removed.
    """
    title = catalog.titles[item]
    banned = title_tokens(title)
    clean = lambda values: [v for v in values if not title_tokens(v) & banned]  # noqa: E731
    genres = clean(_split_list(catalog.fields.get("genres", [""] * len(catalog))[item]))
    tags = clean(_split_list(catalog.fields.get("tags", [""] * len(catalog))[item]))[:max_tags]
    if not genres and not tags:
        return None
    year = _YEAR.search(title)
    words = ([f"{int(year.group(1)) // 10 * 10}s"] if year else []) + (
        [", ".join(genres[:-1]) + " and " + genres[-1] if len(genres) > 1 else genres[0]] if genres else [])
    desc = " ".join(words)
    desc = ("an " if desc[:1] in "aeiou" else "a ") + desc if desc else "a"
    extra = ", something people call " + ", ".join(tags) if tags else ""
    return first_not_naming(title, _TEMPLATES, desc=desc, extra=extra)


@dataclass
class Case:
    """One evaluation case: a user, one held-out (test or validation) item of theirs, the intention describing it."""

    user: int
    target: int
    text: str


def make_cases(data: SplitData, n_users: int | None = None, seed: int = 2024, split: str = "test",
               writer: Writer | None = None) -> list[Case]:
    """One case per user (all users with items in ``split``, or ``n_users`` of them drawn at random): an item of
    theirs in ``split`` drawn at random among those with an intention sentence (``writer``, by default
    :func:`catalog_writer`); users without one are skipped. Each round asks ``writer`` for the next item of every
    user still without one, so an LLM writes in batches and only for the items a case needs."""
    write = writer or catalog_writer(data.catalog)
    rng = np.random.default_rng(seed)
    held_out = data.split(split)
    users = np.flatnonzero(np.diff(held_out.indptr) > 0)
    if n_users is not None and n_users < len(users):
        users = np.sort(rng.choice(users, n_users, replace=False))
    queues = {int(u): list(rng.permutation(held_out.indices[held_out.indptr[u] : held_out.indptr[u + 1]]))
              for u in users}
    cases: dict[int, Case] = {}
    while queues:
        heads = {u: int(queue.pop(0)) for u, queue in queues.items()}
        for (u, item), text in zip(heads.items(), write(list(heads.values())), strict=True):
            if text is not None:
                cases[u] = Case(u, item, text)
            if text is not None or not queues[u]:
                del queues[u]
    return [cases[u] for u in sorted(cases)]


def target_ranks(scores: torch.Tensor, target: int, masked: np.ndarray, priority: torch.Tensor) -> np.ndarray:
    """0-based rank of ``target`` in each row of ``scores`` among the unmasked items (ties by ``priority``)."""
    keys = tie_break_keys(scores, priority.expand_as(scores))
    keys[:, torch.from_numpy(np.asarray(masked, dtype=np.int64))] = MASKED_KEY
    return (keys > keys[:, target : target + 1]).sum(dim=1).numpy()


def evaluate_intention(model: AlphaRec, data: SplitData, cases: Sequence[Case], encode: Encode,
                       alphas: Sequence[float] = ALPHAS, seed: int = 0) -> dict[float, np.ndarray]:
    """{α: (n_cases,) 0-based rank of each case's target}, the user's other items of every split masked."""
    scorer = IntentScorer(model)
    e_intent = scorer.map_intent(encode([c.text for c in cases])) if cases else torch.zeros(0)
    priority = torch.rand(data.n_items, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ranks = np.zeros((len(alphas), len(cases)), dtype=np.int64)
    for j, case in enumerate(cases):
        seen = [data.split(s).indices[data.split(s).indptr[case.user] : data.split(s).indptr[case.user + 1]]
                for s in ("train", "valid", "test")]
        masked = np.setdiff1d(np.concatenate(seen), [case.target])
        ranks[:, j] = target_ranks(scorer.scores(case.user, e_intent[j], alphas), case.target, masked, priority)
    return {float(a): ranks[i] for i, a in enumerate(alphas)}


def hit_and_ndcg(ranks: np.ndarray, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    """Per-case HR@k = 1[rank < k] and NDCG@k = 1/log₂(rank + 2)·1[rank < k] of a single target."""
    hit = (ranks < k).astype(np.float64)
    return hit, hit / np.log2(ranks + 2.0)


def paired_difference(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean ± SE of b − a over the same cases and the paired t-test p-value (for a constant difference:
    1 when it is 0, else 0)."""
    d = b - a
    if len(d) > 1 and np.any(d != d[0]):
        p = float(ttest_rel(b, a).pvalue)
    else:
        p = 1.0 if not len(d) or d[0] == 0 else 0.0
    return estimate(d).as_dict() | {"t_pvalue": p}


# -- the experiment ----------------------------------------------------------------------------------------
def lm_encoder(model: AlphaRec) -> Encode:
    """The model's own text encoder (through the embedding cache)."""
    return lambda texts: model.encode_texts(list(texts)).cpu().numpy()


def per_alpha_metrics(ranks: dict[float, np.ndarray]) -> dict[float, dict[str, Any]]:
    """{α: {"hr@5", "ndcg@5"}: mean ± SE over the cases}."""
    out = {}
    for a, r in ranks.items():
        hit, ndcg = hit_and_ndcg(r)
        out[a] = {"hr@5": estimate(hit).as_dict(), "ndcg@5": estimate(ndcg).as_dict()}
    return out


def best_alpha(per_alpha: dict[float, dict[str, Any]]) -> float:
    """The α with the highest HR@5 (ties: the higher NDCG@5, then the smaller α)."""
    return max(per_alpha, key=lambda a: (per_alpha[a]["hr@5"]["mean"], per_alpha[a]["ndcg@5"]["mean"], -a))


def run_intention(model: AlphaRec, data: SplitData, out: Path, alpha: float | str = 0.5,
                  alphas: Sequence[float] = ALPHAS, n_users: int | None = None, seed: int = 2024,
                  encode: Encode | None = None, run: str = "", writer: LLMWriter | None = None) -> dict[str, Any]:
    """HR@5/NDCG@5 with and without intention; writes intention.{json,md} and alpha.png (HR@5 and NDCG@5 over α).

    ``alpha``: the α reported as "with intention", its grid ``alphas`` read on the test cases; or ``"valid"``: the
    α of the grid that is best on validation cases, the test cases read once at α = 0 and that α. ``writer``: an
    LLM writes the intentions (:class:`LLMWriter`); None: they are written by rule from the catalog."""
    encode = encode or lm_encoder(model)
    kind = intention_kind(data.catalog)
    on_valid = alpha == "valid"
    grid = sorted({float(a) for a in (*alphas, 0.0, *(() if on_valid else (alpha,)))})
    result: dict[str, Any] = {"run": run, "dataset": data.name, "seed": seed,
                              "intentions": writer.source if writer else SOURCES[kind] if kind else None}
    if writer:
        result["written_by"] = "llm"
    hint = "every answer of the LLM named the title or held only stopwords" if writer else (
        f"they are written from {NO_TEXT_HINT}")
    if on_valid:
        valid_cases = make_cases(data, n_users, seed, split="valid", writer=writer)
        if not valid_cases:
            raise LmrecError(f"{data.name}: no validation item got an intention ({hint})")
        valid = per_alpha_metrics(evaluate_intention(model, data, valid_cases, encode, grid, seed))
        alpha = best_alpha(valid)
        result["selection"] = {"on": "valid", "users": len(valid_cases), "alpha": alpha,
                               "per_alpha": {str(a): v for a, v in valid.items()}}
        grid = sorted({0.0, alpha})
    cases = make_cases(data, n_users, seed, writer=writer)
    if not cases:
        raise LmrecError(f"{data.name}: no test item got an intention ({hint})")
    ranks = evaluate_intention(model, data, cases, encode, grid, seed)
    per_alpha = per_alpha_metrics(ranks)
    base_hit, base_ndcg = hit_and_ndcg(ranks[0.0])
    hit, ndcg = hit_and_ndcg(ranks[float(alpha)])
    result |= {
        "users": len(cases), "alpha": alpha,
        "method": "ẽ_u⁽⁰⁾ = (1 − α)·MLP(z_u) + α·MLP(LM(intention)), exact propagation of the changed row",
        "protocol": "one held-out test target per user; full ranking; the user's other train, valid and test "
                    f"items masked; intention from {result['intentions']}, title words removed",
        "without": per_alpha[0.0], "with": per_alpha[float(alpha)],
        "paired_with_minus_without": {"hr@5": paired_difference(base_hit, hit),
                                      "ndcg@5": paired_difference(base_ndcg, ndcg)},
        "per_alpha": {str(a): v for a, v in per_alpha.items()},
        "examples": [{"user": data.user_ids[c.user], "target": data.catalog.titles[c.target], "intention": c.text,
                      "rank_without": int(ranks[0.0][j]), "rank_with": int(ranks[float(alpha)][j])}
                     for j, c in enumerate(cases[:12])],
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "intention.json", result)
    atomic_write(out / "intention.md", lambda f: f.write(markdown(result)))
    plot_alpha(result, out / "alpha.png")
    return result


def markdown(r: dict[str, Any]) -> str:
    cell = estimate_cell
    p = r["paired_with_minus_without"]
    by_rule = "" if r.get("written_by") == "llm" else (
        " The intentions are written by rule from the catalog, not by an LLM.")
    lines = [
        f"### User intention on {r['dataset']}", "",
        f"Run {r['run'] or '(in memory)'}; {r['users']} users; {r['protocol']}. Mixing: {r['method']}.{by_rule}", "",
        "| | HR@5 | NDCG@5 |", "|---|---|---|",
        f"| AlphaRec without intention | {cell(r['without']['hr@5'])} | {cell(r['without']['ndcg@5'])} |",
        f"| AlphaRec with intention (α = {r['alpha']}) | {cell(r['with']['hr@5'])} | {cell(r['with']['ndcg@5'])} |",
        "",
        f"Paired difference (with − without): HR@5 {estimate_cell(p['hr@5'], signed=True)} "
        f"(t p = {p['hr@5']['t_pvalue']:.2g}), NDCG@5 {estimate_cell(p['ndcg@5'], signed=True)} "
        f"(t p = {p['ndcg@5']['t_pvalue']:.2g}).", "",
    ]
    selection = r.get("selection")
    if selection:
        none = " (no weight on the intention: the 'with' row is the model alone)" if r["alpha"] == 0 else ""
        lines += [f"α = {r['alpha']} was chosen on validation cases{none} ({selection['users']} users, one "
                  "held-out validation item each), the highest HR@5 of the grid; the test cases were read once. The "
                  "grid on the validation cases:", ""]
    else:
        lines += ["Effect of α (the α grid is evaluated on the same test cases: its best value is an optimistic "
                  "choice):", ""]
    lines += ["| α | HR@5 | NDCG@5 |", "|---|---|---|"]
    lines += [f"| {a} | {cell(v['hr@5'])} | {cell(v['ndcg@5'])} |" for a, v in alpha_curve(r).items()]
    lines += ["", "Examples:", "", "| user | target | intention | rank without | rank with |", "|---|---|---|---|---|"]
    lines += [f"| {e['user']} | {e['target']} | {e['intention']} | {e['rank_without'] + 1} | {e['rank_with'] + 1} |"
              for e in r["examples"]]
    return "\n".join(lines) + "\n"


def alpha_curve(r: dict[str, Any]) -> dict[str, Any]:
    """The α grid's metrics: on the validation cases where α was chosen there, else on the test cases."""
    return r["selection"]["per_alpha"] if r.get("selection") else r["per_alpha"]


def plot_alpha(r: dict[str, Any], path: Path) -> None:
    """HR@5 and NDCG@5 (± SE) against α (:func:`alpha_curve`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = alpha_curve(r)
    alphas = [float(a) for a in curve]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for metric in ("hr@5", "ndcg@5"):
        mean = np.array([v[metric]["mean"] for v in curve.values()])
        se = np.array([v[metric]["se"] for v in curve.values()])
        ax.plot(alphas, mean, marker="o", label=metric.upper())
        ax.fill_between(alphas, mean - se, mean + se, alpha=0.2)
    ax.set_xlabel("α (weight of the intention in the user's layer-0 embedding)")
    ax.set_ylabel("mean over users (± SE)")
    cases = f"{r['selection']['users']} validation users" if r.get("selection") else f"{r['users']} users"
    ax.set_title(f"User intention on {r['dataset']} ({cases})")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120), binary=True)
    plt.close(fig)
