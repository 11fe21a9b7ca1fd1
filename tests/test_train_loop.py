"""The one training loop: its schedule, its flags, its log, and babyGPT's recipe resumed exactly.

The other recipes' resume tests live beside their own fixtures (test_train_cadrecode.py,
test_train_cadrille.py, test_train_autocomplete.py) and use the same checks (training_checks.py).
"""

import argparse
import dataclasses
import json
import math

import pytest
import torch
from training_checks import (
    check_a_finished_run_started_again_is_a_new_run,
    check_stopped_and_resumed_equals_uninterrupted,
)

from cadlab.lm.babygpt import BabyGPT, CharTokenizer
from cadlab.train import autocomplete, babygpt, cadrecode, cadrille, loop

TEXT = "to be, or not to be, that is the question: whether 'tis nobler in the mind to suffer " * 8


def test_learning_rate_warms_up_then_follows_a_cosine_to_the_floor():
    assert loop.learning_rate(0, 60, 0, 1e-3, 10) == pytest.approx(1e-4)
    assert loop.learning_rate(0, 60, 9, 1e-3, 10) == pytest.approx(1e-3)
    assert loop.learning_rate(0, 60, 10, 1e-3, 10) == pytest.approx(1e-3)
    assert loop.learning_rate(30, 60, 10, 1e-3, 10) == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5))   # half-way
    assert loop.learning_rate(60, 60, 500, 1e-3, 10) == pytest.approx(5e-5)
    assert loop.learning_rate(90, 60, 500, 1e-3, 10, floor=0.1) == pytest.approx(1e-4)   # past the budget: the floor
    # babyGPT's published schedule (no warm-up, cosine to a tenth over the steps), to the last bit
    for step in range(300):
        written = 3e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / 300)))
        assert loop.learning_rate(step, 300, step, 3e-3, 0, 0.1) == written


@pytest.mark.parametrize("settings_class", [babygpt.TrainSettings, cadrecode.TrainSettings, cadrille.TrainSettings,
                                            autocomplete.TrainSettings])
def test_flags_round_trip_to_the_settings_and_every_flag_has_help(settings_class):
    parser = argparse.ArgumentParser()
    loop.flags(parser, settings_class)
    assert loop.settings_from(parser.parse_args([]), settings_class) == settings_class()
    assert all(action.help for action in parser._actions if action.option_strings and action.dest != "help")
    changed = {"max_steps": 7, "lr": 0.5, "bf16": not settings_class().bf16, "device": "cuda", "threads": 3}
    argv = ["--max-steps", "7", "--lr", "0.5", "--bf16" if changed["bf16"] else "--no-bf16", "--device", "cuda",
            "--threads", "3"]
    settings = loop.settings_from(parser.parse_args(argv), settings_class)
    assert {k: getattr(settings, k) for k in changed} == changed
    names = {f.name for f in dataclasses.fields(settings_class)} - {"vision"}
    assert {a.dest for a in parser._actions} - {"help"} == names


def test_a_dict_setting_takes_key_equals_number():
    parser = argparse.ArgumentParser()
    loop.flags(parser, cadrille.TrainSettings)
    assert parser.parse_args(["--rows", "pc=2,img=0,text=5"]).rows == {"pc": 2, "img": 0, "text": 5}
    with pytest.raises(SystemExit):
        parser.parse_args(["--rows", "pc"])


def test_write_log_keeps_what_others_wrote(tmp_path):
    (tmp_path / "training_log.json").write_text(json.dumps({"eval": {"iou": 0.5}, "train": [1]}))
    loop.write_log({"train": [1, 2], "val": [], "runs": [], "config": {}}, tmp_path)
    assert json.loads((tmp_path / "training_log.json").read_text()) == {
        "eval": {"iou": 0.5}, "train": [1, 2], "val": [], "runs": [], "config": {}}


# --- babyGPT's recipe -------------------------------------------------------------------------

def _babygpt_train(run_dir, out_dir, **overrides):
    tokenizer = CharTokenizer.from_text(TEXT)
    ids = torch.tensor(tokenizer.encode(TEXT))
    config = dict(vocab_size=tokenizer.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.2)
    recipe = babygpt.BabyGPTRecipe(config, tokenizer, ids[:500], ids[500:], batch_size=4, seed=0, eval_batches=2)
    settings = babygpt.settings_for(overrides.pop("max_steps"), 1e-2, 0, eval_every=100, **overrides)
    return loop.train(recipe, run_dir, out_dir, settings, progress=False)


def test_babygpt_stopped_and_resumed_equals_uninterrupted(tmp_path):
    check_stopped_and_resumed_equals_uninterrupted(_babygpt_train, tmp_path)


def test_babygpt_finished_run_started_again_is_a_new_run(tmp_path):
    check_a_finished_run_started_again_is_a_new_run(_babygpt_train, tmp_path)


def test_a_new_run_on_a_finished_one_takes_its_own_learning_rate(tmp_path):
    first = _babygpt_train(tmp_path / "run", None, max_steps=2)
    assert max(r["lr"] for r in first["train"]) == pytest.approx(1e-2)
    settings = babygpt.settings_for(2, 1e-3, 0, eval_every=100)
    tokenizer = CharTokenizer.from_text(TEXT)
    ids = torch.tensor(tokenizer.encode(TEXT))
    config = dict(vocab_size=tokenizer.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.2)
    recipe = babygpt.BabyGPTRecipe(config, tokenizer, ids[:500], ids[500:], batch_size=4, seed=0, eval_batches=2)
    again = loop.train(recipe, tmp_path / "run", None, settings, progress=False)
    assert len(again["runs"]) == 2 and max(r["lr"] for r in again["train"][2:]) == pytest.approx(1e-3)


def test_a_run_logs_the_held_out_loss_before_its_first_step_and_at_its_end(tmp_path):
    log = _babygpt_train(tmp_path / "run", None, max_steps=3)
    assert [r["step"] for r in log["val"]] == [0, 3] and set(log["val"][0]) == {"step", "seconds", "train", "val"}
    assert [r["step"] for r in log["train"]] == [1, 2, 3] and log["runs"][0]["settings"]["max_steps"] == 3


def test_train_model_without_folders_trains_in_place_and_keeps_its_log_form():
    torch.manual_seed(0)
    tokenizer = CharTokenizer.from_text(TEXT)
    ids = torch.tensor(tokenizer.encode(TEXT))
    model = BabyGPT(vocab_size=tokenizer.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    log = babygpt.train_model(model, ids[:500], ids[500:], steps=5, batch_size=4, lr=1e-2, eval_every=2,
                              eval_batches=2, progress=False)
    assert len(log["train_loss"]) == 5 and [p["step"] for p in log["eval"]] == [2, 4, 5] and log["seconds"] >= 0
    assert not model.training and any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def _written_out_loop(model, train_ids, val_ids, steps, batch_size, lr, seed, eval_every, eval_batches):
    """babyGPT's training loop written out by hand, as nanoGPT would: the reference the loop must equal."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    losses, estimates = [], []
    model.train()
    for step in range(1, steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - 1) / steps)))
        loss = babygpt.lm_loss(model, *babygpt.get_batch(train_ids, batch_size, model.block_size, generator))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % eval_every == 0 or step == steps:
            estimates.append({"step": step, "train": babygpt.estimate_loss(model, train_ids, batch_size, eval_batches),
                              "val": babygpt.estimate_loss(model, val_ids, batch_size, eval_batches)})
    model.eval()
    return losses, estimates


def test_babygpt_through_the_loop_equals_its_loop_written_out():
    tokenizer = CharTokenizer.from_text(TEXT)
    ids = torch.tensor(tokenizer.encode(TEXT))
    results = []
    for train in ("written out", "the loop"):
        torch.manual_seed(3)                  # the same weights and the same dropout draws for both
        model = BabyGPT(vocab_size=tokenizer.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16, dropout=0.2)
        kwargs = dict(steps=7, batch_size=4, lr=1e-2, seed=5, eval_every=3, eval_batches=2)
        if train == "written out":
            losses, estimates = _written_out_loop(model, ids[:500], ids[500:], **kwargs)
        else:
            log = babygpt.train_model(model, ids[:500], ids[500:], progress=False, **kwargs)
            losses, estimates = log["train_loss"], log["eval"]
        results.append((losses, estimates, model.state_dict()))
    (a_losses, a_estimates, a), (b_losses, b_estimates, b) = results
    assert a_losses == b_losses and a_estimates == b_estimates
    assert all(torch.equal(a[k], b[k]) for k in a)
