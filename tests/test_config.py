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
