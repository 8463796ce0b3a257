"""In-batch negatives: each query is also scored against every other query's documents.

The model returns ``scores[B, N_total]`` over all documents of the (cross-process) batch plus
where each query's own candidates sit; this view spreads the ``[B, G]`` targets over those
columns so every loss runs unchanged: other queries' documents count as non-relevant (label 0,
weight 1) and have no teacher score (NaN, so distillation terms ignore them).

False in-batch negatives are masked (``mask_known_positives``, the default): another query's
document is left out of query ``b``'s row when it is one of ``b``'s own candidates (the same
document would otherwise be a positive in one column and a negative in another) or a judged
positive of ``b``'s mined group. Where documents are shared across queries (NFCorpus: 43 judged
documents per train query out of 3,633) a random batch otherwise teaches the model that some of
each query's relevant documents are not relevant.
"""

from __future__ import annotations

import hashlib
import inspect

import torch

from rerankforge.errors import ConfigError


def supports_in_batch(model) -> bool:
    return "in_batch" in inspect.signature(model.forward).parameters


def doc_key(doc_id: str) -> int:
    """A stable signed 64-bit key of a document id (equal on every process, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "little", signed=True)


def false_negative_mask(out, batch) -> torch.Tensor:
    """``[B, N_total]`` True where an in-batch column is a known positive or a duplicate of one of
    the row's own candidates, other than the row's own columns."""
    from rerankforge.models.colbert import gather_batch_documents

    device = out.scores.device
    rows, slots = batch.mask.nonzero(as_tuple=True)
    local = torch.tensor([doc_key(batch.doc_ids[b][g]) for b, g in zip(rows.tolist(), slots.tolist())],
                         dtype=torch.long, device=device)
    # the documents' own gather, on one-"token" keys: the same column order as the model's scores
    ones = torch.ones(local.numel(), 1, dtype=torch.bool, device=device)
    columns = gather_batch_documents(local.view(-1, 1, 1), ones, None, None)[0].view(-1)
    positives = batch.positive_ids or [[] for _ in batch.doc_ids]
    flagged = torch.zeros(out.scores.shape, dtype=torch.bool, device=device)
    for b, own in enumerate(out.own_columns):
        own = own[own >= 0]
        known = torch.cat([columns[own], torch.tensor([doc_key(d) for d in positives[b]], dtype=torch.long,
                                                      device=device)])
        flagged[b] = torch.isin(columns, known)
        flagged[b, own] = False
    return flagged


class InBatchView:
    def __init__(self, out, batch, mask_known_positives: bool = True):
        self._out = out
        self.mask = out.mask()
        self.masked_false_negatives = 0
        if mask_known_positives:
            flagged = false_negative_mask(out, batch)
            self.masked_false_negatives = int(flagged.sum())
            self.mask = self.mask & ~flagged
        self.labels = out.expand(batch.labels, 0.0)
        self.teacher = out.expand(batch.teacher, float("nan"))
        self.weights = out.expand(batch.weights, 1.0)
        self.first_stage = out.expand(batch.first_stage, float("nan"))
        self.query_ids = batch.query_ids
        # Per-rank click counts do not spread over other queries' documents: click losses refuse them.
        self.views = self.clicks = None

    def field(self, name: str) -> torch.Tensor:
        return getattr(self, name)


def check_in_batch(model) -> None:
    if not supports_in_batch(model):
        raise ConfigError(f"{type(model).__name__} cannot score in-batch negatives (in_batch_negatives=true); "
                          "it is available for colbert and bi_encoder")
