from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def scifact_dir() -> Path:
    """The BEIR SciFact copy bundled with the package (corpus byte-identical to BEIR's): the real
    collection every test can count on, with or without ../shared/datasets."""
    from rerankforge.resources import bundled_collection

    return bundled_collection("scifact")


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The other real collections (NFCorpus, Yandex clicks, MS MARCO samples), beside the checkout."""
    if not SHARED.is_dir():
        pytest.skip(f"real datasets not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised BERT with the MiniLM tokenizer, saved once per session."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from rerankforge.models.base import default_base_model

    path = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(default_base_model())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    import torch

    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


WORDS = ("yes no Query Document Is the document relevant to query Answer or a b c d e f g h what cat cats dog "
         "dogs purr bark fever heat ? : . , !").split()


def tiny_tokenizer(path):
    """A word-level tokenizer over a tiny vocabulary with a <s> prefix, saved to ``path``."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(dict.fromkeys(["<pad>", "<unk>", "<s>", "</s>", *WORDS]))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                      special_tokens=[("<s>", vocab["<s>"])])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                  eos_token="</s>")
    tok.save_pretrained(path)
    return tok


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A tiny random Llama with the word-level tokenizer (Qwen2 dirs force Qwen2's own BPE tokenizer)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    tok = tiny_tokenizer(path)
    cfg = LlamaConfig(vocab_size=len(tok.get_vocab()), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=False, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path




@pytest.fixture(scope="session")
def tiny_ce_dir(tmp_path_factory, tiny_bert_dir):
    """The tiny BERT as an exported cross-encoder whose logits spread over several units."""
    from rerankforge.models.cross_encoder import CrossEncoder

    torch.manual_seed(0)
    model = CrossEncoder.from_base(str(tiny_bert_dir), max_length=64)
    with torch.no_grad():
        # a freshly initialised tiny BERT gives nearly constant logits (std ~1e-5), which makes the
        # Platt fit ill-conditioned; wider random weights spread the logits over several units
        for p in model.model.bert.encoder.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
        model.model.bert.pooler.dense.weight.normal_(0.0, 1.0)
        model.model.classifier.weight.normal_(0.0, 1.0)
    path = tmp_path_factory.mktemp("tiny-ce")
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_collection(tmp_path_factory):
    """A tiny BEIR collection with disjoint train/test queries and a first-stage run."""
    from helpers import write_tiny_collection

    return write_tiny_collection(tmp_path_factory.mktemp("coll") / "c")


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Each test starts with no Accelerate state left over from an earlier one."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Mined groups and embeddings are cached under a per-session directory, not ~/.cache."""
    monkeypatch.setenv("RERANKFORGE_CACHE", str(tmp_path_factory.getbasetemp() / "rerankforge-cache"))
