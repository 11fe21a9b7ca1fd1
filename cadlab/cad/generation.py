"""The one place the course's CAD models call ``model.generate``.

Every CAD model here (CAD-Recode's demo loop and pipeline, Cadrille, the autocomplete adapter) writes
programs the same way: its inputs (already built: points, pictures or text in a prompt) go to the
model's device, ``model.generate`` decodes ``samples`` sequences per input row (row 0's first, as
``num_return_sequences`` orders them), and the caller turns tokens into text its own way. Sampling
draws from torch's global random generator; with ``seed`` it runs inside ``torch.random.fork_rng``
seeded by it, so the same seed gives the same programs and the caller's random state is left as it
was.
"""

from __future__ import annotations

import torch


def generate_sequences(model, inputs: dict, *, samples: int = 1, seed: int | None = None, **generate_kwargs):
    """``model.generate(**inputs, num_return_sequences=samples, **generate_kwargs)`` on the model's
    device: the prompt and the new tokens, ``samples`` rows per input row."""
    device = next(model.parameters()).device
    inputs = {key: value.to(device) if torch.is_tensor(value) else value for key, value in inputs.items()}
    if seed is None:
        return model.generate(**inputs, num_return_sequences=samples, **generate_kwargs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model.generate(**inputs, num_return_sequences=samples, **generate_kwargs)
