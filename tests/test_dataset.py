import torch

from helpers import make_groups
from rerankforge.data.dataset import GroupCollator, GroupDataset, SamplingConfig
from rerankforge.data.groups import Candidate, Group


def tokenize_stub(queries, docs):
    return {"n": torch.tensor([len(d) for d in docs])}


def test_sampling_keeps_positives_and_is_seeded_per_epoch():
    cands = [Candidate(f"n{i}", "x", 0.0) for i in range(20)] + [Candidate("p", "x", 2.0)]
    group = Group("q", "query", cands[10:] + cands[:10])  # positive in the middle
    ds = GroupDataset([group], SamplingConfig(group_size=5, seed=3))
    draws = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        item = ds[0]
        ids = [c.doc_id for c in item["candidates"]]
        assert len(ids) == 5 and "p" in ids and len(set(ids)) == 5
        draws.append(ids)
        ds.set_epoch(epoch)
        assert [c.doc_id for c in ds[0]["candidates"]] == ids  # same (seed, epoch, index) -> same draw
    assert draws[0] != draws[1] or draws[1] != draws[2]


def test_max_positives_and_all_positive_groups():
    cands = [Candidate(f"p{i}", "x", 1.0) for i in range(4)] + [Candidate("n", "x", 0.0)]
    ds = GroupDataset([Group("q", "q", cands)], SamplingConfig(group_size=3, max_positives=1))
    labels = [c.label for c in ds[0]["candidates"]]
    assert sorted(labels) == [0.0, 1.0]  # one positive, the only negative, nothing invented
    ds = GroupDataset([Group("q", "q", cands[:4])], SamplingConfig(group_size=3))
    assert len(ds[0]["candidates"]) == 3


def test_collate_pads_and_aligns_fields():
    groups = make_groups(n=2, size=4)
    groups[0].candidates = groups[0].candidates[:2]
    groups[0].candidates[0].weight = 3.0
    ds = GroupDataset(groups)
    batch = GroupCollator(tokenize_stub)([ds[0], ds[1]])
    assert batch.mask.tolist() == [[True, True, False, False], [True] * 4]
    assert batch.weights[0].tolist() == [3.0, 1.0, 0.0, 0.0]
    assert torch.isnan(batch.teacher[0, 2:]).all() and not torch.isnan(batch.teacher[1]).any()
    for b, g in enumerate(groups):
        for k, c in enumerate(g.candidates):
            assert batch.doc_ids[b][k] == c.doc_id and batch.labels[b, k] == c.label
