"""Local-LLM labels: P(yes) pointwise, RankGPT sliding windows, permutation parsing and repair."""

import pytest
import torch

from helpers import WORDS, make_groups
from rerankforge.cli import main
from rerankforge.data.groups import Candidate, read_groups, write_groups
from rerankforge.errors import ConfigError
from rerankforge.labels import run_label_job
from rerankforge.labels.listwise import (initial_order, parse_permutation, rank_targets, sliding_window,
                                         window_starts)
from rerankforge.labels.llm_local import ListwiseLLMLabeler, LocalLM, PointwiseLLMLabeler

PROMPT_WORDS = ("query document does the answer yes or no i will provide you with passages each indicated by a "
                "numerical identifier rank based on their relevance to search all should be included and listed "
                "using identifiers in descending order of output format e.g. only respond ranking results do not "
                "say any word explain above").split()


@pytest.fixture(scope="module")
def tiny_llm_dir(tmp_path_factory):
    """A tiny random Llama with a WordLevel tokenizer built offline."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-llm")
    specials = ["<pad>", "<unk>", "<s>", "</s>"]
    symbols = ["[", "]", ">", ":", "?", ".", ",", "(", ")", "'", '"', "-"]
    words = list(dict.fromkeys([*WORDS, *PROMPT_WORDS, *[str(i) for i in range(0, 41)]]))
    vocab = {tok: i for i, tok in enumerate(specials + symbols + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")
    fast.save_pretrained(path)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      pad_token_id=vocab["<pad>"], bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"])
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path


@pytest.fixture
def llm_groups(tmp_path):
    groups = make_groups(n=3, size=5, seed=1)
    groups[1].candidates[2].text = " ".join(WORDS)  # lengths differ, so batches are padded
    for g in groups:
        for c in g.candidates:
            c.teacher = None
    path = tmp_path / "groups.jsonl"
    write_groups(path, groups)
    return path


def test_pointwise_p_yes_is_softmax_over_yes_no_logits(tmp_path, tiny_llm_dir, llm_groups):
    lm = LocalLM(tiny_llm_dir, bf16=False, device="cpu")
    labeler = PointwiseLLMLabeler(lm, batch_size=4, max_doc_tokens=None)
    out = tmp_path / "p.jsonl"
    run_label_job(labeler, llm_groups, out, batch_queries=2, progress=False)

    yes, no = lm.tokenizer.convert_tokens_to_ids(["yes", "no"])
    for g in read_groups(out):
        for c in g.candidates:
            ids = lm.tokenizer(labeler.format(g.query, c.text), return_tensors="pt")["input_ids"]
            with torch.no_grad():
                z = lm.model(input_ids=ids).logits[0, -1]
            manual = torch.exp(z[yes]) / (torch.exp(z[yes]) + torch.exp(z[no]))
            assert c.teacher == pytest.approx(float(manual), abs=1e-5)
            assert c.label is not None  # the mined label is kept; P(yes) went to `teacher`
    values = [c.teacher for g in read_groups(out) for c in g.candidates]
    assert len(set(values)) == len(values)  # really per-pair, not one constant


def test_pointwise_truncates_documents_and_checks_tokens(tiny_llm_dir):
    lm = LocalLM(tiny_llm_dir, bf16=False, device="cpu")
    labeler = PointwiseLLMLabeler(lm, max_doc_tokens=3, field="label")
    assert "protein gene cell\n" in labeler.format("q", "protein gene cell cancer virus")
    assert labeler.fields == ("label",)
    with pytest.raises(ConfigError, match="not a single token"):
        PointwiseLLMLabeler(lm, yes="definitely yes")
    with pytest.raises(ConfigError, match=r"\{document\}"):
        PointwiseLLMLabeler(lm, prompt="{query} only")


@pytest.mark.parametrize("text,order,repairs", [
    ("[3] > [1] > [2]", [2, 0, 1], (0, 0, 0)),
    ("[ 2 ] > [2] > [5] > [1]", [1, 0, 2], (1, 1, 1)),  # duplicate dropped, 5 out of range, 3 appended
    ("2 > 1 > 3", [0, 1, 2], (0, 0, 3)),  # bare numbers are not identifiers: nothing parsed
    ("The ranking is [2] > [3]. Hope this helps", [1, 2, 0], (0, 0, 1)),
])
def test_parse_permutation_repairs_like_rankgpt(text, order, repairs):
    p = parse_permutation(text, 3)
    assert p.order == order
    assert (p.duplicates, p.out_of_range, p.missing) == repairs
    assert sorted(p.order) == [0, 1, 2]


def test_window_spans():
    assert window_starts(6, 3, 2) == [(3, 6), (1, 4), (0, 3)]
    assert window_starts(100, 20, 10)[-1] == (0, 20) and len(window_starts(100, 20, 10)) == 9
    assert window_starts(4, 20, 10) == [(0, 4)]
    with pytest.raises(ConfigError):
        window_starts(10, 3, 4)


def test_sliding_window_known_answer():
    """Window 3, step 2 over six passages worth 1..6 in first-stage order a..f:
    [d e f] -> f e d; [b c f] -> f c b; [a f c] -> f c a; final f c a b e d."""
    worth = dict(zip("abcdef", range(1, 7)))
    calls = []

    def perfect_ranker(query, passages):
        calls.append("".join(passages))
        ranked = sorted(range(len(passages)), key=lambda i: -worth[passages[i]])
        return " > ".join(f"[{i + 1}]" for i in ranked)

    res = sliding_window("q", list("abcdef"), perfect_ranker, window=3, step=2)
    assert "".join("abcdef"[i] for i in res.order) == "fcabed"
    assert calls == ["def", "bcf", "afc"]
    assert res.windows == 3 and res.repairs == 0 and res.unparsable == 0

    targets = rank_targets(["abcdef"[i] for i in res.order], "neg_rank", rank_grades=[1, 3])
    assert targets["teacher"] == {"f": -1.0, "c": -2.0, "a": -3.0, "b": -4.0, "e": -5.0, "d": -6.0}
    assert targets["label"] == {"f": 2.0, "c": 1.0, "a": 1.0, "b": 0.0, "e": 0.0, "d": 0.0}
    assert rank_targets(["x", "y"], "reciprocal")["teacher"] == {"x": 1.0, "y": 0.5}


def test_sliding_window_repairs_a_broken_ranker():
    answers = iter(["[2] > [2]", "no idea"])
    res = sliding_window("q", list("abcd"), lambda q, p: next(answers), window=3, step=2)
    # window [b c d] -> "[2] > [2]" = c, then b d appended: a c b d; window [a c b]: unparsable, kept
    assert "".join("abcd"[i] for i in res.order) == "acbd"
    assert (res.repairs, res.unparsable) == (1, 1)


def test_initial_order_puts_unranked_candidates_last():
    cands = [Candidate("p", rank=None), Candidate("x", rank=2), Candidate("y", rank=1)]
    assert initial_order(cands) == [2, 1, 0]
    cands = [Candidate("p"), Candidate("x", score=1.0), Candidate("y", score=3.0)]
    assert initial_order(cands) == [2, 1, 0]
    assert initial_order([Candidate("a"), Candidate("b")]) == [0, 1]


def test_listwise_llm_job_produces_a_full_ranking(tmp_path, tiny_llm_dir, llm_groups):
    lm = LocalLM(tiny_llm_dir, bf16=False, device="cpu")
    labeler = ListwiseLLMLabeler(lm, window=3, step=2, max_new_tokens=12, batch_size=2, rank_grades=[1, 2])
    prompt = labeler.format("protein gene", ["cell cancer", "virus immune brain"])
    assert "[1] cell cancer\n[2] virus immune brain" in prompt and "2 passages" in prompt
    out = tmp_path / "lw.jsonl"
    summary = run_label_job(labeler, llm_groups, out, batch_queries=2, progress=False)
    assert summary.info["windows"] == 3 * len(window_starts(5, 3, 2))
    for g in read_groups(out):
        assert sorted(-c.teacher for c in g.candidates) == [1, 2, 3, 4, 5]
        assert sorted(c.label for c in g.candidates) == [0, 0, 0, 1, 2]


def test_llm_cli_pointwise(tmp_path, tiny_llm_dir, llm_groups):
    out = tmp_path / "cli.jsonl"
    rc = main(["label", "llm", "--groups", str(llm_groups), "--out", str(out), "--model", str(tiny_llm_dir),
               "--mode", "pointwise", "--field", "label", "--device", "cpu", "--no-progress"])
    assert rc == 0
    assert all(0.0 < c.label < 1.0 for g in read_groups(out) for c in g.candidates)
