"""babyGPT: a small character-level GPT written from scratch, with its own KV cache.

The model, top to bottom (B = batch, T = tokens, C = ``n_embd``, H = ``n_head``, d = C / H):

    x_0   = E_tok[idx] + E_pos[0 .. T-1]                        token + learned position embeddings
    x_l+1 = x_l + Attn(LN(x_l)),  then  x_l+1 += MLP(LN(x_l+1))   ``n_layer`` pre-LayerNorm blocks
    logits = W_head LN_f(x_L)                                      final norm, LM head -> [B, T, vocab]

    Attn(h) = concat_heads( softmax(q k^T / sqrt(d) + M) v ) W_o,   q, k, v = h W_q, h W_k, h W_v
    MLP(h)  = ReLU(h W_1 + b_1) W_2 + b_2,                          hidden width 4C

M is the causal mask (-inf where a key lies in a query's future). The position table has
``block_size`` rows, so the model sees at most ``block_size`` tokens at once.

KV cache. ``forward(idx, kv_cache)`` returns the logits and, per layer, the keys and values of
every position it has seen (``[B, H, T_past + T, d]``); called again with that cache and only
the new tokens, the new queries attend to the cached keys, and position embeddings continue at
``T_past``. The result equals running the whole sequence (tests/test_babygpt.py).

The sliding window. Past ``block_size`` tokens the model conditions on the last ``block_size``
of them, at positions 0 .. block_size-1. With learned *absolute* positions a slide by one
token moves every kept token to a new position, so every cached K and V is stale (they were
computed from x_0 = E_tok + E_pos of the old position). ``generate`` therefore re-runs the
window from scratch (a fresh prefill of the last ``block_size`` tokens) whenever appending one
more token would overflow the position table: exact, equal to the uncached windowed model,
but once the window is full the cache saves nothing. ``forward`` itself refuses to run past the
table rather than index out of range. One such decode step is ``BabyGPT.step``, and ``generate``
is a loop over it.

Other models keep more of their cache. With relative positions (RoPE, notebooks 01-03) a kept
key's rotation depends only on its distance to the query, so one could drop the oldest row and
keep the rest. That is an approximation, not the windowed model: the kept K/V of layers 2 and up
were computed by attention that still saw the evicted tokens, so they carry information from
outside the window.

``generate`` reuses ``cadlab.lm.sampling``'s processors (temperature, top-k, top-p, repetition
penalty) and its ``sample_next_token``; temperature 0 is greedy.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from cadlab.lm.anatomy import causal_attention
from cadlab.lm.sampling import process_logits, sample_next_token
from cadlab.paths import BABYGPT_DIR, DATA

CORPUS = DATA / "shakespeare.txt"


# ---------------------------------------------------------------------------------------
# Tokenizer: one id per character of the corpus
# ---------------------------------------------------------------------------------------

class CharTokenizer:
    """Character-level tokenizer: the vocabulary is the sorted set of characters of a text."""

    def __init__(self, chars: str):
        if not chars or len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer needs a non-empty string of distinct characters.")
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - self.stoi.keys())
        if unknown:
            raise ValueError(f"characters not in babyGPT's vocabulary: {''.join(unknown)!r}. The model only knows "
                             f"the {self.vocab_size} characters of its corpus; remove or replace them.")
        return [self.stoi[c] for c in text]

    def decode(self, ids) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return "".join(self.chars[i] for i in ids)

    def save(self, path) -> None:
        Path(path).write_text(json.dumps({"chars": self.chars}, ensure_ascii=False))

    @classmethod
    def load(cls, path) -> "CharTokenizer":
        return cls(json.loads(Path(path).read_text())["chars"])


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------

class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention that reads and extends a (keys, values) cache."""

    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head}).")
        self.n_head, self.head_dim = n_head, n_embd // n_head
        self.query = nn.Linear(n_embd, n_embd, bias=False)
        self.key = nn.Linear(n_embd, n_embd, bias=False)
        self.value = nn.Linear(n_embd, n_embd, bias=False)
        self.proj = nn.Linear(n_embd, n_embd)
        self.dropout = nn.Dropout(dropout)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, C] -> [B, H, T, d]."""
        B, T, _ = x.shape
        return x.view(B, T, self.n_head, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, past=None):
        """x: [B, T, C] (the new positions only). Returns (output [B, T, C], (K, V) of all positions)."""
        q, k, v = self.heads(self.query(x)), self.heads(self.key(x)), self.heads(self.value(x))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        # The T new queries sit at the end: query i may see keys 0 .. T_past + i (mask offset by T_past).
        out, _ = causal_attention(q, k, v, 1 / math.sqrt(self.head_dim))
        out = out.transpose(1, 2).reshape(x.shape)
        return self.dropout(self.proj(out)), (k, v)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, n_embd: int, n_head: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.ln2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.ReLU(), nn.Linear(4 * n_embd, n_embd),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, past=None):
        attn_out, kv = self.attn(self.ln1(x), past)
        x = x + attn_out
        return x + self.mlp(self.ln2(x)), kv


class BabyGPT(nn.Module):
    """A small GPT: embeddings, ``n_layer`` pre-LN blocks, final LayerNorm, LM head."""

    def __init__(self, vocab_size: int, block_size: int = 128, n_layer: int = 4, n_head: int = 4,
                 n_embd: int = 128, dropout: float = 0.0):
        super().__init__()
        self.config = dict(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head,
                           n_embd=n_embd, dropout=dropout)
        self.block_size = block_size
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size)

    def forward(self, idx: torch.Tensor, kv_cache=None):
        """idx: [B, T] new token ids; kv_cache: None or the list returned by the previous call.

        Returns (logits [B, T, vocab], kv_cache) where kv_cache[l] = (K, V) of layer l, each
        [B, H, T_past + T, d]. Positions run from T_past to T_past + T - 1.
        """
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.dtype != torch.long or idx.shape[1] == 0:
            raise ValueError("idx must be a non-empty LongTensor [batch, tokens], e.g. "
                             "torch.tensor([tokenizer.encode(text)]).")
        past_len = 0 if kv_cache is None else kv_cache[0][0].shape[2]
        if past_len + idx.shape[1] > self.block_size:
            raise ValueError(f"{past_len} cached + {idx.shape[1]} new tokens exceed block_size={self.block_size} "
                             "(the rows of the position table). Keep only the last block_size tokens and "
                             "recompute the cache: generate() does this for you.")
        positions = torch.arange(past_len, past_len + idx.shape[1], device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(positions))
        new_cache = []
        for layer, block in enumerate(self.blocks):
            x, kv = block(x, None if kv_cache is None else kv_cache[layer])
            new_cache.append(kv)
        return self.lm_head(self.ln_f(x)), new_cache

    @torch.no_grad()
    def step(self, idx: torch.Tensor, kv_cache=None):
        """One decode step: (logits of the last position [B, vocab], the cache for the next step).

        ``idx`` [B, T] is the whole sequence so far, ``kv_cache`` None (nothing cached yet) or what
        the previous step returned. Equal to ``self(idx[:, -block_size:])[0][:, -1]``, the model run
        on its window, at every step:

        * no cache yet: prefill, run the last ``block_size`` tokens (the whole prompt if it fits);
        * room left in the position table: feed only the newest token, ``idx[:, -1:]``, against the cache;
        * table full: the window slides, every kept token moves to a new position and every cached
          K/V is stale, so run the last ``block_size`` tokens from scratch (a fresh prefill).
        """
        if kv_cache is None or kv_cache[0][0].shape[2] + 1 > self.block_size:
            logits, kv_cache = self(idx[:, -self.block_size:])    # prefill, or re-prefill after a slide
        else:
            logits, kv_cache = self(idx[:, -1:], kv_cache)         # one new token against the cache
        return logits[:, -1, :], kv_cache

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, use_kv_cache: bool = True, generator: torch.Generator | None = None,
                 repetition_penalty: float = 1.0, return_logits: bool = False):
        """Append ``max_new_tokens`` sampled tokens to ``idx`` [B, T]; returns [B, T + max_new_tokens].

        Each step: logits of the last position (conditioned on at most the last ``block_size``
        tokens) -> ``cadlab.lm.sampling.process_logits`` (repetition penalty, temperature, top-k,
        top-p) -> ``sample_next_token`` with ``generator`` (temperature 0: argmax).
        With ``use_kv_cache`` each step is ``step`` (the first runs the cropped prompt once, later
        ones feed one token; when the window would overflow it is re-run from scratch, see the
        module docstring); without, every step runs the whole window. ``return_logits=True`` also returns the raw last-position logits of
        every step, [B, max_new_tokens, vocab].
        """
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2 or idx.dtype != torch.long or idx.shape[1] == 0:
            raise ValueError("idx must be a non-empty LongTensor [batch, tokens]; "
                             "use torch.tensor([tokenizer.encode(prompt)]).")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}.")
        cache, steps = None, []
        for _ in range(max_new_tokens):
            if use_kv_cache:
                logits, cache = self.step(idx, cache)
            else:                                                   # the definition: run the whole window
                logits = self(idx[:, -self.block_size:])[0][:, -1, :]
            steps.append(logits)
            if temperature == 0:
                next_ids = logits.argmax(dim=-1)
            else:
                processed = process_logits(logits, idx, temperature=temperature, top_k=top_k, top_p=top_p,
                                           repetition_penalty=repetition_penalty)
                next_ids = sample_next_token(processed, generator)
            idx = torch.cat([idx, next_ids[:, None]], dim=1)
        if return_logits:
            empty = idx.new_zeros(idx.shape[0], 0, self.lm_head.out_features, dtype=torch.float)
            return idx, torch.stack(steps, dim=1) if steps else empty
        return idx


# ---------------------------------------------------------------------------------------
# Loading the shipped checkpoint
# ---------------------------------------------------------------------------------------

def load_babygpt(folder=BABYGPT_DIR):
    """(model, tokenizer) from ``folder``: config.json, tokenizer.json and model.pth.

    As in buildyourownllm's sampler: build the model, ``load_state_dict(torch.load("model.pth"))``, ``eval()``
    (dropout off). Unlike it, ``torch.load(..., weights_only=True)``: a .pth file is a
    pickle, and a pickle can run arbitrary code when loaded; weights_only only rebuilds tensors.
    """
    folder = Path(folder)
    missing = [n for n in ("config.json", "tokenizer.json", "model.pth") if not (folder / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {', '.join(missing)}; train a checkpoint there with "
                                "`cadlab train-babygpt --out FOLDER` or use the shipped one (no argument).")
    config = json.loads((folder / "config.json").read_text())
    tokenizer = CharTokenizer.load(folder / "tokenizer.json")
    model = BabyGPT(**config["model"])
    model.load_state_dict(torch.load(folder / "model.pth", map_location="cpu", weights_only=True))
    model.eval()
    return model, tokenizer


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------
# Text in, text out, honestly timed (the CLI and the notebook's widget sit on these)
# ---------------------------------------------------------------------------------------

def synchronize(device) -> None:
    """Wait until queued GPU work is done. CUDA and MPS run kernels asynchronously: a timer read
    without this measures how fast work was *queued*, not done. On the CPU it does nothing."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def generate_text(model: BabyGPT, tokenizer: CharTokenizer, prompt: str, max_new_tokens: int = 200, *,
                  temperature: float = 0.8, top_k: int = 0, top_p: float = 1.0, use_kv_cache: bool = True,
                  generator: torch.Generator | None = None) -> dict:
    """Continue ``prompt``; returns {"text", "new_tokens", "seconds", "tok_s"} (seconds between synchronized clocks)."""
    if not isinstance(prompt, str) or not prompt:
        raise ValueError("prompt must be a non-empty string: babyGPT needs at least one character to continue.")
    device = next(model.parameters()).device
    idx = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long, device=device)
    synchronize(device)
    t0 = time.perf_counter()
    out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                         use_kv_cache=use_kv_cache, generator=generator)
    synchronize(device)
    seconds = time.perf_counter() - t0
    return {"text": tokenizer.decode(out[0]), "new_tokens": max_new_tokens, "seconds": seconds,
            "tok_s": max_new_tokens / seconds if seconds > 0 else float("inf")}


def tokens_per_second(model: BabyGPT, idx: torch.Tensor, new_tokens: int, use_kv_cache: bool, *, runs: int = 5,
                      warmup: int = 1) -> dict:
    """Greedy decoding speed: ``warmup`` untimed calls, then the median of ``runs`` synchronized timings."""
    if runs < 1 or new_tokens < 1:
        raise ValueError(f"runs and new_tokens must be >= 1, got {runs} and {new_tokens}.")
    for _ in range(warmup):
        model.generate(idx, new_tokens, temperature=0, use_kv_cache=use_kv_cache)
    times = []
    for _ in range(runs):
        synchronize(idx.device)
        t0 = time.perf_counter()
        model.generate(idx, new_tokens, temperature=0, use_kv_cache=use_kv_cache)
        synchronize(idx.device)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {"tok_s": new_tokens / median, "median_s": median, "times_s": times}


def distinct_n(items, n: int = 2) -> float:
    """Distinct-n: the number of different n-grams divided by the number of n-grams in ``items``
    (a list of words, or a string of characters). 1.0 = no n-gram repeats; a loop drives it towards 0."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    grams = [tuple(items[i:i + n]) for i in range(len(items) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0
