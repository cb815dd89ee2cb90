"""RTA's zero-shot recommendation prompt (tools/1_bulk_inference.py) and the answer prefix where q is taken; the
request that has an LLM write a user's intention for an item (AlphaRec's user intention,
:mod:`lmrec.experiments.intention`).

With ``n_items=20, domain="movie"`` the system and user texts are the paper's, character for character. The prompt is
built with the tokenizer's chat template (generation prompt appended, so it ends exactly where the answer starts); a
tokenizer without a template, or no tokenizer, gets Llama-2's format as exllamav2 writes it
(``"<s>[INST] <<SYS>>\\n{sys}\\n<</SYS>>\\n\\n{user} [/INST]"``), which is what the paper ran.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "ANSWER_PREFIX",
    "MAX_CONTEXT_CHARS",
    "INTENTION_PREFIX",
    "INTENTION_REQUEST",
    "build_prompt",
    "chat_prompt",
    "cut_after_first_item",
    "intention_prompt",
    "llama2_prompt",
    "system_prompt",
    "user_prompt",
]

MAX_CONTEXT_CHARS = 2000
"""The paper keeps the first 2,000 characters of a conversation."""

ANSWER_PREFIX = "1."
"""Where the first title is about to be generated: context encoding takes the hidden state at this "."."""


def system_prompt(n_items: int = 20, domain: str = "movie") -> str:
    """The paper's system text, with the number of titles and the domain word as parameters."""
    return (
        f"Pretend you are a {domain} recommender system. \n"
        f"I will give you a conversation between a user and you (a recommender system). "
        f"Based on the conversation, you reply me with {n_items} {domain} titles without extra sentences.\n"
    )


def user_prompt(context: str, max_chars: int | None = MAX_CONTEXT_CHARS) -> str:
    """``"Here is the conversation: " + context[:max_chars]`` (``max_chars=None`` keeps the whole context)."""
    return f"Here is the conversation: {context if max_chars is None else context[:max_chars]}"


def llama2_prompt(system: str | None, user: str) -> str:
    """Llama-2 chat format of one system + user turn, as exllamav2's ``format_prompt`` writes it (ends at "[/INST]");
    without a system text (None) the user turn alone: ``"<s>[INST] {user} [/INST]"``."""
    if system is None:
        return f"<s>[INST] {user} [/INST]"
    return f"<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST]"


def build_prompt(
    context: str,
    tokenizer: Any = None,
    n_items: int = 20,
    domain: str = "movie",
    max_chars: int | None = MAX_CONTEXT_CHARS,
) -> str:
    """The full prompt text for one conversation, ending where the model's answer starts.

    Uses ``tokenizer.apply_chat_template(..., add_generation_prompt=True, tokenize=False)`` when the tokenizer has a
    chat template; a template that rejects the system role gets the system text prepended to the user turn. Without a
    template (or tokenizer) the Llama-2 format is used. The text already holds the template's special tokens (BOS...):
    tokenize it with ``add_special_tokens=False``.
    """
    return chat_prompt(user_prompt(context, max_chars), tokenizer, system_prompt(n_items, domain))


def chat_prompt(user: str, tokenizer: Any = None, system: str | None = None) -> str:
    """One user turn (after an optional system text) in the tokenizer's chat format, ending where the answer starts.

    See :func:`build_prompt` for the formats: the chat template, the system text merged into the user turn where the
    template rejects the system role, Llama-2's format without a template (:func:`llama2_prompt`)."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return llama2_prompt(system, user)
    messages = ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": user}]
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception as exc:  # jinja2 TemplateError ("System role not supported") and kin
        if system is None or "system" not in str(exc).lower():
            raise
        merged = [{"role": "user", "content": f"{system}\n{user}"}]
        text = tokenizer.apply_chat_template(merged, add_generation_prompt=True, tokenize=False)
    return str(text)


INTENTION_REQUEST = ('A shopper wants this {domain}: "{title}". Without naming it, write one sentence the shopper '
                     "would say about what they are looking for (its kind, genre, platform, features).")
"""What an LLM is asked to write a user's intention from (:func:`intention_prompt`)."""

INTENTION_PREFIX = "I'm looking for"
"""Where every intention starts: appended to the prompt, so the model only continues it."""


def intention_prompt(title: str, tokenizer: Any = None, domain: str = "product") -> str:
    """The request to state, without naming it, what a user wanting item ``title`` looks for
    (:data:`INTENTION_REQUEST`), as a chat prompt (:func:`chat_prompt`); the answer starts with
    :data:`INTENTION_PREFIX`."""
    return chat_prompt(INTENTION_REQUEST.format(domain=domain, title=title), tokenizer)


_FIRST_ITEM = re.compile(r"(?m)^[ \t]*1\.")


def cut_after_first_item(prompt: str, completion: str | None = None, prefix: str = ANSWER_PREFIX) -> str:
    """The text whose last token RTA encodes: the prompt plus the answer up to and including the first "1.".

    ``completion=None``: ``prompt + prefix`` (what the model would have written before its first title when it
    answers with a bare list). With a completion: ``prompt + completion`` cut right after the first "1." that starts
    a line of the completion (the official code cuts after the first "\\n1." of prompt + completion, which may fall
    inside the conversation; we only look in the completion); when the completion has no such line, the prompt alone
    (the official code then cuts after "[/INST] ").
    """
    if completion is None:
        return prompt + prefix
    found = _FIRST_ITEM.search(completion)
    if found is None:
        return prompt
    return prompt + completion[: found.end()]
