"""LoRA by hand, proven equal to peft.

``LoRALinear`` wraps an ``nn.Linear`` as peft does: y = W x + b + (alpha / r) B A x, with
A (r x in) drawn Kaiming-uniform (a = sqrt 5), B (out x r) zero, so training starts from the base
model; ``merge`` folds (alpha / r) B A into W. ``add_lora`` wraps the named projections of a model.
"""

from __future__ import annotations

import math

import torch
from peft import LoraConfig, get_peft_model
from torch import nn


# --------------------------------------------------------------------------------------------
# LoRA by hand
# --------------------------------------------------------------------------------------------
class LoRALinear(nn.Module):
    """y = base(x) + (alpha / r) * lora_B(lora_A(dropout(x))), the base frozen.

    ``lora_A`` (in -> r) and ``lora_B`` (r -> out) are bias-free ``nn.Linear``s made and initialised
    in peft's order: A Kaiming-uniform with a = sqrt(5) (nn.Linear's default, bound 1/sqrt(in)),
    B zeros, so the wrapped layer starts equal to the base. ``merge()`` adds (alpha / r) B A to the
    base weight and switches the adapter path off (``merged``)."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if r <= 0:
            raise ValueError(f"r must be positive, got {r}")
        self.base, self.r, self.alpha, self.scaling = base, r, alpha, alpha / r
        for p in base.parameters():
            p.requires_grad_(False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Linear(base.in_features, r, bias=False, **kw)
        self.lora_B = nn.Linear(r, base.out_features, bias=False, **kw)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """(alpha / r) B A, the change the adapter makes to the base weight."""
        return self.scaling * (self.lora_B.weight @ self.lora_A.weight)

    def forward(self, x):
        y = self.base(x)
        if self.merged:
            return y
        return y + self.lora_B(self.lora_A(self.dropout(x))) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True


def add_lora(model: nn.Module, targets=("q_proj", "v_proj"), r: int = 8, alpha: float = 16,
             dropout: float = 0.0) -> list[str]:
    """Freeze ``model`` and wrap every ``nn.Linear`` whose name ends with one of ``targets`` in a
    ``LoRALinear`` (in ``named_modules`` order, as peft does). Returns the wrapped names."""
    for p in model.parameters():
        p.requires_grad_(False)
    names = [name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and name.split(".")[-1] in targets]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout))
    return names


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the plain ``nn.Linear`` back."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, module.base)
    return model


def lora_state_dict(model: nn.Module) -> dict:
    """The adapter weights only (``...q_proj.lora_A.weight`` ...), what an adapter file holds."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if ".lora_A." in k or ".lora_B." in k}


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lora_parity(make_model, targets=("q_proj", "v_proj"), r: int = 8, alpha: float = 16, seed: int = 0,
                length: int = 16) -> dict:
    """Our ``LoRALinear`` against peft's LoRA on two copies of ``make_model()`` (same seed for both inits).

    B is set to the same random non-zero matrix in both (a fresh B is zero, which would make the
    gradient of A zero on both sides), then one forward and backward on random tokens. Returns the
    max |difference| of the initial A, the logits, the gradients of A and of B, and the merged
    weights (``merge_lora`` vs ``merge_and_unload``), the size of A's gradient and of the merge's
    change (so that a 0 difference is not 0 against 0), and both trainable-parameter counts."""
    ours, theirs = make_model().train(), make_model().train()
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    torch.manual_seed(seed)
    add_lora(ours, targets, r=r, alpha=alpha)
    torch.manual_seed(seed)
    theirs = get_peft_model(theirs, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(targets)))
    mine = {n: m for n, m in ours.named_modules() if isinstance(m, LoRALinear)}
    peft_layers = {n.removeprefix("base_model.model."): m for n, m in theirs.named_modules()
                   if isinstance(getattr(m, "lora_A", None), nn.ModuleDict)}
    if set(mine) != set(peft_layers):
        raise AssertionError("our LoRA and peft's wrapped different layers")
    out = {"layers": len(mine),
           "init_A": max(float((mine[n].lora_A.weight - peft_layers[n].lora_A["default"].weight).detach().abs().max())
                         for n in mine)}
    g = torch.Generator().manual_seed(seed + 1)
    for n in mine:
        b = torch.randn(mine[n].lora_B.weight.shape, generator=g) * 0.05
        with torch.no_grad():
            mine[n].lora_B.weight.copy_(b)
            peft_layers[n].lora_B["default"].weight.copy_(b)
    vocab = ours.config.vocab_size
    ids = torch.randint(3, vocab, (2, length), generator=g)
    a, b = ours(input_ids=ids, labels=ids), theirs(input_ids=ids, labels=ids)
    out["logits"] = float((a.logits - b.logits).detach().abs().max())
    a.loss.backward()
    b.loss.backward()
    out["grad_A"] = max(float((mine[n].lora_A.weight.grad - peft_layers[n].lora_A["default"].weight.grad).abs().max())
                        for n in mine)
    out["grad_B"] = max(float((mine[n].lora_B.weight.grad - peft_layers[n].lora_B["default"].weight.grad).abs().max())
                        for n in mine)
    out["grad_A_size"] = max(float(mine[n].lora_A.weight.grad.abs().max()) for n in mine)
    out["trainable"] = (trainable_parameters(ours), theirs.get_nb_trainable_parameters()[0])
    merged_ours = merge_lora(ours).state_dict()
    merged_theirs = theirs.merge_and_unload().state_dict()
    if set(merged_ours) != set(merged_theirs):
        raise AssertionError("the merged models have different keys")
    out["merged"] = max(float((merged_ours[k] - merged_theirs[k]).abs().max()) for k in merged_ours)
    out["merge_changed"] = max(float((merged_ours[k] - before[k]).abs().max()) for k in merged_ours)
    return out
