"""cadlab.lm.parallel_decoding: lossless Jacobi decoding equals greedy; the seed's method is lossy; the CLI."""

import json

import pytest
import torch

from cadlab.lm import parallel_decoding
from cadlab.lm.models import tiny_qwen2
from cadlab.lm.parallel_decoding import (
    greedy_generate,
    iterative_generate,
    jacobi_generate,
    jacobi_trajectory,
    lookup_guess,
    main,
    read_prompts,
)

PAD = 2


@pytest.fixture(scope="module")
def left_padded():
    """Three prompts of 9, 5 and 7 tokens, left-padded to 9."""
    ids = torch.randint(3, 256, (3, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    mask[2, :2] = 0
    return ids.masked_fill(mask == 0, PAD), mask


def _common_prefix(a, b) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


# ----------------------------------------------------------------------------- Jacobi == greedy


@pytest.mark.parametrize("block_size", [1, 3, 8, 64])
def test_jacobi_equals_greedy_on_tiny_model_batched(tiny, left_padded, block_size):
    ids, mask = left_padded
    expected, _ = greedy_generate(tiny, ids, mask, max_new_tokens=30, eos_token_id=None)
    got, stats = jacobi_generate(tiny, ids, mask, block_size=block_size, max_new_tokens=30, eos_token_id=None)
    assert torch.equal(got, expected)
    assert stats["new_tokens"] == [30, 30, 30] and sum(stats["accepted_per_pass"]) == 30
    assert stats["forward_passes"] == len(stats["accepted_per_pass"]) <= 30


def test_left_padding_gives_each_row_its_unpadded_result(tiny, left_padded):
    ids, mask = left_padded
    batched, _ = jacobi_generate(tiny, ids, mask, block_size=8, max_new_tokens=20, eos_token_id=None)
    for row in range(3):
        alone = ids[row:row + 1, mask[row].bool()]
        single, _ = jacobi_generate(tiny, alone, block_size=8, max_new_tokens=20, eos_token_id=None)
        assert batched[row, -20:].tolist() == single[0, -20:].tolist()


def test_per_row_eos_and_padding(tiny, left_padded):
    ids, mask = left_padded
    free, _ = greedy_generate(tiny, ids, mask, max_new_tokens=30)
    # An EOS id that row 0 emits early, and a list of two ids.
    for eos in (free[0, 9 + 4].item(), [free[1, 9 + 6].item(), free[2, 9 + 11].item()]):
        expected, ref_stats = greedy_generate(tiny, ids, mask, max_new_tokens=30, eos_token_id=eos, pad_token_id=PAD)
        assert expected.shape[1] < 9 + 30 or min(ref_stats["new_tokens"]) < 30  # EOS really stops a row
        for block_size in (4, 16):
            got, stats = jacobi_generate(tiny, ids, mask, block_size=block_size, max_new_tokens=30,
                                         eos_token_id=eos, pad_token_id=PAD)
            assert torch.equal(got, expected), (eos, block_size)
            assert stats["new_tokens"] == ref_stats["new_tokens"]


def test_max_new_tokens_is_never_exceeded(tiny, left_padded):
    ids, mask = left_padded
    for n in (0, 1, 5, 17):
        got, stats = jacobi_generate(tiny, ids, mask, block_size=16, max_new_tokens=n, eos_token_id=None)
        assert got.shape == (3, 9 + n) and sum(stats["accepted_per_pass"]) == n


def test_lookup_guess_changes_passes_not_tokens(tiny, left_padded):
    assert lookup_guess(torch.tensor([5, 6, 7, 8, 5, 6]), 4, 0).tolist() == [7, 8, 5, 6]
    assert lookup_guess(torch.tensor([5, 6, 7, 5, 6]), 4, 0).tolist() == [7, 5, 6, 0]
    assert lookup_guess(torch.tensor([5, 6, 7]), 3, 0).tolist() == [0, 0, 0]      # no earlier occurrence
    ids, mask = left_padded
    expected, _ = greedy_generate(tiny, ids, mask, max_new_tokens=24)
    got, _ = jacobi_generate(tiny, ids, mask, block_size=8, max_new_tokens=24, eos_token_id=None,
                             initial_guess="lookup")
    assert torch.equal(got, expected)
    # A prompt that repeats itself: the lookup guess is the greedy continuation, so whole blocks are accepted.
    cycle = torch.tensor([[7, 8, 9, 10] * 6])
    expected, _ = greedy_generate(tiny, cycle, max_new_tokens=16)
    guess = lookup_guess(expected[0, :-16], 16, PAD)
    got, stats = jacobi_generate(tiny, cycle, block_size=16, max_new_tokens=16, eos_token_id=None,
                                 initial_guess="lookup")
    assert torch.equal(got, expected)
    verified = 1 + int((guess[:15] == expected[0, -16:-1]).long().cumprod(0).sum())
    assert stats["accepted_per_pass"][0] == verified
    with pytest.raises(ValueError, match="initial_guess"):
        jacobi_generate(tiny, ids, max_new_tokens=3, eos_token_id=None, initial_guess="random")


def test_max_iters_stays_lossless(tiny, left_padded):
    ids, mask = left_padded
    expected, _ = greedy_generate(tiny, ids, mask, max_new_tokens=25)
    got, stats = jacobi_generate(tiny, ids, mask, block_size=16, max_new_tokens=25, eos_token_id=None, max_iters=2)
    assert torch.equal(got, expected)


def test_jacobi_equals_greedy_on_the_offline_model(offline_lm):
    model, tokenizer = offline_lm
    prompts = ["The capital of France is", "def fibonacci(n):",
               "1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2,"]
    tokenizer.padding_side = "left"
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    assert (batch["attention_mask"] == 0).any()   # really left-padded
    eos = tokenizer.eos_token_id
    expected, _ = greedy_generate(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=12,
                                  eos_token_id=eos)
    got, stats = jacobi_generate(model, batch["input_ids"], batch["attention_mask"], block_size=8,
                                 max_new_tokens=12, eos_token_id=eos)
    assert torch.equal(got, expected)
    # The repetitive prompt alone, blocks guessed by prompt lookup: same tokens, far fewer passes.
    alone = tokenizer(prompts[2], return_tensors="pt")["input_ids"]
    expected, _ = greedy_generate(model, alone, max_new_tokens=16, eos_token_id=eos)
    got, stats = jacobi_generate(model, alone, block_size=8, max_new_tokens=16, eos_token_id=eos,
                                 initial_guess="lookup")
    assert torch.equal(got, expected) and stats["forward_passes"] <= 4
    # Alone, a chat prompt that ends with EOS before the budget: same tokens as HF's greedy generate.
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                         add_generation_prompt=True, return_tensors="pt", return_dict=True)
    got, stats = jacobi_generate(model, chat["input_ids"], block_size=8, max_new_tokens=20, eos_token_id=eos)
    library = model.generate(**chat, max_new_tokens=20, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    assert torch.equal(got, library)
    assert got[0, -1].item() == eos and stats["new_tokens"][0] < 20


# ----------------------------------------------------------------------------- the seed's method


def test_seed_method_guarantees_only_refine_iter_tokens_per_block(tiny):
    ids = torch.randint(3, 256, (1, 6), generator=torch.Generator().manual_seed(3))
    greedy, _ = greedy_generate(tiny, ids, max_new_tokens=16, eos_token_id=1, pad_token_id=PAD)
    assert greedy.shape == (1, 6 + 16) and 1 not in greedy[0, 6:].tolist()
    for refine_iter in (1, 2, 3):
        out = iterative_generate(tiny, ids, add_eos_length=7, refine_iter=refine_iter, max_new_tokens=16,
                                 eos_token_id=1, pad_token_id=PAD)
        assert _common_prefix(out[0].tolist(), greedy[0].tolist()) >= 6 + refine_iter
    # Two passes on an 8-token block: the block's tail is committed unchecked and departs from greedy.
    lossy = iterative_generate(tiny, ids, add_eos_length=7, refine_iter=2, max_new_tokens=16, eos_token_id=1,
                               pad_token_id=PAD)
    assert not torch.equal(lossy, greedy)
    # As many passes as block tokens reach the fixed point: then it is greedy decoding.
    exact = iterative_generate(tiny, ids, add_eos_length=7, refine_iter=8, max_new_tokens=16, eos_token_id=1,
                               pad_token_id=PAD)
    assert torch.equal(exact, greedy)


def test_seed_method_bounds_and_per_row_eos(tiny, left_padded):
    ids, mask = left_padded
    out = iterative_generate(tiny, ids, mask, add_eos_length=9, refine_iter=10, max_new_tokens=15,
                             max_length=100, eos_token_id=1, pad_token_id=PAD)
    greedy, _ = greedy_generate(tiny, ids, mask, max_new_tokens=15, eos_token_id=1, pad_token_id=PAD)
    assert torch.equal(out, greedy)                               # blocks of 10 at their fixed point
    short = iterative_generate(tiny, ids, mask, max_length=20, eos_token_id=1, pad_token_id=PAD)
    every_row_stopped = (short[:, 9:] == 1).any(dim=1).all()     # never past max_length (an EOS may end earlier)
    assert short.shape[1] == 20 or (short.shape[1] < 20 and every_row_stopped)
    free, _ = greedy_generate(tiny, ids, mask, max_new_tokens=12)
    eos = free[0, 9 + 3].item()                                   # row 0 stops after 4 tokens
    out = iterative_generate(tiny, ids, mask, add_eos_length=11, refine_iter=12, max_new_tokens=12,
                             eos_token_id=eos, pad_token_id=PAD)
    expected, _ = greedy_generate(tiny, ids, mask, max_new_tokens=12, eos_token_id=eos, pad_token_id=PAD)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("settings, message", [
    ({"add_eos_length": -1}, "add_eos_length"), ({"refine_iter": 0}, "refine_iter"),
    ({"max_new_tokens": 0}, "max_new_tokens"), ({"max_length": 5}, "max_length"),
    ({"eos_token_id": None}, "eos_token_id"), ({"refine_iter": 2.0}, "refine_iter"),
])
def test_seed_method_validates_its_parameters(tiny, settings, message):
    ids = torch.randint(3, 256, (1, 6), generator=torch.Generator().manual_seed(3))
    kwargs = {"eos_token_id": 1, "pad_token_id": PAD, **settings}
    with pytest.raises(ValueError, match=message):
        iterative_generate(tiny, ids, **kwargs)


def test_bad_inputs_are_explained(tiny):
    ids = torch.randint(3, 256, (2, 5), generator=torch.Generator().manual_seed(1))
    right_padded = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    with pytest.raises(ValueError, match="pad on the left"):
        jacobi_generate(tiny, ids, right_padded, max_new_tokens=3, eos_token_id=None)
    with pytest.raises(ValueError, match="block_size"):
        jacobi_generate(tiny, ids, max_new_tokens=3, eos_token_id=None, block_size=0)
    with pytest.raises(ValueError, match="LongTensor"):
        jacobi_generate(tiny, ids.float(), max_new_tokens=3, eos_token_id=None)
    with pytest.raises(ValueError, match="max_iters"):
        jacobi_generate(tiny, ids, max_new_tokens=3, eos_token_id=None, max_iters=0)


def test_trajectory_reaches_greedy_within_block_size_passes(tiny):
    ids = torch.randint(3, 256, (1, 6), generator=torch.Generator().manual_seed(4))
    states = jacobi_trajectory(tiny, ids, block_size=10, init_token_id=PAD)
    greedy, _ = greedy_generate(tiny, ids, max_new_tokens=10)
    assert states.shape[1] == 10 and len(states) <= 10 + 2
    assert torch.equal(states[-1], greedy[0, 6:]) and torch.equal(states[-1], states[-2])
    for k in range(1, len(states)):                      # after k passes the first k tokens are final
        assert torch.equal(states[k, :k], greedy[0, 6:6 + k])


# ----------------------------------------------------------------------------- the CLI


def test_cli_rejects_bad_input_before_loading_a_model(tmp_path, capsys):
    out = str(tmp_path / "r.jsonl")
    assert main(["--prompts_file", str(tmp_path / "missing.txt"), "--output_file", out]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["--prompt", "hi", "--prompts_file", "x.txt"]) == 2        # both
    assert "not allowed with" in capsys.readouterr().err
    assert main(["--output_file", out]) == 2                              # neither
    assert "one of the arguments --prompt --prompts-file/--prompts_file is required" in capsys.readouterr().err
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": oops}\n')
    assert main(["--prompts_file", str(bad), "--output_file", out]) == 2
    assert "line 2: not valid JSON" in capsys.readouterr().err
    # Dashed flags, and the seed's underscore spellings as aliases (--block-size is ours: no alias).
    for flag in ("--max-new-tokens", "--max_new_tokens", "--max-length", "--max_length", "--refine-iter",
                 "--refine_iter", "--batch-size", "--batch_size", "--block-size"):
        assert main(["--prompt", "hi", flag, "0", "--output-file", out]) == 2
        err = capsys.readouterr().err
        assert f"argument {flag.replace('_', '-')}" in err and "expected a whole number of at least 1, got '0'" in err
    assert main(["--prompt", "hi", "--method", "beam"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    (tmp_path / "p.csv").write_text("a\n")
    assert main(["--prompts_file", str(tmp_path / "p.csv")]) == 2
    assert "unknown extension" in capsys.readouterr().err


def test_read_prompts_formats(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\n two \n")
    (tmp_path / "a.json").write_text('["one", {"prompt": "two"}]')
    (tmp_path / "a.jsonl").write_text('"one"\n\n{"prompt": "two", "id": 7}\n')
    for name in ("a.txt", "a.json", "a.jsonl"):
        assert read_prompts(tmp_path / name) == ["one", "two"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory, offline_lm):
    """A tiny random Qwen2 with the offline model's tokenizer (vocab 49,152), saved like a checkpoint."""
    _, tokenizer = offline_lm
    folder = tmp_path_factory.mktemp("tiny-lm")
    eos = tokenizer.eos_token_id
    tiny_qwen2(vocab_size=len(tokenizer), eos_token_id=eos, pad_token_id=eos).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_cli_runs_and_saves_every_result(tiny_folder, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Hello"}\n"Write a haiku about the sea."\n{"prompt": "2 + 2 ="}\n')
    responses = {}
    for method in ("greedy", "jacobi", "iterative", "seed"):
        out = tmp_path / f"{method}.jsonl"
        argv = ["--model-path", str(tiny_folder), "--prompts-file", str(prompts), "--method", method,
                "--max-new-tokens", "6", "--batch-size", "2", "--output-file", str(out), "--max-display", "1",
                "--device", "cpu", "--block-size", "4", "--add-eos-length", "5", "--refine-iter", "6"]
        assert main(argv) == 0
        printed = capsys.readouterr()
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["index"] for r in records] == [0, 1, 2] and records[1]["prompt"] == "Write a haiku about the sea."
        assert all(r["method"] == method and r["new_tokens"] <= 6 for r in records)
        assert "--- [0] Hello" in printed.out and "--- [1]" not in printed.out
        responses[method] = [r["response"] for r in records]
    # Lossless: Jacobi and the published method with refine_iter = block size reproduce greedy decoding
    # ("seed" is the older name of "iterative").
    assert responses["jacobi"] == responses["greedy"] == responses["iterative"] == responses["seed"]


def test_cli_keeps_results_already_generated(tiny_folder, tmp_path, capsys, monkeypatch):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello\nWorld\n")
    out = tmp_path / "r.jsonl"
    decode = parallel_decoding._run_batch

    def stopped_at_the_second_prompt(args, model, tokenizer, texts, device):
        if texts == ["World"]:
            raise KeyboardInterrupt
        return decode(args, model, tokenizer, texts, device)

    monkeypatch.setattr(parallel_decoding, "_run_batch", stopped_at_the_second_prompt)
    argv = ["--model_path", str(tiny_folder), "--prompts_file", str(prompts), "--method", "jacobi",
            "--max_new_tokens", "4", "--output_file", str(out), "--device", "cpu"]
    assert main(argv) == 130
    assert "interrupted: 1 result(s) saved" in capsys.readouterr().err
    assert [json.loads(line)["prompt"] for line in out.read_text().splitlines()] == ["Hello"]


def test_cli_refuses_a_prompt_longer_than_max_length_before_decoding(tiny_folder, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello\n" + "very " * 200 + "long\n")
    out = tmp_path / "r.jsonl"
    argv = ["--model_path", str(tiny_folder), "--prompts_file", str(prompts), "--method", "jacobi",
            "--max_new_tokens", "4", "--max_length", "50", "--output_file", str(out), "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "prompt 1 has" in err and "--max-length is 50" in err
    assert not out.exists()                      # refused before the output file is opened
