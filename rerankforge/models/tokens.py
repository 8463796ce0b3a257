"""Tokenizer facts the rerankers need, found by asking the tokenizer rather than assuming BERT."""

from __future__ import annotations

from rerankforge.errors import ConfigError


def leading_special_ids(tokenizer) -> list[int]:
    """The ids a tokenizer puts before the text ([CLS] for BERT, <s> for Llama, nothing for Qwen2)."""
    probe = "a b"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return list(full[:start])
    raise ConfigError(f"{type(tokenizer).__name__}: cannot locate the text among the special tokens {full}")


def single_token_id(tokenizer, text: str, what: str) -> int:
    """The id of ``text`` if it is one token; a leading space is dropped when only that makes it one
    (SentencePiece vocabularies spell ' yes' as '▁yes', which ``encode('yes')`` already yields)."""
    tried = []
    for candidate in dict.fromkeys((text, text.strip())):
        ids = tokenizer(candidate, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            return int(ids[0])
        tried.append(f"{candidate!r} -> {tokenizer.convert_ids_to_tokens(ids)}")
    raise ConfigError(f"{what}: {text!r} is not a single token of this tokenizer ({'; '.join(tried)}); "
                      f"pick a word the vocabulary holds whole")


def vocab_token_id(tokenizer, token: str) -> int | None:
    """The id of a vocabulary entry (not tokenized text), or None if the vocabulary lacks it."""
    vocab = tokenizer.get_vocab()
    return int(vocab[token]) if token in vocab else None
