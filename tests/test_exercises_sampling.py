"""The self-checks of notebook 02: each accepts the solution stored in the notebook, rejects a
plausible wrong answer, and reports an untouched stub as "not attempted" (False)."""


import pytest
import torch

from cadlab.exercises import sampling as checks
from cadlab.lm import sampling


def _todo(*args):
    raise NotImplementedError


def test_check_top_k_rejects_wrong_answers(capsys):
    assert checks.check_top_k(sampling.top_k_filter)

    def exactly_k(x, k):  # keeps exactly k tokens, dropping ties with the k-th value
        keep = torch.zeros_like(x, dtype=torch.bool).scatter(-1, x.topk(min(k, x.shape[-1])).indices, True)
        return x.masked_fill(~keep, float("-inf"))

    def crashes_past_vocab(x, k):  # topk with k > vocab raises
        return x.masked_fill(x < x.topk(k).values[..., -1:], float("-inf"))

    with pytest.raises(AssertionError, match="ties at the k-th value"):
        checks.check_top_k(exactly_k)
    assert checks.check_top_k(crashes_past_vocab) is False   # the learner's exception, as one line
    assert "k > vocab: your function raised RuntimeError" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="unchanged"):  # right tokens, but renormalised logits
        checks.check_top_k(lambda x, k: sampling.top_k_filter(x, k).log_softmax(-1))
    assert checks.check_top_k(_todo) is False


def test_check_top_p_rejects_wrong_answers():
    assert checks.check_top_p(sampling.top_p_filter)

    def drops_the_crossing_token(logits, p):  # keeps tokens while the cumulative mass INCLUDING them is <= p
        probs, order = logits.softmax(-1).sort(-1, descending=True)
        drop = probs.cumsum(-1) > p
        return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))

    def forgets_the_top_token(logits, p):  # the same without the top-token guard: empty rows at p = 0
        probs, order = logits.softmax(-1).sort(-1, descending=True)
        drop = probs.cumsum(-1) - probs >= p
        return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))

    with pytest.raises(AssertionError, match="the library keeps"):
        checks.check_top_p(drops_the_crossing_token)
    with pytest.raises(AssertionError, match="lost every token"):
        checks.check_top_p(forgets_the_top_token)
    assert checks.check_top_p(_todo) is False


def test_check_greedy_loop_rejects_wrong_answers():
    def greedy(model, ids, n, eos):
        return sampling.generate(model, ids, max_new_tokens=n, temperature=0, eos_token_id=eos)

    @torch.no_grad()
    def stops_before_appending_eos(model, ids, n, eos):
        for _ in range(n):
            next_id = model(ids).logits[:, -1].argmax(-1, keepdim=True)
            if eos is not None and next_id.item() == eos:
                break
            ids = torch.cat([ids, next_id], dim=1)
        return ids

    assert checks.check_greedy_loop(greedy)
    with pytest.raises(AssertionError, match="EOS met early"):  # ignores EOS
        checks.check_greedy_loop(lambda model, ids, n, eos: greedy(model, ids, n, None))
    with pytest.raises(AssertionError, match="EOS met early"):
        checks.check_greedy_loop(stops_before_appending_eos)
    with pytest.raises(AssertionError, match="no EOS"):  # one token short: range(n - 1)
        checks.check_greedy_loop(lambda model, ids, n, eos: greedy(model, ids, max(n - 1, 0), eos))
    assert checks.check_greedy_loop(_todo) is False


def test_qwen25_generation_config_is_the_published_file():
    data = sampling.qwen25_generation_config()
    config = data["generation_config"]
    assert data["model"] == "Qwen/Qwen2.5-0.5B-Instruct"
    assert config["repetition_penalty"] == 1.1 and config["temperature"] == 0.7
    assert config["top_p"] == 0.8 and config["top_k"] == 20 and config["do_sample"] is True
    assert config["eos_token_id"] == [151645, 151643] and config["bos_token_id"] == config["pad_token_id"] == 151643
    assert "huggingface.co/Qwen/Qwen2.5-0.5B-Instruct" in data["source"]["published_at"]
