"""Block-wise parallel decoding: the published "iterative refinement" method, and lossless Jacobi decoding.

Greedy decoding is a chain of n equations, one per new token y_i, each depending on the tokens before it:

    y_i = argmax p(. | x, y_1 .. y_{i-1})          i = 1 .. n

Autoregressive decoding solves them one at a time (n forward passes). **Jacobi iteration** guesses all
n tokens at once and updates every one of them in a single forward pass from the previous guess:

    y_i^(k+1) = argmax p(. | x, y_1^(k) .. y_{i-1}^(k))     for all i in parallel

Greedy output is the unique fixed point. Token 1 is exact after one pass; if tokens 1..j are exact
after pass k then token j+1 is exact after pass k+1; so **after k passes at least the first k tokens
equal greedy**, and at most n passes reach the fixed point (Santilli et al., ACL 2023). Any further
token that happens to be right already is a free speed-up.

``iterative_generate`` is the published method (``dllm-reasoning``'s ``inference/generator.py``): fill a block of ``add_eos_length + 1``
positions with EOS placeholders, run ``refine_iter`` Jacobi passes, commit the whole block. Only
``refine_iter`` tokens per block are guaranteed; the rest are committed unchecked, so on an ordinary
model its output departs from greedy decoding.

``jacobi_generate`` is the lossless version: after every pass it commits only the **verified
prefix** (guess token i is accepted when the pass predicted exactly it, so the prediction for i+1 was
made from exact context), keeps the K/V of committed tokens in a ``DynamicCache`` and crops the rest,
and iterates the remaining block positions until they are all accepted. Its output equals greedy
decoding token for token; what it can gain is fewer forward passes than tokens.

Both decoders are loops over two units: ``jacobi_step`` (one pass: a block of guesses in, a block
of predictions out) and ``verified_prefix`` (how many of those predictions are certainly greedy).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from cadlab import arguments
from cadlab.lm.models import ModelLoadError, check_lm_source, load_lm
from cadlab.lm.sampling import generate, positions_from_mask

# ---------------------------------------------------------------------------------------
# Argument checks shared by the three decoders
# ---------------------------------------------------------------------------------------


def _check_prompt(model, input_ids, attention_mask, who):
    if not (hasattr(model, "model") and hasattr(model, "lm_head")):
        raise TypeError(f"{who} needs a causal LM with .model (the backbone) and .lm_head, got "
                        f"{type(model).__name__}; load one with cadlab.lm.models.load_lm().")
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype != torch.long:
        shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(f"{who}: input_ids must be a LongTensor of shape [batch, seq], got {shape}. "
                         "For one prompt use tokenizer(text, return_tensors='pt').input_ids.")
    if input_ids.shape[1] == 0:
        raise ValueError(f"{who}: input_ids is empty: give the model at least one prompt token.")
    if attention_mask is None:
        return torch.ones_like(input_ids)
    if tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise ValueError(f"{who}: attention_mask has shape {tuple(attention_mask.shape)}, input_ids "
                         f"{tuple(input_ids.shape)}: they must match.")
    mask = attention_mask.to(device=input_ids.device, dtype=torch.long)
    if (mask[:, 1:] < mask[:, :-1]).any():
        raise ValueError(f"{who}: attention_mask has padding after real tokens (right padding). A decoder "
                         "appends to the right, so pad on the left: tokenizer.padding_side = 'left'.")
    if (mask[:, -1] == 0).any():
        raise ValueError(f"{who}: a row of attention_mask is all padding: every prompt needs a token.")
    return mask


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}.")


def _eos_ids(eos_token_id, who):
    if eos_token_id is None:
        return []
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    if not ids or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise ValueError(f"{who}: eos_token_id must be a token id (int >= 0), a list of them or None, "
                         f"got {eos_token_id!r}.")
    return ids


def _mask_after_eos(new, finished, eos, pad_token_id):
    """Per-row EOS: in ``new`` [b, a] replace tokens after a row's first EOS, and all tokens of rows
    already ``finished``, by ``pad_token_id``; return ``(new, finished)`` updated."""
    if eos.numel() == 0:
        return new, finished
    is_eos = torch.isin(new, eos) & ~finished[:, None]
    after_eos = (is_eos.long().cumsum(dim=1) - is_eos.long()) > 0
    new = new.masked_fill(after_eos | finished[:, None], pad_token_id)
    return new, finished | is_eos.any(dim=1)


# ---------------------------------------------------------------------------------------
# The published method (dllm-reasoning's iterative_generate), reproduced
# ---------------------------------------------------------------------------------------


@torch.no_grad()
def iterative_generate(model, input_ids, attention_mask=None, *, add_eos_length=127, refine_iter=2,
                       max_new_tokens=1024, max_length=8192, eos_token_id, pad_token_id):
    """dllm-reasoning's block-wise iterative refinement; returns prompt + new tokens ``[batch, seq]``.

    Per block (as published): append ``add_eos_length`` EOS placeholders after the prefix of length
    ``pre``; run a full forward pass (no KV cache) and take the argmax of the logits at positions
    ``pre-1 .. pre+add_eos_length`` (next-token shift: ``add_eos_length + 1`` predictions); write them
    back as the block (the first pass replaces the placeholders and appends one token, later passes
    replace all of them - both are "block = predictions"); repeat ``refine_iter`` times; commit the
    block. Each pass is one Jacobi iteration, so only the first ``refine_iter`` tokens of a block are
    guaranteed to equal greedy decoding; the rest are committed unchecked (the method is lossy).

    Faithful to the original: EOS placeholders, block size, refine passes, no KV cache, truncation at
    EOS. Corrected (they are bugs, not the method): positions follow the attention mask (left
    padding), each row stops at its own EOS (later tokens are ``pad_token_id``), and the output never
    exceeds ``max_new_tokens`` new tokens or ``max_length`` tokens in all.
    """
    who = "iterative_generate"
    mask = _check_prompt(model, input_ids, attention_mask, who)
    _check_int("add_eos_length", add_eos_length, 0)
    _check_int("refine_iter", refine_iter, 1)
    _check_int("max_new_tokens", max_new_tokens, 1)
    _check_int("max_length", max_length, 1)
    _check_int("eos_token_id", eos_token_id, 0)
    _check_int("pad_token_id", pad_token_id, 0)
    batch, prompt_len = input_ids.shape
    if prompt_len >= max_length:
        raise ValueError(f"{who}: the prompt already has {prompt_len} tokens and max_length is {max_length}: "
                         "raise max_length or shorten the prompt.")
    device = input_ids.device
    eos = torch.tensor([eos_token_id], device=device)
    positions = positions_from_mask(mask)
    tokens, finished = input_ids, torch.zeros(batch, dtype=torch.bool, device=device)
    block = add_eos_length + 1
    while not finished.all():
        room = min(max_new_tokens - (tokens.shape[1] - prompt_len), max_length - tokens.shape[1])
        if room <= 0:
            break
        pre = tokens.shape[1]
        current = torch.cat([tokens, tokens.new_full((batch, add_eos_length), eos_token_id)], dim=1)
        block_mask = torch.cat([mask, mask.new_ones(batch, block)], dim=1)
        block_positions = torch.cat([positions, positions[:, -1:] + torch.arange(1, block + 1, device=device)], 1)
        for _ in range(refine_iter):
            n = current.shape[1]
            logits = model(input_ids=current, attention_mask=block_mask[:, :n],
                           position_ids=block_positions[:, :n]).logits
            predicted = logits[:, pre - 1: pre + add_eos_length].argmax(dim=-1)    # [batch, block]
            current = torch.cat([current[:, :pre], predicted], dim=1)
        new, finished = _mask_after_eos(current[:, pre: pre + room], finished, eos, pad_token_id)
        tokens = torch.cat([tokens, new], dim=1)
        mask = block_mask[:, :tokens.shape[1]]
        positions = block_positions[:, :tokens.shape[1]]
    # Drop the columns after the last row's EOS (every row is padding there).
    new = tokens[:, prompt_len:]
    is_eos = new == eos_token_id
    lengths = torch.where(is_eos.any(dim=1), is_eos.long().argmax(dim=1) + 1, new.shape[1])
    return tokens[:, :prompt_len + int(lengths.max())]


# ---------------------------------------------------------------------------------------
# Lossless Jacobi decoding
# ---------------------------------------------------------------------------------------


@torch.no_grad()
def jacobi_step(model, prefix_ids, guess, *, past_key_values=None, attention_mask=None, position_ids=None):
    """One Jacobi pass: the block ``guess`` [B, m] after ``prefix_ids`` [B, P] -> the new block [B, m].

    Feeds ``prefix_ids + guess[:, :-1]`` and returns the argmax of the logits at the last m
    positions: position P-1 predicts block token 1 from the prefix, position P-1+i predicts token
    i+1 from the prefix and guess tokens 1..i (next-token shift; the last guess token predicts
    nothing inside the block, so it is not fed). 1-D ``prefix_ids`` [P] and ``guess`` [m] give a
    1-D block [m]. With ``past_key_values`` the prefix is only the tokens not yet cached, and the
    cache is extended by every fed token (the caller crops what it rejects); ``attention_mask``
    (over cached + fed tokens) and ``position_ids`` (of the fed tokens) are passed to the model.
    """
    if prefix_ids.dim() == 1:
        return jacobi_step(model, prefix_ids[None], guess[None], past_key_values=past_key_values,
                           attention_mask=attention_mask, position_ids=position_ids)[0]
    m = guess.shape[1]
    fed = torch.cat([prefix_ids, guess[:, :m - 1]], dim=1)
    hidden = model.model(input_ids=fed, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=past_key_values, use_cache=past_key_values is not None).last_hidden_state
    return model.lm_head(hidden[:, -m:]).argmax(dim=-1)


def verified_prefix(guess, predicted):
    """How many tokens of ``predicted`` one pass may commit: 1 + the number of leading guess tokens
    it predicted exactly (guess token m is never checked: nothing in the block was predicted from it).

    ``predicted[i+1]`` was computed from the prefix and ``guess[1..i]``; when those equal the
    pass's own (exact) predictions ``predicted[1..i]``, its context was exact, so it is the greedy
    token. ``predicted[1]`` always is. ``guess`` and ``predicted``: [m] -> an int, or [B, m] -> [B].
    """
    m = guess.shape[-1]
    matches = (guess[..., :m - 1] == predicted[..., :m - 1]).long().cumprod(dim=-1).sum(dim=-1) + 1
    return int(matches) if guess.dim() == 1 else matches


@torch.no_grad()
def jacobi_trajectory(model, input_ids, *, block_size=16, init_token_id=0):
    """Plain Jacobi iteration on one block after a single prompt ``[1, P]``, until the fixed point.

    Returns a LongTensor ``[iterations + 1, block_size]``: row 0 is the initial guess (all
    ``init_token_id``), row k the block after k passes; the last row equals the one before it (the
    fixed point, which is the greedy continuation). No cache and no acceptance: every pass feeds the
    whole prompt plus the block, which is what makes the trajectory easy to read.
    """
    _check_prompt(model, input_ids, None, "jacobi_trajectory")
    _check_int("block_size", block_size, 1)
    _check_int("init_token_id", init_token_id, 0)
    if input_ids.shape[0] != 1:
        raise ValueError(f"jacobi_trajectory traces one prompt; got a batch of {input_ids.shape[0]}.")
    guess = input_ids.new_full((block_size,), init_token_id)
    states = [guess]
    for _ in range(block_size + 1):   # block_size passes reach the fixed point, one more confirms it
        new = jacobi_step(model, input_ids[0], guess)
        states.append(new)
        if torch.equal(new, guess):
            break
        guess = new
    return torch.stack(states)


@torch.no_grad()
def jacobi_generate(model, input_ids, attention_mask=None, *, block_size=16, max_new_tokens, eos_token_id,
                    pad_token_id=None, max_iters=None, initial_guess="pad"):
    """Lossless Jacobi decoding with a KV cache; returns ``(ids, stats)`` with ids = prompt + new tokens.

    A block of ``m = block_size`` guesses (placeholders ``pad_token_id``) follows the last committed
    token ``t``. One pass feeds ``[t, g_1 .. g_{m-1}]`` (after the prompt on the first pass) and
    predicts ``p_1 .. p_m``. ``p_1`` is exact; ``p_{i+1}`` is exact when ``g_1..g_i == p_1..p_i``. So
    the pass commits ``a = 1 + (leading matches)`` tokens, crops the cache to the committed tokens
    (their K/V were computed from exact context), and the rest ``p_{a+1} .. p_m`` is the next guess for
    the remaining positions. A block ends when all its positions are committed (at most ``m`` passes),
    or after ``max_iters`` passes, its unverified rest thrown away; then a new block starts.

    ``initial_guess``: ``"pad"`` (vanilla Jacobi: every block starts as placeholders) or
    ``"lookup"`` (a block starts as the tokens that followed the latest earlier occurrence of the
    last two committed tokens - prompt lookup; placeholders where there is none). The guess only
    changes how many passes are needed, never the output.

    Batches: left padding is handled with position ids from the mask; every row advances by the
    smallest count accepted among unfinished rows (the cache stays rectangular); a row that emits EOS
    stops (later tokens are ``pad_token_id``, default the EOS). ``eos_token_id=None``: no early stop.
    Never more than ``max_new_tokens`` new tokens. The output equals greedy decoding token for token.

    ``stats``: ``forward_passes`` (the prompt's prefill included - greedy needs one per token),
    ``accepted_per_pass`` (tokens committed per row by each pass), ``tokens_per_forward``,
    ``new_tokens`` (per row, up to and including EOS) and ``wall_time_s``.
    """
    who = "jacobi_generate"
    start_time = time.perf_counter()
    mask = _check_prompt(model, input_ids, attention_mask, who)
    _check_int("block_size", block_size, 1)
    _check_int("max_new_tokens", max_new_tokens, 0)
    if max_iters is not None:
        _check_int("max_iters", max_iters, 1)
    if initial_guess not in ("pad", "lookup"):
        raise ValueError(f"{who}: initial_guess must be 'pad' or 'lookup', got {initial_guess!r}.")
    eos_ids = _eos_ids(eos_token_id, who)
    if pad_token_id is None:
        pad_token_id = eos_ids[0] if eos_ids else 0
    _check_int("pad_token_id", pad_token_id, 0)
    batch, prompt_len = input_ids.shape
    device = input_ids.device
    eos = torch.tensor(eos_ids, dtype=torch.long, device=device)
    positions = positions_from_mask(mask)
    tokens = input_ids
    cache = DynamicCache(config=model.config)
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    accepted_per_pass = []

    while tokens.shape[1] - prompt_len < max_new_tokens and not finished.all():
        m = min(block_size, max_new_tokens - (tokens.shape[1] - prompt_len))
        guess = tokens.new_full((batch, m), pad_token_id)
        if initial_guess == "lookup":
            guess = torch.stack([lookup_guess(row, m, pad_token_id) for row in tokens])
        for _ in range(max_iters or m):
            cached = cache.get_seq_length()
            last = positions[:, -1:]
            fed_positions = torch.cat([positions[:, cached:], last + torch.arange(1, m, device=device)], dim=1)
            fed_mask = torch.cat([mask, mask.new_ones(batch, m - 1)], dim=1)
            # One pass: the uncached committed tokens (the newest) + guess[:, :m-1] -> p_1 .. p_m.
            predicted = jacobi_step(model, tokens[:, cached:], guess, past_key_values=cache,
                                    attention_mask=fed_mask, position_ids=fed_positions)     # [batch, m]
            verified = verified_prefix(guess, predicted)                  # [batch]: p_1 + leading matches
            a = _tokens_to_commit(predicted, verified, finished, eos)
            new, finished = _mask_after_eos(predicted[:, :a], finished, eos, pad_token_id)
            tokens = torch.cat([tokens, new], dim=1)
            mask = torch.cat([mask, mask.new_ones(batch, a)], dim=1)
            positions = torch.cat([positions, last + torch.arange(1, a + 1, device=device)], dim=1)
            rejected = cache.get_seq_length() - (tokens.shape[1] - 1)
            if rejected:                         # keep K/V of committed tokens (the newest is fed next)
                cache.crop(-rejected)            # transformers v5: crop(-n) drops the last n positions
            accepted_per_pass.append(a)
            guess, m = predicted[:, a:], m - a
            if m == 0 or finished.all():
                break

    passes = len(accepted_per_pass)
    new = tokens[:, prompt_len:]
    if eos.numel():
        is_eos = torch.isin(new, eos)
        lengths = torch.where(is_eos.any(dim=1), is_eos.long().argmax(dim=1) + 1, new.shape[1])
    else:
        lengths = torch.full((batch,), new.shape[1])
    stats = {"forward_passes": passes, "accepted_per_pass": accepted_per_pass,
             "tokens_per_forward": sum(accepted_per_pass) / passes if passes else 0.0,
             "new_tokens": lengths.tolist(), "wall_time_s": time.perf_counter() - start_time}
    return tokens, stats


def lookup_guess(tokens, m, pad_token_id, ngram=2):
    """A guess for the next ``m`` tokens of one row ``tokens`` [seq]: what followed the latest earlier
    occurrence of its last ``ngram`` tokens (prompt lookup decoding), padded with ``pad_token_id``."""
    guess = tokens.new_full((m,), pad_token_id)
    n = tokens.shape[0]
    if n <= ngram:
        return guess
    windows = tokens.unfold(0, ngram, 1)[:-1]                    # every earlier n-gram, start 0 .. n-ngram-1
    hits = (windows == tokens[-ngram:]).all(dim=1).nonzero().flatten()
    if hits.numel():
        follow = tokens[int(hits[-1]) + ngram: int(hits[-1]) + ngram + m]
        guess[:follow.shape[0]] = follow
    return guess


def _tokens_to_commit(predicted, verified, finished, eos) -> int:
    """How many columns a batch commits: the smallest verified count among unfinished rows that do
    not stop in their verified prefix; if every unfinished row stops there, enough to reach each EOS."""
    m = predicted.shape[1]
    stops_at = torch.full_like(verified, m + 1)       # 1-based index of the first EOS, m+1 if none
    if eos.numel():
        is_eos = torch.isin(predicted, eos)
        stops_at = torch.where(is_eos.any(dim=1), is_eos.long().argmax(dim=1) + 1, stops_at)
    stops = stops_at <= verified
    limiting = ~finished & ~stops
    if limiting.any():
        return int(verified[limiting].min())
    return int(stops_at[~finished & stops].max())


def greedy_generate(model, input_ids, attention_mask=None, *, max_new_tokens, eos_token_id=None,
                    pad_token_id=None):
    """Greedy decoding with a KV cache (``cadlab.lm.sampling.generate``, temperature 0) as ``(ids, stats)``:
    the reference the other two decoders are measured against - one forward pass per token."""
    start_time = time.perf_counter()
    ids = generate(model, input_ids, attention_mask, max_new_tokens=max_new_tokens, temperature=0.0,
                   eos_token_id=eos_token_id, pad_token_id=pad_token_id, use_cache=True)
    new = ids[:, input_ids.shape[1]:]
    eos = torch.tensor(_eos_ids(eos_token_id, "greedy_generate"), dtype=torch.long)
    is_eos = torch.isin(new, eos.to(new.device))
    lengths = torch.where(is_eos.any(dim=1), is_eos.long().argmax(dim=1) + 1, new.shape[1])
    passes = new.shape[1]
    return ids, {"forward_passes": passes, "accepted_per_pass": [1] * passes,
                 "tokens_per_forward": 1.0 if passes else 0.0, "new_tokens": lengths.tolist(),
                 "wall_time_s": time.perf_counter() - start_time}


# ---------------------------------------------------------------------------------------
# Explorer (notebook 05): one block, three ways
# ---------------------------------------------------------------------------------------


def _common_prefix(a: list, b: list) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


@torch.no_grad()
def explore_block(model, input_ids, *, block_size, refine_iter, placeholder_id):
    """One block of ``block_size`` tokens after a single prompt ``[1, P]``, decoded three ways.

    - the Jacobi staircase (``jacobi_trajectory`` from ``placeholder_id``): ``states`` [passes + 1, m],
      ``greedy`` (its fixed point, the greedy block) and ``first_final`` (per position, the pass after
      which it holds its greedy token for good; the guarantee is ``first_final[i] <= i + 1``);
    - the published method (``iterative_generate`` with ``add_eos_length = m - 1`` and ``refine_iter``
      passes, placeholders = EOS = ``placeholder_id``): ``seed`` (the committed tokens, cut after an
      EOS as the original does), ``seed_correct`` (how many of them lead as in greedy) and ``guaranteed``
      (min(refine_iter, m): what the passes prove);
    - lossless Jacobi (``jacobi_generate``, no EOS stop): ``accepted_per_pass`` (tokens verified and
      committed by each pass; they sum to m) and ``accepted_after_refine`` (what the first
      ``refine_iter`` passes committed, all of them greedy tokens).
    """
    _check_int("block_size", block_size, 1)
    _check_int("refine_iter", refine_iter, 1)
    states = jacobi_trajectory(model, input_ids, block_size=block_size, init_token_id=placeholder_id)
    greedy = states[-1]
    final = states == greedy
    first_final = [next(k for k in range(len(states)) if bool(final[k:, i].all())) for i in range(block_size)]
    prompt_len = input_ids.shape[1]
    seed = iterative_generate(model, input_ids, add_eos_length=block_size - 1, refine_iter=refine_iter,
                              max_new_tokens=block_size, eos_token_id=placeholder_id,
                              pad_token_id=placeholder_id)[0, prompt_len:]
    _, stats = jacobi_generate(model, input_ids, block_size=block_size, max_new_tokens=block_size,
                               eos_token_id=None, pad_token_id=placeholder_id)
    accepted = stats["accepted_per_pass"]
    return {"states": states, "greedy": greedy, "first_final": first_final, "seed": seed,
            "seed_correct": _common_prefix(seed.tolist(), greedy.tolist()),
            "guaranteed": min(refine_iter, block_size), "accepted_per_pass": accepted,
            "accepted_after_refine": sum(accepted[:refine_iter])}


# ---------------------------------------------------------------------------------------
# The published demo's CLI (demo.py): cadlab iterative-generate / python -m cadlab.lm.parallel_decoding
# ---------------------------------------------------------------------------------------


class InputError(Exception):
    """Bad command-line input: the message says what was wrong and what to do."""


def read_prompts(path) -> list[str]:
    """Prompts from a .txt (one per non-empty line), .json (a list of strings or of {"prompt": ...})
    or .jsonl file (one string or {"prompt": ...} per non-empty line)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"prompts file {path} does not exist (or is not a file).")
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".json", ".jsonl"):
        raise InputError(f"prompts file {path}: unknown extension {suffix!r}; use .txt (one prompt per "
                         "line), .json (a list) or .jsonl (one prompt per line).")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"prompts file {path} is not UTF-8 text ({error.reason} at byte {error.start}): "
                         "save it as UTF-8.") from None
    except OSError as error:
        raise InputError(f"cannot read the prompts file {path}: {error.strerror or error}.") from None
    if suffix == ".txt":
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    elif suffix == ".json":
        try:
            items = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"{path}: not valid JSON ({error}).") from None
        if not isinstance(items, list):
            raise InputError(f"{path}: expected a JSON list of prompts, got a {type(items).__name__}.")
        prompts = [_prompt_of(item, f"{path} item {i}") for i, item in enumerate(items)]
    else:
        prompts = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{path} line {number}: not valid JSON ({error.msg}). Each line must be "
                                 'a JSON string or an object like {"prompt": "..."}.') from None
            prompts.append(_prompt_of(item, f"{path} line {number}"))
    if not prompts:
        raise InputError(f"prompts file {path} holds no prompts.")
    return prompts


def _prompt_of(item, where) -> str:
    if isinstance(item, dict):
        item = item.get("prompt")
    if not isinstance(item, str) or not item.strip():
        raise InputError(f'{where}: expected a non-empty string or an object with a "prompt" string.')
    return item


def build_parser() -> argparse.ArgumentParser:
    """Dashed flags; the published demo's underscore spellings (``--max_new_tokens``) are accepted as aliases."""
    parser = argparse.ArgumentParser(
        prog="cadlab iterative-generate",
        description="Block-wise parallel decoding of prompts: the published iterative refinement "
                    "(--method iterative, lossy), lossless Jacobi decoding (jacobi) or plain greedy decoding. "
                    "Also: python -m cadlab.lm.parallel_decoding. The published demo's underscore flags (--max_new_tokens, ...) "
                    "work too.")

    def flag(name, *, to=parser, seed=True, **kwargs):
        """--name, plus the published demo's --name_with_underscores when ``seed`` (the flag is in its CLI)."""
        names = [f"--{name}"] + ([f"--{name.replace('-', '_')}"] if seed and "-" in name else [])
        to.add_argument(*names, dest=name.replace("-", "_"), **kwargs)

    source = parser.add_mutually_exclusive_group(required=True)
    flag("prompt", to=source, help="one prompt")
    flag("prompts-file", to=source, help="prompts in a .txt (one per line), .json (a list) or .jsonl file")
    parser.add_argument("--model", "--model-path", "--model_path", dest="model_path", default=None,
                        help="model folder or cached hub id (default: cadlab's load_lm(): $CADLAB_LM or the "
                             "offline SmolLM2-135M-Instruct); --model, as in the other cadlab tools, or the "
                             "published demo's --model_path")
    flag("method", choices=["iterative", "jacobi", "greedy", "seed"], default="iterative",
         help="iterative: the published block-wise refinement (lossy; 'seed' is an older name for it)")
    flag("add-eos-length", type=arguments.non_negative_int, default=127,
         help="iterative: placeholders per block (block = this + 1)")
    flag("refine-iter", type=arguments.positive_int, default=2, help="iterative: Jacobi passes per block")
    flag("block-size", type=arguments.positive_int, default=16, seed=False, help="jacobi: tokens per block")
    flag("max-new-tokens", type=arguments.positive_int, default=1024)
    flag("max-length", type=arguments.positive_int, default=8192, help="prompt + new tokens, at most")
    flag("batch-size", type=arguments.positive_int, default=1)
    flag("output-file", default="inference_results.jsonl", help="results, one JSON line each")
    flag("max-display", type=arguments.non_negative_int, default=5, help="results printed in full (0: none)")
    flag("use-chat-template", action="store_true", help="wrap each prompt as a user turn")
    flag("device", type=arguments.device, default=None, help="cpu or cuda (default: cuda if available)")
    flag("trust-remote-code", action="store_true",
         help="allow a model folder's own Python code (off by default: it runs arbitrary code)")
    flag("progress", action=argparse.BooleanOptionalAction, default=None, seed=False,
         help="a progress bar on stderr (default: only when stderr is a terminal)")
    return parser


def _check_args(parser, args):
    """Everything that can be checked before loading a model: ``(device, prompts)``, or a one-line
    error (``parser.error`` / ``arguments.fail``: exit status 2)."""
    if args.prompt is not None and not args.prompt.strip():
        parser.error("--prompt is empty: give the text to continue")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if arguments.device_problem(device):
        parser.error(arguments.device_problem(device))
    try:
        prompts = [args.prompt] if args.prompt is not None else read_prompts(args.prompts_file)
    except InputError as error:
        parser.error(str(error))
    try:
        check_lm_source(args.model_path, origin="--model")
    except (FileNotFoundError, ModelLoadError) as error:
        parser.error(str(error))
    arguments.writable_file(args.output_file, parser.prog)
    return device, prompts


def _load(args, device):
    """``(model, tokenizer)`` on ``device``; a model that does not load raises ``ModelLoadError``."""
    if args.trust_remote_code and args.model_path:
        try:
            tokenizer = AutoTokenizer.from_pretrained(args.model_path, trust_remote_code=True)
            model = AutoModelForCausalLM.from_pretrained(args.model_path, trust_remote_code=True).eval()
        except (OSError, ValueError) as error:
            raise ModelLoadError(f"could not load {args.model_path!r}: {' '.join(str(error).split())}") from error
    else:
        model, tokenizer = load_lm(args.model_path)
    return model.to(device), tokenizer


def _encode(args, tokenizer, texts):
    """The batch ``texts`` as left-padded token ids and mask (each a user turn with --use-chat-template)."""
    if args.use_chat_template:
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True,
                                               tokenize=False) for t in texts]
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not args.use_chat_template)


def _check_lengths(args, tokenizer, prompts):
    """Raise ``InputError`` when a prompt alone reaches ``--max-length`` tokens (before any decoding)."""
    for index, prompt in enumerate(prompts):
        length = int(_encode(args, tokenizer, [prompt])["attention_mask"].sum())
        if length >= args.max_length:
            raise InputError(f"prompt {index} has {length} tokens and --max-length is {args.max_length}: "
                             "raise --max-length or shorten the prompt.")


def _run_batch(args, model, tokenizer, texts, device):
    enc = _encode(args, tokenizer, texts)
    ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
    if ids.shape[1] >= args.max_length:
        raise InputError(f"a prompt has {ids.shape[1]} tokens, --max-length is {args.max_length}: raise it.")
    budget = min(args.max_new_tokens, args.max_length - ids.shape[1])
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    start = time.perf_counter()
    if args.method in ("iterative", "seed"):
        out = iterative_generate(model, ids, mask, add_eos_length=args.add_eos_length, refine_iter=args.refine_iter,
                                 max_new_tokens=budget, max_length=args.max_length, eos_token_id=eos,
                                 pad_token_id=pad)
        passes = None
    elif args.method == "jacobi":
        out, stats = jacobi_generate(model, ids, mask, block_size=args.block_size, max_new_tokens=budget,
                                     eos_token_id=eos, pad_token_id=pad)
        passes = stats["forward_passes"]
    else:
        out, stats = greedy_generate(model, ids, mask, max_new_tokens=budget, eos_token_id=eos, pad_token_id=pad)
        passes = stats["forward_passes"]
    seconds = time.perf_counter() - start
    results = []
    for row in range(len(texts)):
        new = out[row, ids.shape[1]:].tolist()
        if eos in new:
            new = new[:new.index(eos)]
        results.append({"response": tokenizer.decode(new, skip_special_tokens=True), "new_tokens": len(new),
                        "forward_passes": passes, "seconds": round(seconds, 3)})
    return results


def main(argv=None) -> int:
    """The CLI; ``argv`` without the program name. Returns the exit status (0 ok, 2 bad input, 1 failure)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        device, prompts = _check_args(parser, args)
    except SystemExit as exit_:       # argparse or a check already printed what was wrong (or --help)
        return int(exit_.code or 0)
    try:
        model, tokenizer = _load(args, device)
    except (FileNotFoundError, ModelLoadError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    try:
        _check_lengths(args, tokenizer, prompts)
    except InputError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    output, done = Path(args.output_file), 0
    print(f"{len(prompts)} prompt(s), method {args.method}, results -> {output}", file=sys.stderr)
    try:
        with output.open("w", encoding="utf-8") as sink, \
                tqdm(total=len(prompts), desc=f"{args.method} decoding", unit="prompt",
                     disable=None if args.progress is None else not args.progress) as bar:
            for first in range(0, len(prompts), args.batch_size):
                batch = prompts[first:first + args.batch_size]
                for offset, result in enumerate(_run_batch(args, model, tokenizer, batch, device)):
                    index = first + offset
                    record = {"index": index, "prompt": batch[offset], "method": args.method, **result}
                    sink.write(json.dumps(record, ensure_ascii=False) + "\n")
                    sink.flush()           # results already generated survive a later failure
                    done += 1
                    if index < args.max_display:
                        tqdm.write(f"--- [{index}] {batch[offset]}\n{result['response']}")
                bar.update(len(batch))
    except InputError as error:
        print(f"{parser.prog}: error: {error} ({done} result(s) already saved to {output})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: {done} result(s) saved to {output}", file=sys.stderr)
        return 130
    print(f"saved {done} result(s) to {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
