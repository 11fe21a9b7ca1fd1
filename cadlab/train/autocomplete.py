"""Fine-tune SmolLM2-135M-Instruct with LoRA to complete CAD sequences, and evaluate it.

    cadlab train-autocomplete --minutes 80        # train (resumes the run, else the shipped adapter)
    cadlab train-autocomplete --eval              # held-out table: base vs fine-tuned

Data. Parts come from ``cadlab.cad.autocomplete.sample_sequence``: training seeds ``0, 1, 2 ...`` in a
fixed shuffled order, held-out seeds from ``HELD_OUT_START`` on. One micro-batch is one part:
``part_example`` feeds the full text ``"Complete this CAD sequence: {caption}\\n" + serialize(full)``
+ the end token once, with every truncation the public script writes (``_tr_01 .. _tr_05``) as
per-token weights, since teacher forcing gives all of them the same input. Parts whose text is
longer than ``max_seq_length`` tokens are left out (counted in each step's ``skipped``), never cut: a cut could
leave a micro-batch without a label (the training note's NaN) and always drops the end of the completion.

Loss. ``accumulation_step`` over ``accumulation`` parts: summed weighted token cross-entropy over
the window's total weight, so the gradient is that of one batch and never NaN; logits only from
the first labelled position on. LoRA (peft; ``cadlab.cad.autocomplete.LoRALinear`` is the same thing by
hand) with rank ``r`` on every projection of every layer; the base model stays frozen in fp32.
Forward and backward run under bf16 autocast on the CPU (``--bf16``, the default).

Training is ``cadlab.train.loop`` with the recipe ``AutocompleteRecipe``: AdamW (no weight decay),
warm-up and cosine over the budget, gradient norm clipped at 1, resumable checkpoints (the adapter
in fp32, the optimizer, the random state and the position in the data). Each checkpoint also writes
the shipped adapter (safetensors, fp16, peft's layout: ``PeftModel.from_pretrained`` loads it), its
log and loss curves into ``cadlab/weights/autocomplete-lora``, whose README is the model card.

Evaluation (``completion_table``, and ``evaluate`` for the shipped adapter): for held-out parts and kept = 1/4, 1/2, 3/4 of their operations, the model
writes the rest (greedy, or sampled at temperature 0.7 / top-p 0.9 after ``torch.manual_seed``);
the kept text + the completion must pass ``json.loads`` (parse rate), build a solid through the
sandbox (valid rate), and the solid is compared with the full part's by volume IoU, in place.
``kept_only_table`` scores the baseline that writes nothing: the kept operations closed as they are. A
completion helps only where it scores above it.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from safetensors.torch import save_file
from transformers import GenerationConfig, LogitsProcessorList

from cadlab import arguments
from cadlab.cad import autocomplete as ac
from cadlab.cad import deepcad
from cadlab.cad.generation import generate_sequences
from cadlab.cad.metrics import iou
from cadlab.cad.sandbox import closed_solid
from cadlab.cad.sequence_grammar import sequence_lark
from cadlab.lm.grammar import ConstrainedLogits
from cadlab.lm.guidance import LibraryGrammar
from cadlab.lm.memory import set_checkpointing
from cadlab.lm.models import DECODER_PROJECTIONS, ModelLoadError, check_lm_source, load_lm
from cadlab.paths import AUTOCOMPLETE_LORA_DIR, cache_dir
from cadlab.train import loop
from cadlab.train.evaluate import TokenLoss
from cadlab.train.loop import LoopSettings, setting

WEIGHTS_DIR = AUTOCOMPLETE_LORA_DIR
RUN_DIR = cache_dir() / "autocomplete-lora-run"
HELD_OUT_START = 1_000_000            # held-out part seeds; training seeds are 0 .. train_parts - 1
TARGETS = DECODER_PROJECTIONS        # LoRA on every projection of every decoder layer
FRACTIONS = (0.25, 0.5, 0.75)
SAMPLING = {"temperature": 0.7, "top_p": 0.9}          # the training note's generate() settings
GRAMMAR_SUFFIX = "+grammar"                           # "greedy+grammar": decoded under the sequence grammar
DECODINGS = ("greedy", "sampled", "greedy" + GRAMMAR_SUFFIX, "sampled" + GRAMMAR_SUFFIX)


@dataclass
class TrainSettings(LoopSettings):
    """Everything an adapter run depends on (the loop's settings, and these)."""
    minutes: float = setting(80.0, "wall-clock budget of this run, in minutes")
    lr: float = setting(1e-3, "peak learning rate")
    warmup: int = setting(10, "linear warm-up over this many steps of the run")
    checkpoint_minutes: float = setting(6.0, "minutes between checkpoints (held-out loss, run state, adapter)")
    threads: int | None = setting(1, "torch CPU threads")
    model: str = setting("SmolLM2-135M-Instruct", "the base model (a name load_lm knows, or a folder)")
    r: int = setting(8, "LoRA rank")
    alpha: float = setting(16.0, "LoRA alpha (the update is scaled by alpha / r)")
    dropout: float = setting(0.05, "LoRA dropout", arguments.fraction)
    accumulation: int = setting(4, "parts (micro-batches of one part) per optimizer step")
    max_seq_length: int = setting(1024, "parts whose text (with the end token) is longer are left out")
    train_parts: int = setting(20_000, "the pool of training seeds (a run uses what its budget allows)")
    held_out_parts: int = setting(12, "held-out parts for the loss at each checkpoint")
    gradient_checkpointing: bool = setting(False, "recompute each layer's activations in the backward pass")
    decision_weight: float = setting(1.0, "loss weight of the token after each extrude that decides: another "
                                          "operation or the close (the other tokens weigh 1)")


# --------------------------------------------------------------------------------------------
# Model and adapter
# --------------------------------------------------------------------------------------------
def load_base(name: str = "SmolLM2-135M-Instruct"):
    """(model, tokenizer) of the course's model, float32, in train mode, nothing trainable yet."""
    model, tokenizer = load_lm(name)
    return model, tokenizer


def lora_config(settings: TrainSettings):
    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=list(TARGETS), bias="none", task_type="CAUSAL_LM")


def save_adapter(model, folder: Path, dtype=torch.float16) -> int:
    """The adapter alone into ``folder`` in peft's layout (``adapter_config.json`` +
    ``adapter_model.safetensors``, weights cast to ``dtype``); returns the file's size in bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(dtype).contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file(state, folder / "adapter_model.safetensors", metadata={"format": "pt"})
    model.peft_config["default"].save_pretrained(folder)
    return (folder / "adapter_model.safetensors").stat().st_size


def has_adapter(folder: Path) -> bool:
    return (Path(folder) / "adapter_config.json").exists() and (Path(folder) / "adapter_model.safetensors").exists()


def attach_adapter(base, folder: Path, trainable: bool):
    """``base`` with the adapter in ``folder`` (fp16 on disk, the model's dtype in memory)."""
    return PeftModel.from_pretrained(base, str(folder), is_trainable=trainable)


def is_adapter_base(model, settings: TrainSettings | None = None) -> bool:
    """True when ``model`` is the model the shipped adapter was trained on (by name: the adapter's
    deltas are meaningful only on those weights, even where another model has the same shapes)."""
    name = (settings or TrainSettings()).model
    return str(getattr(model.config, "name_or_path", "")).rstrip("/").split("/")[-1] == name


def load_autocomplete(adapter_dir: Path = WEIGHTS_DIR, base=None, merge: bool = True):
    """(model, tokenizer): the course's model with the shipped adapter, merged into the weights
    (``merge=True``: a plain model again, as fast as the base) and in eval mode."""
    if base is None:
        base = load_base()
    model, tokenizer = base
    model = attach_adapter(model, Path(adapter_dir), trainable=False)
    if merge:
        model = model.merge_and_unload()
    return model.eval(), tokenizer


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
def training_order(settings: TrainSettings) -> list[int]:
    """The training seeds in the order a run visits them (one fixed shuffle of the pool)."""
    order = list(range(settings.train_parts))
    random.Random(settings.seed).shuffle(order)
    return order


def part_micro_batch(tokenizer, seed: int, max_seq_length: int | None, decision_weight: float = 1.0):
    """``part_example`` of part ``seed``, or None when its text is longer than ``max_seq_length``."""
    caption, full = deepcad.sample_sequence(seed)
    example = ac.part_example(tokenizer, caption, full, decision_weight=decision_weight)
    if max_seq_length is not None and len(example["input_ids"]) > max_seq_length:
        return None
    return example


def held_out_seeds(n: int, tokenizer=None, max_seq_length: int | None = None) -> list[int]:
    """The first ``n`` held-out seeds (from ``HELD_OUT_START``) whose text fits ``max_seq_length``."""
    seeds, seed = [], HELD_OUT_START
    while len(seeds) < n:
        if tokenizer is None or part_micro_batch(tokenizer, seed, max_seq_length) is not None:
            seeds.append(seed)
        seed += 1
    return seeds


@torch.no_grad()
def held_out_loss(model, micro_batches) -> float:
    """Weighted token cross-entropy (nats) over ``micro_batches``, as the training loss, no gradient."""
    return _token_loss(model, tokenizer=None, micro_batches=micro_batches).mean("all")


@torch.no_grad()
def _token_loss(model, tokenizer, micro_batches) -> TokenLoss:
    """``TokenLoss`` of ``model`` over ``micro_batches``, each token weighted as in training."""
    was = model.training
    model.eval()
    loss = TokenLoss(tokenizer)
    device = next(model.parameters()).device
    for mb in micro_batches:
        ids, labels, mask = ac.as_batch(mb)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        loss.add(logits, labels, ac.token_weights(mb, labels))
    model.train(was)
    return loss


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
def draw_curves(ax, log: dict) -> None:
    """Training loss per optimizer step (and smoothed) and held-out loss, against training minutes."""
    train = log.get("train", [])
    if train:
        x, y = [r["seconds"] / 60 for r in train], [r["loss"] for r in train]
        ax.plot(x, y, lw=0.6, alpha=0.35, label="train (per step)")
        k = max(1, len(y) // 25)
        ax.plot(x[k - 1:], np.convolve(y, np.ones(k) / k, mode="valid"), lw=1.5, label=f"train (mean of {k})")
    val = log.get("val", [])
    if val:
        ax.plot([r["seconds"] / 60 for r in val], [r["loss"] for r in val], "o-", label="held-out")
    ax.set_yscale("log")
    ax.set_xlabel("training minutes (1 CPU thread)")
    ax.set_ylabel("completion-token cross-entropy (nats)")
    ax.set_title("LoRA r=8 on SmolLM2-135M-Instruct: CAD autocomplete")
    ax.legend()


class AutocompleteRecipe:
    """The LoRA adapter for ``cadlab.train.loop``: the base model frozen, an adapter on every
    projection. A step is one optimizer step over ``accumulation`` parts, taken in a fixed shuffle
    of the pool (``training_order``) from ``position["cursor"]``; parts longer than
    ``max_seq_length`` are passed over (and counted in the step's ``skipped``)."""
    name = "CAD autocomplete adapter"

    def __init__(self, settings: TrainSettings, base=None):
        self.settings = settings
        self.base, self.tokenizer = base if base is not None else load_base(settings.model)
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.position = {"cursor": 0}
        self.order = training_order(settings)
        self.val_seeds = held_out_seeds(settings.held_out_parts, self.tokenizer, settings.max_seq_length)
        self.val_batches = [part_micro_batch(self.tokenizer, s, None) for s in self.val_seeds]

    def can_continue(self, folder: Path) -> bool:
        return has_adapter(folder)

    def load_model(self, folder: Path):
        return self._prepared(attach_adapter(self.base, folder, trainable=True))

    def new_model(self):
        return self._prepared(get_peft_model(self.base, lora_config(self.settings)))

    def _prepared(self, model):
        if self.settings.gradient_checkpointing:
            set_checkpointing(model, True)
        return model

    def optimizer(self, model) -> torch.optim.Optimizer:
        trainable = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.AdamW([{"params": trainable, "peak": self.settings.lr}], lr=self.settings.lr,
                                 betas=(0.9, 0.999), weight_decay=0.0)

    def config(self, model) -> dict:
        s, base_config = self.settings, model.get_base_model().config
        return dict(model=s.model, model_type=base_config.model_type, layers=base_config.num_hidden_layers,
                    hidden_size=base_config.hidden_size, r=s.r, alpha=s.alpha, targets=list(TARGETS),
                    trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
                    held_out_seeds=self.val_seeds, max_seq_length=s.max_seq_length)

    def step(self, model, step: int) -> dict:
        window, skipped = [], 0
        while len(window) < self.settings.accumulation:
            seed = self.order[self.position["cursor"] % len(self.order)]
            self.position["cursor"] += 1
            example = part_micro_batch(self.tokenizer, seed, self.settings.max_seq_length,
                                       self.settings.decision_weight)
            if example is None:
                skipped += 1
                continue
            window.append(example)
        out = ac.accumulation_step(model, window)
        return {"loss": round(out["loss"], 5), "tokens": sum(len(mb["input_ids"]) for mb in window),
                "skipped": skipped}

    def held_out(self, model) -> dict:
        return {"loss": round(held_out_loss(model, self.val_batches), 5)}

    def save(self, model, folder: Path, log: dict, shipped: bool) -> None:
        """The adapter: float32 in the run folder (an exact resume), float16 shipped, with log and curves."""
        if not shipped:
            save_adapter(model, Path(folder), dtype=torch.float32)
            return
        log["config"]["adapter_bytes"] = save_adapter(model, Path(folder))
        loop.save_log_and_curves(log, folder, draw_curves)


def train(run_dir: Path = RUN_DIR, out_dir: Path = WEIGHTS_DIR, settings: TrainSettings | None = None,
          base=None, progress: bool = True) -> dict:
    """Train (or resume) the LoRA adapter with ``cadlab.train.loop``; returns the log. ``base`` =
    (model, tokenizer) overrides the course's model (tests pass a tiny one)."""
    settings = settings or TrainSettings()
    return loop.train(AutocompleteRecipe(settings, base), run_dir, out_dir, settings, progress=progress)


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------
def kept_for(n_ops: int, fraction: float) -> int:
    """Operations kept at ``fraction`` of ``n_ops``: round half up, at least 1, at most n - 1."""
    return max(1, min(n_ops - 1, math.floor(n_ops * fraction + 0.5)))


def json_start(tokenizer, prompt: str) -> int:
    """The index of the prompt's first token of the sequence text (``{"properties":...``): the grammar
    matcher takes the prompt's tokens from there on as already written. The text follows a newline,
    a pre-tokenizer split, so no token straddles the cut (a ValueError says so if one does)."""
    cut = prompt.index(deepcad.HEAD)
    index, straddles = ac.token_boundary(tokenizer(prompt, return_offsets_mapping=True)["offset_mapping"], cut)
    if straddles:
        raise ValueError(f"a token of this prompt straddles the start of the sequence text at character {cut}; "
                         "the grammar needs the sequence to start on a token boundary.")
    return index


@torch.no_grad()
def complete(model, tokenizer, prompts: list[str], max_new_tokens: int, sample: bool = False, seed: int = 0,
             batch_size: int = 16, grammar=None, stats: dict | None = None) -> list[str]:
    """The model's continuation of each prompt, up to and including the close ``" ]}"`` (or the end
    token, or ``max_new_tokens``). Left-padded batches; greedy, or the training note's sampling (temperature
    0.7, top-p 0.9) after ``torch.manual_seed(seed + batch index)``.

    ``grammar`` (a ``cadlab.lm.guidance.LibraryGrammar`` of ``cadlab.cad.sequence_grammar.sequence_lark``):
    each row's matcher first takes the kept operations' tokens (from ``json_start`` on), then masks every
    step, so the completion stays a prefix of a valid sequence text. ``stats``, if given, adds up
    ``mask_seconds`` and ``steps``."""
    eos = tokenizer.eos_token_id
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=sample, pad_token_id=eos, eos_token_id=eos,
                              stop_strings=[deepcad.CLOSE], **(SAMPLING if sample else {}))
    out = []
    for b in range(0, len(prompts), batch_size):
        encoded = [tokenizer(p)["input_ids"] for p in prompts[b:b + batch_size]]
        width = max(map(len, encoded))
        ids = torch.tensor([[eos] * (width - len(e)) + e for e in encoded])
        mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
        kwargs = {}
        if grammar is not None:
            written = [e[json_start(tokenizer, p):] for e, p in zip(encoded, prompts[b:b + batch_size])]
            processor = ConstrainedLogits(lambda row: grammar.matcher(written=written[row]))
            kwargs["logits_processor"] = LogitsProcessorList([processor])
        if sample:
            torch.manual_seed(seed + b)
        generated = generate_sequences(model, {"input_ids": ids, "attention_mask": mask}, generation_config=config,
                                       tokenizer=tokenizer, **kwargs)
        if grammar is not None and stats is not None:
            stats["mask_seconds"] = stats.get("mask_seconds", 0.0) + processor.mask_seconds
            stats["steps"] = stats.get("steps", 0) + processor.steps
        for row in generated[:, width:]:
            text = tokenizer.decode([t for t in row.tolist() if t != eos])
            cut = text.find(deepcad.CLOSE)
            out.append(text if cut < 0 else text[:cut + len(deepcad.CLOSE)])
    return out


def score_completion(full: dict, kept: int, completion: str, truth_mesh) -> dict:
    """``{"parsed", "valid", "iou"}`` of the kept text + ``completion``: ``json.loads``, a solid from the
    sandbox, and its volume IoU with ``truth_mesh`` in place (0 when invalid)."""
    kept_text = deepcad.serialize(full, kept)
    text = kept_text + completion
    try:
        doc = deepcad.parse(text)
    except json.JSONDecodeError as error:           # where it broke, for the error table
        return {"parsed": False, "valid": False, "iou": 0.0, "error": error.msg,
                "error_at": error.pos - len(kept_text), "near": text[max(0, error.pos - 24):error.pos + 4]}
    except (KeyError, TypeError, AttributeError) as error:
        return {"parsed": False, "valid": False, "iou": 0.0, "error": f"not a sequence: {type(error).__name__}"}
    result, _ = deepcad.build_solid(doc)
    solid = None if result is None else closed_solid(result)
    if solid is None:
        return {"parsed": True, "valid": False, "iou": 0.0}
    try:
        value = float(iou(truth_mesh, solid, normalize=False))
    except Exception:                        # noqa: BLE001 - a degenerate solid counts as invalid
        return {"parsed": True, "valid": False, "iou": 0.0}
    return {"parsed": True, "valid": True, "iou": value}


def summarize(rows: list[dict]) -> dict:
    n = len(rows)
    valid = [r for r in rows if r["valid"]]
    return {"n": n, "parse_rate": sum(r["parsed"] for r in rows) / n, "valid_rate": len(valid) / n,
            "mean_iou": float(np.mean([r["iou"] for r in rows])),
            "mean_iou_valid": float(np.mean([r["iou"] for r in valid])) if valid else None}


def completion_table(model, tokenizer, seeds, fractions=FRACTIONS, decodings=("greedy", "sampled"), batch_size: int = 1,
             seed: int = 0, progress: bool = True, on_decoding=None) -> dict:
    """The held-out table of one model: for each decoding and kept fraction, parse rate, valid-solid
    rate and mean IoU (invalid as 0; and over valid ones), overall and per family, and the rows.
    ``max_new_tokens`` per batch is 1.3 x the longest true completion in it + 16. One prompt per batch
    by default: unpadded, so each completion is exactly what ``complete(model, tokenizer, [prompt])``
    gives (left padding changes logits in their last bits, enough to flip a greedy near-tie). ``on_decoding(table)``,
    if given, is called after each decoding with the table so far (so a long run can save as it goes)."""
    truths, items = {}, []
    for s in seeds:
        caption, full = deepcad.sample_sequence(s)
        result, _ = deepcad.build_solid(full, timeout=30)
        truths[s] = (caption, full, result.mesh)
        text = ac.PROMPT.format(caption=caption) + deepcad.serialize(full)
        n_full = len(tokenizer(text)["input_ids"]) + 1
        for f in fractions:
            kept = kept_for(len(full["sequence"]), f)
            prompt = ac.PROMPT.format(caption=caption) + deepcad.serialize(full, kept)
            items.append({"seed": s, "family": deepcad.family_of(s), "fraction": f, "kept": kept,
                          "ops": len(full["sequence"]), "prompt": prompt,
                          "truth_tokens": n_full - len(tokenizer(prompt)["input_ids"])})
    items.sort(key=lambda it: it["truth_tokens"])
    table = {"seeds": list(seeds), "fractions": list(fractions), "batch_size": batch_size, "seed": seed}
    for decoding in decodings:
        t0 = time.time()
        rows, stats = [], {}
        grammar = LibraryGrammar(tokenizer, lark=sequence_lark()) if decoding.endswith(GRAMMAR_SUFFIX) else None
        for b in range(0, len(items), batch_size):
            chunk = items[b:b + batch_size]
            budget = int(1.3 * max(it["truth_tokens"] for it in chunk)) + 16
            texts = complete(model, tokenizer, [it["prompt"] for it in chunk], budget,
                             sample=decoding.startswith("sampled"), seed=seed + b, batch_size=batch_size,
                             grammar=grammar, stats=stats)
            for it, text in zip(chunk, texts):
                caption, full, mesh = truths[it["seed"]]
                rows.append({k: v for k, v in it.items() if k != "prompt"} | {"completion": text}
                            | score_completion(full, it["kept"], text, mesh))
            if progress:
                print(f"{decoding}: {len(rows)}/{len(items)} completions, {time.time() - t0:.0f} s", flush=True)
        by_fraction = {str(f): summarize([r for r in rows if r["fraction"] == f]) for f in fractions}
        families = sorted({r["family"] for r in rows})
        table[decoding] = {"by_fraction": by_fraction, "seconds": round(time.time() - t0, 1), **stats,
                           "by_family": {fam: summarize([r for r in rows if r["family"] == fam]) for fam in families},
                           "rows": rows}
        if on_decoding is not None:
            on_decoding(table)
    return table


def kept_only_table(seeds, fractions=FRACTIONS) -> dict:
    """The baseline that writes nothing: at each kept fraction, the kept text closed at once (``deepcad.CLOSE``:
    no further operation), scored as ``completion_table`` scores a completion (parse, valid solid, IoU with
    the full part). Keeping k of n operations as they are already scores IoU(part after k, full part)."""
    rows = []
    for s in seeds:
        _, full = deepcad.sample_sequence(s)
        mesh = deepcad.build_solid(full, timeout=30)[0].mesh
        for f in fractions:
            kept = kept_for(len(full["sequence"]), f)
            rows.append({"seed": s, "family": deepcad.family_of(s), "fraction": f, "kept": kept,
                         "ops": len(full["sequence"]), "completion": deepcad.CLOSE}
                        | score_completion(full, kept, deepcad.CLOSE, mesh))
    families = sorted({r["family"] for r in rows})
    return {"seeds": list(seeds), "fractions": list(fractions),
            "by_fraction": {str(f): summarize([r for r in rows if r["fraction"] == f]) for f in fractions},
            "by_family": {fam: summarize([r for r in rows if r["family"] == fam]) for fam in families}, "rows": rows}


@torch.no_grad()
def loss_by_kind(model, tokenizer, seeds) -> dict:
    """Held-out weighted loss (as in training) split by the kind of token predicted: ``digits`` (the
    numbers: sizes, positions, extents) and ``structure`` (keys, brackets, names, the end token)."""
    loss = _token_loss(model, tokenizer, [part_micro_batch(tokenizer, seed, None) for seed in seeds])
    return {"all": round(loss.mean("all"), 4), "digits": round(loss.mean("digits"), 4),
            "structure": round(loss.mean("other"), 4), "digit_share": round(loss.digit_share(), 4)}


@torch.no_grad()
def stop_decisions(model, tokenizer, seeds) -> dict:
    """The decision "another operation, or close" after every extrude of each held-out part, read by
    teacher forcing (one forward pass over the full text: the same logits as a prompt cut there).

    At the end of operation k the next token is ``" ,"`` (another operation) or ``" ]"`` (the close
    ``" ]}"``); the model decides right when the truth's one has the higher logit. Returns the rates
    for ``continue`` (k < n) and ``close`` (k = n) decisions, and per part the probability the model
    gives to closing where it should close."""
    go, stop = (tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in (deepcad.SEPARATOR, deepcad.CLOSE))
    right = {"continue": [], "close": []}
    p_close = {}
    model.eval()
    for seed in seeds:
        caption, full = deepcad.sample_sequence(seed)
        prompt = ac.PROMPT.format(caption=caption)
        logits = model(input_ids=torch.tensor([tokenizer(prompt + deepcad.serialize(full))["input_ids"]])).logits[0]
        for at, kind in ac.decision_tokens(tokenizer, caption, full).items():
            pair = torch.softmax(logits[at - 1, [go, stop]].float(), dim=0)
            right[kind].append(bool(pair[1] > pair[0]) == (kind == "close"))
            if kind == "close":
                p_close[seed] = round(float(pair[1]), 4)
    return {kind: {"n": len(v), "right": sum(v) / max(len(v), 1)} for kind, v in right.items()} | {
        "p_close_at_the_end": p_close}


def print_table(result: dict) -> None:
    if result.get("kept_only"):
        for f, s in result["kept_only"]["by_fraction"].items():
            print(f"kept only            kept={f:4s}: parse {s['parse_rate']:.2f}, valid {s['valid_rate']:.2f}, "
                  f"mean IoU {s['mean_iou']:.3f} (n={s['n']})")
    for name in ("base", "fine_tuned"):
        for decoding in ("greedy", "sampled"):
            block = result.get(name, {}).get(decoding)
            if not block:
                continue
            for f, s in block["by_fraction"].items():
                print(f"{name:10s} {decoding:7s} kept={f:4s}: parse {s['parse_rate']:.2f}, valid {s['valid_rate']:.2f}, "
                      f"mean IoU {s['mean_iou']:.3f} (n={s['n']})")


def evaluate(out_dir: Path = WEIGHTS_DIR, parts: int = 16, which=("base", "fine_tuned", "kept_only"),
             batch_size: int = 1, progress: bool = True, decodings=("greedy", "sampled")) -> dict:
    """The held-out evaluation on ``parts`` held-out parts, into ``training_log.json`` under ``eval``:
    ``kept_only`` (``kept_only_table``, the baseline; seconds), and the ``completion_table`` of the base
    model and of the shipped adapter (written after each decoding of each model), with their losses by
    token kind and their stop decisions. What ``which`` and ``decodings`` leave out keeps its earlier entry
    in the log (each write merges into the log as it is on disk, so two processes, one per decoding, can
    share a folder)."""
    path = Path(out_dir) / "training_log.json"
    models = [name for name in which if name != "kept_only"]
    base_model, tokenizer = load_base()
    seeds = held_out_seeds(parts, tokenizer, TrainSettings().max_seq_length)
    log = json.loads(path.read_text()) if path.exists() else {}
    result = log.get("eval") or {}
    result.update(parts=parts, torch_threads=torch.get_num_threads(), held_out_start=HELD_OUT_START)

    def save(name, table):                   # after each decoding: an interrupted --eval keeps what it did
        log = json.loads(path.read_text()) if path.exists() else {}
        on_disk = log.get("eval") or {}
        result[name] = {**on_disk.get(name, {}), **table}
        log["eval"] = {**on_disk, **result}
        path.write_text(json.dumps(log, indent=1))

    if "kept_only" in which:
        save("kept_only", kept_only_table(seeds))
    if not models:
        return result
    kinds = result.setdefault("loss_by_kind", {})
    kinds["base"] = loss_by_kind(base_model, tokenizer, seeds)
    tuned = None
    if has_adapter(out_dir):
        tuned, _ = load_autocomplete(out_dir, base=(copy.deepcopy(base_model), tokenizer))
        kinds["fine_tuned"] = loss_by_kind(tuned, tokenizer, seeds)
        result["adapter_step"] = log["train"][-1]["step"] if log.get("train") else None
    result["stop_decisions"] = {"base": stop_decisions(base_model, tokenizer, seeds)} | (
        {"fine_tuned": stop_decisions(tuned, tokenizer, seeds)} if tuned is not None else {})
    for name in models:
        model = base_model if name == "base" else tuned
        save(name, completion_table(model.eval(), tokenizer, seeds, batch_size=batch_size, progress=progress,
                                    decodings=decodings, on_decoding=lambda table, name=name: save(name, dict(table))))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="cadlab train-autocomplete", description=__doc__.split("\n")[0])
    parser.add_argument("--eval", action="store_true", help="held-out table of the base model and the shipped adapter")
    parser.add_argument("--which", nargs="+", choices=["base", "fine_tuned", "kept_only"],
                        default=["base", "fine_tuned", "kept_only"],
                        help="--eval: the base model, the fine-tuned one and/or the kept-only baseline")
    parser.add_argument("--parts", type=arguments.positive_int, default=16, help="--eval: held-out parts")
    parser.add_argument("--decodings", nargs="+", choices=DECODINGS, default=["greedy", "sampled"],
                        help="--eval: which decodings (one per process lets two run side by side); "
                             "'+grammar': under the sequence grammar (notebook 10)")
    parser.add_argument("--run-dir", type=Path, default=RUN_DIR, help="where the resumable training state lives")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="where the shipped adapter is written")
    loop.flags(parser, TrainSettings)
    args = parser.parse_args(argv)
    settings = loop.settings_from(args, TrainSettings, parser)
    if args.eval:
        if "fine_tuned" in args.which:
            out = loop.check_model_folder(parser, args.out, "lora", "LoRA adapter",
                                          ("adapter_config.json", "adapter_model.safetensors"),
                                          "cadlab train-autocomplete --out FOLDER")
        else:                               # the base model's table goes into --out's log
            out = arguments.writable_folder(args.out, parser.prog, "--out")
        loop.apply_threads(settings)
        print_table(evaluate(out, parts=args.parts, which=args.which, decodings=args.decodings))
        return 0
    try:
        check_lm_source(settings.model, origin="--model")
    except (FileNotFoundError, ModelLoadError) as error:
        parser.error(str(error))
    arguments.writable_folder(args.run_dir, parser.prog, "--run-dir", create=False)
    arguments.writable_folder(args.out, parser.prog, "--out", create=False)
    loop.apply_threads(settings)
    train(args.run_dir, args.out, settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
