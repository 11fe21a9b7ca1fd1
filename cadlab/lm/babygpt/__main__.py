"""buildyourownllm's interactive loop: ``cadlab babygpt`` reads a prompt, prints babyGPT's continuation.

Type a prompt and press Enter; the model continues it and reports tokens per second. End
with Ctrl-D (end of input) or Ctrl-C: both exit cleanly with status 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from cadlab import arguments
from cadlab.lm.babygpt import generate_text, load_babygpt
from cadlab.lm.models import checkpoint_kind
from cadlab.paths import BABYGPT_DIR


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cadlab babygpt", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=str(BABYGPT_DIR), help="folder with model.pth, config.json, tokenizer.json")
    parser.add_argument("--max-new-tokens", type=arguments.positive_int, default=300)
    parser.add_argument("--temperature", type=arguments.temperature, default=0.8, help="0: greedy (default 0.8)")
    parser.add_argument("--top-k", type=arguments.top_k, default=0, help="keep the k likeliest characters (0: all)")
    parser.add_argument("--top-p", type=arguments.top_p, default=1.0, help="nucleus sampling's p (1: all)")
    parser.add_argument("--seed", type=arguments.seed, default=None, help="seed the sampler (default: a fresh random one)")
    parser.add_argument("--no-cache", action="store_true", help="recompute the whole window at every step")
    args = parser.parse_args(argv)
    kind = checkpoint_kind(args.checkpoint) if Path(args.checkpoint).is_dir() else None
    if kind is not None and kind.name != "babygpt":
        parser.error(f"{args.checkpoint} holds {kind.what}, not babyGPT's: use it with `{kind.command}`; "
                     "give --checkpoint a folder written by `cadlab train-babygpt`")
    try:
        model, tokenizer = load_babygpt(args.checkpoint)
    except (OSError, ValueError, KeyError, RuntimeError) as error:   # missing files, bad JSON, wrong weights
        if isinstance(error, json.JSONDecodeError):
            message = f"config.json or tokenizer.json is not valid JSON ({error.msg}, line {error.lineno})"
        elif isinstance(error, KeyError):
            message = f"config.json lacks {error}"
        else:
            message = " ".join(str(error).split())
        print(f"{parser.prog}: error: cannot load babyGPT from {args.checkpoint}: {message}", file=sys.stderr)
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
        except ValueError as error:   # characters babyGPT does not know (the settings were checked at start)
            print(f"error: {error}")
            continue
        print(result["text"])
        print(f"[{result['new_tokens']} tokens in {result['seconds']:.2f} s, {result['tok_s']:.0f} tok/s]")


if __name__ == "__main__":
    sys.exit(main())
