"""Every command answers a bad input with one line that says what was wrong, before doing any work.

``BAD_INPUTS`` is a corpus of command lines that must be refused. Each is run in-process (through
``cadlab.cli.main``, or ``cadlab.lm.memory.main`` for ``python -m cadlab.lm.memory``) in the test's own
folder, and must give: a non-zero exit status, one error line on stderr that names the problem
(argparse's usage lines may come before it), no traceback, and nothing written - the folder holds
after the run exactly what it held before. The refusals come before any model is loaded or any
training starts, so the corpus runs in seconds; the few cases that need a loaded tokenizer say so.

Placeholders in a command line: ``{tmp}`` the test's folder (with the files ``FIXTURES`` makes),
``{weights}`` the shipped checkpoints (``cadlab/weights``).
"""

import builtins
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cadlab import cli
from cadlab.lm import memory
from cadlab.paths import BABYGPT_DIR

WEIGHTS = BABYGPT_DIR.parent
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
TRAIN_OUT = "--out {tmp}/out --run-dir {tmp}/run"          # where a train-* case would write, were it not refused


def case(command: str, expect: str, env: dict | None = None, marks=()):
    """One bad input: the command line, a fragment the error line must hold, and environment variables."""
    return pytest.param(command, expect, env or {}, id=command.replace("{tmp}/", "").replace("{weights}/", ""),
                        marks=marks)


BAD_INPUTS = [
    case("cadlab reconstrut x.stl", "unknown command 'reconstrut'"),
    # ---- cadlab doctor
    case("cadlab doctor --bogus", "unrecognized arguments: --bogus"),
    case("cadlab doctor extra", "unrecognized arguments: extra"),
    # ---- cadlab iterative-generate
    case("cadlab iterative-generate --prompt hi --model {weights}/mini-cadrecode", "cadlab reconstruct"),
    case("cadlab iterative-generate --prompt hi --model {weights}/mini-cadrille", "a Cadrille checkpoint"),
    case("cadlab iterative-generate --prompt hi --model {weights}/babygpt", "cadlab babygpt"),
    case("cadlab iterative-generate --prompt hi --model {weights}/autocomplete-lora", "a LoRA adapter"),
    case("cadlab iterative-generate --prompt hi --model {tmp}/missing", "is not a folder"),
    case("cadlab iterative-generate --prompt hi --model nobody/no-such-model", "not in the local Hugging Face cache"),
    case("cadlab iterative-generate --prompt hi --model {tmp}/folder", "has no config.json"),
    case("cadlab iterative-generate --prompt hi --trust-remote-code --model {tmp}/missing", "is not a folder"),
    case("cadlab iterative-generate --prompt hi", "is not a folder", env={"CADLAB_LM": "{tmp}/missing"}),
    case("cadlab iterative-generate --prompt hi", "not in the local Hugging Face cache",
         env={"CADLAB_LM": "nobody/no-such-model"}),
    case("cadlab iterative-generate --prompt hi", "CAD-Recode", env={"CADLAB_LM": "{weights}/mini-cadrecode"}),
    case("cadlab iterative-generate --prompt hi --output-file /sys/cadlab-results.jsonl", "cannot write"),
    case("cadlab iterative-generate --prompt hi --output-file {tmp}/folder", "is a folder"),
    case("cadlab iterative-generate --prompt hi --output-file {tmp}/no/such/r.jsonl", "does not exist"),
    case("cadlab iterative-generate --prompt hi --max-new-tokens -5", "at least 1"),
    case("cadlab iterative-generate --prompt hi --max_new_tokens abc", "expected a whole number"),
    case("cadlab iterative-generate --prompt hi --max-length 0", "at least 1"),
    case("cadlab iterative-generate --prompt hi --add-eos-length -1", "at least 0"),
    case("cadlab iterative-generate --prompt hi --refine-iter 0", "at least 1"),
    case("cadlab iterative-generate --prompt hi --block-size 0", "at least 1"),
    case("cadlab iterative-generate --prompt hi --batch-size 0", "at least 1"),
    case("cadlab iterative-generate --prompt hi --max-display -1", "at least 0"),
    case("cadlab iterative-generate --prompt hi --device tpu", "cpu, cuda"),
    case("cadlab iterative-generate --prompt hi --device cuda", "no CUDA device", marks=NO_CUDA),
    case("cadlab iterative-generate --prompt hi --method beam", "invalid choice"),
    case("cadlab iterative-generate --prompt ' '", "--prompt is empty"),
    case("cadlab iterative-generate --prompts-file {tmp}/missing.txt", "does not exist"),
    case("cadlab iterative-generate --prompts-file {tmp}/folder", "not a file"),
    case("cadlab iterative-generate --prompts-file {tmp}/empty.txt", "holds no prompts"),
    case("cadlab iterative-generate --prompts-file {tmp}/latin1.txt", "not UTF-8"),
    case("cadlab iterative-generate --prompts-file {tmp}/notes.csv", "unknown extension"),
    case("cadlab iterative-generate --prompts-file {tmp}/broken.jsonl", "line 2: not valid JSON"),
    case("cadlab iterative-generate --prompt hi --prompts-file {tmp}/long.txt", "not allowed with"),
    # a prompt longer than --max-length: found once the tokenizer is loaded, before any decoding
    case("cadlab iterative-generate --prompts-file {tmp}/long.txt --max-length 20 --output-file {tmp}/r.jsonl",
         "--max-length is 20"),
    # ---- cadlab bench
    case("cadlab bench", "required"),
    case("cadlab bench decode --new-tokens 1", "at least 2"),
    case("cadlab bench decode --new-tokens nan", "expected a whole number"),
    case("cadlab bench decode --runs 0", "at least 1"),
    case("cadlab bench decode --threads -2", "at least 1"),
    case("cadlab bench decode --threads 0", "at least 1"),
    case("cadlab bench decode --uncached-new-tokens -5", "at least 1"),
    case("cadlab bench decode --model {weights}/mini-cadrecode", "cadlab reconstruct"),
    case("cadlab bench decode --model {tmp}/missing", "is not a folder"),
    case("cadlab bench decode", "not in the local Hugging Face cache", env={"CADLAB_LM": "nobody/no-such-model"}),
    # ---- cadlab babygpt
    case("cadlab babygpt --top-p 5", "top-p"),
    case("cadlab babygpt --top-p 0", "top-p"),
    case("cadlab babygpt --top-k -3", "top-k"),
    case("cadlab babygpt --temperature 1e-45", "temperature of at least"),
    case("cadlab babygpt --temperature -1", "temperature of at least"),
    case("cadlab babygpt --temperature nan", "finite"),
    case("cadlab babygpt --seed 18446744073709551616", "seed from 0"),
    case("cadlab babygpt --seed -1", "seed from 0"),
    case("cadlab babygpt --max-new-tokens 0", "at least 1"),
    case("cadlab babygpt --checkpoint {tmp}/missing", "lacks config.json"),
    case("cadlab babygpt --checkpoint {weights}/mini-cadrecode", "CAD-Recode"),
    case("cadlab babygpt --checkpoint {tmp}/junk-babygpt", "cannot load babyGPT"),
    # ---- cadlab train-babygpt
    case(f"cadlab train-babygpt --lr nan {TRAIN_OUT}", "finite"),
    case(f"cadlab train-babygpt --lr 0 {TRAIN_OUT}", "above 0"),
    case(f"cadlab train-babygpt --dropout 2 {TRAIN_OUT}", "from 0 up to"),
    case(f"cadlab train-babygpt --dropout -0.1 {TRAIN_OUT}", "from 0 up to"),
    case(f"cadlab train-babygpt --n-embd 130 --n-head 4 {TRAIN_OUT}", "not divisible by --n-head 4"),
    case(f"cadlab train-babygpt --corpus {{tmp}}/empty.txt {TRAIN_OUT}", "empty.txt is empty"),
    case(f"cadlab train-babygpt --corpus {{tmp}}/short.txt {TRAIN_OUT}", "short.txt is too short"),
    case(f"cadlab train-babygpt --corpus {{tmp}}/latin1.txt {TRAIN_OUT}", "latin1.txt is not UTF-8"),
    case(f"cadlab train-babygpt --corpus {{tmp}}/missing.txt {TRAIN_OUT}", "corpus file not found"),
    case(f"cadlab train-babygpt --corpus {{tmp}}/folder {TRAIN_OUT}", "is a folder"),
    case(f"cadlab train-babygpt --seed 18446744073709551616 {TRAIN_OUT}", "seed from 0"),
    case(f"cadlab train-babygpt --max-steps -5 {TRAIN_OUT}", "at least 1"),
    case(f"cadlab train-babygpt --warmup -1 {TRAIN_OUT}", "at least 0"),
    case(f"cadlab train-babygpt --lr-floor 2 {TRAIN_OUT}", "from 0 to 1"),
    case(f"cadlab train-babygpt --minutes 0 {TRAIN_OUT}", "above 0"),
    case(f"cadlab train-babygpt --checkpoint-every 0 {TRAIN_OUT}", "at least 1"),
    case(f"cadlab train-babygpt --batch-size 0 {TRAIN_OUT}", "at least 1"),
    case(f"cadlab train-babygpt --threads 0 {TRAIN_OUT}", "at least 1"),
    case(f"cadlab train-babygpt --device tpu {TRAIN_OUT}", "cpu, cuda"),
    case(f"cadlab train-babygpt --device cuda {TRAIN_OUT}", "no CUDA device", marks=NO_CUDA),
    case("cadlab train-babygpt --out /sys/cadlab-babygpt", "cannot create the folder"),
    case("cadlab train-babygpt --out {tmp}/afile.txt", "is a file, not a folder"),
    case("cadlab train-babygpt --out {tmp}/out --run-dir {tmp}/afile.txt", "is a file, not a folder"),
    case("cadlab train-babygpt --out {tmp}/afile.txt/model", "afile.txt is a file"),
    # ---- cadlab train-cadrecode
    case(f"cadlab train-cadrecode --minutes 0 {TRAIN_OUT}", "above 0"),
    case(f"cadlab train-cadrecode --lr inf {TRAIN_OUT}", "finite"),
    case(f"cadlab train-cadrecode --seed 18446744073709551616 {TRAIN_OUT}", "seed from 0"),
    case(f"cadlab train-cadrecode --heads 3 {TRAIN_OUT}", "--heads 3"),
    case(f"cadlab train-cadrecode --kv-heads 3 {TRAIN_OUT}", "multiple of --kv-heads 3"),
    case(f"cadlab train-cadrecode --min-chunks 5 --max-chunks 2 {TRAIN_OUT}", "--max-chunks 2 is below"),
    case(f"cadlab train-cadrecode --batch-size -1 {TRAIN_OUT}", "at least 1"),
    case(f"cadlab train-cadrecode --stop-after-steps 0 {TRAIN_OUT}", "at least 1"),
    case(f"cadlab train-cadrecode --checkpoint-minutes 0 {TRAIN_OUT}", "above 0"),
    case("cadlab train-cadrecode --out /sys/cadlab-cadrecode --run-dir {tmp}/run", "cannot create the folder"),
    case("cadlab train-cadrecode --ablate nosuch", "unknown ablation"),
    case("cadlab train-cadrecode --eval --out {tmp}/missing", "is not a folder"),
    case("cadlab train-cadrecode --eval --out {tmp}/folder", "holds no CAD-Recode checkpoint"),
    case("cadlab train-cadrecode --eval --out {tmp}/babygpt-config", "babyGPT"),
    case("cadlab train-cadrecode --eval --out {weights}/mini-cadrille", "Cadrille"),
    case("cadlab train-cadrecode --eval --samples 0", "at least 1"),
    case("cadlab train-cadrecode --eval --shapes 0", "at least 1"),
    case("cadlab train-cadrecode --eval --fit-seconds -1", "above 0"),
    # ---- cadlab train-cadrille
    case(f"cadlab train-cadrille --rows pc=-1 {TRAIN_OUT}", "0 or more"),
    case(f"cadlab train-cadrille --rows voice=3 {TRAIN_OUT}", "unknown modes ['voice']"),
    case(f"cadlab train-cadrille --rows pc=0,img=0,text=0 {TRAIN_OUT}", "at least one row"),
    case(f"cadlab train-cadrille --rows pc {TRAIN_OUT}", "KEY=N"),
    case(f"cadlab train-cadrille --fresh-text 1.5 {TRAIN_OUT}", "from 0 to 1"),
    case(f"cadlab train-cadrille --vision-lr 0 {TRAIN_OUT}", "above 0"),
    case(f"cadlab train-cadrille --val-parts 0 {TRAIN_OUT}", "at least 1"),
    case(f"cadlab train-cadrille --seed -1 {TRAIN_OUT}", "seed from 0"),
    case("cadlab train-cadrille --eval --out {tmp}/missing", "is not a folder"),
    case("cadlab train-cadrille --eval --out {weights}/mini-cadrecode", "CAD-Recode"),
    case("cadlab train-cadrille --eval --modes pc,voice", "expected modes from"),
    case("cadlab train-cadrille --eval --max-new-tokens 0", "at least 1"),
    case("cadlab train-cadrille --eval --eval-minutes 0", "above 0"),
    # ---- cadlab train-autocomplete
    case(f"cadlab train-autocomplete --r 0 {TRAIN_OUT}", "at least 1"),
    case(f"cadlab train-autocomplete --dropout 1.5 {TRAIN_OUT}", "from 0 up to"),
    case(f"cadlab train-autocomplete --alpha nan {TRAIN_OUT}", "finite"),
    case(f"cadlab train-autocomplete --accumulation 0 {TRAIN_OUT}", "at least 1"),
    case(f"cadlab train-autocomplete --max-seq-length 0 {TRAIN_OUT}", "at least 1"),
    case(f"cadlab train-autocomplete --model {{tmp}}/missing {TRAIN_OUT}", "is not a folder"),
    case(f"cadlab train-autocomplete --model {{weights}}/mini-cadrecode {TRAIN_OUT}", "cadlab reconstruct"),
    case("cadlab train-autocomplete --eval --parts 0", "at least 1"),
    case("cadlab train-autocomplete --eval --which best", "invalid choice"),
    case("cadlab train-autocomplete --eval --out {tmp}/folder", "holds no LoRA adapter"),
    case("cadlab train-autocomplete --eval --decodings greedy+regex", "invalid choice"),
    # ---- cadlab eval-grammar
    case("cadlab eval-grammar", "required: --model"),
    case("cadlab eval-grammar --model gpt2", "invalid choice"),
    case("cadlab eval-grammar --model cadrecode --shapes 0", "at least 1"),
    # ---- python -m cadlab.lm.memory
    case("python -m cadlab.lm.memory --lengths 0", "at least 1"),
    case("python -m cadlab.lm.memory --repeats 0", "at least 1"),
    case("python -m cadlab.lm.memory --threads 0", "at least 1"),
    case("python -m cadlab.lm.memory --out /sys/cadlab-memory.json", "cannot write"),
    case("python -m cadlab.lm.memory --out {tmp}/folder", "is a folder"),
]


def make_fixtures(folder: Path) -> None:
    """The files the corpus names: empty, short, non-UTF-8 and malformed inputs, an empty folder, a file
    where a folder is expected, a babyGPT checkpoint with a broken config, a folder with babyGPT's config."""
    (folder / "empty.txt").write_text("")
    (folder / "short.txt").write_text("to be, or not to be\n")
    (folder / "latin1.txt").write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
    (folder / "notes.csv").write_text("a prompt\n")
    (folder / "broken.jsonl").write_text('{"prompt": "fine"}\n{"prompt": oops}\n')
    (folder / "long.txt").write_text("Hello\n" + "very " * 200 + "long\n")
    (folder / "afile.txt").write_text("not a folder\n")
    (folder / "folder").mkdir()
    junk = folder / "junk-babygpt"
    junk.mkdir()
    (junk / "config.json").write_text("{not json")
    shutil.copy(BABYGPT_DIR / "tokenizer.json", junk)
    shutil.copy(BABYGPT_DIR / "model.pth", junk)
    (folder / "babygpt-config").mkdir()
    shutil.copy(BABYGPT_DIR / "config.json", folder / "babygpt-config")


def files_under(folder: Path) -> dict:
    """Every path under ``folder`` with its size and modification time (what a refused command must not change)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def run(command: str, tmp: Path) -> int:
    """Run the command line in-process; its exit status."""
    argv = shlex.split(command.format(tmp=tmp, weights=WEIGHTS))
    if argv[:3] == ["python", "-m", "cadlab.lm.memory"]:
        main, argv = memory.main, argv[3:]
    else:
        assert argv[0] == "cadlab"
        main, argv = cli.main, argv[1:]
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


def check_refusal(status, err: str, expect: str) -> None:
    """A non-zero status, and stderr = (argparse's usage lines, then) one error line holding ``expect``."""
    assert status not in (0, None), f"accepted (status {status}); stderr: {err}"
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines, "no message on stderr"
    assert "error:" in lines[-1] and expect in lines[-1], err
    if len(lines) > 1:                              # only argparse's usage may come before the error line
        assert lines[0].startswith("usage:") and not any("error:" in line for line in lines[:-1]), err


@pytest.mark.parametrize("command, expect, env", BAD_INPUTS)
def test_a_bad_input_is_refused_in_one_line_before_any_work(command, expect, env, tmp_path, monkeypatch, capsys):
    make_fixtures(tmp_path)
    monkeypatch.chdir(tmp_path)                    # a default output path would land here, and be seen
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(tmp=tmp_path, weights=WEIGHTS))
    answers = iter(["To be"])                      # were `cadlab babygpt` not to refuse: one prompt, then Ctrl-D

    def fake_input(prompt=""):
        try:
            return next(answers)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr(builtins, "input", fake_input)
    before = files_under(tmp_path)
    status = run(command, tmp_path)
    check_refusal(status, capsys.readouterr().err, expect)
    assert files_under(tmp_path) == before, "a refused command wrote something"


def test_the_corpus_is_large_and_covers_every_command():
    commands = {shlex.split(p.values[0])[1] if p.values[0].startswith("cadlab") else "memory" for p in BAD_INPUTS}
    assert len(BAD_INPUTS) >= 40
    assert commands == set(cli.COMMANDS) - {"reconstruct"} | {"reconstrut", "memory"}


def test_the_real_process_exits_with_one_line(tmp_path):
    """End to end, as a learner runs it: ``CADLAB_LM`` at a missing folder, through ``python -m cadlab.cli``."""
    env = {**os.environ, "CADLAB_LM": str(tmp_path / "missing"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "cadlab.cli", "iterative-generate", "--prompt", "hi",
                           "--output-file", str(tmp_path / "r.jsonl")],
                          env=env, capture_output=True, text=True, timeout=300)
    check_refusal(done.returncode, done.stderr, "CADLAB_LM")
    assert done.returncode == 2 and not (tmp_path / "r.jsonl").exists()
