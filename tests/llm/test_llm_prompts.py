"""RTA's prompt: the paper's wording, the 2,000-character cut, the chat template and the Llama-2 fallback; the
request that has an LLM write a user's intention."""

from lmrec.llm.prompts import (
    ANSWER_PREFIX,
    INTENTION_PREFIX,
    build_prompt,
    chat_prompt,
    cut_after_first_item,
    intention_prompt,
    llama2_prompt,
    system_prompt,
    user_prompt,
)

PAPER_SYSTEM = (
    "Pretend you are a movie recommender system. \nI will give you a conversation between a user and you "
    "(a recommender system). Based on the conversation, you reply me with 20 movie titles without extra sentences.\n"
)


def test_system_prompt_is_the_papers_and_parametrized():
    assert system_prompt() == PAPER_SYSTEM
    books = system_prompt(n_items=10, domain="book")
    assert books.startswith("Pretend you are a book recommender system.") and "10 book titles" in books


def test_user_prompt_keeps_the_first_2000_characters():
    context = "USER: " + "a" * 1994 + "BCDE"  # 2004 characters: the cut drops "BCDE"
    assert user_prompt(context) == "Here is the conversation: " + context[:2000]
    assert user_prompt(context).endswith("a") and "B" not in user_prompt(context)
    assert user_prompt(context, max_chars=None).endswith("BCDE")


def test_llama2_fallback_without_tokenizer_or_template():
    expected = f"<s>[INST] <<SYS>>\n{PAPER_SYSTEM}\n<</SYS>>\n\nHere is the conversation: USER: hi [/INST]"
    assert build_prompt("USER: hi") == expected
    assert llama2_prompt(PAPER_SYSTEM, "Here is the conversation: USER: hi") == expected

    class NoTemplate:
        chat_template = None

    assert build_prompt("USER: hi", NoTemplate()) == expected


def test_template_without_system_role_gets_system_text_in_the_user_turn():
    class NoSystemRole:
        chat_template = "x"

        def apply_chat_template(self, messages, add_generation_prompt, tokenize):
            if messages[0]["role"] == "system":
                raise ValueError("System role not supported")
            return "<user>" + messages[0]["content"] + "</user><model>"

    text = build_prompt("USER: hi", NoSystemRole())
    assert text == "<user>" + PAPER_SYSTEM + "\nHere is the conversation: USER: hi</user><model>"


def test_chat_template_prompt_ends_where_generation_starts(smollm2):
    context = "USER: I love heist movies like Heat.\n" + "x" * 3000
    prompt = smollm2.prompt(context)
    assert PAPER_SYSTEM in prompt
    assert "Here is the conversation: " + context[:2000] in prompt
    assert context[:2001] not in prompt
    assert prompt.endswith("<|im_start|>assistant\n")  # SmolLM2's generation prompt
    assert prompt.startswith("<|im_start|>system\n")  # our system text replaces the template's default one


def test_cut_after_first_item():
    prompt = "PROMPT "
    assert cut_after_first_item(prompt) == "PROMPT 1." and ANSWER_PREFIX == "1."
    completion = "Sure, here are 20 movies from 2021.\n\n1. Heat\n2. Ronin\n11. Thief"
    assert cut_after_first_item(prompt, completion) == "PROMPT Sure, here are 20 movies from 2021.\n\n1."
    assert cut_after_first_item(prompt, "1. Heat\n2. Ronin") == "PROMPT 1."
    assert cut_after_first_item(prompt, "Heat, Ronin") == "PROMPT "  # official: right after "[/INST] "


def test_the_intention_request_is_one_user_turn_quoting_the_title():
    assert intention_prompt("Tomba!", domain="video game product") == (
        '<s>[INST] A shopper wants this video game product: "Tomba!". Without naming it, write one sentence the '
        "shopper would say about what they are looking for (its kind, genre, platform, features). [/INST]")

    class Template:
        chat_template = "x"

        def apply_chat_template(self, messages, add_generation_prompt, tokenize):
            return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    assert chat_prompt("hi", Template()) == "<user>hi<assistant>"  # no system turn without a system text
    assert chat_prompt("hi", Template(), "sys") == "<system>sys<user>hi<assistant>"


def test_the_intention_request_in_smollm2s_chat_format(smollm2):
    prompt = intention_prompt("Tomba!", smollm2.tokenizer)
    assert 'A shopper wants this product: "Tomba!"' in prompt and PAPER_SYSTEM not in prompt
    assert prompt.endswith("<|im_start|>assistant\n")


def test_the_llm_writes_an_intention_that_continues_the_prefix(smollm2):
    [answer] = smollm2.generate([intention_prompt("Mario Kart 8 - Nintendo Wii U", smollm2.tokenizer)],
                                formatted=True, answer_prefix=INTENTION_PREFIX, max_new_tokens=12, progress=False)
    assert answer.startswith("I'm looking for") and len(answer) > len("I'm looking for ")
