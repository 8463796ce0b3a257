"""In-batch negatives leave out documents known to be relevant to the row's query.

Where documents are shared between queries (NFCorpus), another query's positive or hard negative is
often one of this query's judged positives, or even one of its own candidates; scoring it as a
negative contradicts the query's own labels."""

import torch

from rerankforge.data.dataset import GroupCollator, GroupDataset, SamplingConfig
from rerankforge.data.groups import Candidate, Group
from rerankforge.losses import build_loss
from rerankforge.models.colbert import InBatchScores, own_columns
from rerankforge.train.in_batch import InBatchView, doc_key, false_negative_mask


def _batch(groups, sampling=None):
    ds = GroupDataset(groups, sampling or SamplingConfig(group_size=None, shuffle_candidates=False))
    return GroupCollator(tokenize=lambda q, d: {})([ds[i] for i in range(len(ds))])


def _groups():
    # q0 judges d1 and d5 relevant, but its sampled group is [d1, d2]; q1's group is [d3, d1, d5].
    g0 = Group("q0", "first", [Candidate("d1", "a", 1.0), Candidate("d2", "b", 0.0), Candidate("d5", "e", 1.0)])
    g1 = Group("q1", "second", [Candidate("d3", "c", 1.0), Candidate("d1", "a", 0.0), Candidate("d5", "e", 0.0)])
    return [g0, g1]


def test_known_positives_and_duplicates_are_masked_but_own_columns_kept():
    g0, g1 = _groups()
    batch = _batch([g0, g1], SamplingConfig(group_size=2, max_positives=1, shuffle_candidates=False, seed=3))
    # the sampler keeps one of q0's two positives; the other is remembered as a judged positive
    assert sorted(batch.positive_ids[0]) == ["d1", "d5"] and batch.positive_ids[1] == ["d3"]
    assert len(batch.doc_ids[0]) == 2
    out = InBatchScores(torch.zeros(2, 4), own_columns(batch.mask, 0), 0)
    columns = [d for ids in batch.doc_ids for d in ids]
    flagged = false_negative_mask(out, batch)
    for b in range(2):
        known = set(batch.positive_ids[b]) | set(batch.doc_ids[b])
        own = set(out.own_columns[b].tolist())
        for c, doc in enumerate(columns):
            assert bool(flagged[b, c]) == (c not in own and doc in known), (b, c, doc)
    assert flagged.any()  # the fixture has at least one false negative to mask
    view = InBatchView(out, batch)
    assert torch.equal(view.mask, ~flagged) and view.masked_false_negatives == int(flagged.sum())
    assert InBatchView(out, batch, mask_known_positives=False).mask.all()


def test_masked_columns_leave_the_listwise_loss():
    """The masked loss equals the loss over the unmasked columns alone."""
    g0, g1 = _groups()
    batch = _batch([g0, g1])
    torch.manual_seed(0)
    scores = torch.randn(2, 6)
    out = InBatchScores(scores, own_columns(batch.mask, 0), 0)
    view = InBatchView(out, batch)
    assert not view.mask.all()
    loss = build_loss([{"name": "listwise_ce"}])
    masked, _ = loss.forward_batch(scores, view)
    unmasked, _ = loss.forward_batch(scores, InBatchView(out, batch, mask_known_positives=False))
    assert not torch.isclose(masked, unmasked)
    # by hand: row-wise softmax CE over the kept columns, targets = the row's own labels
    rows = []
    for b in range(2):
        keep = view.mask[b]
        logp = torch.log_softmax(scores[b][keep], -1)
        lab = view.labels[b][keep]
        rows.append(-(lab * logp).sum() / lab.sum())
    torch.testing.assert_close(masked, torch.stack(rows).mean(), atol=1e-5, rtol=0)


def test_doc_key_is_stable_and_distinct():
    assert doc_key("d1") == doc_key("d1") != doc_key("d2")
    assert -(2 ** 63) <= doc_key("MED-10") < 2 ** 63


def _rank_main(rank, port, result):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        g0, g1 = _groups()
        batch = _batch([g0] if rank == 0 else [g1])
        offset = 0 if rank == 0 else 3  # rank 0 holds 3 documents, rank 1 the next 3
        out = InBatchScores(torch.zeros(1, 6), own_columns(batch.mask, offset), offset)
        result[rank] = false_negative_mask(out, batch).tolist()
    finally:
        dist.destroy_process_group()


def test_false_negatives_are_found_across_processes():
    """With two processes each row sees the other process' document ids (gathered keys)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    result = manager.dict()
    mp.spawn(_rank_main, args=(port, result), nprocs=2, join=True)
    g0, g1 = _groups()
    batch = _batch([g0, g1])
    single = false_negative_mask(InBatchScores(torch.zeros(2, 6), own_columns(batch.mask, 0), 0), batch)
    assert [result[0][0], result[1][0]] == single.tolist()
    assert single.any()


def test_training_records_the_masked_false_negatives(tmp_path, tiny_bert_dir):
    """Groups that share documents: the run masks them and says how many; the switch turns it off."""
    import json

    from rerankforge import Trainer
    from rerankforge.models.bi_encoder import BiEncoder

    from helpers import make_groups

    groups = make_groups(n=6, size=3)
    shared = groups[0].candidates[0]
    for g in groups[1:]:
        g.candidates.append(Candidate(shared.doc_id, shared.text, 1.0))  # a positive of every query
    counts = {}
    for mask in (True, False):
        out = tmp_path / f"run-{mask}"
        Trainer(model=BiEncoder(str(tiny_bert_dir), max_length=32), loss="listwise_ce", train_data=groups,
                args={"output_dir": str(out), "bf16": False, "progress": False, "in_batch_negatives": True,
                      "in_batch_mask_positives": mask, "data": {"group_size": None},
                      "optim": {"max_steps": 2, "batch_size": 3, "lr": 1e-4}}).train()
        counts[mask] = json.loads((out / "train_summary.json").read_text())["in_batch_masked_false_negatives"]
    assert counts[True] > 0 and counts[False] == 0
