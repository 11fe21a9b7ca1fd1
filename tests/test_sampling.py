"""cadlab.lm.sampling: each logit processor equals transformers' own, and the hand-written loop
equals ``model.generate`` token for token (greedy and seeded sampling, cached and uncached,
alone and batched with left padding), on a tiny random Qwen2 and on the offline model."""

import pytest
import torch
from transformers import GenerationConfig
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from cadlab.lm.sampling import (
    apply_repetition_penalty,
    apply_temperature,
    chat_turn,
    generate,
    min_p_filter,
    positions_from_mask,
    process_logits,
    sample_next_token,
    top_k_filter,
    top_p_filter,
)

VOCAB = 64


def logit_cases():
    """Random logits plus the awkward ones: ties, -inf entries, one dominant token, a flat row."""
    g = torch.Generator().manual_seed(0)
    plain = torch.randn(4, VOCAB, generator=g) * 3
    ties = torch.randint(-3, 3, (4, VOCAB), generator=g).float()  # many exactly equal logits
    with_inf = torch.randn(4, VOCAB, generator=g)
    with_inf[:, ::3] = float("-inf")
    with_inf[0, 2:] = float("-inf")  # a row with one finite logit (column 1)
    peaked = torch.randn(4, VOCAB, generator=g)
    peaked[:, 7] = 40.0  # other tokens' probabilities underflow to exactly 0
    flat = torch.zeros(2, VOCAB)
    return {"plain": plain, "ties": ties, "-inf": with_inf, "peaked": peaked, "flat": flat}


CASES = logit_cases()


def same(got, expected):
    """Bitwise equal, -inf included (torch.equal treats -inf == -inf as equal)."""
    return got.shape == expected.shape and torch.equal(got, expected)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("temperature", [0.05, 0.5, 0.7, 1.0, 1.3, 10.0])
def test_temperature_equals_transformers(case, temperature):
    logits = CASES[case]
    expected = TemperatureLogitsWarper(temperature)(None, logits.clone())
    assert same(apply_temperature(logits, temperature), expected)


@pytest.mark.parametrize("case", CASES)
def test_temperature_zero_is_greedy_not_a_crash(case):
    logits = CASES[case]
    out = apply_temperature(logits, 0.0)
    argmax = logits.argmax(dim=-1)
    assert not out.isnan().any()
    assert torch.equal(out.argmax(dim=-1), argmax)
    assert ((out > float("-inf")).sum(dim=-1) == 1).all(), "exactly one token survives T = 0"
    draws = sample_next_token(out, torch.Generator().manual_seed(1))
    assert torch.equal(draws, argmax)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("top_k", [1, 2, 5, VOCAB - 1, VOCAB, VOCAB + 10])
def test_top_k_equals_transformers(case, top_k):
    logits = CASES[case]
    expected = TopKLogitsWarper(top_k)(None, logits.clone())
    assert same(top_k_filter(logits, top_k), expected)


def test_top_k_zero_is_off_and_ties_survive():
    logits = CASES["ties"]
    assert same(top_k_filter(logits, 0), logits)
    kept = (top_k_filter(logits, 1) > float("-inf")).sum(dim=-1)
    assert (kept == (logits == logits.amax(dim=-1, keepdim=True)).sum(dim=-1)).all()


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("top_p", [0.0, 0.1, 0.5, 0.8, 0.9, 0.95, 0.999, 1.0])
def test_top_p_equals_transformers(case, top_p):
    logits = CASES[case]
    expected = TopPLogitsWarper(top_p)(None, logits.clone())
    got = top_p_filter(logits, top_p)
    assert same(got, expected)
    assert ((got > float("-inf")).sum(dim=-1) >= 1).all(), "top-p always keeps at least one token"


def test_top_p_zero_keeps_only_the_top_token():
    logits = CASES["plain"]
    out = top_p_filter(logits, 0.0)
    assert ((out > float("-inf")).sum(dim=-1) == 1).all()
    assert torch.equal(out.argmax(dim=-1), logits.argmax(dim=-1))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("min_p", [0.0, 0.01, 0.05, 0.2, 0.5, 1.0])
def test_min_p_equals_transformers(case, min_p):
    logits = CASES[case]
    expected = MinPLogitsWarper(min_p)(None, logits.clone())
    assert same(min_p_filter(logits, min_p), expected)


def left_padded_ids(batch=4, seq=10, pad=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (batch, seq), generator=g)
    ids[:, 5:] = ids[:, :5]  # repeated tokens, so some ids occur twice
    mask = torch.ones_like(ids)
    for row in range(batch):
        mask[row, :row] = 0
    return ids.masked_fill(mask == 0, pad), mask


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("penalty", [0.5, 1.0, 1.1, 1.3, 3.0])
def test_repetition_penalty_equals_transformers(case, penalty):
    logits = CASES[case]
    ids, mask = left_padded_ids(batch=logits.shape[0])
    padding = (mask != 0).int().argmax(dim=1)  # what generate passes as prompt_ignore_length
    expected = RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=padding)(ids, logits.clone())
    assert same(apply_repetition_penalty(logits, ids, penalty, mask), expected)
    expected = RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.clone())
    assert same(apply_repetition_penalty(logits, ids, penalty), expected)


def test_repetition_penalty_lowers_seen_tokens_only():
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    out = apply_repetition_penalty(logits, torch.tensor([[0, 1, 1]]), 2.0)
    assert torch.equal(out, torch.tensor([[1.0, -4.0, 1.0, -1.0]]))


@pytest.mark.parametrize("function, settings, warper", [
    (apply_temperature, [0.3, 1.0, 2.5, 0.7], TemperatureLogitsWarper),
    (top_k_filter, [1, 3, VOCAB + 5, 10], TopKLogitsWarper),
    (top_p_filter, [0.0, 0.5, 1.0, 0.9], TopPLogitsWarper),
    (min_p_filter, [0.0, 0.1, 1.0, 0.05], MinPLogitsWarper),
    (apply_repetition_penalty, [1.0, 1.2, 0.8, 2.0], RepetitionPenaltyLogitsProcessor),
])
def test_per_row_settings_equal_transformers_row_by_row(function, settings, warper):
    logits = CASES["plain"]
    ids, _ = left_padded_ids(batch=4)
    args = (ids,) if function is apply_repetition_penalty else ()
    per_row = torch.tensor(settings)
    got = function(logits, *args, per_row) if args else function(logits, per_row)
    for row, setting in enumerate(settings):
        setting = float(setting) if warper is not TopKLogitsWarper else int(setting)
        expected = warper(setting)(ids[row:row + 1], logits[row:row + 1].clone())
        assert same(got[row:row + 1], expected), f"row {row}, setting {setting}"


@pytest.mark.parametrize("settings", [
    dict(temperature=0.7, top_k=20, top_p=0.9, min_p=0.05, repetition_penalty=1.3),
    dict(temperature=1.5, top_k=5, top_p=0.5, min_p=0.0, repetition_penalty=0.9),
    dict(temperature=0.4, top_k=0, top_p=1.0, min_p=0.2, repetition_penalty=1.0),
])
def test_process_logits_equals_the_chain_generate_builds(settings, tiny):
    """transformers builds its own processor list from a GenerationConfig: same order, same numbers."""
    model = tiny
    ids, mask = left_padded_ids(batch=4)
    config = GenerationConfig(do_sample=True, **settings)
    chain = model._get_logits_processor(config, input_ids_seq_length=ids.shape[1],
                                        model_kwargs={"attention_mask": mask})
    names = [type(p).__name__ for p in chain]
    assert names.index("TemperatureLogitsWarper") < names.index("MinPLogitsWarper")
    logits = torch.randn(4, 256, generator=torch.Generator().manual_seed(3)) * 2
    assert same(process_logits(logits, ids, mask, **settings), chain(ids, logits.clone()))


@pytest.mark.parametrize("call, message", [
    (lambda x: apply_temperature(x, -1.0), "temperature must be >= 0"),
    (lambda x: top_k_filter(x, -2), "top_k must be >= 0"),
    (lambda x: top_p_filter(x, 1.5), "top_p must be in"),
    (lambda x: min_p_filter(x, -0.1), "min_p must be in"),
    (lambda x: top_p_filter(x, torch.tensor([0.5, 0.5])), "one value per row"),
    (lambda x: top_k_filter(x[0], 3), "shape \\[batch, vocab\\]"),
    (lambda x: apply_repetition_penalty(x, torch.zeros(4, 2, dtype=torch.long), 0.0), "repetition_penalty"),
])
def test_processors_reject_bad_settings_clearly(call, message):
    with pytest.raises(ValueError, match=message):
        call(CASES["plain"])


# ---------------------------------------------------------------------------------------
# The loop on a tiny random Qwen2 (fast): equal to model.generate
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 256, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    mask[1, :1] = 0
    return ids.masked_fill(mask == 0, 2), mask


@pytest.mark.parametrize("use_cache", [False, True])
@pytest.mark.parametrize("eos", [None, 1, "row1", "rows02"])
def test_tiny_greedy_equals_generate(tiny, tiny_batch, use_cache, eos):
    ids, mask = tiny_batch
    free = generate(tiny, ids, mask, max_new_tokens=6, temperature=0)
    # The tiny model repeats one token per row; choosing EOS among them stops rows at different steps.
    eos = {"row1": int(free[1, -1]), "rows02": [int(free[0, -1]), int(free[2, -1])]}.get(eos, eos)
    kwargs = dict(max_new_tokens=12, eos_token_id=eos, pad_token_id=2)
    expected = tiny.generate(ids, attention_mask=mask, do_sample=False, **kwargs)
    got = generate(tiny, ids, mask, temperature=0, use_cache=use_cache, **kwargs)
    assert torch.equal(got, expected)
    for row in range(3):
        alone = ids[row:row + 1, mask[row] == 1]
        got_alone = generate(tiny, alone, temperature=0, use_cache=use_cache, **kwargs)
        new = got_alone[0, alone.shape[1]:]
        assert torch.equal(new, got[row, ids.shape[1]:ids.shape[1] + len(new)]), f"row {row}"


def test_tiny_per_row_stopping_pads_finished_rows(tiny, tiny_batch):
    ids, mask = tiny_batch
    free = generate(tiny, ids, mask, max_new_tokens=4, temperature=0)
    eos = int(free[1, -1])
    out = generate(tiny, ids, mask, max_new_tokens=8, temperature=0, eos_token_id=eos, pad_token_id=99)
    new = out[:, ids.shape[1]:]
    assert new.shape == (3, 8)
    first_eos = (new[1] == eos).nonzero()[0, 0]
    assert (new[1, first_eos + 1:] == 99).all(), "a finished row continues with pad"
    assert not (new[0] == 99).any() and not (new[2] == 99).any()


def test_tiny_stops_early_when_every_row_is_done(tiny, tiny_batch):
    ids, mask = tiny_batch
    free = generate(tiny, ids, mask, max_new_tokens=1, temperature=0)
    out = generate(tiny, ids, mask, max_new_tokens=10, temperature=0, eos_token_id=free[:, -1].tolist())
    assert out.shape == (3, ids.shape[1] + 1)
    assert torch.equal(generate(tiny, ids, mask, max_new_tokens=0), ids)


@pytest.mark.parametrize("use_cache", [False, True])
@pytest.mark.parametrize("settings", [
    dict(temperature=0.7, top_k=20, top_p=0.9, min_p=0.05, repetition_penalty=1.3),
    dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0),
    dict(temperature=2.0, top_k=50, top_p=0.6, min_p=0.0, repetition_penalty=1.0),
])
def test_tiny_seeded_sampling_equals_generate(tiny, tiny_batch, use_cache, settings):
    """Same processors, same softmax + multinomial: a Generator seeded s draws what the global seed s draws."""
    ids, mask = tiny_batch
    torch.manual_seed(5)
    expected = tiny.generate(ids, attention_mask=mask, do_sample=True, max_new_tokens=15, eos_token_id=[1, 40],
                             pad_token_id=2, **settings)
    got = generate(tiny, ids, mask, max_new_tokens=15, eos_token_id=[1, 40], pad_token_id=2,
                   generator=torch.Generator().manual_seed(5), use_cache=use_cache, **settings)
    assert torch.equal(got, expected)


def test_tiny_sampling_is_reproducible_with_a_generator(tiny, tiny_batch):
    ids, mask = tiny_batch
    runs = [generate(tiny, ids, mask, max_new_tokens=20, temperature=1.5, generator=torch.Generator().manual_seed(s))
            for s in (7, 7, 8)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_positions_from_mask_match_generate():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert positions_from_mask(mask).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]


@pytest.mark.parametrize("kwargs, message", [
    (dict(input_ids=torch.tensor([5, 6, 7])), "shape \\[batch, seq\\]"),
    (dict(attention_mask=torch.tensor([[1, 1, 0]])), "right padding"),
    (dict(attention_mask=torch.tensor([[1, 1]])), "must match"),
    (dict(max_new_tokens=-1), "max_new_tokens"),
    (dict(temperature=-0.5), "temperature"),
    (dict(top_k=2.5), "top_k"),
    (dict(top_p=1.2), "top_p"),
    (dict(eos_token_id="</s>"), "eos_token_id"),
])
def test_generate_rejects_bad_input_clearly(tiny, kwargs, message):
    args = dict(input_ids=torch.tensor([[5, 6, 7]]), max_new_tokens=2) | kwargs
    with pytest.raises(ValueError, match=message):
        generate(tiny, **args)


# ---------------------------------------------------------------------------------------
# The offline model (SmolLM2-135M-Instruct)
# ---------------------------------------------------------------------------------------

PROMPTS = ["What is the capital of France?", "Name three primary colors.", "def fibonacci(n):"]


@pytest.fixture(scope="module")
def lm_batch(offline_lm):
    model, tokenizer = offline_lm
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                           tokenize=False) for p in PROMPTS[:2]] + [PROMPTS[2]]
    tokenizer.padding_side = "left"
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    alone = [tokenizer(t, return_tensors="pt").input_ids for t in texts]
    assert (batch.attention_mask == 0).any(), "the prompts must have different lengths"
    return batch, alone


@pytest.mark.parametrize("use_cache", [True, False])
def test_offline_model_greedy_equals_generate_alone_and_batched(offline_lm, lm_batch, use_cache):
    model, tokenizer = offline_lm
    batch, alone = lm_batch
    n = 16 if use_cache else 8
    expected = model.generate(**batch, do_sample=False, max_new_tokens=n, pad_token_id=tokenizer.pad_token_id)
    got = generate(model, batch.input_ids, batch.attention_mask, max_new_tokens=n, temperature=0,
                   eos_token_id=tokenizer.eos_token_id, use_cache=use_cache)
    assert torch.equal(got, expected)
    for row, ids in enumerate(alone):
        expected_alone = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n)
        got_alone = generate(model, ids, max_new_tokens=n, temperature=0, eos_token_id=tokenizer.eos_token_id,
                             use_cache=use_cache)
        assert torch.equal(got_alone, expected_alone), f"prompt {row} alone"
        new = got_alone[0, ids.shape[1]:]
        assert torch.equal(new, got[row, batch.input_ids.shape[1]:][:len(new)]), f"prompt {row} batched vs alone"


def test_offline_model_seeded_sampling_equals_generate(offline_lm, lm_batch):
    model, tokenizer = offline_lm
    batch, _ = lm_batch
    settings = dict(temperature=0.8, top_k=40, top_p=0.9, min_p=0.02, repetition_penalty=1.2)
    torch.manual_seed(11)
    expected = model.generate(**batch, do_sample=True, max_new_tokens=12, pad_token_id=2, **settings)
    got = generate(model, batch.input_ids, batch.attention_mask, max_new_tokens=12, eos_token_id=2, use_cache=True,
                   generator=torch.Generator().manual_seed(11), **settings)
    assert torch.equal(got, expected)


def test_chat_turn_keeps_a_multi_turn_history(offline_lm):
    model, tokenizer = offline_lm
    history = chat_turn(model, tokenizer, [], "What is the capital of France?", max_new_tokens=12)
    assert history[-1] == {"role": "assistant", "content": "The capital of France is Paris."}
    history2 = chat_turn(model, tokenizer, history, "And of Italy?", max_new_tokens=12)
    assert history2[:2] == history and len(history2) == 4, "earlier turns are kept, unmodified"
    assert [m["role"] for m in history2] == ["user", "assistant", "user", "assistant"]
    assert history2[-1]["content"] and "<|im_end|>" not in history2[-1]["content"]


# ---------------------------------------------------------------------------------------
# The exercises' self-checks accept correct answers, reject wrong ones, tolerate unattempted ones
# ---------------------------------------------------------------------------------------

def _todo(*args):
    raise NotImplementedError


def test_check_top_k():
    from cadlab.exercises.sampling import check_top_k

    assert check_top_k(top_k_filter)
    with pytest.raises(AssertionError, match="ties at the k-th value"):  # keeps exactly k, dropping ties
        check_top_k(lambda x, k: x.masked_fill(torch.ones_like(x, dtype=torch.bool).scatter(
            -1, x.topk(min(k, x.shape[-1])).indices, False), float("-inf")))
    assert check_top_k(_todo) is False


def test_check_top_p():
    from cadlab.exercises.sampling import check_top_p

    assert check_top_p(top_p_filter)

    def drops_the_crossing_token(logits, p):
        probs, order = logits.softmax(-1).sort(-1, descending=True)
        drop = probs.cumsum(-1) > p
        return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))

    with pytest.raises(AssertionError):
        check_top_p(drops_the_crossing_token)
    assert check_top_p(_todo) is False


def test_check_greedy_loop():
    from cadlab.exercises.sampling import check_greedy_loop

    assert check_greedy_loop(lambda model, ids, n, eos: generate(model, ids, max_new_tokens=n, temperature=0,
                                                                 eos_token_id=eos))
    with pytest.raises(AssertionError, match="EOS met early"):  # ignores EOS
        check_greedy_loop(lambda model, ids, n, eos: generate(model, ids, max_new_tokens=n, temperature=0))
    assert check_greedy_loop(_todo) is False
