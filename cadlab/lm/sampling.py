"""Generation written out by hand: logit processors, sampling, and the token-by-token loop.

A causal LM gives, for the last position, one logit z_i per vocabulary entry. Generation
repeats three steps: run the model, turn the logits into a choice, append the choice.
Everything between "logits" and "choice" is a chain of small pure functions on a
``[batch, vocab]`` tensor, applied in the order ``transformers``' ``generate`` applies them:

1. repetition penalty  z_i -> z_i / r if z_i > 0 else z_i * r, for every token already seen;
2. temperature         z_i -> z_i / T  (T = 0 means greedy: keep only the argmax);
3. top-k               keep the k largest logits (ties with the k-th are kept);
4. top-p (nucleus)     keep the smallest set of top tokens whose probability adds up to >= p;
5. min-p               keep tokens with p_i >= min_p * max_j p_j.

Filtered tokens get the logit -inf, so softmax gives them probability 0. Each function
accepts a Python number (same setting for every row) or a 1-D tensor (one setting per row).
Each is proven equal to the library's ``LogitsProcessor`` in ``tests/test_sampling.py``.

``generate`` calls the backbone (``model.model``) and ``model.lm_head`` itself, with or
without transformers' ``DynamicCache``, and stops on EOS ids per row or after
``max_new_tokens``. Its greedy output equals ``model.generate(do_sample=False)`` token for
token, alone and batched with left padding. ``chat_turn`` runs one turn of a chat on it.
"""

from __future__ import annotations

import json

import torch
from transformers import DynamicCache

from cadlab.paths import DATA

QWEN25_GENERATION_CONFIG_FILE = DATA / "qwen25_05b_instruct_generation_config.json"


# ---------------------------------------------------------------------------------------
# Logit processors: pure functions [batch, vocab] -> [batch, vocab]
# ---------------------------------------------------------------------------------------

def _per_row(value, logits: torch.Tensor, name: str, dtype=None) -> torch.Tensor:
    """A setting as a tensor that broadcasts over ``logits``: a scalar, or a ``[batch, 1]`` column."""
    column = torch.as_tensor(value, dtype=dtype or logits.dtype, device=logits.device)
    if column.dim() == 0:
        return column
    if column.shape != (logits.shape[0],):
        raise ValueError(f"{name}: got a tensor of shape {tuple(column.shape)}; pass a number, or one "
                         f"value per row (shape ({logits.shape[0]},)) for logits of shape {tuple(logits.shape)}.")
    return column[:, None]


def _check_logits(logits: torch.Tensor, name: str) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{name}: logits must be a float tensor of shape [batch, vocab], got {shape}. "
                         "For a single row use logits[None].")


def apply_repetition_penalty(logits, input_ids, penalty, attention_mask=None):
    """Push down every token that already occurs in ``input_ids`` (prompt included).

    For a seen token i: z_i -> z_i / r if z_i > 0, else z_i * r (r > 1 always lowers its
    logit; r < 1 raises it). Each token is penalised once however often it occurs.
    Positions where ``attention_mask`` is 0 (left padding) do not count as seen.
    """
    _check_logits(logits, "apply_repetition_penalty")
    r = _per_row(penalty, logits, "repetition_penalty")
    if (r <= 0).any():
        raise ValueError(f"repetition_penalty must be > 0 (1.0 = off), got {penalty}.")
    vocab = logits.shape[-1]
    # Ids outside the logits (padding masked out, or ids >= vocab) land in an extra column we drop.
    ids = input_ids.clamp(max=vocab)
    if attention_mask is not None:
        ids = ids.masked_fill(attention_mask == 0, vocab)
    seen = torch.zeros(logits.shape[0], vocab + 1, dtype=torch.bool, device=logits.device)
    seen.scatter_(1, ids, True)
    penalised = torch.where(logits < 0, logits * r, logits / r)
    return torch.where(seen[:, :vocab], penalised, logits)


def apply_temperature(logits, temperature):
    """z -> z / T. T < 1 sharpens the distribution, T > 1 flattens it.

    T = 0 is the limit T -> 0: all probability on the argmax (the first one on a tie), so
    the result keeps the argmax logit and sets every other entry to -inf - never a division by 0.
    """
    _check_logits(logits, "apply_temperature")
    t = _per_row(temperature, logits, "temperature")
    if (t < 0).any():
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}.")
    greedy = t == 0
    scaled = logits / torch.where(greedy, torch.ones_like(t), t)
    if not greedy.any():
        return scaled
    only_argmax = torch.full_like(logits, float("-inf"))
    top = logits.argmax(dim=-1, keepdim=True)
    only_argmax.scatter_(1, top, logits.gather(1, top))
    return torch.where(greedy, only_argmax, scaled)


def top_k_filter(logits, top_k):
    """Keep the ``top_k`` largest logits per row; 0 (or k >= vocab) keeps everything.

    The threshold is the k-th largest value; every logit equal to it survives, so ties can
    keep more than k tokens (as the library does).
    """
    _check_logits(logits, "top_k_filter")
    k = _per_row(top_k, logits, "top_k", dtype=torch.long)
    if (k < 0).any():
        raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}.")
    vocab = logits.shape[-1]
    k = torch.where((k == 0) | (k > vocab), vocab, k).expand(logits.shape[0], 1)
    descending = logits.sort(dim=-1, descending=True).values
    kth_largest = descending.gather(1, k - 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits, top_p):
    """Nucleus filtering: keep the most probable tokens until their probabilities add up to >= p.

    Sort ascending, take the running sum of probabilities from the least likely token up,
    and drop a token while that running sum is <= 1 - p (the least likely mass we can
    afford to lose). The most probable token is always kept, so p = 0 means greedy and
    p = 1 drops only tokens whose probability is exactly 0.
    """
    _check_logits(logits, "top_p_filter")
    p = _per_row(top_p, logits, "top_p", dtype=torch.float64)
    if ((p < 0) | (p > 1)).any():
        raise ValueError(f"top_p must be in [0, 1] (1 = off), got {top_p}.")
    # 1 - p in float64 first, then rounded to the logits' dtype: the same number the library compares with.
    lose_at_most = (1 - p).to(logits.dtype)
    ascending, order = logits.sort(dim=-1, descending=False)
    running = ascending.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = running <= lose_at_most
    drop_sorted[:, -1] = False  # the most probable token survives whatever p is
    drop = drop_sorted.scatter(1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def min_p_filter(logits, min_p):
    """Keep tokens whose probability is at least ``min_p`` times that of the most probable token.

    p_i = softmax(z)_i is kept iff p_i >= min_p * max_j p_j. The argmax always passes (min_p <= 1),
    and the cut-off adapts: strict when the model is confident, loose when it is not.
    """
    _check_logits(logits, "min_p_filter")
    m = _per_row(min_p, logits, "min_p")
    if ((m < 0) | (m > 1)).any():
        raise ValueError(f"min_p must be in [0, 1] (0 = off), got {min_p}.")
    probs = logits.softmax(dim=-1)
    return logits.masked_fill(probs < m * probs.amax(dim=-1, keepdim=True), float("-inf"))


def _active(setting, neutral) -> bool:
    """False only for a number equal to the neutral value (per-row tensors are always applied)."""
    return isinstance(setting, torch.Tensor) or setting != neutral


def process_logits(logits, input_ids=None, attention_mask=None, *, temperature=1.0, top_k=0, top_p=1.0,
                   min_p=0.0, repetition_penalty=1.0):
    """The whole chain, in ``generate``'s order: repetition penalty -> temperature -> top-k -> top-p -> min-p.

    Settings at their neutral value (1.0, 0, 1.0, 0.0, 1.0) are skipped, as ``generate`` skips them.
    ``input_ids`` (the sequence so far) is only needed for the repetition penalty.
    """
    if _active(repetition_penalty, 1.0):
        if input_ids is None:
            raise ValueError("process_logits: repetition_penalty needs input_ids (the tokens seen so far).")
        logits = apply_repetition_penalty(logits, input_ids, repetition_penalty, attention_mask)
    if _active(temperature, 1.0):
        logits = apply_temperature(logits, temperature)
    if _active(top_k, 0):
        logits = top_k_filter(logits, top_k)
    if _active(top_p, 1.0):
        logits = top_p_filter(logits, top_p)
    if _active(min_p, 0.0):
        logits = min_p_filter(logits, min_p)
    return logits


def sample_next_token(logits, generator=None):
    """Draw one token id per row from softmax(logits): ``[batch, vocab] -> [batch]``.

    The same two calls as ``generate`` (softmax, then ``torch.multinomial``), so with the same
    seed in ``generator`` as in the global RNG it draws the same tokens.
    """
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


# ---------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------

def positions_from_mask(attention_mask):
    """Position ids under left padding: 0, 1, 2, ... counted over real tokens only; padding gets 0."""
    positions = attention_mask.long().cumsum(dim=-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


@torch.no_grad()
def next_token_logits(model, input_ids, attention_mask=None, position_ids=None, past_key_values=None):
    """One forward pass of the backbone, then ``lm_head`` on the last position only: float32 ``[batch, vocab]``.

    With ``past_key_values`` (a ``DynamicCache``) pass only the new tokens in ``input_ids`` but
    the attention mask of the whole sequence; the cache grows by ``input_ids.shape[1]`` positions.
    """
    hidden = model.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=past_key_values, use_cache=past_key_values is not None).last_hidden_state
    return model.lm_head(hidden[:, -1:, :])[:, 0, :].float()


def _as_id_list(value, name):
    if value is None:
        return []
    if isinstance(value, torch.Tensor):
        value = value.flatten().tolist()
    ids = [value] if isinstance(value, int) else list(value)
    if not all(isinstance(i, int) and i >= 0 for i in ids):
        raise ValueError(f"{name} must be a token id (int >= 0) or a list of them, got {value!r}.")
    return ids


def _check_generate_args(model, input_ids, attention_mask, max_new_tokens, temperature, top_k, top_p, min_p,
                         repetition_penalty):
    if not (hasattr(model, "model") and hasattr(model, "lm_head")):
        raise TypeError(f"generate needs a causal LM with .model (the backbone) and .lm_head, got "
                        f"{type(model).__name__}; load one with cadlab.lm.models.load_lm().")
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype != torch.long:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be a LongTensor of shape [batch, seq], got {shape}. "
                         "For one prompt use tokenizer(text, return_tensors='pt').input_ids.")
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids is empty: give the model at least one prompt token.")
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, "
                             f"input_ids {tuple(input_ids.shape)}: they must match.")
        if (attention_mask[:, 1:] < attention_mask[:, :-1]).any():
            raise ValueError("attention_mask has padding after real tokens (right padding). A decoder "
                             "appends to the right, so pad on the left: tokenizer.padding_side = 'left'.")
        if (attention_mask[:, -1] == 0).any():
            raise ValueError("a row of attention_mask is all padding: every prompt needs at least one token.")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}.")
    for name, value, low, high in [("temperature", temperature, 0, float("inf")), ("top_p", top_p, 0, 1),
                                   ("min_p", min_p, 0, 1)]:
        if not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}.")
    if not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0 = off), got {top_k!r}.")
    if not isinstance(repetition_penalty, (int, float)) or repetition_penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0 (1.0 = off), got {repetition_penalty!r}.")


@torch.no_grad()
def generate(model, input_ids, attention_mask=None, *, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0,
             min_p=0.0, repetition_penalty=1.0, eos_token_id=None, pad_token_id=None, generator=None,
             use_cache=False):
    """Generate up to ``max_new_tokens`` tokens after ``input_ids``; returns prompt + new tokens.

    Each step: logits of the last position -> ``process_logits`` -> argmax (``temperature=0``)
    or a draw with ``generator``. A row stops once it produces any id in ``eos_token_id`` (an
    int or a list); later positions of that row get ``pad_token_id`` (default: the first EOS
    id). The loop ends when every row has stopped or after ``max_new_tokens``, so the result
    can be shorter than prompt + max_new_tokens.

    Batches must be left-padded (``attention_mask`` 0 on the left). Without the cache each
    step re-runs the whole sequence; with ``use_cache=True`` the first step fills a
    ``DynamicCache`` and later steps feed one token per row.
    """
    _check_generate_args(model, input_ids, attention_mask, max_new_tokens, temperature, top_k, top_p, min_p,
                         repetition_penalty)
    eos_ids = _as_id_list(eos_token_id, "eos_token_id")
    if pad_token_id is None and eos_ids:
        pad_token_id = eos_ids[0]
    device = input_ids.device
    eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(device=device, dtype=torch.long)
    positions = positions_from_mask(mask)
    cache = DynamicCache(config=model.config) if use_cache else None
    tokens, step_ids = input_ids, input_ids
    finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=device)

    for _ in range(max_new_tokens):
        step_positions = positions[:, -step_ids.shape[1]:]
        logits = next_token_logits(model, step_ids, mask, step_positions, cache)
        if repetition_penalty != 1.0:
            logits = apply_repetition_penalty(logits, tokens, repetition_penalty, mask)
        if temperature == 0:
            next_ids = logits.argmax(dim=-1)
        else:
            logits = process_logits(logits, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
            next_ids = sample_next_token(logits, generator)
        if eos_ids:
            next_ids = torch.where(finished, pad_token_id, next_ids)
            finished |= torch.isin(next_ids, eos)
        tokens = torch.cat([tokens, next_ids[:, None]], dim=1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        positions = torch.cat([positions, positions[:, -1:] + 1], dim=1)
        step_ids = next_ids[:, None] if use_cache else tokens
        if finished.all():
            break
    return tokens


# ---------------------------------------------------------------------------------------
# A chat on top of the loop
# ---------------------------------------------------------------------------------------

def chat_turn(model, tokenizer, messages, user_text, *, max_new_tokens=128, temperature=0.0, use_cache=True,
              **settings):
    """One turn of a chat: append ``user_text``, generate the assistant's reply, return the new history.

    The history is a list of ``{"role", "content"}`` dicts; it is rendered with the tokenizer's
    chat template (with the assistant's opening), the reply is generated by ``generate`` until
    the tokenizer's EOS, decoded without special tokens and appended. ``messages`` itself is
    not modified. Extra ``settings`` (top_p, generator, ...) go to ``generate``.
    """
    if not isinstance(user_text, str) or not user_text:
        raise ValueError("chat_turn: user_text must be a non-empty string.")
    history = list(messages) + [{"role": "user", "content": user_text}]
    prompt = tokenizer.apply_chat_template(history, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    out = generate(model, prompt["input_ids"], prompt["attention_mask"], max_new_tokens=max_new_tokens,
                   temperature=temperature, eos_token_id=tokenizer.eos_token_id, use_cache=use_cache, **settings)
    reply = tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    return history + [{"role": "assistant", "content": reply}]


def qwen25_generation_config() -> dict:
    """Qwen2.5-0.5B-Instruct's published ``generation_config.json``, shipped as data with its source.

    Returns the data file's dict: ``"generation_config"`` holds the file's keys and values as
    published (``do_sample``, ``temperature``, ``top_p``, ``top_k``, ``repetition_penalty``, token
    ids), ``"source"`` says where the file is published.
    """
    return json.loads(QWEN25_GENERATION_CONFIG_FILE.read_text(encoding="utf-8"))
