"""camal-eval, camal-record and camal-sweep read their flags with tyro: every flag of the argparse
versions is still there, bad values are one line and exit 2, and what was parsed reaches the work
(the work itself is stubbed here: tests/test_evaluation.py, test_record.py and test_sweep.py run it)."""

import json
import signal
import subprocess
import sys

import pytest

from camal_rl import evaluation, record, sweep

COMMANDS = {"eval": evaluation, "record": record, "sweep": sweep}
# every flag the argparse versions had, by its old name: commands in README, docs and scripts use them
FLAGS = {
    "eval": ["--episodes", "--seed", "--num-envs", "--json", "--cuda", "--no-cuda"],
    "record": ["--episodes", "--out", "--seed", "--fps", "--scale", "--max-steps", "--max-seconds", "--gif", "--panel",
               "--cuda", "--no-cuda"],
    "sweep": ["--task", "--envs", "--methods", "--seeds", "--models", "--datasets", "--folds", "--out", "--storage",
              "--workers", "--gpu-memory-per-run", "--launcher", "--ray-address", "--cpus-per-run", "--gpus-per-run",
              "--max-retries", "--wait-for-resources", "--no-compare", "--reps"],
}


@pytest.fixture(autouse=True)
def keep_sigterm():
    """run_cli makes SIGTERM a Ctrl-C; give pytest its own handler back."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("program", sorted(COMMANDS))
def test_help_lists_every_flag(program, capsys):
    with pytest.raises(SystemExit) as exit_:
        COMMANDS[program].cli(["--help"])
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    assert f"usage: camal-{program}" in shown
    for flag in FLAGS[program]:
        assert flag in shown, flag


@pytest.mark.parametrize("program, flags, words", [
    ("eval", [], ["at least one run folder"]),
    ("eval", ["RUN", "--episodes", "0"], ["--episodes must be >= 1"]),
    ("eval", ["RUN", "--seed", "-1"], ["--seed must be a whole number from 0 to 4294967295, got -1"]),
    ("eval", ["RUN", "--seed", str(2**32)], ["--seed", "got 4294967296"]),
    ("eval", ["RUN", "--num-envs", "0"], ["--num-envs must be between 1 and 256"]),
    ("record", [], ["give a run folder"]),
    ("record", ["RUN", "--seed", "-1"], ["--seed must be a whole number from 0"]),
    ("record", ["RUN", "--seed", str(2**32 - 1), "--episodes", "2"], ["past the last seed"]),
    ("record", ["RUN", "--scale", "0"], ["--scale must be >= 1"]),
    ("record", ["RUN", "--max-steps", "0"], ["--max-steps must be >= 1"]),
    ("record", ["RUN", "--max-seconds", "inf"], ["--max-seconds must be a finite number > 0"]),
    ("record", ["--panel", "A", "B", "C"], ["pairs of run folders"]),
    ("sweep", ["--workers", "zero"], ["--workers must be auto or a whole number >= 1, got 'zero'"]),
    ("sweep", ["--workers", "²"], ["--workers must be auto"]),
    ("sweep", ["--seeds"], ["--seeds needs at least one value"]),
    ("sweep", ["--methods"], ["--methods needs at least one value"]),
    ("sweep", ["--gpu-memory-per-run", "inf"], ["--gpu-memory-per-run", "GiB > 0"]),
    ("sweep", ["--cpus-per-run", "0"], ["--cpus-per-run must be > 0"]),
    ("sweep", ["--gpus-per-run", "nan"], ["--gpus-per-run >= 0"]),
    ("sweep", ["--folds", "1"], ["--folds must be >= 2"]),
    ("sweep", ["--max-retries", "-1"], ["--max-retries must be >= 0"]),
])
def test_bad_values_are_one_line_and_exit_2(program, flags, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        COMMANDS[program].cli(flags)
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"camal-{program}: error: "), lines
    for word in words:
        assert word in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("program, flags", [
    ("eval", ["RUN", "--seed", "-1"]),
    ("record", ["RUN", "--seed", "-1"]),
    ("sweep", ["--workers", "zero"]),
])
def test_a_bad_value_through_the_real_command(program, flags, tmp_path):
    """As a user runs it: exit code 2, one line on stderr, no traceback."""
    result = subprocess.run([sys.executable, "-m", COMMANDS[program].__name__, *flags], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stdout == ""


def test_eval_prints_and_writes_strict_json(tmp_path, monkeypatch, capsys):
    asked = []

    def evaluate_run(run, **options):
        asked.append((run, options))
        return dict(run=run, env="basic", method="camal", seed=options["seed"], global_step=256, episodes=3,
                    return_mean=1.0, return_std=0.5, normalised_return=0.6, iou_mean=float("nan"),
                    zero_map_fraction=float("inf"))

    monkeypatch.setattr(evaluation, "evaluate_run", evaluate_run)
    out = tmp_path / "eval.json"
    evaluation.cli(["a", "b", "--episodes", "3", "--seed", "7", "--num-envs", "2", "--json", str(out), "--no-cuda"])
    assert [run for run, _ in asked] == ["a", "b"]
    assert asked[0][1] == dict(episodes=3, seed=7, device=evaluation.torch.device("cpu"), num_envs=2)

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1], parse_constant=refuse)
    assert printed == json.loads(out.read_text(), parse_constant=refuse)
    assert printed[0]["iou_mean"] is None and printed[0]["zero_map_fraction"] is None


def test_eval_defaults(monkeypatch, capsys):
    asked = []
    monkeypatch.setattr(evaluation, "evaluate_run", lambda run, **options: asked.append(options) or {})
    monkeypatch.setattr(evaluation, "format_table", lambda results: "")
    evaluation.cli(["a"])
    device = "cuda" if evaluation.torch.cuda.is_available() else "cpu"
    assert asked == [dict(episodes=10, seed=None, device=evaluation.torch.device(device), num_envs=None)]


def test_record_passes_its_flags_on(monkeypatch, capsys):
    asked = {}
    monkeypatch.setattr(record, "record", lambda runs, out, **options: asked.update(runs=runs, out=out, **options)
                        or {"out": out, "frames": 4})
    record.cli(["x/a", "y/b", "--episodes", "3", "--max-seconds", "2.5", "--fps", "8", "--gif", "--no-cuda"])
    assert asked == dict(runs=["x/a", "y/b"], out="videos/a__b.mp4", episodes=3, seed=0, fps=8, scale=3, gif=True,
                         max_steps=None, max_frames=20, cuda=False)
    assert capsys.readouterr().out.strip() == "wrote videos/a__b.mp4: 4 frames"

    monkeypatch.setattr(record, "attention_panel", lambda pairs, out, **options: asked.update(pairs=pairs, out=out,
                        **options) or [{"iou": float("nan")}])
    record.cli(["--panel", "c1", "v1", "c2", "v2", "--seed", "3", "--no-cuda"])
    assert asked["pairs"] == [("c1", "v1"), ("c2", "v2")] and asked["out"] == "attention_panel.png"
    assert asked["seed"] == 3 and asked["cuda"] is False
    printed = capsys.readouterr().out
    assert json.loads(printed.rsplit("\nwrote", 1)[0]) == [{"iou": None}]


def test_sweep_passes_flags_after_the_first_double_dash_to_every_run(monkeypatch, capsys):
    asked = {}

    def fake_sweep(envs, methods, seeds, out, **options):
        asked.update(envs=envs, methods=methods, seeds=seeds, out=out, **options)
        return {"ran": [1], "resumed": [], "skipped": [], "failed": []}

    monkeypatch.setattr(sweep, "sweep", fake_sweep)
    sweep.cli(["--envs", "basic", "--seeds", "1", "2", "--workers", "3", "--no-compare", "--gpu-memory-per-run", "1.5",
               "--", "--total-timesteps", "512", "--", "--x"])
    assert asked == dict(envs=["basic"], methods=["camal", "vanilla"], seeds=[1, 2], out="runs/sweep",
                         train_args=["--total-timesteps", "512", "--", "--x"], workers=3, launcher="local",
                         gpu_memory_per_run=int(1.5 * sweep.GiB), ray_address=None, compare=False, reps=2000,
                         cpus_per_run=1, gpus_per_run=0, max_retries=3, wait_for_resources=False)
    assert capsys.readouterr().out.strip() == "ran 1 (resumed 0), skipped 0, failed 0"

    sweep.cli(["--storage", "s3://bucket/runs"])
    assert asked["workers"] == "auto" and asked["compare"] is True and asked["gpu_memory_per_run"] is None
    assert asked["envs"] == ["basic", "defend_the_line", "defend_the_center", "take_cover"]
    assert asked["seeds"] == [1, 2, 3, 4, 5] and asked["out"] == "s3://bucket/runs" and asked["train_args"] == []


def test_sweep_classify_defaults(monkeypatch, capsys):
    asked = {}

    def fake_classify(models, datasets, methods, folds, out, **options):
        asked.update(models=models, datasets=datasets, methods=methods, folds=folds, out=out, **options)
        return {"ran": [], "resumed": [], "skipped": [], "failed": ["x"]}

    monkeypatch.setattr(sweep, "sweep_classify", fake_classify)
    with pytest.raises(SystemExit) as exit_:  # a failed run is exit 1
        sweep.cli(["--task", "classify", "--", "--epochs", "2"])
    assert exit_.value.code == 1
    assert (asked["models"], asked["datasets"], asked["methods"], asked["folds"]) == (
        ["resnet18"], ["oxford_pets"], ["vanilla", "camal"], 10)
    assert asked["classify_args"] == ["--epochs", "2"]
