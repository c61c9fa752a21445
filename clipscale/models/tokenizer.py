"""Tokenizers: a word-level one for the built-in synthetic captions, open_clip's BPE otherwise.

open_clip ships only BPE/HF tokenizers; a closed-vocabulary word tokenizer is ~30x faster on the
synthetic grammar and keeps tiny text towers small, so it is written here (20 lines). Tokenizers
are described by a JSON-able `state()` saved in every checkpoint and rebuilt by `from_state`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from clipscale.errors import ClipscaleError

_WORD = re.compile(r"[a-z]+")


class Tokenizer(Protocol):
    context_length: int

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor: ...

    def state(self) -> dict[str, Any]: ...


class WordTokenizer:
    """Lower-cases, keeps [a-z]+ words, maps them to ids; <sot> words <eot>, zero-padded.

    Ids follow `vocab` order; <eot> must have the highest id (open_clip pools at argmax id).
    Captions longer than the context are truncated with <eot> kept as the last token.
    """

    def __init__(self, vocab: Sequence[str], context_length: int) -> None:
        if vocab[-1] != "<eot>" or vocab[0] != "<pad>":
            raise ClipscaleError("word vocabulary must start with <pad> and end with <eot>")
        self.vocab = list(vocab)
        self.context_length = context_length
        self._ids = {w: i for i, w in enumerate(self.vocab)}
        self._sot, self._eot, self._unk = self._ids["<sot>"], self._ids["<eot>"], self._ids["<unk>"]

    def encode(self, text: str) -> list[int]:
        words = _WORD.findall(text.lower())
        ids = [self._ids.get(w, self._unk) for w in words][: self.context_length - 2]
        return [self._sot, *ids, self._eot]

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        out = torch.zeros(len(texts), self.context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = self.encode(text)
            out[row, : len(ids)] = torch.tensor(ids)
        return out

    def state(self) -> dict[str, Any]:
        return {"kind": "words", "vocab": self.vocab, "context_length": self.context_length}


class OpenClipTokenizer:
    """open_clip's tokenizer for a model name (BPE vocabulary ships in the wheel).

    `context_length` is the model's own (a checkpoint's saved value): open_clip falls back to 77
    tokens for a name it does not know, which overflows a shorter positional embedding. A
    `model_config` is registered with open_clip first when the name is unknown in this process, so
    its tokenizer settings (hf_tokenizer_name, tokenizer_kwargs) are honoured too.
    """

    def __init__(self, model_name: str, *, context_length: int | None = None,
                 model_config: dict[str, Any] | None = None) -> None:
        import open_clip

        if model_config is not None:
            from clipscale.models.registry import ensure_registered

            ensure_registered(model_name, model_config)
        self.model_name = model_name
        try:
            self._tok = (_simple_tokenizer(model_config, context_length)
                         if _plain_bpe_unknown_name(model_name, model_config)
                         else open_clip.get_tokenizer(model_name, context_length=context_length))
        except (ImportError, OSError) as exc:  # transformers absent, or tokenizer files not local
            raise ClipscaleError(_hf_tokenizer_hint(model_name, exc)) from None
        self.context_length = int(getattr(self._tok, "context_length", None) or context_length or 77)

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        return self._tok(texts)

    def state(self) -> dict[str, Any]:
        return {"kind": "open_clip", "model": self.model_name, "context_length": self.context_length}


def _plain_bpe_unknown_name(model_name: str, model_config: dict[str, Any] | None) -> bool:
    """A config open_clip does not know by name (the ladder's `tiny-S<i>-bpe`) that uses its default BPE:
    `open_clip.get_tokenizer` would build the same SimpleTokenizer, after a "Model configuration not
    found" warning that is only noise here."""
    import open_clip

    if model_config is None or model_name.startswith(("hf-hub:", "local-dir:")):
        return False
    text_cfg = model_config.get("text_cfg") or {}
    return open_clip.get_model_config(model_name) is None and not text_cfg.get("hf_tokenizer_name")


def _simple_tokenizer(model_config: dict[str, Any] | None, context_length: int | None) -> Any:
    """open_clip's SimpleTokenizer as `get_tokenizer` builds it from a config: context length argument >
    config > 77, the config's tokenizer_kwargs."""
    from open_clip.tokenizer import DEFAULT_CONTEXT_LENGTH, SimpleTokenizer

    text_cfg = (model_config or {}).get("text_cfg") or {}
    ctx = context_length or text_cfg.get("context_length") or DEFAULT_CONTEXT_LENGTH
    return SimpleTokenizer(context_length=int(ctx), **dict(text_cfg.get("tokenizer_kwargs") or {}))


def _hf_tokenizer_hint(model_name: str, exc: BaseException) -> str:
    """One line for a model whose tokenizer open_clip delegates to Hugging Face (SigLIP, mT5, ...)."""
    import open_clip

    cfg = open_clip.get_model_config(model_name) or {}
    source = cfg.get("text_cfg", {}).get("hf_tokenizer_name") or model_name.removeprefix("local-dir:")
    first = (str(exc).splitlines() or [type(exc).__name__])[0]
    return (f"model {model_name!r} uses the Hugging Face tokenizer {source!r}: install transformers and "
            "have the tokenizer files locally (HF_HUB_OFFLINE=1 with them in the Hugging Face cache, "
            f"or a local-dir: model folder holding them); {type(exc).__name__}: {first}")


def tokenizer_from_state(state: dict[str, Any], *, model_config: dict[str, Any] | None = None) -> Tokenizer:
    """Rebuild a checkpoint's tokenizer, with its saved context length."""
    kind = state.get("kind")
    try:
        if kind == "words":
            return WordTokenizer(state["vocab"], int(state["context_length"]))
        if kind == "open_clip":
            ctx = state.get("context_length")
            return OpenClipTokenizer(str(state["model"]), context_length=None if ctx is None else int(ctx),
                                     model_config=model_config)
    except (KeyError, TypeError, ValueError) as exc:
        raise ClipscaleError(f"checkpoint tokenizer state of kind {kind!r} is malformed ({exc!r})") from None
    raise ClipscaleError(f"unknown tokenizer kind {kind!r} in checkpoint; expected 'words' or 'open_clip'")
