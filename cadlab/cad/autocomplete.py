"""CAD-sequence autocomplete: given a caption and the first ``kept`` operations of a CAD sequence
(``cadlab.cad.deepcad``), write the rest. Training examples and their loss. "The training note" below
is the source this follows: a CAD-MLLM reproduction's notes on fine-tuning a language model for the task,
whose prompt, boundary and loss this module reproduces and whose two defects it measures and fixes.

**Examples.** ``make_example`` turns (caption, full, kept) into ``input_ids`` and
``labels`` with the training note's prompt, the boundary read from the fast tokenizer's offset mapping;
``seed_boundary`` reproduces the note's ``len(tokenize(partial_text))``, which lands off.

**Loss.** A micro-batch whose labels were all cut away by ``max_seq_length`` has a mean loss of
0/0 = NaN (``seed_micro_batch_losses``); ``accumulation_step`` divides summed token losses by the
number of label tokens in the whole accumulation window and skips empty micro-batches, so it never
returns NaN and its gradients are those of one big batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cadlab.cad.deepcad import kept_counts, sample_sequence, seed_text, serialize, truncations

PROMPT = "Complete this CAD sequence: {caption}\n"


# --------------------------------------------------------------------------------------------
# Training examples
# --------------------------------------------------------------------------------------------
def token_boundary(offsets, cut: int) -> tuple[int, bool]:
    for i, (start, end) in enumerate(offsets):
        if end > cut:
            return i, start < cut
    return len(offsets), False


def label_boundary(tokenizer, text: str, cut: int) -> tuple[int, bool]:
    """``(boundary, straddles)``: the index of the first token of ``text`` that ends after character
    ``cut`` (from the fast tokenizer's offset mapping), and whether that token also starts before
    ``cut`` (then it is labelled, since the model must write it)."""
    return token_boundary(tokenizer(text, return_offsets_mapping=True)["offset_mapping"], cut)


def decision_tokens(tokenizer, caption: str, full: dict) -> dict[int, str]:
    """The tokens of ``PROMPT + serialize(full)`` that decide, after each extrude, between another
    operation (``" ,"``) and the close (``" ]}"``): ``{token index: "continue" | "close"}``, read from
    the fast tokenizer's offset mapping at the end of ``serialize(full, k)``. A sketch is always
    followed by its extrude, so only an extrude's end is a decision."""
    prompt = PROMPT.format(caption=caption)
    offsets = tokenizer(prompt + serialize(full), return_offsets_mapping=True)["offset_mapping"]
    n = len(full["sequence"])
    decisions = {}
    for k in range(1, n + 1):
        if full["sequence"][k - 1]["type"] == "ExtrudeFeature":
            at, _ = token_boundary(offsets, len(prompt) + len(serialize(full, k)))
            decisions[at] = "close" if k == n else "continue"
    return decisions


def make_example(tokenizer, caption: str, full: dict, kept: int, max_seq_length: int | None = None) -> dict:
    """``{"input_ids", "labels"}`` for teacher forcing on ``PROMPT + serialize(full)`` + the end token.

    Labels are -100 for every token of the prompt and of the first ``kept`` operations (the boundary:
    ``label_boundary`` at the end of ``serialize(full, kept)``), then the token ids: they decode to
    exactly the rest of the text plus the end token. With ``max_seq_length`` both lists are cut to
    that length from the right, as the note's tokenizer call does; a cut can leave no label at all
    (see ``seed_micro_batch_losses``)."""
    prompt = PROMPT.format(caption=caption)
    text = prompt + serialize(full)
    encoding = tokenizer(text, return_offsets_mapping=True)
    ids = list(encoding["input_ids"]) + [tokenizer.eos_token_id]
    boundary, _ = token_boundary(encoding["offset_mapping"], len(prompt) + len(serialize(full, kept)))
    labels = [-100] * boundary + ids[boundary:]
    if max_seq_length is not None:
        ids, labels = ids[:max_seq_length], labels[:max_seq_length]
    return {"input_ids": ids, "labels": labels}


def seed_boundary(tokenizer, caption: str, full: dict, kept: int, layout: str = "ours") -> dict:
    """The note's boundary ``len(tokenizer(partial_text))`` next to the true one.

    ``partial`` is ``full`` with its sequence cut to ``kept`` items (the note's ``partial_json``),
    written as a whole JSON document, so it ends with closing brackets that the full text does not
    have at that point. ``layout`` 'ours' writes both texts with ``serialize``; 'seed' with
    ``seed_text`` (json.dumps of entities, properties, sequence, as the note). The true boundary is
    the first token past the kept operations in the full text (``label_boundary``).

    Returns ``{"seed", "true", "error" (seed - true), "masked"}``: masked is the text of the
    completion tokens the note's boundary hides (``""`` when it is not too late)."""
    partial = dict(full, sequence=full["sequence"][:kept])
    prompt = PROMPT.format(caption=caption)
    if layout == "ours":
        full_text, partial_text = prompt + serialize(full), prompt + serialize(partial)
        cut = len(prompt) + len(serialize(full, kept))
    elif layout == "seed":
        full_text, partial_text = prompt + seed_text(full), prompt + seed_text(partial)
        cut = next(i for i, (a, b) in enumerate(zip(full_text, partial_text)) if a != b)
    else:
        raise ValueError(f"layout must be 'ours' or 'seed', got {layout!r}")
    seed = len(tokenizer(partial_text)["input_ids"])
    encoding = tokenizer(full_text, return_offsets_mapping=True)
    true, _ = token_boundary(encoding["offset_mapping"], cut)
    ids = encoding["input_ids"]
    masked = tokenizer.decode(ids[true:seed]) if seed > true else ""
    return {"seed": seed, "true": true, "error": seed - true, "masked": masked}


def examples(n_parts: int, start: int = 0) -> list[tuple[str, dict, int]]:
    """``(caption, full, kept)`` for every truncation of the parts ``sample_sequence(start .. start+n-1)``."""
    out = []
    for seed in range(start, start + n_parts):
        caption, full = sample_sequence(seed)
        out += [(caption, full, doc["truncation_metadata"]["kept_operations"]) for _, doc in truncations(full)]
    return out


# --------------------------------------------------------------------------------------------
# The loss: NaN from empty micro-batches, and the fix
# --------------------------------------------------------------------------------------------
def label_tokens(labels) -> int:
    """How many tokens a causal LM is scored on: labels[1:] that are not -100 (the loss shifts by one)."""
    labels = torch.as_tensor(labels)
    return int((labels[..., 1:] != -100).sum())


def as_batch(example):
    """(input_ids, labels, attention_mask) of a micro-batch as (batch, length) tensors."""
    ids = torch.as_tensor(example["input_ids"])
    ids = ids.unsqueeze(0) if ids.dim() == 1 else ids
    labels = torch.as_tensor(example["labels"]).reshape(ids.shape)
    mask = example.get("attention_mask")
    mask = torch.ones_like(ids) if mask is None else torch.as_tensor(mask).reshape(ids.shape)
    return ids, labels, mask


def seed_micro_batch_losses(model, micro_batches) -> list[float]:
    """The note's loss per micro-batch: the model's own mean over label tokens. A micro-batch with no
    label token (all -100 after ``max_seq_length``) gives 0/0 = NaN."""
    losses = []
    with torch.no_grad():
        for mb in micro_batches:
            ids, labels, mask = as_batch(mb)
            losses.append(float(model(input_ids=ids, attention_mask=mask, labels=labels).loss))
    return losses


def seed_accumulation_step(model, micro_batches) -> list[float]:
    """The note's loop: ``loss = outputs.loss``; ``if not isnan(loss): (loss / n).backward()``. Returns
    the micro-batch losses (NaN ones included). Each micro-batch weighs the same whatever its number
    of label tokens, so the gradient is a mean of means, not the window's token mean."""
    losses = []
    for mb in micro_batches:
        ids, labels, mask = as_batch(mb)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        if not torch.isnan(loss):
            (loss / len(micro_batches)).backward()
        losses.append(float(loss.detach()))
    return losses


def token_weights(example, labels: torch.Tensor) -> torch.Tensor:
    """Per-token loss weights of a micro-batch, aligned with ``labels[..., 1:]`` (what each position
    predicts): 0 where the label is -100, else ``example["weights"]`` (1 when there are none)."""
    valid = (labels[..., 1:] != -100).float()
    weights = example.get("weights")
    if weights is None:
        return valid
    return torch.as_tensor(weights, dtype=torch.float32).reshape(labels.shape)[..., 1:] * valid


def accumulation_step(model, micro_batches, optimizer=None) -> dict:
    """One optimizer step over an accumulation window, never NaN.

    loss = (sum over micro-batches of the summed token cross-entropies) / (label tokens in the whole
    window); each micro-batch backpropagates its summed loss divided by the window's token count, so
    the accumulated gradient is exactly that of one big batch. Micro-batches with no label token are
    skipped (they add nothing to either sum). A window with no label token at all does no backward
    and no step. A micro-batch may carry per-token ``weights`` (``part_example``): then both sums are
    weighted, loss = sum w_t l_t / sum w_t.

    The logits are computed only from the first position that predicts a label onwards
    (``logits_to_keep``): the prompt and the kept operations need no (L x vocab) logits, which are
    the biggest activation of a small model. Returns ``{"loss" (float, or None for an empty
    window), "tokens", "weight", "skipped"}``."""
    prepared = []
    for mb in micro_batches:
        ids, labels, mask = as_batch(mb)
        prepared.append((ids, labels, mask, token_weights(mb, labels)))
    counts = [int((w > 0).sum()) for *_, w in prepared]
    total = float(sum(float(w.sum()) for *_, w in prepared))
    if total == 0:
        return {"loss": None, "tokens": 0, "weight": 0.0, "skipped": len(micro_batches)}
    summed = 0.0
    for (ids, labels, mask, weights), n in zip(prepared, counts):
        if n == 0:
            continue
        first = int((weights > 0).any(0).nonzero()[0]) if weights.dim() == 2 else 0   # predicts labels[first + 1]
        keep = ids.shape[1] - first
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits
        nll = F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), labels[:, first + 1:], ignore_index=-100,
                              reduction="none")
        loss = (nll * weights[:, first:]).sum()
        (loss / total).backward()
        summed += float(loss.detach())
    if optimizer is not None:
        optimizer.step()
        optimizer.zero_grad()
    return {"loss": summed / total, "tokens": sum(counts), "weight": total, "skipped": counts.count(0)}


def part_example(tokenizer, caption: str, full: dict, kept=None, max_seq_length: int | None = None,
                 decision_weight: float = 1.0) -> dict:
    """Every truncation of one part as a single micro-batch: teacher forcing feeds the *full* text
    whatever ``kept`` is, so the examples ``make_example(..., k)`` for k in ``kept`` (default: the
    public script's ``kept_counts``) share their ``input_ids`` and differ only in where the labels
    start. ``labels`` are those of the smallest k (the union), and ``weights[t]`` counts the examples
    that score token t. One forward pass then gives exactly the loss (and gradient) of the separate
    examples under ``accumulation_step``: sum over examples and tokens of l_t, over the same count."""
    kept = sorted(kept_counts(len(full["sequence"])) if kept is None else kept)
    if not kept:
        raise ValueError("a part needs at least two operations to have a truncation")
    examples_ = [make_example(tokenizer, caption, full, k, max_seq_length) for k in kept]
    weights = [sum(ex["labels"][t] != -100 for ex in examples_) for t in range(len(examples_[0]["labels"]))]
    if decision_weight != 1.0:
        for t in decision_tokens(tokenizer, caption, full):
            if t < len(weights):
                weights[t] *= decision_weight
    return {"input_ids": examples_[0]["input_ids"], "labels": examples_[0]["labels"], "weights": weights}


def length_that_fits(lengths, share: float = 0.8) -> int:
    """The smallest max_seq_length that fits ``share`` of the examples whole (the note: 13000 fits 80 %)."""
    ordered = sorted(lengths)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]
