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


def _gather_keys(keys: torch.Tensor) -> torch.Tensor:
    """Every process' column keys in rank order (the model's ``gather_documents`` column order)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return keys
    from rerankforge.models.colbert import distributed_gather

    sizes = distributed_gather(torch.tensor([keys.numel()], dtype=torch.long, device=keys.device))
    n_max = int(sizes.max())
    padded = torch.full((n_max,), 0, dtype=torch.long, device=keys.device)
    padded[: keys.numel()] = keys
    everything = distributed_gather(padded).view(-1, n_max)
    return torch.cat([everything[r, : int(n)] for r, n in enumerate(sizes.tolist())])


def false_negative_mask(out, batch) -> torch.Tensor:
    """``[B, N_total]`` True where an in-batch column is a known positive or a duplicate of one of
    the row's own candidates, other than the row's own columns."""
    rows, slots = batch.mask.nonzero(as_tuple=True)
    local = torch.tensor([doc_key(batch.doc_ids[b][g]) for b, g in zip(rows.tolist(), slots.tolist())],
                         dtype=torch.long, device=out.scores.device)
    columns = _gather_keys(local)
    positives = batch.positive_ids or [[] for _ in batch.doc_ids]
    flagged = torch.zeros(out.scores.shape, dtype=torch.bool, device=out.scores.device)
    for b in range(out.scores.shape[0]):
        known = {doc_key(d) for d in positives[b]} | {doc_key(d) for d, m in zip(batch.doc_ids[b], batch.mask[b]) if m}
        flagged[b] = torch.isin(columns, torch.tensor(sorted(known), dtype=torch.long, device=columns.device))
    own = out.own_columns
    r, s = (own >= 0).nonzero(as_tuple=True)
    flagged[r, own[r, s]] = False
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
