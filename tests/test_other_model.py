"""The course with the learner's own model: every notebook that loads the language model runs top to
bottom with ``CADLAB_LM`` pointing at another chat model, and so do the command-line tools.

The other model is Qwen2.5's family, built offline: ``qwen25_config`` with 2 layers and hidden size
64 (so the notebooks' hard-coded layer numbers would fail), Qwen2.5's real tokenizer and vocabulary
(151,936 ids), q/k/v biases and tied embeddings, random weights, saved with ``save_pretrained``.
Its replies are noise, so what must hold for it are the identities the course proves (hand-written
= library, cached = uncached, Jacobi = greedy); checks of SmolLM2's exact text run only for SmolLM2.
The notebooks are executed, not compared with their stored outputs (those are SmolLM2's).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
# Every lesson that loads the language model.
LM_NOTEBOOKS = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb") if "load_lm(" in p.read_text())
# Lessons that also load SmolLM2 by name for one part, and why: that part must still run (and say so).
ALSO_SMOLLM2 = {"09_cad_autocomplete": "its shipped LoRA adapter was trained on SmolLM2-135M-Instruct's weights"}


@pytest.fixture(scope="module")
def other_model(tmp_path_factory):
    """A folder with a small random Qwen2.5-family chat model and Qwen2.5's tokenizer."""
    import torch
    from transformers import Qwen2ForCausalLM

    from cadlab.lm.models import qwen25_config, qwen25_tokenizer, randomize_

    config = qwen25_config(num_hidden_layers=2, hidden_size=64, intermediate_size=128,
                           num_attention_heads=4, num_key_value_heads=2, dtype=torch.float32)
    model = randomize_(Qwen2ForCausalLM(config), seed=0)
    assert model.config.tie_word_embeddings and model.model.layers[0].self_attn.q_proj.bias is not None
    folder = tmp_path_factory.mktemp("other-model") / "tiny-qwen25"
    model.save_pretrained(folder)
    qwen25_tokenizer().save_pretrained(folder)
    return folder


def _environment(model_folder: Path, cache: Path) -> dict[str, str]:
    return {**os.environ, "CADLAB_LM": str(model_folder), "CADLAB_CACHE": str(cache),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def test_the_lm_notebooks_are_found():
    names = [p.name for p in LM_NOTEBOOKS]
    for expected in ("01_qwen25_layers.ipynb", "02_sampling_loop.ipynb", "03_kv_cache.ipynb",
                     "05_parallel_decoding.ipynb", "09_cad_autocomplete.ipynb"):
        assert expected in names, names


# Built artifacts the lessons may reuse from the real cache (read-only, named by what they are):
# SmolLM2's conversion from its GGUF (notebook 09's adapter part) and Qwen2.5's tokenizer.
SHARED_CACHE = ("SmolLM2-135M-Instruct", "qwen25-tokenizer")
PARALLEL = 2                   # kernels at once: the machines have 2 cores, each lesson uses one thread


def _isolated_cache(folder: Path) -> Path:
    """A fresh CADLAB_CACHE for the other-model run (nothing a lesson caches there can leak into the
    stored outputs' runs), with links to the real cache's ``SHARED_CACHE`` folders where they exist."""
    from cadlab.paths import cache_dir

    folder.mkdir(parents=True, exist_ok=True)
    for name in SHARED_CACHE:
        real = cache_dir() / name
        if real.is_dir() and not (folder / name).exists():
            (folder / name).symlink_to(real, target_is_directory=True)
    return folder


def _print_slowest_cells(stem, notebook, n=3):
    """The lesson's slowest cells, from nbclient's timing metadata (shown with pytest -s)."""
    from datetime import datetime

    times = []
    for i, cell in enumerate(notebook.cells):
        t = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in t and "shell.execute_reply" in t:
            seconds = (datetime.fromisoformat(t["shell.execute_reply"].replace("Z", "+00:00"))
                       - datetime.fromisoformat(t["iopub.execute_input"].replace("Z", "+00:00"))).total_seconds()
            times.append((seconds, i))
    total = sum(s for s, _ in times)
    print(f"{stem}: {total:.0f} s of cell time; slowest cells", [(i, round(s, 1)) for s, i in sorted(times)[-n:]])


@pytest.fixture(scope="module")
def executed(other_model, tmp_path_factory):
    """Every LM lesson executed in a kernel whose environment points CADLAB_LM at the other model,
    ``PARALLEL`` at a time, largest file first: {stem: (notebook, None) or (None, the error)}."""
    import asyncio
    import importlib.util

    spec = importlib.util.spec_from_file_location("execute_notebook", ROOT / "tools" / "execute_notebook.py")
    execute_notebook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(execute_notebook)
    cache = _isolated_cache(tmp_path_factory.mktemp("other-model-cache"))
    order = sorted(LM_NOTEBOOKS, key=lambda p: p.stat().st_size, reverse=True)

    async def run_all():
        gate = asyncio.Semaphore(PARALLEL)

        async def run(lesson):
            async with gate:
                notebook = nbformat.read(lesson, as_version=4)
                # nbclient without its Output-widget imitation, which can hang at an explorer cell
                client = execute_notebook.HeadlessClient(notebook, timeout=600, kernel_name="python3",
                                                         resources={"metadata": {"path": str(NOTEBOOKS)}})
                try:
                    await client.async_execute()
                except Exception as error:                 # noqa: BLE001 - reported by that lesson's test
                    return lesson.stem, (None, error)
                _print_slowest_cells(lesson.stem, notebook)
                return lesson.stem, (notebook, None)

        return dict(await asyncio.gather(*(run(lesson) for lesson in order)))

    with pytest.MonkeyPatch.context() as patch:
        for name, value in _environment(other_model, cache).items():
            patch.setenv(name, value)
        return asyncio.run(run_all())


@pytest.mark.parametrize("lesson", LM_NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_with_another_model(lesson, other_model, executed):
    """No cell may fail (a CellExecutionError names the failing cell and its traceback), and the
    lesson must say which model is in use."""
    notebook, error = executed[lesson.stem]
    if error is not None:
        raise error
    printed = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for output in cell.get("outputs", []) if output.get("output_type") == "stream")
    assert str(other_model) in printed, "the notebook does not say which model is in use"
    smollm2 = printed.find("SmolLM2-135M-Instruct (offline default")
    if lesson.stem in ALSO_SMOLLM2:     # the lesson runs on the other model first, then loads SmolLM2 for one part
        assert printed.find(str(other_model)) < smollm2, ALSO_SMOLLM2[lesson.stem]
    else:
        assert smollm2 < 0, "the notebook ignored CADLAB_LM"


def _run(argv, other_model, tmp_path):
    result = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=300,
                            env=_environment(other_model, tmp_path / "cache"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_bench_decode_with_another_model(other_model, tmp_path):
    result = _run(["-m", "cadlab.lm.bench", "decode", "--model", str(other_model), "--new-tokens", "8",
                   "--runs", "1"], other_model, tmp_path)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["model"] == str(other_model) and report["new_tokens"] == 8


@pytest.mark.parametrize("method", ["jacobi", "greedy"])
def test_iterative_generate_with_another_model(other_model, tmp_path, method):
    output = tmp_path / "out.jsonl"
    _run(["-m", "cadlab.cli", "iterative-generate", "--model", str(other_model), "--prompt",
          "The capital of France is", "--method", method, "--block-size", "4", "--max-new-tokens", "8",
          "--output-file", str(output), "--no-progress"], other_model, tmp_path)
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["prompt"] == "The capital of France is"
