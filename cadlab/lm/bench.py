"""Benchmarks that print figures (never asserted in tests): ``python -m cadlab.lm.bench decode``.

``decode`` times greedy generation of a fixed number of new tokens three ways - our loop with
the KV cache, ``model.generate`` (also cached), our loop without the cache - after a warm-up,
and prints the median of several runs of each. Every run really produces ``new_tokens``
tokens: our loop gets no EOS id (so it never stops early) and ``model.generate`` gets
``min_new_tokens = max_new_tokens`` (which masks EOS). The last line printed is JSON:

    tok_s_cached, tok_s_generate, tok_s_uncached   new tokens / wall time of the whole call
    ratio_vs_generate = tok_s_cached / tok_s_generate
    cache_speedup     = tok_s_cached / tok_s_uncached
    ttft_s            prefill time of the prompt (time to first token)
    decode_s_per_token = (cached time - ttft) / (new_tokens - 1)
    achieved_GB_s     = (weight bytes + cache bytes at the mean decode position) / decode_s_per_token
    copy_GB_s         the machine's copy bandwidth at the same thread count (the ceiling a decode step can approach)

Every figure keeps 4 significant digits, never a fixed number of decimals: a tiny model on a busy
machine can move 0.004 GB/s, which two decimals would print as 0.0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from transformers import DynamicCache

from cadlab import arguments
from cadlab.lm.kvcache import copy_bandwidth, kv_cache_bytes, weight_bytes
from cadlab.lm.models import ModelLoadError, check_lm_source, load_lm
from cadlab.lm.sampling import generate, next_token_logits

DEFAULT_PROMPT = "Write a short story about a robot who learns to paint. Describe the colours it discovers."


def _figure(value: float, digits: int = 4) -> float:
    """``value`` to ``digits`` significant digits (a positive figure stays positive, however small)."""
    return float(f"{value:.{digits}g}")


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@torch.no_grad()
def decode_benchmark(model, input_ids: torch.Tensor, *, new_tokens: int = 256, runs: int = 3,
                     uncached_new_tokens: int | None = None, warmup_tokens: int = 8,
                     copy_megabytes: int = 256, log=print) -> dict:
    """Time greedy decoding of one prompt three ways; return the figures as a dict (see module doc).

    ``uncached_new_tokens`` (default: ``new_tokens``) lets a quick run shorten the slow uncached
    loop; ``cache_speedup`` then compares tokens per second at different lengths, and the JSON
    says so. ``log`` receives one human-readable line per run (``None`` for silence).
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.shape[0] != 1:
        raise ValueError("decode_benchmark times one prompt: input_ids must have shape [1, seq].")
    if new_tokens < 2 or runs < 1:
        raise ValueError(f"need new_tokens >= 2 and runs >= 1, got {new_tokens} and {runs}.")
    uncached_new_tokens = uncached_new_tokens or new_tokens
    log = log or (lambda *_: None)
    mask = torch.ones_like(input_ids)
    pad = model.config.pad_token_id if model.config.pad_token_id is not None else 0

    def ours(n, use_cache):
        return lambda: generate(model, input_ids, mask, max_new_tokens=n, temperature=0.0, use_cache=use_cache)

    def library(n):
        return lambda: model.generate(input_ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                      do_sample=False, top_k=None, top_p=None, temperature=None,
                                      pad_token_id=pad)

    def prefill():
        next_token_logits(model, input_ids, mask, torch.arange(input_ids.shape[1])[None],
                          DynamicCache(config=model.config))

    cases = {"cached": ours(new_tokens, True), "generate": library(new_tokens),
             "uncached": ours(uncached_new_tokens, False), "prefill": prefill}
    counts = {"cached": new_tokens, "generate": new_tokens, "uncached": uncached_new_tokens}
    # Warm-up: allocator, oneDNN kernels for every shape class, the generate machinery.
    ours(warmup_tokens, True)(), library(warmup_tokens)(), ours(min(warmup_tokens, 4), False)(), prefill()
    times = {name: [] for name in cases}
    for run in range(runs):
        for name, fn in cases.items():
            times[name].append(_seconds(fn))
        log(f"run {run + 1}/{runs}: " + ", ".join(
            f"{name} {times[name][-1]:.2f} s" + (f" ({counts[name] / times[name][-1]:.1f} tok/s)"
                                                  if name in counts else "") for name in cases))
    median = {name: statistics.median(values) for name, values in times.items()}
    tok_s = {name: counts[name] / median[name] for name in counts}
    decode_s = max(median["cached"] - median["prefill"], 1e-9) / (new_tokens - 1)
    mean_context = input_ids.shape[1] + new_tokens / 2
    moved = weight_bytes(model) + kv_cache_bytes(model.config, int(mean_context), dtype=model.dtype)
    return {
        "model": getattr(model.config, "_name_or_path", "") or model.config.model_type,
        "dtype": str(model.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "prompt_tokens": input_ids.shape[1],
        "new_tokens": new_tokens,
        "uncached_new_tokens": uncached_new_tokens,
        "runs": runs,
        "tok_s_cached": _figure(tok_s["cached"]),
        "tok_s_generate": _figure(tok_s["generate"]),
        "tok_s_uncached": _figure(tok_s["uncached"]),
        "ratio_vs_generate": _figure(tok_s["cached"] / tok_s["generate"]),
        "cache_speedup": _figure(tok_s["cached"] / tok_s["uncached"]),
        "ttft_s": _figure(median["prefill"]),
        "decode_s_per_token": _figure(decode_s),
        "weight_MB": _figure(weight_bytes(model) / 1e6),
        "achieved_GB_s": _figure(moved / decode_s / 1e9),
        "copy_GB_s": _figure(copy_bandwidth(copy_megabytes)),
    }


def _at_least_two(text: str) -> int:
    """A token count the decode step can be timed on: the first new token is the prefill's."""
    value = arguments.positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 2 (the first token is the "
                                         f"prefill's), got {text!r}")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cadlab bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    decode = sub.add_parser("decode", help="tokens/s of our cached loop vs model.generate vs no cache")
    decode.add_argument("--new-tokens", type=_at_least_two, default=256, help="tokens generated per run (default 256)")
    decode.add_argument("--uncached-new-tokens", type=arguments.positive_int, default=None,
                        help="shorter length for the slow uncached loop (default: --new-tokens)")
    decode.add_argument("--runs", type=arguments.positive_int, default=3,
                        help="timed runs per case, median reported (default 3)")
    decode.add_argument("--threads", type=arguments.positive_int, default=None,
                        help="torch threads (default: torch's choice)")
    decode.add_argument("--prompt", default=DEFAULT_PROMPT, help="user message, wrapped in the chat template")
    decode.add_argument("--model", default=None, help="passed to cadlab.lm.models.load_lm (default: its resolution)")
    args = parser.parse_args(argv)
    try:
        check_lm_source(args.model, origin="--model")
    except (FileNotFoundError, ModelLoadError) as error:
        decode.error(str(error))
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model, tokenizer = load_lm(args.model)
    except (FileNotFoundError, ModelLoadError) as error:
        arguments.fail(decode.prog, str(error), status=1)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": args.prompt}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)["input_ids"]
    result = decode_benchmark(model, prompt, new_tokens=args.new_tokens, runs=args.runs,
                              uncached_new_tokens=args.uncached_new_tokens,
                              log=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
