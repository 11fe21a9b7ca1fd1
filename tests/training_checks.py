"""What every recipe of cadlab.train.loop must do, checked the same way for each (imported by the
recipes' test files)."""

from pathlib import Path

import torch


def saved_weights(folder: Path) -> dict:
    """The weights a recipe saved in ``folder``: safetensors (a model or an adapter) or babyGPT's model.pth."""
    from safetensors.torch import load_file

    folder = Path(folder)
    for name in ("model.safetensors", "adapter_model.safetensors"):
        if (folder / name).exists():
            return load_file(folder / name)
    return torch.load(folder / "model.pth", weights_only=True)


def losses(log: dict) -> list:
    return [{k: v for k, v in row.items() if k not in ("seconds",)} for row in log["train"]]


def check_stopped_and_resumed_equals_uninterrupted(train, tmp_path: Path, steps: int = 4, stop_at: int = 2) -> None:
    """``train(run_dir, out_dir, **settings)`` stopped after ``stop_at`` steps and started again equals a
    run that was never stopped: the same rows in the log (losses, lr, ...) and the same weights."""
    straight = train(tmp_path / "a" / "run", tmp_path / "a" / "out", max_steps=steps)
    first = train(tmp_path / "b" / "run", tmp_path / "b" / "out", max_steps=steps, stop_after_steps=stop_at)
    assert len(first["train"]) == stop_at
    resumed = train(tmp_path / "b" / "run", tmp_path / "b" / "out", max_steps=steps)
    assert len(resumed["runs"]) == 1 and resumed["runs"][0]["steps"] == steps
    assert losses(resumed) == losses(straight)
    a, b = saved_weights(tmp_path / "a" / "run"), saved_weights(tmp_path / "b" / "run")
    assert set(a) == set(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def check_a_finished_run_started_again_is_a_new_run(train, tmp_path: Path) -> None:
    """The same command after a run spent its budget trains a new run (steps continue, time adds up)
    instead of re-entering the finished one."""
    first = train(tmp_path / "run", tmp_path / "out", max_steps=2)
    again = train(tmp_path / "run", tmp_path / "out", max_steps=2)
    assert [r["steps"] for r in again["runs"]] == [2, 2] and len(first["runs"]) == 1
    assert [r["step"] for r in again["train"]] == [1, 2, 3, 4]
    assert again["runs"][1]["started_at_step"] == 2
    assert again["total_seconds"] == round(sum(r["seconds"] for r in again["runs"]), 1)
