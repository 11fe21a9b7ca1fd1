"""The same masks from a library: llguidance (https://github.com/guidance-ai/llguidance), the engine of
structured output in several inference servers.

``LibraryGrammar(tokenizer, regex=... | lark=... | json_schema=...)`` compiles a grammar for one
tokenizer; ``matcher()`` gives a ``LibraryMatcher``, which has ``HandMatcher``'s interface (``mask``,
``advance``, ``finished``, ``is_dead``), so ``cadlab.lm.grammar.ConstrainedLogits`` runs either. llguidance
walks the vocabulary's token trie through the grammar's lexer automaton in Rust and an Earley parser
for context-free rules, so JSON with a schema (a context-free language) costs about what a regular
expression does.
"""

from __future__ import annotations

import numpy as np
import torch

import llguidance
import llguidance.hf


class LibraryMatcher:
    """One sequence's ``llguidance.LLMatcher``, with ``HandMatcher``'s interface."""

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int):
        self.matcher, self.vocab_size = matcher, vocab_size
        self.finished = False

    @property
    def is_dead(self) -> bool:
        return self.matcher.is_error()

    def mask(self) -> torch.Tensor:
        """The allowed tokens: llguidance's bitmask (one bit per token, little-endian in 32-bit words)."""
        bits = np.unpackbits(np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
        return torch.from_numpy(bits[: self.vocab_size].astype(bool))

    def allowed_ids(self) -> list[int]:
        return torch.nonzero(self.mask()).flatten().tolist()

    def advance(self, token_id: int) -> None:
        if self.finished or self.is_dead:
            return
        self.matcher.consume_token(token_id)
        if not self.is_dead and self.matcher.is_stopped():
            self.finished = True

    def advance_tokens(self, token_ids: list[int]) -> None:
        """Move on by tokens that are already written (a prompt's part of the sentence); a ValueError if
        the grammar does not allow them."""
        if not self.matcher.consume_tokens(token_ids):
            raise ValueError(f"the written text is outside the grammar: {self.matcher.get_error().splitlines()[0]}")


class LibraryGrammar:
    """A grammar compiled by llguidance for one tokenizer; ``matcher()`` gives a fresh matcher.

    Exactly one of ``regex`` (the Rust regex crate's syntax, matched as a whole), ``lark`` (llguidance's
    Lark dialect, which may embed ``%json{...}`` schemas) or ``json_schema`` (a dict)."""

    def __init__(self, tokenizer, *, regex: str | None = None, lark: str | None = None, json_schema=None,
                 end_ids=None):
        given = [g for g in (regex, lark, json_schema) if g is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of regex=, lark= or json_schema=.")
        if regex is not None:
            self.grammar = llguidance.LLMatcher.grammar_from_regex(regex)
        elif lark is not None:
            self.grammar = llguidance.LLMatcher.grammar_from_lark(lark)
        else:
            self.grammar = llguidance.LLMatcher.grammar_from_json_schema(json_schema)
        self.vocab_size = len(tokenizer)
        eos = [tokenizer.eos_token_id] if end_ids is None else list(end_ids)
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=self.vocab_size,
                                                      eos_token=eos[0] if len(eos) == 1 else eos)
        error = llguidance.LLMatcher.validate_grammar(self.grammar, self.tokenizer)
        if error:
            raise ValueError(f"llguidance rejected the grammar: {error}")

    def matcher(self, written=()) -> LibraryMatcher:
        """A fresh matcher; ``written``: token ids of the sentence that are already written (in the prompt)."""
        matcher = LibraryMatcher(llguidance.LLMatcher(self.tokenizer, self.grammar, log_level=0), self.vocab_size)
        if written:
            matcher.advance_tokens(list(written))
        return matcher
