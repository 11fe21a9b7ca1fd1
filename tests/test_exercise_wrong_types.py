"""Every exercise check answers a function that returns the wrong kind of value, or raises, with one
printed sentence that names what came back, and False: never a traceback from the check's own code,
never a pass. A right answer still passes, also as a numpy or torch scalar where a number is asked.

The checks are found by walking ``cadlab.exercises``, so a new check without cases here fails
``test_every_check_has_cases``. ``wrong_cases()`` lists every (check, wrong answer) pair.
"""

import functools
import importlib
import pkgutil

import cadquery as cq
import numpy as np
import pytest
import torch
import trimesh
from transformers import DynamicCache, Qwen2ForCausalLM

import cadlab.exercises
from cadlab.cad import autocomplete as ac
from cadlab.cad.pointcloud import FourierPointEncoder
from cadlab.exercises.pointcloud import primer_part
from cadlab.exercises import describe, function_name
from cadlab.lm import anatomy, sampling
from cadlab.lm.babygpt import distinct_n
from cadlab.lm.grammar import Automaton, integers, to_regex
from cadlab.lm.kvcache import append_kv, decode_attention, kv_cache_bytes
from cadlab.lm.parallel_decoding import jacobi_step, verified_prefix


def _find_checks() -> dict:
    """``{"check_x": function}`` for every ``check_*`` defined in a module of ``cadlab.exercises``."""
    checks = {}
    for info in pkgutil.iter_modules(cadlab.exercises.__path__):
        module = importlib.import_module(f"cadlab.exercises.{info.name}")
        checks.update({name: obj for name, obj in vars(module).items()
                       if name.startswith("check_") and callable(obj) and obj.__module__ == module.__name__})
    return checks


CHECKS = _find_checks()


# --- right answers -------------------------------------------------------------------------------

def parameter_count(config):
    with torch.device("meta"):
        return sum(anatomy.parameter_breakdown(Qwen2ForCausalLM(config)).values())


def greedy(model, ids, n, eos):
    return sampling.generate(model, ids, max_new_tokens=n, temperature=0, eos_token_id=eos)


def normalize_points(points):
    low, high = points.min(axis=0), points.max(axis=0)
    return (points - (low + high) / 2) * 2 / (high - low).max()


def chamfer(p, q):
    squared = torch.cdist(p, q) ** 2
    return squared.min(dim=1).values.mean() + squared.min(dim=0).values.mean()


def cached_greedy(model, inputs, steps):
    cache, mask, new = DynamicCache(config=model.config), inputs["attention_mask"], []
    logits = model(**inputs, past_key_values=cache, use_cache=True).logits[:, -1]
    for _ in range(steps):
        token = logits.argmax(-1, keepdim=True)
        new.append(token)
        mask = torch.cat([mask, torch.ones_like(token)], dim=1)
        logits = model(input_ids=token, attention_mask=mask, past_key_values=cache, use_cache=True).logits[:, -1]
    return torch.cat(new, dim=1)


def insert_points(embeds, point_embeds, is_pc, attention_mask):
    out = embeds.clone()
    starts = embeds.shape[1] - attention_mask.long().sum(dim=1)
    for i in range(embeds.shape[0]):
        if is_pc[i]:
            out[i, int(starts[i]):int(starts[i]) + point_embeds.shape[1]] = point_embeds[i]
    return out


def decode_positions(rope_deltas, past_length, n_new):
    return (torch.arange(past_length, past_length + n_new)[None, :] + rope_deltas)[None].expand(3, -1, -1)


def reward(iou):
    return -10.0 if iou is None else 10.0 * iou


def masked_distribution(logits, allowed):
    return (torch.softmax(logits.masked_fill(~allowed, float("-inf")), -1),
            float(torch.softmax(logits, -1)[allowed].sum()))


def window_loss(micro_batches):
    total = sum(int(m.sum()) for _, m in micro_batches)
    return None if total == 0 else sum(float(l[m].sum()) for l, m in micro_batches) / total


REFERENCE = {
    "check_rms_norm": anatomy.rms_norm,
    "check_repeat_kv": anatomy.repeat_kv,
    "check_parameter_count": parameter_count,
    "check_rope_cos_sin": anatomy.rope_cos_sin,
    "check_top_k": sampling.top_k_filter,
    "check_top_p": sampling.top_p_filter,
    "check_greedy_loop": greedy,
    "check_append_kv": append_kv,
    "check_decode_attention": decode_attention,
    "check_kv_cache_bytes": kv_cache_bytes,
    "check_distinct_n": distinct_n,
    "check_cached_step": lambda model, idx, cache: model.step(idx, cache),
    "check_jacobi_step": jacobi_step,
    "check_verified_prefix": verified_prefix,
    "check_fourier_features": lambda points: FourierPointEncoder(1).fourier_features(points),
    "check_normalize_points": normalize_points,
    "check_chamfer": chamfer,
    "check_through_bore": lambda radius: primer_part(radius, through=True),
    "check_embed_prompt": lambda model, ids, mask, cloud: model.embed_prompt(ids, mask, cloud),
    "check_cached_greedy": cached_greedy,
    "check_to_grid": lambda points: np.rint(np.asarray(points) * 100).astype(int),
    "check_box_iou": lambda mesh: mesh.volume / np.prod(mesh.extents),
    "check_insert_points": insert_points,
    "check_decode_positions": decode_positions,
    "check_reward": reward,
    "check_boundary": lambda offsets, cut: ac.token_boundary(offsets, cut)[0],
    "check_window_loss": window_loss,
    "check_merged_weight": lambda w, a, b, alpha, r: w + (alpha / r) * (b @ a),
    "check_allowed": lambda automaton, texts, state: [i for i, t in texts.items() if t and automaton.walk(state, t) != -1],
    "check_integer_grammar": lambda hi: integers(0, hi),
    "check_masked_distribution": masked_distribution,
}


def _then(check: str, change):
    """The reference of ``check`` with ``change`` applied to what it returns (a wrong kind of answer)."""
    return lambda *args: change(REFERENCE[check](*args))


# --- right answers in another form, which must pass -----------------------------------------------

ACCEPTED = {
    "check_parameter_count": {"numpy int64": lambda c: np.int64(parameter_count(c)),
                              "0-d tensor": lambda c: torch.tensor(parameter_count(c)),
                              "float": lambda c: float(parameter_count(c))},
    "check_rope_cos_sin": {"a list [cos, sin]": _then("check_rope_cos_sin", list)},
    "check_append_kv": {"a list [K, V]": _then("check_append_kv", list)},
    "check_kv_cache_bytes": {"numpy int64": _then("check_kv_cache_bytes", np.int64),
                             "0-d tensor": _then("check_kv_cache_bytes", torch.tensor)},
    "check_distinct_n": {"numpy float64": _then("check_distinct_n", np.float64),
                         "0-d tensor": _then("check_distinct_n", lambda v: torch.tensor(v, dtype=torch.float64))},
    "check_verified_prefix": {"0-d tensor": _then("check_verified_prefix", torch.tensor),
                              "numpy int64": _then("check_verified_prefix", np.int64)},
    "check_normalize_points": {"nested list": _then("check_normalize_points", np.ndarray.tolist),
                               "torch tensor": _then("check_normalize_points", torch.from_numpy)},
    "check_chamfer": {"float": _then("check_chamfer", float), "numpy float64": _then("check_chamfer",
                                                                                      lambda v: np.float64(v.item()))},
    "check_through_bore": {"the Solid": _then("check_through_bore", lambda w: w.val())},
    "check_cached_greedy": {"numpy array": _then("check_cached_greedy", lambda t: t.numpy()),
                            "nested list": _then("check_cached_greedy", lambda t: t.tolist())},
    "check_allowed": {"a set": _then("check_allowed", set), "numpy ints": _then("check_allowed",
                                                                                  lambda ids: [np.int64(i) for i in ids])},
    "check_masked_distribution": {"numpy p": _then("check_masked_distribution", lambda pk: (pk[0].numpy(), pk[1])),
                                  "0-d tensor kept": _then("check_masked_distribution",
                                                           lambda pk: (pk[0], torch.tensor(pk[1])))},
    "check_box_iou": {"numpy float64": _then("check_box_iou", np.float64),
                      "0-d tensor": _then("check_box_iou", lambda v: torch.tensor(float(v), dtype=torch.float64))},
    "check_to_grid": {"nested list": _then("check_to_grid", np.ndarray.tolist),
                      "torch tensor": _then("check_to_grid", torch.from_numpy)},
    "check_decode_positions": {"numpy array": _then("check_decode_positions", lambda t: t.numpy()),
                               "nested list": _then("check_decode_positions", lambda t: t.tolist())},
    "check_reward": {"numpy float64": _then("check_reward", np.float64),
                     "0-d tensor": _then("check_reward", lambda v: torch.tensor(v, dtype=torch.float64))},
    "check_boundary": {"numpy int64": _then("check_boundary", np.int64),
                       "0-d tensor": _then("check_boundary", torch.tensor)},
    "check_window_loss": {"0-d tensor": _then("check_window_loss",
                                              lambda v: None if v is None else torch.tensor(v, dtype=torch.float64))},
}


# --- wrong kinds of answers ----------------------------------------------------------------------

class _Answer:
    """A callable object (no ``__name__``) that returns ``value``."""

    def __init__(self, value):
        self.value = value

    def __call__(self, *args):
        return self.value


def _returns(value, *args):
    return value


def _divides_by_zero(*args):
    return 1 / 0


def _asserts(*args):
    assert args == (), "the learner's own assert"


# Wrong for every check: (answer, words the printed sentence must contain).
GENERIC = {
    "returns None": (lambda *args: None, "returned None"),
    "returns a str": (lambda *args: "42", "returned the str '42'"),
    "returns a dict": (lambda *args: {"answer": 1}, "returned a dict"),
    "a partial returning a list": (functools.partial(_returns, ["a", "b", "c"]), "returned a list of 3 items"),
    "a callable object returning an object": (_Answer(object()), "returned an object"),
    "raises ZeroDivisionError": (_divides_by_zero, "your function raised ZeroDivisionError: division by zero"),
    "its own assert fails": (_asserts, "your function raised AssertionError: the learner's own assert"),
}


def _step_logits_only(model, idx, cache):
    return model.step(idx, cache)[0]


def _step_all_positions(model, idx, cache):
    return model(idx[:, -model.block_size:])


def _step_numpy_logits(model, idx, cache):
    logits, cache = model.step(idx, cache)
    return logits.numpy(), cache


def _step_swapped(model, idx, cache):
    logits, cache = model.step(idx, cache)
    return cache, logits


T = _then
# Wrong for one check: {check: {label: (answer, words the sentence must contain)}}.
SPECIFIC = {
    "check_rms_norm": {
        "numpy array": (T("check_rms_norm", lambda t: t.numpy()), "returned a float32 numpy array of shape (2, 5, 16)"),
        "last feature dropped": (T("check_rms_norm", lambda t: t[..., :-1]), "shape (2, 5, 15)"),
        "a 0-d tensor": (T("check_rms_norm", lambda t: t.mean()), "shape ()"),
        "float64": (T("check_rms_norm", lambda t: t.double()), "returned a float64 torch tensor"),
    },
    "check_repeat_kv": {
        "numpy array": (T("check_repeat_kv", lambda t: t.numpy()), "numpy array"),
        "nested list": (T("check_repeat_kv", lambda t: t.tolist()), "returned a list of 2 items"),
        "the input unchanged": (lambda x, n: x, "n_rep=2: your function returned a float32 torch tensor of shape (2, 3, 4, 8)"),
        "a bool tensor": (T("check_repeat_kv", lambda t: t > 0), "returned a bool torch tensor"),
    },
    "check_parameter_count": {
        "the count as a str": (T("check_parameter_count", str), "returned the str '494032768'"),
        "a one-element tensor": (T("check_parameter_count", lambda n: torch.tensor([n])),
                                 "int64 torch tensor of shape (1,); return the number of parameters, an int (.item()"),
        "a bool": (lambda c: True, "returned the bool True"),
        "a one-item list": (T("check_parameter_count", lambda n: [n]), "returned a list of 1 item;"),
    },
    "check_rope_cos_sin": {
        "cos only": (T("check_rope_cos_sin", lambda pair: pair[0]), "return a pair (cos, sin)"),
        "stacked": (T("check_rope_cos_sin", torch.stack), "shape (2, 2, 40, 16); return a pair (cos, sin)"),
        "numpy pair": (T("check_rope_cos_sin", lambda pair: tuple(t.numpy() for t in pair)),
                       "theta 1e4: cos: your function returned a float32 numpy array"),
        "three items": (T("check_rope_cos_sin", lambda pair: (*pair, None)), "returned a tuple of 3 items"),
    },
    "check_top_k": {
        "numpy array": (T("check_top_k", lambda t: t.numpy()), "returned a float32 numpy array of shape (4, 50)"),
        "nested list": (T("check_top_k", lambda t: t.tolist()), "returned a list of 4 items"),
        "the kept ids": (lambda x, k: x.topk(min(k, x.shape[-1])).indices, "int64 torch tensor of shape (4, 1)"),
        "row 0 only": (T("check_top_k", lambda t: t[0]), "shape (50,)"),
    },
    "check_top_p": {
        "numpy array": (T("check_top_p", lambda t: t.numpy()), "numpy array"),
        "the keep mask": (T("check_top_p", lambda t: t > float("-inf")), "returned a bool torch tensor"),
        "transposed": (T("check_top_p", lambda t: t.T), "shape (50, 4)"),
    },
    "check_greedy_loop": {
        "a list of ids": (T("check_greedy_loop", lambda t: t[0].tolist()), "returned a list of 13 items"),
        "one row, 1-D": (T("check_greedy_loop", lambda t: t[0]), "shape (13,)"),
        "float ids": (T("check_greedy_loop", lambda t: t.float()), "returned a float32 torch tensor"),
        "numpy array": (T("check_greedy_loop", lambda t: t.numpy()), "int64 numpy array"),
    },
    "check_append_kv": {
        "K only": (T("check_append_kv", lambda kv: kv[0]), "past=None: your function returned a float32 torch tensor"),
        "a dict": (T("check_append_kv", lambda kv: {"k": kv[0], "v": kv[1]}), "return a pair (K, V)"),
        "stacked": (T("check_append_kv", torch.stack), "shape (2, 2, 3, 1, 8); return a pair (K, V)"),
        "numpy pair": (T("check_append_kv", lambda kv: tuple(t.numpy() for t in kv)),
                       "past=None: K: your function returned a float32 numpy array"),
    },
    "check_decode_attention": {
        "numpy array": (T("check_decode_attention", lambda t: t.numpy()), "numpy array"),
        "heads merged": (T("check_decode_attention", lambda t: t.transpose(1, 2).flatten(2)), "shape (2, 1, 96)"),
        "with the weights": (T("check_decode_attention", lambda t: (t, None)), "returned a tuple of 2 items"),
    },
    "check_kv_cache_bytes": {
        "a str": (T("check_kv_cache_bytes", str), "returned the str"),
        "a formatted str": (T("check_kv_cache_bytes", lambda n: f"{n:,} bytes"), "bytes'"),
        "a one-element tensor": (T("check_kv_cache_bytes", lambda n: torch.tensor([n])), "shape (1,)"),
    },
    "check_distinct_n": {
        "a str": (T("check_distinct_n", str), "returned the str"),
        "the counts": (lambda items, n: (1, 1), "returned a tuple of 2 items"),
        "the set of n-grams": (lambda items, n: {tuple(items[i:i + n]) for i in range(len(items) - n + 1)},
                               "returned a set"),
    },
    "check_cached_step": {
        "the logits only": (_step_logits_only, "step 0 (sequence length 3, block_size 8): your function returned a "
                                               "float32 torch tensor of shape (2, 9); return a pair (logits, cache)"),
        "every position's logits": (_step_all_positions, "shape (2, 3, 9)"),
        "numpy logits": (_step_numpy_logits, "numpy array"),
        "(cache, logits)": (_step_swapped, "logits: your function returned a list of 2 items"),
    },
    "check_jacobi_step": {
        "a list": (T("check_jacobi_step", lambda t: t.tolist()), "block of 1: your function returned a list of 1 item"),
        "float ids": (T("check_jacobi_step", lambda t: t.float()), "float32 torch tensor"),
        "a batch of one": (T("check_jacobi_step", lambda t: t[None]), "shape (1, 1)"),
        "numpy array": (T("check_jacobi_step", lambda t: t.numpy()), "numpy array"),
    },
    "check_verified_prefix": {
        "a str": (T("check_verified_prefix", str), "returned the str '1'"),
        "a one-element tensor": (T("check_verified_prefix", lambda n: torch.tensor([n])), "shape (1,)"),
        "a bool": (lambda guess, predicted: True, "returned the bool True"),
        "the committed tokens": (lambda guess, predicted: predicted[:verified_prefix(guess, predicted)],
                                 "int64 torch tensor of shape (1,)"),
    },
    "check_fourier_features": {
        "numpy array": (T("check_fourier_features", lambda t: t.numpy()), "numpy array"),
        "without xyz": (T("check_fourier_features", lambda t: t[..., 3:]), "shape (2, 7, 48)"),
        "float64": (T("check_fourier_features", lambda t: t.double()), "float64 torch tensor"),
        "(sines, cosines)": (T("check_fourier_features", lambda t: (t[..., 3:27], t[..., 27:])), "tuple of 2 items"),
    },
    "check_normalize_points": {
        "a trimesh PointCloud": (T("check_normalize_points", trimesh.PointCloud), "returned a PointCloud"),
        "transposed": (T("check_normalize_points", lambda a: a.T), "shape (3, 50)"),
        "the scale only": (lambda points: 2.0, "returned the float 2.0"),
    },
    "check_chamfer": {
        "the two means": (lambda p, q: (torch.tensor(1.0), torch.tensor(5.0)), "returned a tuple of 2 items"),
        "the distance matrix": (lambda p, q: torch.cdist(p, q), "float64 torch tensor of shape (1, 2)"),
        "a str": (T("check_chamfer", lambda v: str(float(v))), "returned the str '6.0'"),
        "a one-element array": (T("check_chamfer", lambda v: np.array([float(v)])), "numpy array of shape (1,)"),
    },
    "check_through_bore": {
        "the volume": (T("check_through_bore", lambda w: round(w.val().Volume())), "radius 15: your function returned the int 525553; "
                                                                                    "return a CadQuery Workplane"),
        "the sketch, not extruded": (lambda radius: cq.Workplane("ZX").sketch().rect(200, 120), "returned a Sketch"),
        "an empty Workplane": (lambda radius: cq.Workplane("ZX"), "returned a Workplane with nothing on its stack"),
        "a Workplane of points": (lambda radius: cq.Workplane("ZX").pushPoints([(0, 0)]), "a Workplane holding a Vector"),
    },
    "check_embed_prompt": {
        "numpy array": (T("check_embed_prompt", lambda t: t.detach().numpy()), "numpy array"),
        "row 0 only": (T("check_embed_prompt", lambda t: t[0]), "shape (257, 64)"),
        "float64": (T("check_embed_prompt", lambda t: t.double()), "float64 torch tensor"),
    },
    "check_cached_greedy": {
        "prompt and new tokens": (lambda model, inputs, steps: torch.cat([inputs["input_ids"],
                                                                          cached_greedy(model, inputs, steps)], 1),
                                  "shape (2, 265)"),
        "float ids": (T("check_cached_greedy", lambda t: t.float()), "float32 torch tensor"),
        "a list of steps": (T("check_cached_greedy", lambda t: list(t.T[:, :, None])), "returned a list of 8 items"),
    },
    "check_box_iou": {
        "the two volumes": (lambda mesh: (mesh.volume, float(np.prod(mesh.extents))), "tuple of 2 items"),
        "a one-element array": (lambda mesh: np.array([mesh.volume / np.prod(mesh.extents)]), "numpy array"),
        "the box mesh": (lambda mesh: mesh.bounding_box, "Box"),
    },
    "check_to_grid": {
        "floats": (lambda points: np.asarray(points) * 100, "returned a float64 numpy array of shape (2, 3)"),
        "transposed": (T("check_to_grid", lambda a: a.T), "shape (3, 2)"),
        "a flat list": (T("check_to_grid", lambda a: a.ravel().tolist()), "returned a list of 6 items"),
    },
    "check_insert_points": {
        "numpy array": (T("check_insert_points", lambda t: t.numpy()), "numpy array"),
        "the point embeddings only": (lambda embeds, point_embeds, is_pc, mask: point_embeds, "shape (2, 256, 64)"),
        "with the mask": (T("check_insert_points", lambda t: (t, None)), "tuple of 2 items"),
        "float64": (T("check_insert_points", lambda t: t.double()), "float64 torch tensor"),
    },
    "check_decode_positions": {
        "one axis": (T("check_decode_positions", lambda t: t[0]), "shape (3, 1)"),
        "float positions": (T("check_decode_positions", lambda t: t.float()), "float32 torch tensor"),
        "a ragged list": (lambda deltas, past, n: [[1, 2], [3]], "returned a list of 2 items"),
    },
    "check_reward": {
        "a str": (T("check_reward", str), "reward(1.0): your function returned the str '10.0'"),
        "with a flag": (T("check_reward", lambda r: (r, True)), "returned a tuple of 2 items"),
        "a one-element tensor": (T("check_reward", lambda r: torch.tensor([r])), "shape (1,)"),
        "a bool": (lambda iou: iou is not None, "returned the bool True"),
    },
    "check_boundary": {
        "the token's span": (lambda offsets, cut: offsets[ac.token_boundary(offsets, cut)[0]],
                             "returned a tuple of 2 items"),
        "the kept indices": (lambda offsets, cut: list(range(ac.token_boundary(offsets, cut)[0])),
                             "returned a list of 2 items"),
        "a one-element tensor": (T("check_boundary", lambda i: torch.tensor([i])), "shape (1,)"),
    },
    "check_window_loss": {
        "the label tokens' losses": (lambda mbs: torch.cat([l[m] for l, m in mbs]), "float32 torch tensor of shape (10,)"),
        "(sum, count)": (lambda mbs: (1.0, 2), "returned a tuple of 2 items"),
        "a str for the empty window": (lambda mbs: "nothing" if window_loss(mbs) is None else window_loss(mbs),
                                       "label tokens per micro-batch [0, 0]: your function returned the str 'nothing'"),
    },
    "check_allowed": {
        "the token texts": (lambda automaton, texts, state: ["f(", "f"], "returned a list of 2 items"),
        "a mask tensor": (lambda automaton, texts, state: torch.ones(20, dtype=torch.bool), "bool torch tensor of shape (20,)"),
        "(ids, count)": (lambda automaton, texts, state: ([0, 1], 2), "returned a tuple of 2 items"),
    },
    "check_integer_grammar": {
        "the regex": (lambda hi: to_regex(integers(0, hi)), "returned the str"),
        "the automaton": (lambda hi: Automaton(integers(0, hi)), "returned an Automaton"),
        "the numbers": (lambda hi: [str(n) for n in range(hi + 1)], "returned a list of 256 items"),
    },
    "check_masked_distribution": {
        "p only": (T("check_masked_distribution", lambda pk: pk[0]), "float64 torch tensor of shape (12,)"),
        "kept as a one-element tensor": (T("check_masked_distribution", lambda pk: (pk[0], torch.tensor([pk[1]]))),
                                         "kept: your function returned a float32 torch tensor of shape (1,)"),
        "(p, kept, logits)": (T("check_masked_distribution", lambda pk: (*pk, None)), "returned a tuple of 3 items"),
    },
    "check_merged_weight": {
        "numpy array": (T("check_merged_weight", lambda t: t.numpy()), "numpy array"),
        "transposed": (T("check_merged_weight", lambda t: t.T), "shape (4, 6)"),
        "float64": (T("check_merged_weight", lambda t: t.double()), "float64 torch tensor"),
        "(W, delta)": (lambda w, a, b, alpha, r: (w, (alpha / r) * (b @ a)), "tuple of 2 items"),
    },
}


def wrong_cases() -> list[tuple[str, str, object, str]]:
    """(check, label, wrong answer, words the sentence must contain) for every check: generic and specific."""
    return ([(check, label, fn, words) for check in sorted(CHECKS) for label, (fn, words) in GENERIC.items()]
            + [(check, label, fn, words) for check in sorted(SPECIFIC) for label, (fn, words) in SPECIFIC[check].items()])


WRONG = wrong_cases()


def test_every_check_has_cases():
    assert len(CHECKS) >= 26, sorted(CHECKS)
    assert set(REFERENCE) == set(CHECKS)
    assert set(SPECIFIC) == set(CHECKS)
    assert all(len(cases) >= 3 for cases in SPECIFIC.values())


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_the_right_answer_passes(check):
    assert CHECKS[check](REFERENCE[check]) is True


@pytest.mark.parametrize("check, label", [(c, label) for c in sorted(ACCEPTED) for label in ACCEPTED[c]])
def test_the_right_answer_as_another_scalar_or_container_passes(check, label):
    assert CHECKS[check](ACCEPTED[check][label]) is True


@pytest.mark.parametrize("check, label, fn, words", WRONG, ids=[f"{c}-{label}" for c, label, _, _ in WRONG])
def test_a_wrong_kind_of_answer_gives_one_sentence_and_false(check, label, fn, words, capsys):
    assert CHECKS[check](fn) is False
    printed = capsys.readouterr().out.strip()
    assert "\n" not in printed and printed.startswith(f"{check}: ") and printed.endswith("."), printed
    assert words in printed, printed


def _stub(*args):
    raise NotImplementedError


class _Todo:
    def __call__(self, *args):
        raise NotImplementedError


@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("stub", [functools.partial(_stub), _Todo(), lambda *args: _stub()],
                         ids=["partial", "callable object", "lambda"])
def test_an_unnamed_stub_is_not_attempted(check, stub, capsys):
    assert CHECKS[check](stub) is False
    assert "not attempted yet" in capsys.readouterr().out


def test_describe_names_the_kind_of_value():
    assert describe(None) == "None"
    assert describe("abc") == "the str 'abc'"
    assert describe(3) == "the int 3" and describe(True) == "the bool True"
    assert describe(np.float64(0.5)) == "the numpy float64 0.5"
    assert describe(np.zeros((3, 4))) == "a float64 numpy array of shape (3, 4)"
    assert describe(torch.zeros(2, 7, dtype=torch.bfloat16)) == "a bfloat16 torch tensor of shape (2, 7)"
    assert describe((1, 2)) == "a tuple of 2 items" and describe([0]) == "a list of 1 item"
    assert describe(object()) == "an object" and describe({}) == "a dict"


def test_function_name_without_a_dunder_name():
    def my_top_k(x, k):
        return x

    assert function_name(my_top_k) == "my_top_k"
    assert function_name(functools.partial(my_top_k, k=3)) == "my_top_k"
    assert function_name(_Answer(1)) == "_Answer"
    assert function_name(lambda x: x) == "your function"
