"""LLM backend of RTA: load a causal LM, prompt it, generate and parse titles, encode contexts (q), item tokens."""

from lmrec.llm.causal_lm import CausalLM, resolve_dtype
from lmrec.llm.parsing import (
    TITLE_MATCHES,
    ParsedTitle,
    TitleMapping,
    TitleMatch,
    TitleMatcher,
    map_titles_to_catalog,
    parse_completion,
    parse_titles,
    title_key,
    title_matcher,
)
from lmrec.llm.prompts import (
    ANSWER_PREFIX,
    MAX_CONTEXT_CHARS,
    build_prompt,
    cut_after_first_item,
    llama2_prompt,
    system_prompt,
    user_prompt,
)

__all__ = [
    "ANSWER_PREFIX",
    "MAX_CONTEXT_CHARS",
    "CausalLM",
    "ParsedTitle",
    "TITLE_MATCHES",
    "TitleMapping",
    "TitleMatch",
    "TitleMatcher",
    "build_prompt",
    "cut_after_first_item",
    "llama2_prompt",
    "map_titles_to_catalog",
    "parse_completion",
    "parse_titles",
    "resolve_dtype",
    "system_prompt",
    "title_key",
    "title_matcher",
    "user_prompt",
]
