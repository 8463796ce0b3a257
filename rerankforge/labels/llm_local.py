"""Labels from a local Hugging Face causal LM.

* pointwise: ``P(yes) = softmax([z_yes, z_no])[0]`` over the next-token logits after a prompt
  that asks whether the document answers the query (Nogueira et al., "Document Ranking with a
  Pretrained Sequence-to-Sequence Model", 2020, in its decoder-only form as used by RankLLaMA-style
  pointwise prompting). Only the two answer tokens compete, so the rest of the vocabulary
  cannot dilute the score.
* listwise: RankGPT's sliding window (see ``labels/listwise.py``); the LM generates
  ``[3] > [1] > [2]`` for each window, greedily.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from rerankforge.data.groups import Group
from rerankforge.errors import ConfigError
from rerankforge.labels.api import render_prompt
from rerankforge.labels.job import Labeler, QueryLabels, dir_stamp
from rerankforge.labels.listwise import SlidingState, initial_order, rank_targets, window_starts
from rerankforge.models.tokens import single_token_id

log = logging.getLogger(__name__)

POINTWISE_PROMPT = (
    "Query: {query}\nDocument: {document}\n"
    "Does the document answer the query? Answer yes or no.\nAnswer:"
)

LISTWISE_PROMPT = (
    "I will provide you with {num} passages, each indicated by a numerical identifier []. "
    "Rank the passages based on their relevance to the search query: {query}\n\n"
    "{passages}\n\n"
    "Search Query: {query}\n"
    "Rank the {num} passages above based on their relevance to the search query. All the passages should be "
    "included and listed using identifiers, in descending order of relevance. The output format should be "
    "[] > [], e.g., [2] > [1]. Only respond with the ranking results, do not say any word or explain.\n"
)


def _device(name: str | None) -> torch.device:
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class LocalLM:
    """A causal LM and its tokenizer, prompts formatted and batched with left padding."""

    def __init__(self, path: str | Path, bf16: bool = True, device: str | None = "auto", chat_template: bool = False):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path = str(path)
        self.device = _device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        # Left padding keeps every prompt's last token in the last column (next-token logits,
        # generation); explicit position ids below make padded prompts score like unpadded ones.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            if self.tokenizer.eos_token is None:
                raise ConfigError(f"{self.path}: the tokenizer has neither a pad nor an eos token")
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = torch.bfloat16 if bf16 and self.device.type == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=dtype).to(self.device).eval()
        # On CPU the weights stay fp32 and matmuls run under bf16 autocast (as Reranker.score_pairs).
        self.autocast = bf16 and self.device.type == "cpu" and torch.backends.mkldnn.is_available()
        if chat_template and not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError(f"{self.path}: chat_template=true but the tokenizer has no chat template")
        self.chat_template = chat_template

    def truncate(self, text: str, max_tokens: int | None) -> str:
        if not max_tokens:
            return text
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= max_tokens else self.tokenizer.decode(ids[:max_tokens])

    def render(self, prompt: str) -> str:
        if not self.chat_template:
            return prompt
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                  add_generation_prompt=True)

    def encode(self, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        # A chat template already writes the leading special tokens itself.
        enc = self.tokenizer(list(prompts), padding=True, return_tensors="pt",
                             add_special_tokens=not self.chat_template)
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def order_by_length(self, prompts: Sequence[str]) -> list[int]:
        lengths = [len(ids) for ids in self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]]
        return sorted(range(len(prompts)), key=lambda i: lengths[i])

    @torch.no_grad()
    def next_token_logits(self, prompts: Sequence[str], token_ids: Sequence[int], batch_size: int) -> torch.Tensor:
        """``[len(prompts), len(token_ids)]`` next-token logits (float32) after each prompt."""
        out = torch.empty(len(prompts), len(token_ids))
        order = self.order_by_length(prompts)
        ids = torch.tensor(list(token_ids), device=self.device)
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            enc = self.encode([prompts[i] for i in idx])
            position_ids = (enc["attention_mask"].long().cumsum(-1) - 1).clamp_min(0)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                logits = self.model(**enc, position_ids=position_ids, logits_to_keep=1).logits[:, -1]
            out[idx] = logits.float()[:, ids].cpu()
        return out

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], max_new_tokens: int, batch_size: int) -> list[str]:
        """Greedy continuations (the new text only)."""
        out = [""] * len(prompts)
        order = self.order_by_length(prompts)
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            enc = self.encode([prompts[i] for i in idx])
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                gen = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                          pad_token_id=self.tokenizer.pad_token_id)
            new = gen[:, enc["input_ids"].shape[1]:]
            for i, row in zip(idx, new):
                out[i] = self.tokenizer.decode(row, skip_special_tokens=True)
        return out


class PointwiseLLMLabeler(Labeler):
    """``<field> = P(yes)`` from a configurable prompt with ``{query}`` and ``{document}``."""

    kind = "llm-pointwise"

    def __init__(self, lm: LocalLM, prompt: str = POINTWISE_PROMPT, yes: str = "yes", no: str = "no",
                 field: str = "teacher", batch_size: int = 8, max_doc_tokens: int | None = 256):
        for key in ("{query}", "{document}"):
            if key not in prompt:
                raise ConfigError(f"the pointwise prompt must contain {key}")
        if field not in ("teacher", "label"):
            raise ConfigError(f"field must be 'teacher' or 'label', got {field!r}")
        self.lm, self.prompt, self.field = lm, prompt, field
        self.fields = (field,)
        self.yes_no = (single_token_id(lm.tokenizer, yes, "yes token"), single_token_id(lm.tokenizer, no, "no token"))
        self.words = (yes, no)
        self.batch_size, self.max_doc_tokens = batch_size, max_doc_tokens

    def settings(self):
        return {"model": self.lm.path, "model_files": dir_stamp(self.lm.path), "prompt": self.prompt,
                "yes_no": list(self.words), "field": self.field,
                "max_doc_tokens": self.max_doc_tokens, "chat_template": self.lm.chat_template,
                "bf16": self.lm.autocast or self.lm.model.dtype == torch.bfloat16}

    def format(self, query: str, document: str) -> str:
        return self.lm.render(render_prompt(self.prompt, query=query, document=self.lm.truncate(document, self.max_doc_tokens)))

    def p_yes(self, queries: Sequence[str], docs: Sequence[str]) -> torch.Tensor:
        logits = self.lm.next_token_logits([self.format(q, d) for q, d in zip(queries, docs)], self.yes_no,
                                           self.batch_size)
        return torch.softmax(logits, dim=-1)[:, 0]

    def label(self, groups: Sequence[Group], texts) -> list[QueryLabels]:
        p = self.p_yes([g.query for g, ts in zip(groups, texts) for _ in ts], [t for ts in texts for t in ts]).tolist()
        out, k = [], 0
        for g in groups:
            n = len(g.candidates)
            out.append(QueryLabels({self.field: {c.doc_id: v for c, v in zip(g.candidates, p[k : k + n])}}))
            k += n
        return out


class ListwiseLLMLabeler(Labeler):
    """Sliding-window permutations generated by the LM, turned into rank targets
    (``rank_score`` -> ``teacher``, optional ``rank_grades`` -> ``label``)."""

    kind = "llm-listwise"

    def __init__(self, lm: LocalLM, prompt: str = LISTWISE_PROMPT, window: int = 20, step: int = 10,
                 max_passage_tokens: int | None = 128, max_new_tokens: int | None = None, batch_size: int = 4,
                 rank_score: str = "neg_rank", rank_grades: Sequence[int] | None = None):
        for key in ("{query}", "{passages}"):
            if key not in prompt:
                raise ConfigError(f"the listwise prompt must contain {key}")
        window_starts(window, window, step)  # validates window/step early
        rank_targets(["a"], rank_score, rank_grades)  # validates the target settings early
        self.lm, self.prompt = lm, prompt
        self.window, self.step = window, step
        self.max_passage_tokens = max_passage_tokens
        # "[12] > " is at most ~6 tokens in common vocabularies
        self.max_new_tokens = max_new_tokens or 6 * window
        self.batch_size = batch_size
        self.rank_score, self.rank_grades = rank_score, list(rank_grades) if rank_grades else None
        self.fields = ("teacher", "label") if self.rank_grades else ("teacher",)

    def settings(self):
        return {"model": self.lm.path, "model_files": dir_stamp(self.lm.path), "prompt": self.prompt,
                "window": self.window, "step": self.step,
                "max_passage_tokens": self.max_passage_tokens, "max_new_tokens": self.max_new_tokens,
                "chat_template": self.lm.chat_template, "rank_score": self.rank_score,
                "rank_grades": self.rank_grades}

    def format(self, query: str, passages: Sequence[str]) -> str:
        body = "\n".join(f"[{i}] {self.lm.truncate(p, self.max_passage_tokens)}" for i, p in enumerate(passages, 1))
        return self.lm.render(render_prompt(self.prompt, query=query, passages=body, num=str(len(passages))))

    def label(self, groups: Sequence[Group], texts) -> list[QueryLabels]:
        states = []
        for g, ts in zip(groups, texts):
            states.append(SlidingState(initial_order(g.candidates), window_starts(len(ts), self.window, self.step)))
        # Windows are sequential within a query but independent across queries: one generate
        # call serves the current window of every unfinished query in the batch.
        while True:
            active = [i for i, st in enumerate(states) if not st.done]
            if not active:
                break
            prompts = [self.format(groups[i].query, [texts[i][j] for j in states[i].window_items()]) for i in active]
            for i, answer in zip(active, self.lm.generate(prompts, self.max_new_tokens, self.batch_size)):
                states[i].apply(answer)
        out = []
        for g, st in zip(groups, states):
            res = st.result()
            ordered = [g.candidates[i].doc_id for i in res.order]
            out.append(QueryLabels(rank_targets(ordered, self.rank_score, self.rank_grades),
                                   info={"windows": res.windows, "repaired_windows": res.repairs,
                                         "unparsable_windows": res.unparsable}))
        return out
