import argparse

import pytest

from rerankforge.config import add_config_args, flag_values, load_config
from rerankforge.errors import ConfigError
from rerankforge.mining.config import MineConfig
from rerankforge.retrieve.bm25 import BM25Retriever
from rerankforge.retrieve.config import RetrieveConfig, build_retriever_from_config
from rerankforge.retrieve.hybrid import HybridRetriever


def parse(argv, schema=MineConfig):
    p = argparse.ArgumentParser()
    add_config_args(p, schema)
    return p.parse_args(argv)


def test_yaml_then_flags(tmp_path):
    y = tmp_path / "m.yaml"
    y.write_text("retriever: hybrid\nhybrid: {fusion: score, norm: zscore, weights: [0.3, 0.7]}\n"
                 "policy: {negatives: 7, margin_rel: 0.9, strategy: top}\nbm25: {stemmer: null}\n")
    args = parse(["--negatives", "3", "--stopwords", "none", "--rrf-k", "10", "--no-dedup", "--weights", "1", "2"])
    cfg = load_config(MineConfig, str(y), args.overrides, flag_values(args))
    assert cfg.policy.negatives == 3 and cfg.policy.margin_rel == 0.9 and cfg.policy.strategy == "top"
    assert cfg.policy.dedup is False
    assert cfg.bm25.stemmer is None and cfg.bm25.stopwords is None
    assert cfg.hybrid.weights == [1.0, 2.0] and cfg.hybrid.rrf_k == 10.0 and cfg.hybrid.norm == "zscore"
    r = build_retriever_from_config(cfg)
    assert isinstance(r, HybridRetriever) and r.fusion == "score" and r.weights == [1.0, 2.0]
    assert isinstance(r.components[0], BM25Retriever) and r.components[0].stemmer is None


def test_defaults_without_yaml():
    cfg = load_config(RetrieveConfig, None, ["collection=c", "split=s", "out=o"], flag_values(parse([], RetrieveConfig)))
    assert cfg.retriever == "bm25" and cfg.bm25.k1 == 1.5 and cfg.dense.index == "flat"
    r = build_retriever_from_config(cfg)
    assert isinstance(r, BM25Retriever) and (r.k1, r.b, r.method) == (1.5, 0.75, "lucene")


@pytest.mark.parametrize("text,needle", [("policy: {negativez: 3}\n", "negativez"),
                                         ("policy: {negatives: many}\n", "policy.negatives"),
                                         ("depth: [1\n", "m.yaml")])
def test_bad_yaml_names_file_and_key(tmp_path, text, needle):
    y = tmp_path / "m.yaml"
    y.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(MineConfig, str(y))
    assert needle in str(err.value) and "m.yaml" in str(err.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_config(MineConfig, str(tmp_path / "nope.yaml"))


def test_one_loader_for_every_verb_names_file_line_and_key(tmp_path):
    from rerankforge.train.config import TrainConfig

    bad = tmp_path / "t.yaml"
    bad.write_text("optim:\n  lr: 1e-4\n  epochs: [2\n")
    with pytest.raises(ConfigError, match=r"t\.yaml:\d+: YAML syntax error"):
        load_config(TrainConfig, bad)
    bad.write_text("optim: {lrr: 1.0}\n")
    with pytest.raises(ConfigError, match=r"t\.yaml: key 'optim\.lrr'"):
        load_config(TrainConfig, bad)
    bad.write_text("optim: {epochs: many}\n")
    with pytest.raises(ConfigError, match=r"t\.yaml: key 'optim\.epochs'"):
        load_config(TrainConfig, bad)
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(TrainConfig, None, ["optim.lr"])


def test_precedence_yaml_flags_overrides(tmp_path):
    y = tmp_path / "m.yaml"
    y.write_text("collection: c\nsplit: train\nout: o\npolicy: {negatives: 7, seed: 1}\n")
    args = parse(["--negatives", "3", "--seed", "4", "policy.seed=9"])
    cfg = load_config(MineConfig, y, args.overrides, flag_values(args))
    assert (cfg.policy.negatives, cfg.policy.seed) == (3, 9)  # YAML < flags < key=value


def test_required_fields_name_their_flag():
    from rerankforge.rerank.apply import RerankConfig

    with pytest.raises(ConfigError, match="--model is required"):
        load_config(RerankConfig, None, ["collection=c", "split=s", "run=r", "out=o"])


def test_validation_names_the_section(tmp_path):
    with pytest.raises(ConfigError, match="section 'policy'.*rank_min <= rank_max"):
        load_config(MineConfig, None, ["policy.rank_min=50", "policy.rank_max=10"])


def test_command_line_reproduces_the_config():
    import shlex

    from rerankforge.config import command_line

    cfg = load_config(MineConfig, None, ["collection=c", "split=train", "out=g.jsonl", "policy.negatives=3",
                                          "bm25.stemmer=null", "hybrid.weights=[0.3,0.7]"])
    line = command_line("mine", cfg)
    words = shlex.split(line)
    assert words[:2] == ["rerankforge", "mine"] and "policy.negatives=3" in words
    assert load_config(MineConfig, None, words[2:]) == cfg
