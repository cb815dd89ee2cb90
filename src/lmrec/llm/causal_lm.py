"""A causal LM for RTA: prompt, greedy generation, context encoding q, token embeddings and title tokens.

``CausalLM.load("smollm2-135m")`` resolves the model through ``lmrec.text.resolve_causal_lm`` (registered offline
names, a ``.gguf`` file converted once to safetensors, a local folder, or a hub id) and loads it with transformers.
Nothing is loaded or downloaded at import.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lmrec.errors import LmrecError
from lmrec.llm.prompts import ANSWER_PREFIX, MAX_CONTEXT_CHARS, build_prompt, cut_after_first_item
from lmrec.progress import shown

if TYPE_CHECKING:
    from lmrec.llm.kv_sessions import KVSessions
    from lmrec.text.cache import EmbeddingCache

__all__ = ["CausalLM", "kv_reuse_supported", "resolve_dtype"]

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype = "auto", device: str = "cpu") -> torch.dtype:
    """``"auto"``: bfloat16 on a CUDA device that supports it (else float16), and on a CPU where bf16 products are
    fast by training's rule (:func:`lmrec.train.precision.fast_bf16`: AMX, or an AMD CPU with AVX512-BF16), float32
    otherwise (``$LMREC_AUTO_PRECISION`` decides where set). Otherwise the named dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).lower().removeprefix("torch.")
    if name == "auto":
        if str(device).startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        from lmrec.train.precision import fast_bf16  # not at import: lmrec.train loads the trainer

        return torch.bfloat16 if fast_bf16("cpu")[0] else torch.float32
    if name not in _DTYPES:
        raise LmrecError(f"unknown dtype {dtype!r}; expected auto, float32, bfloat16 or float16")
    return _DTYPES[name]


class CausalLM:
    """A transformers causal LM and its tokenizer, with RTA's operations.

    ``identity`` names the model and dtype (and anything else that changes the numbers), for caches.
    The tokenizer is set to left padding; a missing pad token becomes the EOS (else UNK) token. Prompts built by
    ``prompt`` hold the chat template's special tokens, so they are tokenized with ``add_special_tokens=False``
    (the official code added a second BOS; we do not).
    """

    def __init__(self, model: Any, tokenizer: Any, identity: str | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
        dtype = str(model.dtype).removeprefix("torch.")
        name = getattr(model.config, "_name_or_path", "") or "model"
        self.identity = identity or f"causal-lm:{name}:dtype={dtype}"
        self.last_encoding: dict[str, int] = {}  # tokens of the last encode_contexts call, and how many were run

    @classmethod
    def load(
        cls,
        name_or_path: str | Path = "smollm2-135m",
        dtype: str | torch.dtype = "auto",
        device: str = "cpu",
        gguf_file: str | None = None,
    ) -> CausalLM:
        """Load by registered name (``smollm2-135m``, ``gemma-3-270m``), ``.gguf`` file, local folder or hub id.

        ``dtype``: ``"auto"`` (see ``resolve_dtype``), ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from lmrec.text.weights import resolve_causal_lm

        torch_dtype = resolve_dtype(dtype, device)
        folder = resolve_causal_lm(name_or_path, gguf_file=gguf_file)
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch_dtype).to(device)
        spec = str(name_or_path)
        path = Path(spec).expanduser()
        label = str(path.resolve()) if path.exists() else spec
        if gguf_file:
            label += f":gguf={gguf_file}"
        elif folder.name != path.name:  # a registered name or a GGUF: name the converted checkpoint too
            label += f":{folder.name}"
        return cls(model, tokenizer, identity=f"causal-lm:{label}:dtype={str(torch_dtype).removeprefix('torch.')}")

    # ------------------------------------------------------------------------------------------------ properties

    @property
    def hidden_size(self) -> int:
        """Width of q and of the token embeddings."""
        return int(self.model.get_input_embeddings().weight.shape[1])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    def __repr__(self) -> str:
        return f"CausalLM({self.identity!r}, hidden_size={self.hidden_size})"

    # ------------------------------------------------------------------------------------------------- prompts

    def prompt(
        self, context: str, n_items: int = 20, domain: str = "movie", max_chars: int | None = MAX_CONTEXT_CHARS
    ) -> str:
        """RTA's prompt for one conversation, in this model's chat format, ending where the answer starts."""
        return build_prompt(context, self.tokenizer, n_items=n_items, domain=domain, max_chars=max_chars)

    # ------------------------------------------------------------------------------------------- token helpers

    def _ids(self, texts: Sequence[str], max_length: int | None) -> list[list[int]]:
        """Token ids of each text without added special tokens, left-truncated to ``max_length``."""
        ids: list[list[int]] = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        for i, seq in enumerate(ids):
            if not seq:
                raise LmrecError(f"{self.identity}: text {i} ({texts[i][:80]!r}) has no tokens")
        if max_length is not None:
            ids = [seq[-max_length:] for seq in ids]
        return ids

    def _n_tokens(self, texts: Sequence[str], max_length: int | None) -> int:
        """Tokens of ``texts`` as encoded (after the ``max_length`` cut)."""
        return sum(len(ids) for ids in self._ids(texts, max_length)) if texts else 0

    def _batches(self, ids: list[list[int]], batch_size: int) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
        """Left-padded batches of similar length: (rows of ``ids``, input_ids / attention_mask / position_ids)."""
        order = np.argsort([len(seq) for seq in ids], kind="stable")
        pad = int(self.tokenizer.pad_token_id)
        for start in range(0, len(ids), batch_size):
            rows = order[start : start + batch_size]
            width = max(len(ids[i]) for i in rows)
            input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                input_ids[r, width - len(ids[i]) :] = torch.tensor(ids[i], dtype=torch.long)
                mask[r, width - len(ids[i]) :] = 1
            position_ids = (mask.cumsum(1) - 1).clamp(min=0)
            yield rows, {"input_ids": input_ids, "attention_mask": mask, "position_ids": position_ids}

    # ---------------------------------------------------------------------------------------- context encoding

    def encoding_texts(
        self,
        contexts: Sequence[str],
        completions: Sequence[str] | None = None,
        n_items: int = 20,
        domain: str = "movie",
    ) -> list[str]:
        """The exact texts ``encode_contexts`` feeds the model: prompt + answer up to the first "1."."""
        if completions is not None and len(completions) != len(contexts):
            raise LmrecError(f"{len(contexts)} contexts but {len(completions)} completions")
        prompts = [self.prompt(c, n_items=n_items, domain=domain) for c in contexts]
        if completions is None:
            return [p + ANSWER_PREFIX for p in prompts]
        return [cut_after_first_item(p, c) for p, c in zip(prompts, completions, strict=True)]

    def encode_texts(
        self, texts: Sequence[str], batch_size: int = 8, max_length: int | None = 512, progress: bool = False
    ) -> torch.Tensor:
        """float32 ``(len(texts), hidden)``: the base model's last hidden state (after its final norm) at each
        text's last token. Texts are tokenized without added special tokens, cut to their LAST ``max_length``
        tokens, left-padded, with position ids ``cumsum(mask) - 1``; a row does not depend on its batch."""
        texts = list(texts)
        out = torch.empty((len(texts), self.hidden_size), dtype=torch.float32)
        if not texts:
            return out
        ids = self._ids(texts, max_length)
        base = self.model.base_model
        accepts = set(inspect.signature(base.forward).parameters)
        batches: Any = self._batches(ids, batch_size)
        if shown(progress):
            from tqdm.auto import tqdm

            batches = tqdm(batches, total=-(-len(texts) // batch_size), desc="encoding contexts", unit="batch")
        device = self.device
        with torch.inference_mode():
            for rows, inputs in batches:
                kwargs = {k: v.to(device) for k, v in inputs.items() if k in accepts}
                if "use_cache" in accepts:
                    kwargs["use_cache"] = False
                hidden = base(**kwargs).last_hidden_state  # (batch, width, hidden), after the final norm
                out[torch.as_tensor(rows)] = hidden[:, -1].float().cpu()
        return out

    def encode_sequential(
        self, texts: Sequence[str], max_length: int | None = 512, progress: bool = False
    ) -> tuple[torch.Tensor, dict[str, int]]:
        """:meth:`encode_texts` for texts that share beginnings (one prompt template; the turns of a conversation in
        order, each context extending the last), one text at a time with the KV cache kept between them: a text's
        longest common token prefix with the previous text is not recomputed (at least its last token is). The
        vectors are those of :meth:`encode_texts` up to float rounding (attention over cached keys; no padding).
        A text cut by ``max_length`` shares no prefix with a longer one and is computed whole.

        Returns (float32 ``(len(texts), hidden)``, ``{"tokens": tokens of all texts, "computed": tokens run}``).
        """
        texts = list(texts)
        if not kv_reuse_supported():  # DynamicCache(config=...) and crop(-n) are transformers 5's API
            n_tokens = self._n_tokens(texts, max_length)
            return (self.encode_texts(texts, max_length=max_length, progress=progress),
                    {"tokens": n_tokens, "computed": n_tokens})
        out = torch.empty((len(texts), self.hidden_size), dtype=torch.float32)
        stats = {"tokens": 0, "computed": 0}
        if not texts:
            return out, stats
        cache: Any = None
        previous: list[int] = []
        rows: Any = enumerate(self._ids(texts, max_length))
        if shown(progress):
            from tqdm.auto import tqdm

            rows = tqdm(rows, total=len(texts), desc="encoding contexts (KV reuse)", unit="text")
        for row, ids in rows:
            out[row], cache, computed = self.extend(cache, previous, ids)
            previous = ids
            stats["tokens"] += len(ids)
            stats["computed"] += computed
        return out, stats

    def extend(self, cache: Any, previous: Sequence[int], ids: Sequence[int]) -> tuple[torch.Tensor, Any, int]:
        """The final hidden state at the last of the token ``ids`` (float32 ``(hidden,)``, as :meth:`encode_texts`
        gives it up to float rounding), run on top of ``cache``: the KV cache of the tokens ``previous`` (None:
        nothing). Their longest common prefix is kept, the rest of ``ids`` runs (at least its last token); a cache
        that shares nothing is replaced. Returns (the vector, the cache now holding ``ids``, the tokens run). The
        cache is changed in place. Needs transformers 5 (:func:`kv_reuse_supported`)."""
        from transformers import DynamicCache

        ids = list(ids)
        if not ids:
            raise LmrecError(f"{self.identity}: nothing to encode (no tokens)")
        base, device = self.model.base_model, self.device
        cache_arg = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        common = min(_common_prefix(previous, ids), len(ids) - 1)
        with torch.inference_mode():
            if cache is None or common == 0:
                cache, common = DynamicCache(config=self.model.config), 0
            else:
                cache.crop(common - cache.get_seq_length())  # keep the shared prefix's keys and values
            new = torch.tensor([ids[common:]], dtype=torch.long, device=device)
            positions = torch.arange(common, len(ids), device=device)[None]
            hidden = base(input_ids=new, position_ids=positions, use_cache=True, **{cache_arg: cache},
                          attention_mask=torch.ones((1, len(ids)), dtype=torch.long, device=device))
            vector = hidden.last_hidden_state[0, -1].float().cpu()
        return vector, cache, len(ids) - common

    def encode_contexts(
        self,
        contexts: Sequence[str],
        batch_size: int = 8,
        max_length: int | None = 512,
        progress: bool = False,
        completions: Sequence[str] | None = None,
        cache: EmbeddingCache | None = None,
        n_items: int = 20,
        domain: str = "movie",
        reuse_kv: bool = False,
        session: tuple[KVSessions, str] | None = None,
    ) -> torch.Tensor:
        """RTA's context encoding q, float32 ``(len(contexts), hidden)``.

        q is the final-layer hidden state (after the final norm, = ``model.model(...).last_hidden_state``) at the last
        token of ``prompt(context) + "1."``; with ``completions`` (the model's answers), of the prompt plus the
        completion cut right after its first "1." (the official tools/3_context_encoding.py). See ``encode_texts``
        for padding and truncation. ``cache``: an ``lmrec.text.EmbeddingCache``; vectors are stored per (identity +
        max_length, input text) and only missing texts are encoded. ``reuse_kv``: encode with
        :meth:`encode_sequential` (give the contexts in conversation order); ``self.last_encoding`` then says how many
        tokens were computed of how many. ``session``: (a :class:`lmrec.llm.kv_sessions.KVSessions`, the
        conversation's key): the contexts are of that conversation, run on top of its kept KV cache, one at a time.
        """
        from lmrec.text.cache import CachedEncoder

        texts = self.encoding_texts(contexts, completions, n_items=n_items, domain=domain)
        encoder = _TextEncoderView(self, max_length, reuse_kv, session)
        if cache is None:
            vectors = encoder.encode(texts, batch_size=batch_size, progress=progress)
        else:
            vectors = CachedEncoder(encoder, cache).encode(texts, batch_size=batch_size, progress=progress)
        self.last_encoding = dict(encoder.stats)
        return torch.from_numpy(vectors)

    # -------------------------------------------------------------------------------------- items as tokens

    def token_embeddings(self) -> torch.Tensor:
        """The input embedding table ``(vocab, hidden)``, detached, float32 (a view of the weights when the model
        is float32: do not modify it in place). It is the raw table: models that scale embeddings inside their
        forward (Gemma multiplies by sqrt(hidden)) apply that scale after the lookup, not here."""
        return self.model.get_input_embeddings().weight.detach().float()

    def tokenize_titles(
        self, titles: Sequence[str], max_tokens: int = 32, prefix: str = ANSWER_PREFIX + " "
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids of each title as the model writes it in its answer: ``(ids (n, max_tokens), lengths (n,))``.

        Convention: a title's tokens are those of ``prefix + title`` minus those of ``prefix`` (default ``"1. "``),
        i.e. the tokens that follow "1." in a list answer; for BPE tokenizers this is the title with one leading space
        (" Toy Story" -> [" Toy", " Story"]), for SentencePiece ones the word-initial pieces. No special tokens.
        Ids are right-padded with 0 (a real token id: use ``lengths``); titles longer than ``max_tokens`` are cut
        to their first ``max_tokens`` tokens and counted in a warning. An empty title raises LmrecError.
        """
        head = self.tokenizer(prefix.rstrip(" "), add_special_tokens=False)["input_ids"]
        full = self.tokenizer([prefix + t for t in titles], add_special_tokens=False)["input_ids"] if titles else []
        ids = torch.zeros((len(titles), max_tokens), dtype=torch.long)
        lengths = torch.zeros(len(titles), dtype=torch.long)
        cut = 0
        for i, (title, seq) in enumerate(zip(titles, full, strict=True)):
            if seq[: len(head)] == head:
                seq = seq[len(head) :]
            else:  # the prefix merged with the title's first token: tokenize the title alone, with a space
                seq = self.tokenizer(" " + title, add_special_tokens=False)["input_ids"]
            if not title.strip() or not seq:
                raise LmrecError(f"{self.identity}: title {i} ({title!r}) is empty")
            if len(seq) > max_tokens:
                cut += 1
                seq = seq[:max_tokens]
            ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            lengths[i] = len(seq)
        if cut:
            warnings.warn(
                f"{cut} of {len(titles)} titles are longer than {max_tokens} tokens and were truncated",
                stacklevel=2,
            )
        return ids, lengths

    # ------------------------------------------------------------------------------------------- generation

    def generate(
        self,
        contexts: Sequence[str],
        max_new_tokens: int = 200,
        batch_size: int = 8,
        formatted: bool = False,
        answer_prefix: str = "",
        progress: bool = True,
        n_items: int = 20,
        domain: str = "movie",
        max_length: int | None = None,
    ) -> list[str]:
        """Greedy completions (do_sample=False, no repetition penalty), one per input, in input order.

        ``contexts`` are conversations turned into RTA prompts, or with ``formatted=True`` ready prompt strings.
        ``answer_prefix`` (e.g. ``"1."``) is appended to every prompt to start the list and is included at the head of
        the returned completion; the default ``""`` is the paper's setting. Only the completion text is returned
        (special tokens removed). ``max_new_tokens``: the paper used 512 with Llama-2-7B; ~200 covers 20 titles.
        ``max_length`` left-truncates prompts (in tokens). Batches are left-padded and grouped by length.
        """
        prompts = list(contexts) if formatted else [self.prompt(c, n_items=n_items, domain=domain) for c in contexts]
        prompts = [p + answer_prefix for p in prompts]
        out: list[str] = [""] * len(prompts)
        if not prompts:
            return out
        ids = self._ids(prompts, max_length)
        batches: Any = self._batches(ids, batch_size)
        if shown(progress):
            from tqdm.auto import tqdm

            batches = tqdm(batches, total=-(-len(prompts) // batch_size), desc="generating", unit="batch")
        device = self.device
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        with torch.inference_mode():
            for rows, inputs in batches:
                generated = self.model.generate(
                    input_ids=inputs["input_ids"].to(device),
                    attention_mask=inputs["attention_mask"].to(device),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    repetition_penalty=1.0,
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=eos,
                )
                new = generated[:, inputs["input_ids"].shape[1] :].cpu()
                texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
                for r, text in zip(rows, texts, strict=True):
                    out[int(r)] = answer_prefix + text
        return out


def kv_reuse_supported() -> bool:
    """Whether the installed transformers keeps a KV cache the way :meth:`CausalLM.extend` uses it (5.x)."""
    import transformers

    return int(transformers.__version__.split(".")[0]) >= 5


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token id lists."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    x, y = np.asarray(a[:n]), np.asarray(b[:n])
    differ = np.flatnonzero(x != y)
    return int(differ[0]) if len(differ) else n


class _TextEncoderView:
    """``lmrec.text.TextEncoder`` over ``CausalLM.encode_texts`` (numpy out), so the embedding cache can wrap it."""

    def __init__(self, lm: CausalLM, max_length: int | None, reuse_kv: bool = False,
                 session: tuple[KVSessions, str] | None = None):
        self.lm = lm
        self.max_length = max_length
        self.reuse_kv = reuse_kv
        self.session = session if session is not None and kv_reuse_supported() else None
        # one identity for both ways: they give the same vectors up to float rounding (tested)
        self.identity = f"{lm.identity}:last-token:max_length={max_length}"
        self.dim = lm.hidden_size
        self.stats = {"tokens": 0, "computed": 0}

    def encode(self, texts: Sequence[str], batch_size: int = 8, progress: bool = False) -> np.ndarray:
        if self.session is not None:
            store, key = self.session
            vectors = torch.empty((len(texts), self.dim), dtype=torch.float32)
            stats = {"tokens": 0, "computed": 0}
            for row, ids in enumerate(self.lm._ids(texts, self.max_length) if texts else []):
                vectors[row], computed = store.encode(self.lm, key, ids)
                stats["tokens"] += len(ids)
                stats["computed"] += computed
        elif self.reuse_kv:
            vectors, stats = self.lm.encode_sequential(texts, max_length=self.max_length, progress=progress)
        else:
            n_tokens = self.lm._n_tokens(texts, self.max_length)
            vectors = self.lm.encode_texts(texts, batch_size=batch_size, max_length=self.max_length, progress=progress)
            stats = {"tokens": n_tokens, "computed": n_tokens}
        for key, value in stats.items():
            self.stats[key] += value
        return vectors.numpy()
