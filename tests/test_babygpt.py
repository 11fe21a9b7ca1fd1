"""babyGPT: the model equals PyTorch's own transformer layers, the KV cache equals recomputation
(1-character prompts, long prompts, past the block size), sampling is cadlab.lm.sampling's, the
shipped checkpoint loads safely and writes Shakespeare-like text, the CLI and training run."""

import builtins
import json
import pickle
import re

import pytest
import torch
from torch import nn

import cadlab.lm.sampling
from cadlab.lm import babygpt
from cadlab.lm.babygpt import BabyGPT, CharTokenizer, load_babygpt
from cadlab.lm.babygpt.__main__ import main as cli_main
from cadlab.train.babygpt import load_corpus, train_model
from cadlab.train.babygpt import main as train_main

ATOL = 1e-5


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return BabyGPT(vocab_size=11, block_size=16, n_layer=3, n_head=4, n_embd=32).eval()


@pytest.fixture(scope="module")
def shipped():
    return load_babygpt()


def reference_forward(model: BabyGPT, idx: torch.Tensor) -> torch.Tensor:
    """The same network built from torch.nn.TransformerEncoderLayer (pre-LN, ReLU) with babyGPT's weights."""
    cfg = model.config
    x = model.tok_emb(idx) + model.pos_emb(torch.arange(idx.shape[1]))
    mask = nn.Transformer.generate_square_subsequent_mask(idx.shape[1])
    for block in model.blocks:
        layer = nn.TransformerEncoderLayer(cfg["n_embd"], cfg["n_head"], 4 * cfg["n_embd"], dropout=0.0,
                                           activation="relu", batch_first=True, norm_first=True).eval()
        a = block.attn
        with torch.no_grad():
            layer.self_attn.in_proj_weight.copy_(torch.cat([a.query.weight, a.key.weight, a.value.weight]))
            layer.self_attn.in_proj_bias.zero_()
            layer.self_attn.out_proj.load_state_dict(a.proj.state_dict())
            layer.norm1.load_state_dict(block.ln1.state_dict())
            layer.norm2.load_state_dict(block.ln2.state_dict())
            layer.linear1.load_state_dict(block.mlp[0].state_dict())
            layer.linear2.load_state_dict(block.mlp[2].state_dict())
        x = layer(x, src_mask=mask, is_causal=True)
    return model.lm_head(model.ln_f(x))


def manual_windowed_loop(model, idx, new_tokens, generator, **settings):
    """An independent reference: the full window (last block_size tokens) from scratch at every step."""
    steps = []
    for _ in range(new_tokens):
        logits = model(idx[:, -model.block_size:])[0][:, -1, :]
        steps.append(logits)
        processed = cadlab.lm.sampling.process_logits(logits, idx, **settings)
        idx = torch.cat([idx, cadlab.lm.sampling.sample_next_token(processed, generator)[:, None]], dim=1)
    return idx, torch.stack(steps, dim=1)


# --- the model -------------------------------------------------------------------------------

@torch.no_grad()
def test_forward_equals_torch_transformer_layers(tiny):
    idx = torch.randint(11, (3, 16), generator=torch.Generator().manual_seed(1))
    ours, cache = tiny(idx)
    torch.testing.assert_close(ours, reference_forward(tiny, idx), rtol=1e-5, atol=1e-5)
    assert len(cache) == 3 and cache[0][0].shape == (3, 4, 16, 8)


@torch.no_grad()
def test_attention_equals_scaled_dot_product_attention(tiny):
    x = torch.randn(2, 9, 32, generator=torch.Generator().manual_seed(2))
    attn = tiny.blocks[0].attn
    out, (k, v) = attn(x)
    q = attn.heads(attn.query(x))
    expected = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, attn.proj(expected.transpose(1, 2).reshape(2, 9, 32)), rtol=1e-5, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("split", [1, 5, 15])
def test_forward_with_cache_equals_full_forward(tiny, split):
    idx = torch.randint(11, (2, 16), generator=torch.Generator().manual_seed(3))
    full, full_cache = tiny(idx)
    first, cache = tiny(idx[:, :split])
    rest, cache = tiny(idx[:, split:], cache)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), full, rtol=0, atol=ATOL)
    for (k, v), (k_full, v_full) in zip(cache, full_cache):
        torch.testing.assert_close(k, k_full, rtol=0, atol=ATOL)
        torch.testing.assert_close(v, v_full, rtol=0, atol=ATOL)


def test_forward_refuses_to_run_past_the_position_table(tiny):
    with pytest.raises(ValueError, match="exceed block_size=16"):
        tiny(torch.zeros(1, 17, dtype=torch.long))
    _, cache = tiny(torch.zeros(1, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="16 cached \\+ 1 new tokens"):
        tiny(torch.zeros(1, 1, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="LongTensor"):
        tiny(torch.zeros(1, 3))


def test_dropout_is_off_after_eval():
    torch.manual_seed(0)
    model = BabyGPT(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.5)
    idx = torch.arange(8)[None] % 11
    assert not torch.equal(model(idx)[0], model(idx)[0])   # training mode: dropout is random
    model.eval()
    assert torch.equal(model(idx)[0], model(idx)[0])


# --- cached generation equals uncached generation --------------------------------------------

CASES = {  # prompt length, new tokens (tiny model: block_size 16)
    "1-character prompt": (1, 12),
    "long prompt": (14, 2),
    "prompt + generation past the block size": (5, 40),
    "prompt longer than the block size": (30, 10),
}


@torch.no_grad()
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("settings", [dict(temperature=1.0), dict(temperature=0.7, top_k=4, top_p=0.9)])
def test_cached_generation_equals_uncached(tiny, case, settings):
    prompt_len, new = CASES[case]
    idx = torch.randint(11, (2, prompt_len), generator=torch.Generator().manual_seed(4))
    runs = {}
    for use_cache in (True, False):
        runs[use_cache] = tiny.generate(idx, new, use_kv_cache=use_cache, generator=torch.Generator().manual_seed(5),
                                        return_logits=True, **settings)
    reference = manual_windowed_loop(tiny, idx, new, torch.Generator().manual_seed(5), **settings)
    for tokens, logits in runs.values():
        assert torch.equal(tokens, reference[0]), case
        assert logits.shape == (2, new, 11)
        torch.testing.assert_close(logits, reference[1], rtol=0, atol=ATOL)


@torch.no_grad()
@pytest.mark.parametrize("prompt", ["I", "ROMEO.\nBut soft, what light through yonder window breaks? " * 3])
def test_shipped_model_cached_equals_uncached(shipped, prompt):
    model, tokenizer = shipped
    idx = torch.tensor([tokenizer.encode(prompt)])
    new = model.block_size + 20 - min(idx.shape[1], model.block_size) // 2   # always runs past the block size
    cached = model.generate(idx, new, temperature=0.8, use_kv_cache=True, generator=torch.Generator().manual_seed(0),
                            return_logits=True)
    uncached = model.generate(idx, new, temperature=0.8, use_kv_cache=False,
                              generator=torch.Generator().manual_seed(0), return_logits=True)
    assert torch.equal(cached[0], uncached[0])
    torch.testing.assert_close(cached[1], uncached[1], rtol=0, atol=ATOL)


def test_generate_uses_cadlab_sampling_processors(tiny, monkeypatch):
    assert babygpt.process_logits is cadlab.lm.sampling.process_logits
    assert babygpt.sample_next_token is cadlab.lm.sampling.sample_next_token
    calls = []
    real = cadlab.lm.sampling.process_logits
    monkeypatch.setattr(babygpt, "process_logits", lambda *a, **k: calls.append(k) or real(*a, **k))
    tiny.generate(torch.zeros(1, 1, dtype=torch.long), 3, temperature=0.5, top_k=3, top_p=0.8,
                  repetition_penalty=1.2, generator=torch.Generator().manual_seed(0))
    assert calls == [dict(temperature=0.5, top_k=3, top_p=0.8, repetition_penalty=1.2)] * 3


@torch.no_grad()
def test_greedy_is_argmax_and_zero_tokens_is_identity(tiny):
    idx = torch.tensor([[1, 2, 3]])
    out, logits = tiny.generate(idx, 4, temperature=0, return_logits=True)
    assert torch.equal(out[0, 3:], logits[0].argmax(-1))
    assert torch.equal(tiny.generate(idx, 0), idx)
    with pytest.raises(ValueError, match="max_new_tokens"):
        tiny.generate(idx, -1)
    with pytest.raises(ValueError, match="non-empty LongTensor"):
        tiny.generate(torch.zeros(1, 0, dtype=torch.long), 3)


# --- tokenizer, checkpoint, safety -----------------------------------------------------------

def test_tokenizer_round_trip_and_unknown_characters():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == " dehlorw" and tok.decode(tok.encode("hello")) == "hello"
    with pytest.raises(ValueError, match="not in babyGPT's vocabulary: 'z'"):
        tok.encode("zoo")


def test_shipped_checkpoint(shipped):
    model, tokenizer = shipped
    assert not model.training
    size = (babygpt.BABYGPT_DIR / "model.pth").stat().st_size
    assert size <= 20 * 2 ** 20, f"checkpoint is {size / 2 ** 20:.1f} MB"
    assert tokenizer.chars == CharTokenizer.from_text(babygpt.CORPUS.read_text()).chars
    log = json.loads((babygpt.BABYGPT_DIR / "train_log.json").read_text())
    assert log["eval"][-1]["val"] < log["eval"][0]["val"]
    assert (babygpt.BABYGPT_DIR / "loss_curve.png").stat().st_size > 1000


@torch.no_grad()
def test_shipped_samples_read_like_the_corpus(shipped):
    model, tokenizer = shipped
    corpus = babygpt.CORPUS.read_text()
    corpus_words = set(re.findall(r"[a-z]+", corpus.lower()))
    out = model.generate(torch.tensor([tokenizer.encode("HAMLET.\n")]), 600, temperature=0.7,
                         generator=torch.Generator().manual_seed(0))
    words = re.findall(r"[a-z]+", tokenizer.decode(out[0]).lower())
    known = sum(w in corpus_words for w in words) / len(words)
    assert len(words) > 60 and known > 0.8, f"{known:.0%} of {len(words)} sampled words occur in the corpus"
    # and the held-out loss is far below a uniform guess over the vocabulary (log 73 = 4.29 nats)
    _, _, val = load_corpus()
    logits, _ = model(val[None, :model.block_size])
    loss = nn.functional.cross_entropy(logits[0, :-1], val[1:model.block_size])
    assert loss < 2.2


class RunsCode:
    def __reduce__(self):
        return (print, ("this ran while loading",))


def test_load_babygpt_refuses_pickled_code(tmp_path, shipped):
    model, tokenizer = shipped
    tokenizer.save(tmp_path / "tokenizer.json")
    (tmp_path / "config.json").write_text(json.dumps({"model": model.config}))
    torch.save({"weights": RunsCode()}, tmp_path / "model.pth")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_babygpt(tmp_path)
    with pytest.raises(FileNotFoundError, match="lacks config.json, tokenizer.json, model.pth"):
        load_babygpt(tmp_path / "nowhere")


# --- the CLI and training ----------------------------------------------------------------------

def fake_input(answers):
    def ask(prompt=""):
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer
    return ask


@pytest.mark.parametrize("ending", [EOFError(), KeyboardInterrupt()])
def test_cli_generates_and_exits_cleanly(monkeypatch, capsys, ending):
    monkeypatch.setattr(builtins, "input", fake_input(["To be", "", "café", ending]))
    assert cli_main(["--max-new-tokens", "20", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"To be.{20}\n\[20 tokens in [\d.]+ s, \d+ tok/s\]", out, re.S)
    assert "not in babyGPT's vocabulary: 'é'" in out


def test_cli_missing_checkpoint(tmp_path, capsys):
    assert cli_main(["--checkpoint", str(tmp_path)]) == 2
    assert "lacks config.json" in capsys.readouterr().err


def test_train_cli_writes_a_loadable_checkpoint(tmp_path, capsys):
    args = ["--out", str(tmp_path), "--max-steps", "3", "--batch-size", "2", "--block-size", "8", "--n-layer", "1",
            "--n-head", "2", "--n-embd", "16", "--checkpoint-every", "2"]
    assert train_main(args) == 0
    assert "done in" in capsys.readouterr().out
    model, tokenizer = load_babygpt(tmp_path)
    log = json.loads((tmp_path / "train_log.json").read_text())
    assert len(log["train_loss"]) == 3 and [p["step"] for p in log["eval"]] == [2, 3]
    assert (tmp_path / "loss_curve.png").is_file() and model.block_size == 8
    with pytest.raises(SystemExit):
        train_main(["--max-steps", "0", "--out", str(tmp_path)])


def test_training_lowers_the_loss():
    tokenizer, train_ids, val_ids = load_corpus()
    torch.manual_seed(0)
    model = BabyGPT(tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=32)
    log = train_model(model, train_ids[:20000], val_ids[:5000], steps=60, batch_size=16, lr=3e-3, eval_every=30,
                      eval_batches=4, progress=False)
    assert log["eval"][-1]["train"] < log["train_loss"][0] - 0.8
    assert not model.training


def test_generate_is_a_loop_over_step(tiny, monkeypatch):
    """generate's cached path calls BabyGPT.step once per new token and returns what step's logits pick."""
    calls = []
    step = BabyGPT.step

    def counting_step(self, idx, cache):
        calls.append(idx.shape[1])
        return step(self, idx, cache)

    monkeypatch.setattr(BabyGPT, "step", counting_step)
    idx = torch.tensor([[1, 2, 3]])
    out = tiny.generate(idx, 5, temperature=0)
    assert calls == [3, 4, 5, 6, 7]
    monkeypatch.undo()
    assert torch.equal(out, tiny.generate(idx, 5, temperature=0, use_kv_cache=False))
