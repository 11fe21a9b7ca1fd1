"""Grammar-constrained decoding by hand: a grammar, the automaton it defines, and the mask it puts on
the logits at every step.

**The grammar** is regular, written with five building blocks: ``Text("w0=")`` (exactly this text),
``Chars("0123456789")`` (one of these characters), ``Seq(a, b, ...)`` (one after the other),
``Alt(a, b, ...)`` (one of them) and ``Repeat(a, least, most)`` (``most=None``: no limit). Plain
strings inside ``Seq`` and ``Alt`` are ``Text``. ``to_regex(grammar)`` writes the same language as a
regular expression, which is how a library receives it.

**The automaton.** Thompson's construction turns the grammar into a nondeterministic automaton (NFA):
every character of a ``Text`` and every ``Chars`` is an edge, ``Seq`` chains fragments, ``Alt`` and
``Repeat`` add empty (epsilon) edges. ``Automaton`` runs it as a deterministic one, built lazily: a
state is the set of NFA nodes the text so far can be in (the subset construction), numbered the first
time it is reached, and each ``(state, character) -> state`` step is computed once and cached.
``DEAD`` (-1) is the empty set: no sentence of the grammar starts with this text.

**The mask.** After text ``x`` the automaton is in state ``q = δ*(start, x)``. A token ``t`` of the
vocabulary is allowed iff ``δ*(q, t) != DEAD``: the text stays a prefix of some sentence. The end
token is allowed iff ``q`` accepts (the text is a whole sentence). Checking every token walks every
character of the vocabulary; ``TokenTrie`` shares the walk among tokens with a common beginning and
stops a branch at its first dead character, so one step visits only the live part of the trie.
``HandMatcher`` keeps ``q`` for one sequence; ``ConstrainedLogits`` is the ``LogitsProcessor`` that
sets every forbidden logit to -inf, one matcher per row (the mask comes before temperature and top-p,
as transformers runs custom processors before its warpers).

**Forced text.** Where the grammar leaves no choice, a library such as llguidance allows only the
token the tokenizer itself would write there (``HandMatcher(fast_forward=...)`` follows its rule), so
that the model reads its own kind of tokenization; with that rule the hand mask equals llguidance's
(``tests/test_grammar.py``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

DEAD = -1


# --------------------------------------------------------------------------------------------
# The grammar
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Chars:
    chars: frozenset

    def __init__(self, chars):
        object.__setattr__(self, "chars", frozenset(chars))


@dataclass(frozen=True)
class Seq:
    parts: tuple

    def __init__(self, *parts):
        object.__setattr__(self, "parts", tuple(_node(p) for p in parts))


@dataclass(frozen=True)
class Alt:
    options: tuple

    def __init__(self, *options):
        object.__setattr__(self, "options", tuple(_node(o) for o in options))


@dataclass(frozen=True)
class Repeat:
    part: object
    least: int = 0
    most: int | None = None

    def __init__(self, part, least: int = 0, most: int | None = None):
        object.__setattr__(self, "part", _node(part))
        object.__setattr__(self, "least", least)
        object.__setattr__(self, "most", most)


def _node(g):
    return Text(g) if isinstance(g, str) else g


def one_of(strings) -> Alt | Text:
    """A grammar of exactly these strings, written as a trie of the strings: shared beginnings once, and
    first characters whose rests are the same grammar merged into one ``Chars``.
    ``one_of(["10", "12", "2"])`` is ``Alt(Seq("1", Chars("02")), "2")``; ``one_of(["a1", "b1"])`` is
    ``Seq(Chars("ab"), "1")``."""
    strings = sorted(set(strings))
    if strings == [""]:
        return Text("")
    by_rest: dict = {}
    for first in sorted({s[0] for s in strings if s}):
        rest = one_of([s[1:] for s in strings if s and s[0] == first])
        by_rest.setdefault(rest, []).append(first)
    options = [Text("")] if "" in strings else []
    for rest, firsts in by_rest.items():
        head = Text(firsts[0]) if len(firsts) == 1 else Chars(firsts)
        options.append(head if rest == Text("") else Seq(head, rest))
    return options[0] if len(options) == 1 else Alt(*options)


def integers(lo: int, hi: int) -> Alt | Text:
    """The decimal integers ``lo .. hi``, as Python writes them (no leading zeros, ``-`` for negatives)."""
    return one_of(str(n) for n in range(lo, hi + 1))


def to_regex(g) -> str:
    """The grammar as a regular expression (the syntax Python's ``re`` and the Rust regex crate share)."""
    if isinstance(g, Text):
        return re.escape(g.text)
    if isinstance(g, Chars):
        return "[" + "".join(re.escape(c) for c in sorted(g.chars)) + "]"
    if isinstance(g, Seq):
        return "".join(_group(p) if isinstance(p, Alt) else to_regex(p) for p in g.parts)
    if isinstance(g, Alt):
        return "|".join(to_regex(o) for o in g.options)
    if isinstance(g, Repeat):
        most = "" if g.most is None else str(g.most)
        return _group(g.part) + ("{%d,%s}" % (g.least, most))
    raise TypeError(f"not a grammar node: {g!r}")


def _group(g) -> str:
    return "(?:" + to_regex(g) + ")"


# --------------------------------------------------------------------------------------------
# The automaton
# --------------------------------------------------------------------------------------------
class NFA:
    """Thompson's construction: ``edges[n]`` = [(characters, target)], ``empty[n]`` = [target]."""

    def __init__(self, grammar):
        self.edges, self.empty = [], []
        self.start = self.node()
        self.accept = self.add(grammar, self.start)

    def node(self) -> int:
        self.edges.append([])
        self.empty.append([])
        return len(self.edges) - 1

    def add(self, g, start: int) -> int:
        """Add the fragment of ``g`` starting at node ``start``; return its end node."""
        if isinstance(g, Text):
            for ch in g.text:
                end = self.node()
                self.edges[start].append((frozenset(ch), end))
                start = end
            return start
        if isinstance(g, Chars):
            end = self.node()
            self.edges[start].append((g.chars, end))
            return end
        if isinstance(g, Seq):
            for part in g.parts:
                start = self.add(part, start)
            return start
        if isinstance(g, Alt):
            end = self.node()
            for option in g.options:
                begin = self.node()
                self.empty[start].append(begin)
                self.empty[self.add(option, begin)].append(end)
            return end
        if isinstance(g, Repeat):
            for _ in range(g.least):
                start = self.add(g.part, start)
            if g.most is None:                      # a loop: the part may run again from its end
                hub = self.node()
                self.empty[start].append(hub)
                self.empty[self.add(g.part, hub)].append(hub)
                return hub
            ends = [start]
            for _ in range(g.most - g.least):       # optional copies, each may be the last
                start = self.add(g.part, start)
                ends.append(start)
            end = self.node()
            for e in ends:
                self.empty[e].append(end)
            return end
        raise TypeError(f"not a grammar node: {g!r}")

    def closure(self, nodes) -> frozenset:
        """Every node reachable from ``nodes`` by empty edges."""
        seen, stack = set(nodes), list(nodes)
        while stack:
            for n in self.empty[stack.pop()]:
                if n not in seen:
                    seen.add(n)
                    stack.append(n)
        return frozenset(seen)


class Automaton:
    """The grammar's deterministic automaton, built lazily (subset construction, cached)."""

    def __init__(self, grammar):
        self.nfa = NFA(grammar)
        self.sets: list[frozenset] = []
        self.number: dict[frozenset, int] = {}
        self.next: list[dict[str, int]] = []
        self.start = self._state(self.nfa.closure([self.nfa.start]))

    def _state(self, nodes: frozenset) -> int:
        if not nodes:
            return DEAD
        if nodes not in self.number:
            self.number[nodes] = len(self.sets)
            self.sets.append(nodes)
            self.next.append({})
        return self.number[nodes]

    def step(self, state: int, ch: str) -> int:
        """``δ(state, ch)``: the state after one more character (``DEAD`` stays dead)."""
        if state == DEAD:
            return DEAD
        cached = self.next[state].get(ch)
        if cached is None:
            targets = [t for n in self.sets[state] for chars, t in self.nfa.edges[n] if ch in chars]
            cached = self.next[state][ch] = self._state(self.nfa.closure(targets))
        return cached

    def walk(self, state: int, text: str) -> int:
        """``δ*(state, text)``."""
        for ch in text:
            state = self.step(state, ch)
            if state == DEAD:
                break
        return state

    def choices(self, state: int) -> set[str]:
        """The characters that may come next after ``state``."""
        if state == DEAD:
            return set()
        return {ch for n in self.sets[state] for chars, _ in self.nfa.edges[n] for ch in chars}

    def forced_text(self, state: int) -> str:
        """The text the grammar writes with no choice from ``state``: while exactly one character may come
        next and the text so far is not a whole sentence, that character."""
        out = []
        while not self.accepts(state):
            choices = self.choices(state)
            if len(choices) != 1:
                break
            ch = choices.pop()
            out.append(ch)
            state = self.step(state, ch)
        return "".join(out)

    def accepts(self, state: int) -> bool:
        return state != DEAD and self.nfa.accept in self.sets[state]

    def matches(self, text: str) -> bool:
        return self.accepts(self.walk(self.start, text))


# --------------------------------------------------------------------------------------------
# The vocabulary as a trie, and the mask
# --------------------------------------------------------------------------------------------
def token_texts(tokenizer) -> dict[int, str]:
    """Each ordinary token's text (``id -> str``); special tokens are left out (a grammar of text never
    allows them). Byte-level tokens are turned back into the characters they stand for."""
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    vocab = tokenizer.get_vocab()
    return {i: tokenizer.convert_tokens_to_string([tok]) for tok, i in vocab.items() if i not in special}


class TokenTrie:
    """The vocabulary's token texts in a trie: ``children[n]`` = {char: node}, ``ids[n]`` = the tokens
    whose text ends at node ``n``. ``allowed(automaton, state)`` walks it from ``state``."""

    def __init__(self, texts: dict[int, str]):
        self.children: list[dict[str, int]] = [{}]
        self.ids: list[list[int]] = [[]]
        for token_id, text in texts.items():
            if not text:
                continue
            node = 0
            for ch in text:
                child = self.children[node].get(ch)
                if child is None:
                    child = len(self.children)
                    self.children[node][ch] = child
                    self.children.append({})
                    self.ids.append([])
                node = child
            self.ids[node].append(token_id)

    def allowed(self, automaton: Automaton, state: int, node: int = 0) -> tuple[list[int], int]:
        """The ids of the tokens that keep the text inside the grammar after ``state``, and the number
        of trie nodes visited. A branch stops at its first dead character. (From ``node``: the tokens
        below it, whose characters after ``node``'s are walked from ``state``.)"""
        out, visited = [], 0
        stack = [(node, state)]
        while stack:
            node, q = stack.pop()
            for ch, child in self.children[node].items():
                visited += 1
                q2 = automaton.step(q, ch)
                if q2 != DEAD:
                    out.extend(self.ids[child])
                    stack.append((child, q2))
        return out, visited

    def node(self, text: str) -> int | None:
        """The trie node of ``text`` (None if no token starts with it)."""
        node = 0
        for ch in text:
            node = self.children[node].get(ch)
            if node is None:
                return None
        return node


class HandMatcher:
    """One sequence's place in the grammar: the automaton state of the text written so far.

    ``mask()`` is the vocabulary-sized boolean mask of allowed tokens (``end_ids`` allowed iff the text
    is a whole sentence); ``advance(token_id)`` moves on. An end token finishes the matcher; a token the
    grammar forbids leaves it dead (``is_dead``), so that a row that went wrong is reported, not masked.

    ``fast_forward`` (a function text -> token ids, the tokenizer's own tokenization): where the grammar
    leaves no choice (``Automaton.forced_text``), the forced text is tokenized as the tokenizer would,
    the tokens at its end that could merge with what comes next are dropped (``_forced_tokens``), and
    only the first of the rest is allowed. This is llguidance's rule: it keeps a forced stretch in the
    tokenization the model was trained on. Without it (``None``) every token that keeps the text in the
    grammar is allowed."""

    def __init__(self, automaton: Automaton, trie: TokenTrie, texts: dict[int, str], end_ids, vocab_size: int,
                 fast_forward=None):
        self.automaton, self.trie, self.texts = automaton, trie, texts
        self.fast_forward = fast_forward
        self.end_ids, self.vocab_size = list(end_ids), vocab_size
        self.state = automaton.start
        self.last_id, self.last_text = None, ""
        self.finished = False

    @property
    def is_dead(self) -> bool:
        return self.state == DEAD

    def allowed_ids(self) -> list[int]:
        if self.fast_forward is not None:
            ahead = self._forced_tokens()
            if ahead:
                return ahead[:1]
        ids, _ = self.trie.allowed(self.automaton, self.state)
        return ids + (self.end_ids if self.automaton.accepts(self.state) else [])

    def _forced_tokens(self) -> list[int]:
        """The tokens of the forced text that nothing can change, as llguidance computes them:

        1. the last token written and the forced text are tokenized together (if the tokenizer would
           not start with that token, the forced text alone);
        2. the longest end of that text (within the last four tokens) that a longer token starts with,
           where the grammar allows that token's remaining characters after the forced text, could
           merge with what follows: the tokens covering it are dropped;
        3. what is left after the last token written is forced."""
        forced = self.automaton.forced_text(self.state)
        if not forced:
            return []
        written = [self.last_id] if self.last_id is not None else []
        ids = self.fast_forward(self.last_text + forced) if written else []
        if ids[:1] != written:
            written, ids = [], self.fast_forward(forced)
        end = self.automaton.walk(self.state, forced)
        tail = "".join(self.texts.get(i, "") for i in ids[-4:])
        for start in range(len(tail)):
            node = self.trie.node(tail[start:])
            if node is not None and self.trie.allowed(self.automaton, end, node)[0]:
                dropped = 0
                while ids and dropped < len(tail) - start:
                    dropped += len(self.texts.get(ids[-1], ""))
                    ids = ids[:-1]
                break
        return ids[len(written):] if ids[:len(written)] == written else []

    def mask(self) -> torch.Tensor:
        mask = torch.zeros(self.vocab_size, dtype=torch.bool)
        mask[self.allowed_ids()] = True
        return mask

    def advance(self, token_id: int) -> None:
        if self.finished or self.is_dead:
            return
        if token_id in self.end_ids:
            self.finished = self.automaton.accepts(self.state)
            if not self.finished:
                self.state = DEAD
            return
        self.last_id, self.last_text = token_id, self.texts.get(token_id, "\0")
        self.state = self.automaton.walk(self.state, self.last_text)


class HandGrammar:
    """A grammar compiled for one tokenizer: the automaton, the vocabulary's trie; ``matcher()`` gives a
    fresh ``HandMatcher`` for each sequence (``fast_forward=True``: with llguidance's rule for forced text)."""

    def __init__(self, grammar, tokenizer, end_ids=None, fast_forward: bool = False):
        self.fast_forward = (lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]) if fast_forward else None
        self.automaton = Automaton(grammar)
        self.texts = token_texts(tokenizer)
        self.trie = TokenTrie(self.texts)
        self.end_ids = [tokenizer.eos_token_id] if end_ids is None else list(end_ids)
        self.vocab_size = len(tokenizer)

    def matcher(self) -> HandMatcher:
        return HandMatcher(self.automaton, self.trie, self.texts, self.end_ids, self.vocab_size, self.fast_forward)


# --------------------------------------------------------------------------------------------
# The logits processor
# --------------------------------------------------------------------------------------------
class ConstrainedLogits(LogitsProcessor):
    """Set the logits of every token the grammar forbids to -inf, row by row.

    ``new_matcher(row)`` makes row ``row``'s matcher at the first step (a ``HandMatcher`` or a
    ``cadlab.lm.guidance.LibraryMatcher``; the prompt is not part of the sentence, so a matcher for a
    prompt that already holds part of it has taken those tokens). At every later step each matcher
    first takes the token just chosen. A finished or dead row is left unmasked (its tokens are
    padding, or the failure the caller will see). ``mask_seconds`` adds up the time spent here,
    ``steps`` counts the calls."""

    def __init__(self, new_matcher):
        self.new_matcher = new_matcher
        self.matchers = None
        self.mask_seconds, self.steps = 0.0, 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        t0 = time.perf_counter()
        if self.matchers is None:
            self.matchers = [self.new_matcher(row) for row in range(input_ids.shape[0])]
        else:
            for matcher, token in zip(self.matchers, input_ids[:, -1].tolist()):
                matcher.advance(token)
        scores = scores.clone()
        for row, matcher in enumerate(self.matchers):
            if matcher.finished or matcher.is_dead:
                continue
            allowed = matcher.mask()
            scores[row, : allowed.shape[0]][~allowed] = -float("inf")
            scores[row, allowed.shape[0]:] = -float("inf")
        self.mask_seconds += time.perf_counter() - t0
        self.steps += 1
        return scores
