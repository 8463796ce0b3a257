"""Pointwise LLM reranker: a causal LM reads a prompt and the score is its "yes" logit.

    s(q, d) = z_yes                  (score: "yes_logit")
    s(q, d) = z_yes - z_no           (score: "log_odds" = log p(yes) - log p(no))

where z are the next-token logits after the prompt's last token (monoT5/RankLLaMA-style pointwise
relevance; Nogueira et al. 2020, Ma et al. 2023). The template holds the literal placeholders
``{query}`` and ``{document}`` (plain substitution, so other braces need no escaping); chat or
instruction formats go straight into the template, special tokens included.

Tokenisation: ``[leading specials] + head(query) + document + tail`` where ``head`` is the template up
to ``{document}`` and ``tail`` the rest. Head and document are tokenised together (as the LM saw such
text), the tail separately, and only the head+document part is truncated from the right, so a long
document loses its end while the question the model answers is never cut. Batches are left-padded
(the last position is then the last prompt token for every row) with position ids counted over
real tokens, but ``forward`` finds each row's last real token from the attention mask, so
right-padded features score the same.

Saved directory: the causal LM in HF format (plain, or a LoRA adapter; ``merge_lora=True`` folds the
adapter in), the tokenizer and ``rerankforge.json`` (template, answer tokens, score mode, max length).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rerankforge.errors import ConfigError
from rerankforge.models.base import (META_FILE, Reranker, check_model_type, register_model, resolve_model_path,
                                     scatter_scores)
from rerankforge.models.peft_utils import load_backbone, save_backbone, unwrap_peft
from rerankforge.models.tokens import leading_special_ids, single_token_id

DEFAULT_TEMPLATE = ("Query: {query}\nDocument: {document}\n"
                    "Is the document relevant to the query? Answer yes or no.\nAnswer:")
SCORE_MODES = ("yes_logit", "log_odds")


@register_model("decoder")
class DecoderReranker(Reranker):
    """A causal LM as a pointwise yes/no reranker: ``DecoderReranker("path/to/lm")`` or an exported
    rerankforge decoder; or ``DecoderReranker(hf_model, tokenizer, ...)``."""

    def __init__(self, model, tokenizer=None, max_length: int | None = None, template: str = DEFAULT_TEMPLATE,
                 yes_token: str = " yes", no_token: str = " no", score: str = "yes_logit", **hf_kwargs):
        super().__init__()
        saved_ids = None
        if isinstance(model, (str, Path)):
            path = model_path = resolve_model_path(str(model))
            check_model_type(path, self.model_type)
            meta_path = Path(path, META_FILE)
            if meta_path.exists():
                meta = json.loads(meta_path.read_text())
                tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
                model = load_backbone(AutoModelForCausalLM, Path(path), meta, **hf_kwargs)
                template, yes_token, no_token, score = meta["template"], meta["yes_token"], meta["no_token"], meta["score"]
                max_length = max_length or meta["max_length"]
                saved_ids = (meta["yes_id"], meta["no_id"])
            else:
                hf_kwargs.pop("is_trainable", None)
                tokenizer = tokenizer or AutoTokenizer.from_pretrained(path)
                model = AutoModelForCausalLM.from_pretrained(path, **hf_kwargs)
        elif tokenizer is None:
            raise TypeError("DecoderReranker(model, tokenizer): a model object needs its tokenizer")
        max_length = max_length or 512
        if "{document}" not in template or "{query}" not in template:
            raise ConfigError(f"decoder template must contain {{query}} and {{document}}: {template!r}")
        if score not in SCORE_MODES:
            raise ConfigError(f"decoder score must be one of {', '.join(SCORE_MODES)}, not {score!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.template = template
        self.yes_token, self.no_token, self.score_mode = yes_token, no_token, score
        self.yes_id = single_token_id(tokenizer, yes_token, "decoder yes_token")
        self.no_id = single_token_id(tokenizer, no_token, "decoder no_token")
        if saved_ids is not None and (self.yes_id, self.no_id) != tuple(saved_ids):
            raise ConfigError(f"{model_path}/{META_FILE}: answer token ids {saved_ids[0]}/{saved_ids[1]} do not match "
                              f"the saved tokenizer's {self.yes_id}/{self.no_id}")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            raise ConfigError(f"{type(tokenizer).__name__} has neither a pad nor an eos token to pad with")
        self._lead = leading_special_ids(tokenizer)
        self._head, self._tail = template.split("{document}", 1)
        if len(self._lead) + 1 >= max_length:
            raise ConfigError(f"decoder max_length={max_length} leaves no room for the prompt")

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_base(cls, name_or_path: str | None = None, max_length: int = 512, template: str = DEFAULT_TEMPLATE,
                  yes_token: str = " yes", no_token: str = " no", score: str = "yes_logit",
                  **kwargs) -> DecoderReranker:
        """Any HF causal LM; ``kwargs`` go to ``AutoModelForCausalLM.from_pretrained`` (dtype, attn_implementation)."""
        return cls(name_or_path or "default", None, max_length, template, yes_token, no_token, score, **kwargs)

    def meta(self) -> dict[str, Any]:
        return super().meta() | {"max_length": self.max_length, "template": self.template,
                                 "yes_token": self.yes_token, "no_token": self.no_token, "score": self.score_mode,
                                 "yes_id": self.yes_id, "no_id": self.no_id}

    def save_pretrained(self, path: str | Path, merge_lora: bool = False) -> None:
        """The LM (a LoRA adapter referring to its base, or with ``merge_lora=True`` a plain merged
        checkpoint), the tokenizer and ``rerankforge.json``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        extra = save_backbone(self.model, path, merge_lora)
        self.tokenizer.save_pretrained(path)
        self.write_meta(path, **extra)

    @classmethod
    def from_pretrained(cls, path: str | Path, max_length: int | None = None, is_trainable: bool = False,
                        **kwargs) -> DecoderReranker:
        return cls(str(path), max_length=max_length, is_trainable=is_trainable, **kwargs)

    # ----------------------------------------------------------------- tokenization
    def prompt_ids(self, queries: list[str], docs: list[str]) -> list[list[int]]:
        """Token ids of each filled prompt, at most ``max_length`` long, tail always complete."""
        tok = self.tokenizer
        bodies = [self._head.replace("{query}", q) + d for q, d in zip(queries, docs)]
        tails = [self._tail.replace("{query}", q) for q in queries]
        body_ids = tok(bodies, add_special_tokens=False, truncation=True, max_length=self.max_length)["input_ids"]
        tail_ids = tok(tails, add_special_tokens=False)["input_ids"] if any(tails) else [[] for _ in tails]
        out = []
        for body, tail in zip(body_ids, tail_ids):
            budget = self.max_length - len(self._lead) - len(tail)
            if budget < 1:
                raise ConfigError(f"decoder max_length={self.max_length} is shorter than the template tail "
                                  f"({len(tail)} tokens)")
            out.append(self._lead + list(body[:budget]) + list(tail))
        return out

    def tokenize(self, queries: list[str], docs: list[list[str]]) -> dict[str, Any]:
        q_flat = [q for q, ds in zip(queries, docs) for _ in ds]
        d_flat = [d for ds in docs for d in ds]
        seqs = self.prompt_ids(q_flat, d_flat)
        width = max((len(s) for s in seqs), default=0)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        att = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):  # left padding
            if s:
                ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
                att[i, width - len(s) :] = 1
        return {"input_ids": ids, "attention_mask": att}

    # ----------------------------------------------------------------- scoring
    def _keeps_positions(self) -> bool:
        """Whether the LM's forward can project only chosen positions onto the vocabulary."""
        from transformers import modeling_utils

        params = inspect.signature(unwrap_peft(self.model).forward).parameters
        return "logits_to_keep" in params and hasattr(modeling_utils, "slice_logits_to_keep")

    def answer_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Next-token logits of (yes, no) after each row's last real token: ``[n, 2]``."""
        att = attention_mask.long()
        width = att.shape[1]
        # Last real token, wherever the padding is: the highest index with attention 1.
        last = (torch.arange(width, device=att.device) * att).argmax(dim=1)
        position_ids = (att.cumsum(dim=1) - 1).clamp(min=0)
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": att, "position_ids": position_ids,
                                  "use_cache": False}
        if self._keeps_positions():
            # Project one position per row: the full [n, L, vocab] logits would dominate memory.
            logits = self.model(**kwargs, logits_to_keep=last[:, None]).logits[:, 0]
        else:
            logits = self.model(**kwargs).logits
            logits = logits[torch.arange(logits.shape[0], device=logits.device), last]
        return logits[:, [self.yes_id, self.no_id]].float()

    def forward(self, features: dict[str, Any], mask: torch.Tensor) -> torch.Tensor:
        z = self.answer_logits(features["input_ids"], features["attention_mask"])
        flat = z[:, 0] - z[:, 1] if self.score_mode == "log_odds" else z[:, 0]
        return scatter_scores(flat, mask)
