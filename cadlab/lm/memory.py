"""Training memory of a decoder, measured and on paper (and the third defect of a CAD-MLLM reproduction's training note).

That note budgets attention as B * H * L^2 * bytes ("10.8 GB just for attention" for Qwen3-8B at
13,000 tokens). That matrix exists only with *eager* attention, which materialises the softmax
probabilities of every head and keeps them for the backward pass. SDPA (and flash attention) work
in tiles and keep only the output and one log-sum-exp per row and head: O(L), not O(L^2). What then
dominates a long sequence is

* the weights (fixed: params x bytes);
* the activations kept for the backward pass: per layer and token about (10 d + 4 i) numbers (the
  norms' inputs, q/k/v after RoPE, the attention output, the MLP's gate, up and product) -- or,
  with gradient checkpointing, only each layer's input (d numbers), plus one layer's activations
  while it is recomputed;
* the logits, B * L * vocab, once as the model's output, once more as the log-softmax the loss
  keeps, and once more for their gradient; a bf16 model doubles them when the loss upcasts to fp32.

``measure_step`` runs one forward + backward (the loss over every position, as a causal-LM
``labels=`` call does) and reports the peak of the process's resident memory above what it was
before the step (sampled every millisecond by a thread) and the time. ``estimate`` is the formula
above for a transformers config; ``qwen3_8b`` redoes the note's arithmetic on paper.

    python -m cadlab.lm.memory                      # SmolLM2-135M-Instruct table -> cadlab/data/autocomplete_memory.json
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import threading
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from cadlab import arguments
from cadlab.lm.models import DECODER_PROJECTIONS, load_lm
from cadlab.paths import DATA

DATA_FILE = DATA / "autocomplete_memory.json"
PAGE = os.sysconf("SC_PAGE_SIZE")
# Qwen3-8B's published config (hidden, layers, heads, KV heads, head_dim, intermediate, vocab, tied)
QWEN3_8B = dict(hidden_size=4096, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                intermediate_size=12288, vocab_size=151936, tie_word_embeddings=False)


def resident_bytes() -> int:
    """This process's resident memory now (from /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:                          # not glibc: no trimming, the figures may include reused memory
        return None


def release_freed_memory() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``), and make every allocation of
    128 kB or more its own mapping (``mallopt(M_MMAP_THRESHOLD)``, which also stops glibc from raising
    that threshold), so a freed tensor leaves the resident size and the next step's peak is its own."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(-3, 128 * 1024)         # M_MMAP_THRESHOLD
        libc.malloc_trim(0)


def peak_during(fn, interval: float = 0.001):
    """``(fn(), peak resident bytes above the start, seconds)``; a thread samples the resident size."""
    gc.collect()
    release_freed_memory()
    start = resident_bytes()
    peak, running = [start], [True]

    def sample():
        while running[0]:
            peak[0] = max(peak[0], resident_bytes())
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    try:
        result = fn()
    finally:
        seconds = time.perf_counter() - t0
        peak[0] = max(peak[0], resident_bytes())
        running[0] = False
        thread.join()
    return result, peak[0] - start, seconds


def set_checkpointing(model, on: bool) -> None:
    """Activation (gradient) checkpointing on or off, non-reentrant; works on a peft wrapper too."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    if on:
        target.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        target.enable_input_require_grads()     # frozen embeddings: the checkpointed inputs need grad
    elif target.is_activation_checkpointing:
        target.activation_checkpointing_disable()
        if getattr(target, "_require_grads_hook", None) is not None:
            target.disable_input_require_grads()


def measure_step(model, length: int, attention: str = "sdpa", checkpointing: bool = False, repeats: int = 2,
                 seed: int = 0) -> dict:
    """Peak extra memory (MB) and seconds of one forward + backward of ``model`` on ``length`` random
    tokens with ``attention`` ('eager' or 'sdpa') and gradient checkpointing on or off: one warm-up
    step, then the median of ``repeats``. Gradients are freed after every step."""
    model.set_attn_implementation(attention)
    set_checkpointing(model, checkpointing)
    model.train()
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (1, length), generator=torch.Generator().manual_seed(seed))

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return float(loss.detach())

    peaks, times = [], []
    for i in range(repeats + 1):
        _, peak, seconds = peak_during(step)
        model.zero_grad(set_to_none=True)
        if i:
            peaks.append(peak)
            times.append(seconds)
    set_checkpointing(model, False)
    model.set_attn_implementation("sdpa")
    return {"length": length, "attention": attention, "checkpointing": checkpointing,
            "peak_mb": round(statistics.median(peaks) / 2**20, 1), "seconds": round(statistics.median(times), 3)}


def _get(config, name, default=None):
    return config.get(name, default) if isinstance(config, dict) else getattr(config, name, default)


def estimate(config, length: int, attention: str = "sdpa", checkpointing: bool = False, bytes_per: int = 4,
             logits_bytes: int = 4, batch: int = 1) -> dict:
    """The formula, in bytes, term by term, for one training step of a Llama/Qwen-style decoder.

    * ``attention``: eager keeps B*H*L^2 probabilities per layer; without checkpointing every layer's
      stay until the backward, which needs two more such matrices at a time (the gradients of the
      probabilities and of the scores): (layers + 2) * B*H*L^2; with checkpointing one layer is
      recomputed at a time: 3 * B*H*L^2. SDPA keeps none.
    * ``activations``: B*L*(10 d + 4 i) per layer, all layers without checkpointing; with it, the
      layer inputs B*L*d of every layer plus one layer's activations.
    * ``logits``: 3 * B*L*vocab (output, the loss's log-softmax, their gradient) at ``logits_bytes``.
    Weights are not included (they are in memory before the step)."""
    d, layers, heads = _get(config, "hidden_size"), _get(config, "num_hidden_layers"), _get(config, "num_attention_heads")
    i, vocab = _get(config, "intermediate_size"), _get(config, "vocab_size")
    tokens = batch * length
    per_layer = tokens * (10 * d + 4 * i) * bytes_per
    probs = batch * heads * length**2 * bytes_per if attention == "eager" else 0
    if checkpointing:
        activations = layers * tokens * d * bytes_per + per_layer
        attention_term = 3 * probs            # one layer recomputed: scores, probabilities, their gradient
    else:
        activations = layers * per_layer
        attention_term = (layers + 2) * probs  # kept in every layer, + two transient ones in the backward
    logits = 3 * tokens * vocab * logits_bytes
    return {"attention": attention_term, "activations": activations, "logits": logits,
            "total": attention_term + activations + logits}


def parameters(config) -> int:
    """Parameter count of a Llama/Qwen3-style decoder (no biases; q/k norms ignored)."""
    d, layers, i, vocab = (_get(config, k) for k in ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size"))
    heads, kv = _get(config, "num_attention_heads"), _get(config, "num_key_value_heads")
    head_dim = _get(config, "head_dim") or d // heads
    attention = d * heads * head_dim * 2 + d * kv * head_dim * 2
    embeddings = vocab * d * (1 if _get(config, "tie_word_embeddings", True) else 2)
    return embeddings + layers * (attention + 3 * d * i + 2 * d) + d


def qwen3_8b(length: int = 13_000) -> dict:
    """The note's Qwen3-8B at 13,000 tokens (batch 1, bf16 weights, LoRA r=8), redone term by term, in GB.

    ``seed_attention_one_layer`` is the note's own figure, B*H*L^2*2 bytes, which is one layer's
    eager probabilities; eager without checkpointing would keep it in all 36 layers."""
    gb = 1e9
    eager = estimate(QWEN3_8B, length, "eager", checkpointing=True, bytes_per=2, logits_bytes=2)
    sdpa = estimate(QWEN3_8B, length, "sdpa", checkpointing=True, bytes_per=2, logits_bytes=2)
    sdpa_fp32_logits = estimate(QWEN3_8B, length, "sdpa", checkpointing=True, bytes_per=2, logits_bytes=4)
    weights = parameters(QWEN3_8B) * 2
    layer_inputs = QWEN3_8B["num_hidden_layers"] * length * QWEN3_8B["hidden_size"] * 2
    one_layer = length * (10 * QWEN3_8B["hidden_size"] + 4 * QWEN3_8B["intermediate_size"]) * 2
    logits_bf16 = length * QWEN3_8B["vocab_size"] * 2
    return {
        "length": length, "parameters": parameters(QWEN3_8B),
        "seed_attention_one_layer_gb": round(QWEN3_8B["num_attention_heads"] * length**2 * 2 / gb, 2),
        "eager_all_layers_no_checkpointing_gb": round(QWEN3_8B["num_hidden_layers"] * QWEN3_8B["num_attention_heads"]
                                                      * length**2 * 2 / gb, 1),
        "weights_gb": round(weights / gb, 2),
        "checkpointed_layer_inputs_gb": round(layer_inputs / gb, 2),
        "one_layer_recomputed_gb": round(one_layer / gb, 2),
        "logits_bf16_once_gb": round(logits_bf16 / gb, 2),
        "logits_fp32_once_gb": round(2 * logits_bf16 / gb, 2),
        "total_sdpa_checkpointing_gb": round((weights + sdpa["total"]) / gb, 1),
        "total_sdpa_checkpointing_fp32_logits_gb": round((weights + sdpa_fp32_logits["total"]) / gb, 1),
        "total_eager_checkpointing_gb": round((weights + eager["total"]) / gb, 1),
    }


def measure_table(model, lengths=(256, 512, 1024), attentions=("eager", "sdpa"), checkpointing=(False, True),
                  repeats: int = 2, progress: bool = True) -> list[dict]:
    """``measure_step`` for every combination, each row with the formula's total (MB) beside it."""
    rows = []
    for length in lengths:
        for attention in attentions:
            for ckpt in checkpointing:
                row = measure_step(model, length, attention, ckpt, repeats=repeats)
                row["formula_mb"] = round(estimate(model.config, length, attention, ckpt)["total"] / 2**20, 1)
                rows.append(row)
                if progress:
                    print(row, flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cadlab.lm.memory", description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=arguments.positive_int, nargs="+", default=[256, 512, 1024],
                        help="sequence lengths to measure (tokens)")
    parser.add_argument("--repeats", type=arguments.positive_int, default=2, help="steps per row, the median kept")
    parser.add_argument("--threads", type=arguments.positive_int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=DATA_FILE, help="the JSON table written at the end")
    args = parser.parse_args(argv)
    arguments.writable_file(args.out, parser.prog)        # before minutes of measuring, not after
    torch.set_num_threads(args.threads)
    model, _ = load_lm("SmolLM2-135M-Instruct")
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                             target_modules=list(DECODER_PROJECTIONS)))
    rows = measure_table(model, args.lengths, repeats=args.repeats)
    result = {"model": "SmolLM2-135M-Instruct + LoRA r=8 (all projections), float32, batch 1",
              "torch_threads": args.threads, "repeats": args.repeats,
              "measured": "peak resident memory above the start of the step (MB), median of repeats after a warm-up",
              "rows": rows, "qwen3_8b_13000": qwen3_8b(13_000)}
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["qwen3_8b_13000"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
