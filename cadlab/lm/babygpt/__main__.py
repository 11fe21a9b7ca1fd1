"""buildyourownllm's interactive loop: ``cadlab babygpt`` reads a prompt, prints babyGPT's continuation.

Type a prompt and press Enter; the model continues it and reports tokens per second. End
with Ctrl-D (end of input) or Ctrl-C: both exit cleanly with status 0.
"""

from __future__ import annotations

import argparse
import sys

import torch

from cadlab.lm.babygpt import generate_text, load_babygpt
from cadlab.paths import BABYGPT_DIR


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cadlab babygpt", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=str(BABYGPT_DIR), help="folder with model.pth, config.json, tokenizer.json")
    parser.add_argument("--max-new-tokens", type=int, default=300)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None, help="seed the sampler (default: a fresh random one)")
    parser.add_argument("--no-cache", action="store_true", help="recompute the whole window at every step")
    args = parser.parse_args(argv)
    if args.max_new_tokens < 1:
        parser.error(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    try:
        model, tokenizer = load_babygpt(args.checkpoint)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    generator = torch.Generator()
    if args.seed is None:
        generator.seed()
    else:
        generator.manual_seed(args.seed)
    print(f"babyGPT ({args.checkpoint}). Type a prompt and press Enter; Ctrl-D or Ctrl-C to quit.")
    while True:
        try:
            prompt = input("prompt> ")
            if not prompt:
                continue
            result = generate_text(model, tokenizer, prompt, args.max_new_tokens, temperature=args.temperature,
                                   top_k=args.top_k, top_p=args.top_p, use_kv_cache=not args.no_cache,
                                   generator=generator)
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        except ValueError as error:   # unknown characters, bad sampling settings
            print(f"error: {error}")
            continue
        print(result["text"])
        print(f"[{result['new_tokens']} tokens in {result['seconds']:.2f} s, {result['tok_s']:.0f} tok/s]")


if __name__ == "__main__":
    sys.exit(main())
