"""Held-out evaluation shared by the recipes: one token-loss helper, and the scores of a solid.

``TokenLoss`` accumulates the cross-entropy of a causal language model over the tokens it must
predict (logits at position t predict the label at t + 1; labels of -100 are not predicted), with
optional per-token weights, and splits it by the kind of token: digits (the numbers of a program)
and everything else (keywords, brackets, names: the syntax). Per kind k::

    loss_k = sum over predicted tokens of kind k of w_t * (-log p(label_t)) / sum of their w_t

``score_against_truth`` and ``summarize_stage`` score reconstructed solids against the true ones in
the papers' frame (IoU, Chamfer distance x 1000, invalid as None).
"""

from __future__ import annotations

import numpy as np
import torch

from cadlab.cad.metrics import CD_SCALE, chamfer_distance, iou


def digit_token_ids(tokenizer) -> torch.Tensor:
    """The ids of the vocabulary's tokens made of digits only."""
    return torch.tensor(sorted(i for t, i in tokenizer.get_vocab().items() if t.isdigit()), dtype=torch.long)


class TokenLoss:
    """Running sums of a token cross-entropy: over all predicted tokens, the digit tokens and the others."""

    def __init__(self, tokenizer=None):
        """``tokenizer`` tells which tokens are digits; without one, nothing is counted as a digit."""
        self.digits = digit_token_ids(tokenizer) if tokenizer is not None else torch.zeros(0, dtype=torch.long)
        self.sums = {"all": 0.0, "digits": 0.0, "other": 0.0}
        self.weights = {"all": 0.0, "digits": 0.0, "other": 0.0}

    def add(self, logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """Add a batch: ``logits`` (B, T, V), ``labels`` (B, T); ``weights`` (B, T - 1), aligned with
        ``labels[:, 1:]`` (default: 1 for every predicted token)."""
        labels = labels[:, 1:].to(logits.device)
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2).float(), labels, ignore_index=-100,
                                                reduction="none").cpu()
        labels = labels.cpu()
        predicted = labels != -100
        is_digit = torch.isin(labels, self.digits) if len(self.digits) else torch.zeros_like(predicted)
        for kind, select in (("all", predicted), ("digits", is_digit & predicted), ("other", predicted & ~is_digit)):
            if weights is None:
                self.sums[kind] += float(nll[select].sum())
                self.weights[kind] += int(select.sum())
            else:
                self.sums[kind] += float((nll * weights * select).sum())
                self.weights[kind] += float((weights * select).sum())

    def mean(self, kind: str = "all") -> float:
        return self.sums[kind] / max(self.weights[kind], 1e-12)

    def digit_share(self) -> float:
        """The share of the (weighted) predicted tokens that are digits."""
        return self.weights["digits"] / max(self.weights["all"], 1e-12)


def score_against_truth(candidate, truth) -> dict | None:
    """IoU and Chamfer x1000 of a pool candidate against the true solid, in the papers' frame (each
    solid by its own bounding box into a unit cube, 8192 surface samples); None if it is invalid."""
    if candidate is None or candidate.mesh is None:
        return None
    try:
        return {"iou": float(iou(truth, candidate.mesh)),
                "cd_x1000": float(chamfer_distance(truth, candidate.mesh) * CD_SCALE)}
    except Exception:                 # noqa: BLE001 - a non-manifold result counts as invalid
        return None


def summarize_stage(scores) -> dict:
    """Mean IoU (valid only, and with invalid as 0), median / mean Chamfer x1000 and the invalid ratio."""
    valid = [s for s in scores if s is not None]
    return {
        "shapes": len(scores),
        "mean_iou": float(np.mean([s["iou"] for s in valid])) if valid else None,
        "mean_iou_invalid_as_0": float(np.sum([s["iou"] for s in valid]) / len(scores)) if scores else None,
        "median_cd_x1000": float(np.median([s["cd_x1000"] for s in valid])) if valid else None,
        "mean_cd_x1000": float(np.mean([s["cd_x1000"] for s in valid])) if valid else None,
        "invalid_ratio": 1 - len(valid) / len(scores) if scores else None,
    }


