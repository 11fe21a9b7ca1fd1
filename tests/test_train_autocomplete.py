"""cadlab.train.autocomplete on a tiny random model: the log, the masked labels, resuming, the shipped
adapter, and the evaluation's scoring."""

import json
import types

import pytest
import torch
from training_checks import (
    check_a_finished_run_started_again_is_a_new_run,
    check_stopped_and_resumed_equals_uninterrupted,
)

from cadlab.cad import autocomplete as ac
from cadlab.cad import deepcad
from cadlab.lm.models import tiny_qwen2
from cadlab.train import autocomplete as ta


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from cadlab.lm.models import smollm2_folder

    return AutoTokenizer.from_pretrained(smollm2_folder())


def _base(tokenizer, seed=0):
    return tiny_qwen2(seed=seed, vocab_size=len(tokenizer)), tokenizer


def _settings(**kw):
    base = dict(accumulation=2, held_out_parts=2, max_seq_length=700, bf16=False, warmup=1, lr=1e-2,
                checkpoint_minutes=100.0, from_shipped=False, max_steps=4)
    return ta.TrainSettings(**{**base, **kw})


def _adapter(folder):
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def test_micro_batches_mask_the_prompt_and_skip_long_parts(tokenizer):
    seeds = [s for s in range(12) if ta.part_micro_batch(tokenizer, s, 700) is None]
    assert seeds, "some parts are longer than 700 tokens"
    example = next(ta.part_micro_batch(tokenizer, s, 700) for s in range(12) if s not in seeds)
    caption, _ = deepcad.sample_sequence(next(s for s in range(12) if s not in seeds))
    prompt = len(tokenizer(ac.PROMPT.format(caption=caption))["input_ids"])
    assert all(t == -100 for t in example["labels"][:prompt + 20])           # prompt and the first sketch
    assert example["labels"][-1] == tokenizer.eos_token_id and example["weights"][-1] >= 1
    assert all((w == 0) == (t == -100) for w, t in zip(example["weights"], example["labels"]))
    assert ta.kept_for(2, 0.25) == ta.kept_for(2, 0.75) == 1
    assert [ta.kept_for(6, f) for f in ta.FRACTIONS] == [2, 3, 5] and [ta.kept_for(8, f) for f in ta.FRACTIONS] == [2, 4, 6]


def test_train_writes_the_log_and_a_loadable_adapter(tmp_path, tokenizer):
    log = ta.train(tmp_path / "run", tmp_path / "out", _settings(), base=_base(tokenizer), progress=False)
    assert [r["step"] for r in log["train"]] == [1, 2, 3, 4]
    assert all(r["loss"] > 0 and r["tokens"] <= 2 * 700 for r in log["train"])
    assert [v["step"] for v in log["val"]] == [0, 4] and log["val"][1]["loss"] < log["val"][0]["loss"]
    assert sum(r["skipped"] for r in log["train"]) > 0 and log["runs"][0]["steps"] == 4
    assert log["total_seconds"] == log["runs"][0]["seconds"] >= 0      # rounded to 0.1 s: a fast machine may write 0.0
    shipped = json.loads((tmp_path / "out" / "training_log.json").read_text())
    assert shipped["train"] == log["train"] and shipped["config"]["r"] == 8
    assert shipped["config"]["trainable_parameters"] == 2 * 8 * (
        (64 + 64) * 2 + (64 + 32) * 2 + (64 + 128) * 3)                    # q, o; k, v; gate, up, down
    weights = _adapter(tmp_path / "out")
    assert all(v.dtype == torch.float16 for v in weights.values()) and len(weights) == 2 * 7 * 2
    assert (tmp_path / "out" / "loss_curves.png").stat().st_size > 1000
    model, _ = ta.load_autocomplete(tmp_path / "out", base=_base(tokenizer))
    assert not any("lora" in n for n, _ in model.named_parameters())      # merged into plain Linears


def _train_tiny(tokenizer):
    def run(run_dir, out_dir, **overrides):
        return ta.train(run_dir, out_dir, _settings(**overrides), base=_base(tokenizer), progress=False)
    return run


def test_a_run_stopped_and_resumed_equals_an_uninterrupted_one(tmp_path, tokenizer):
    check_stopped_and_resumed_equals_uninterrupted(_train_tiny(tokenizer), tmp_path)


def test_a_finished_run_started_again_is_a_new_run(tmp_path, tokenizer):
    check_a_finished_run_started_again_is_a_new_run(_train_tiny(tokenizer), tmp_path)


def test_new_run_starts_from_the_shipped_adapter_and_keeps_the_eval(tmp_path, tokenizer):
    ta.train(tmp_path / "run", tmp_path / "out", _settings(max_steps=1), base=_base(tokenizer), progress=False)
    path = tmp_path / "out" / "training_log.json"
    log = json.loads(path.read_text())
    log["memory"] = {"rows": [1]}
    path.write_text(json.dumps(log))
    again = ta.train(tmp_path / "run2", tmp_path / "out", _settings(max_steps=1, from_shipped=True),
                     base=_base(tokenizer), progress=False)
    assert again["train"][-1]["step"] == 2 and len(again["runs"]) == 2
    assert json.loads(path.read_text())["memory"] == {"rows": [1]}


def test_score_completion_parses_builds_and_compares(tokenizer):
    caption, full = deepcad.sample_sequence(4)
    truth, _ = deepcad.build_solid(full, timeout=30)
    kept = ta.kept_for(len(full["sequence"]), 0.5)
    rest = deepcad.serialize(full)[len(deepcad.serialize(full, kept)):]
    assert ta.score_completion(full, kept, rest, truth.mesh) == {"parsed": True, "valid": True, "iou": pytest.approx(1.0)}
    broken = ta.score_completion(full, kept, rest[:-3], truth.mesh)
    assert (broken["parsed"], broken["valid"], broken["iou"]) == (False, False, 0.0)
    assert broken["error"] and broken["error_at"] == len(rest) - 3 and broken["near"].endswith(rest[-7:-3])
    closed = ta.score_completion(full, kept, deepcad.CLOSE, truth.mesh)        # stop right away: a part of the part
    assert closed["parsed"] and closed["iou"] < 1.0


def test_complete_stops_at_the_close_and_sampling_is_seeded(tokenizer):
    model = tiny_qwen2(seed=3, vocab_size=len(tokenizer))
    prompts = ["Complete this CAD sequence: A plate.\n{", "Complete this CAD sequence: A nut.\n{\"properties\""]
    greedy = ta.complete(model, tokenizer, prompts, max_new_tokens=6)
    assert greedy == ta.complete(model, tokenizer, prompts, max_new_tokens=6) and len(greedy) == 2
    one = ta.complete(model, tokenizer, prompts, max_new_tokens=6, sample=True, seed=1)
    assert one == ta.complete(model, tokenizer, prompts, max_new_tokens=6, sample=True, seed=1)


def test_loss_by_kind_splits_digits_from_structure(tokenizer):
    model = tiny_qwen2(seed=4, vocab_size=len(tokenizer))
    kinds = ta.loss_by_kind(model, tokenizer, [1, 2])
    assert 0.05 < kinds["digit_share"] < 0.5                      # numbers: a minority of the tokens
    low, high = sorted((kinds["digits"], kinds["structure"]))
    assert low <= kinds["all"] <= high
    assert kinds["all"] == pytest.approx(kinds["digits"] * kinds["digit_share"]
                                         + kinds["structure"] * (1 - kinds["digit_share"]), rel=1e-3)


def test_evaluate_reports_each_decoding_as_it_finishes(tokenizer):
    model = tiny_qwen2(seed=5, vocab_size=len(tokenizer))
    seen = []
    table = ta.completion_table(model, tokenizer, [4], fractions=(0.5,), progress=False,
                        on_decoding=lambda t: seen.append(sorted(k for k in t if k in ("greedy", "sampled"))))
    assert seen == [["greedy"], ["greedy", "sampled"]]
    for decoding in ("greedy", "sampled"):
        block = table[decoding]
        assert block["by_fraction"]["0.5"]["n"] == 1 and len(block["rows"]) == 1
        assert block["rows"][0]["parsed"] is False           # a random model writes no JSON


def test_stop_decisions_count_every_extrude_and_read_the_two_tokens(tokenizer):
    model = tiny_qwen2(seed=6, vocab_size=len(tokenizer))
    seeds = [1, 2, 3]
    result = ta.stop_decisions(model, tokenizer, seeds)
    extrudes = [sum(item["type"] == "ExtrudeFeature" for item in deepcad.sample_sequence(s)[1]["sequence"]) for s in seeds]
    assert result["close"]["n"] == len(seeds) and result["continue"]["n"] == sum(extrudes) - len(seeds)
    assert set(result["p_close_at_the_end"]) == set(seeds)
    assert all(0.0 <= p <= 1.0 for p in result["p_close_at_the_end"].values())
    # a model that always closes is right on every close and wrong on every continue
    stop = tokenizer(deepcad.CLOSE, add_special_tokens=False)["input_ids"][0]

    class AlwaysClose(torch.nn.Module):
        def forward(self, input_ids):
            logits = torch.nn.functional.one_hot(torch.full(input_ids.shape, stop), len(tokenizer)).float()
            return types.SimpleNamespace(logits=logits)

    always = ta.stop_decisions(AlwaysClose(), tokenizer, seeds)
    assert always["close"]["right"] == 1.0 and always["continue"]["right"] == 0.0


def test_the_kept_only_baseline_scores_the_truncated_part_as_it_is():
    from cadlab.cad import deepcad
    from cadlab.cad.metrics import iou as volume_iou
    from cadlab.train.autocomplete import HELD_OUT_START, kept_only_table

    seeds = [HELD_OUT_START, HELD_OUT_START + 1]
    table = kept_only_table(seeds, fractions=(0.5,))
    assert len(table["rows"]) == 2 and set(table["by_fraction"]) == {"0.5"}
    for row in table["rows"]:
        _, full = deepcad.sample_sequence(row["seed"])
        assert row["parsed"] and row["valid"] and row["completion"] == deepcad.CLOSE
        truncated = deepcad.build_solid(deepcad.truncate(full, row["kept"]))[0].mesh
        whole = deepcad.build_solid(full)[0].mesh
        assert row["iou"] == pytest.approx(volume_iou(whole, truncated, normalize=False), abs=1e-6)
        assert 0 < row["iou"] < 1                   # kept < all operations: something is missing
    assert table["by_fraction"]["0.5"]["mean_iou"] == pytest.approx(sum(r["iou"] for r in table["rows"]) / 2)


def test_a_run_from_the_shipped_adapter_goes_on_to_parts_it_has_not_seen(tmp_path, tokenizer):
    first = ta.train(tmp_path / "run", tmp_path / "out", _settings(max_steps=2), base=_base(tokenizer), progress=False)
    cursor = first["position"]["cursor"]
    assert cursor >= 2 * 2 and json.loads((tmp_path / "out" / "training_log.json").read_text())["position"] == {
        "cursor": cursor}
    again = ta.train(tmp_path / "run2", tmp_path / "out", _settings(max_steps=1, from_shipped=True),
                     base=_base(tokenizer), progress=False)
    assert again["position"]["cursor"] > cursor              # the next parts of the order, not the first again


def test_the_decision_tokens_are_the_separator_or_the_close_and_take_their_weight(tokenizer):
    go, stop = (tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in (deepcad.SEPARATOR, deepcad.CLOSE))
    for seed in range(6):
        caption, full = deepcad.sample_sequence(seed)
        ids = tokenizer(ac.PROMPT.format(caption=caption) + deepcad.serialize(full))["input_ids"]
        decisions = ac.decision_tokens(tokenizer, caption, full)
        extrudes = sum(item["type"] == "ExtrudeFeature" for item in full["sequence"])
        assert len(decisions) == extrudes and list(decisions.values()).count("close") == 1
        assert all(ids[t] == (stop if kind == "close" else go) for t, kind in decisions.items())
        plain, weighted = ac.part_example(tokenizer, caption, full), ac.part_example(tokenizer, caption, full,
                                                                                   decision_weight=5)
        changed = {t for t, (a, b) in enumerate(zip(plain["weights"], weighted["weights"])) if a != b}
        assert changed == {t for t in decisions if plain["weights"][t] > 0}
        assert all(weighted["weights"][t] == 5 * plain["weights"][t] for t in changed)
        assert decisions and max(decisions) in changed      # the close is always labelled


def test_two_evaluations_one_decoding_each_fill_one_table(tmp_path, tokenizer, monkeypatch):
    ta.train(tmp_path / "run", tmp_path / "out", _settings(max_steps=1), base=_base(tokenizer), progress=False)
    monkeypatch.setattr(ta, "load_base", lambda name=None: _base(tokenizer, seed=0))
    monkeypatch.setattr(ta, "held_out_seeds", lambda n, tok=None, length=None: [ta.HELD_OUT_START + 1][:n])
    ta.evaluate(tmp_path / "out", parts=1, which=("fine_tuned",), decodings=("greedy",), progress=False)
    ta.evaluate(tmp_path / "out", parts=1, which=("fine_tuned",), decodings=("sampled",), progress=False)
    log = json.loads((tmp_path / "out" / "training_log.json").read_text())
    tuned = log["eval"]["fine_tuned"]
    assert {"greedy", "sampled"} <= set(tuned) and len(tuned["greedy"]["rows"]) == len(tuned["sampled"]["rows"]) == 3
    assert log["train"] and "stop_decisions" in log["eval"]            # the training log is kept around the table
