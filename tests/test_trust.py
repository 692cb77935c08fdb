"""Trust by mechanism: opening a run folder never runs code, a folder has one writer, a cached
result never comes back made under other settings, and names stay inside their folder. Each
through the real commands; ``test_fuzz.py`` throws generated hostile input at the same mechanisms."""

import json
import pickletools
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from cli_helpers import TINY, command, copy_of, fingerprint, one_line_error, tiny

from camal_rl import checkpoints, runs
from camal_rl.statistics import MIN_REPS


class Payload:
    """Unpickling this touches ``marker``: what a crafted checkpoint could do on a careless load."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def plant_payload(path: Path, marker: Path, base: dict | None = None) -> None:
    """A torch file at ``path`` that runs code when loaded the unsafe way (``weights_only=False``)."""
    torch.save({**(base or {}), "note": Payload(marker)}, path)


def test_the_payload_is_real_when_loaded_unsafely(tmp_path):
    plant_payload(tmp_path / "x.pt", tmp_path / "ran")
    torch.load(tmp_path / "x.pt", weights_only=False)
    assert (tmp_path / "ran").exists()  # so the tests below would see it


@pytest.mark.parametrize("program, make_args, words", [
    ("eval", lambda run, tmp: [run, "--episodes", "1"], "never runs code"),
    ("record", lambda run, tmp: [run, "--out", tmp / "v.mp4", "--episodes", "1"], "never runs code"),
    ("train", lambda run, tmp: ["--resume", run], "never runs code"),
    ("compare", lambda run, tmp: [run.parent, "--out", tmp / "report", "--at-step", "128", "--reps", MIN_REPS],
     "never runs code"),
])
def test_a_crafted_checkpoint_never_runs_whatever_opens_it(finished_run, tmp_path, program, make_args, words):
    run = copy_of(finished_run, tmp_path)
    (run / runs.SUMMARY).unlink()  # an unfinished run: the commands read its checkpoint
    checkpoint = checkpoints.load(run / runs.CHECKPOINT)
    plant_payload(run / runs.CHECKPOINT, tmp_path / "ran", checkpoint)
    result = command(program, *make_args(run, tmp_path))
    assert not (tmp_path / "ran").exists(), "the checkpoint's payload ran"
    one_line_error(result, words)


def test_a_sweep_and_a_classifier_never_run_a_crafted_checkpoint(finished_run, tmp_path):
    out = tmp_path / "sweep"
    run = copy_of(finished_run, out, "basic__camal__1")
    (run / runs.SUMMARY).unlink()
    plant_payload(run / runs.CHECKPOINT, tmp_path / "ran", checkpoints.load(run / runs.CHECKPOINT))
    swept = command("sweep", "--envs", "basic", "--methods", "camal", "--seeds", "1", "--out", out, "--no-compare",
                    "--", *TINY)
    one_line_error(swept, "basic__camal__1 cannot be read")
    folder = tmp_path / "cls" / "small_cnn__decoy_digits__camal"
    folder.mkdir(parents=True)
    plant_payload(folder / runs.fold_checkpoint(0), tmp_path / "ran")
    classified = command("classify", "--model", "small_cnn", "--dataset", "decoy_digits", "--folds", "2",
                         "--only-folds", "0", "--epochs", "1", "--image-size", "32", "--out", tmp_path / "cls",
                         "--no-cuda", "--no-progress")
    one_line_error(classified, "never runs code")
    assert not (tmp_path / "ran").exists(), "a payload ran"


def test_two_trainers_on_one_folder_one_is_refused_at_once(tmp_path):
    run_dir = tmp_path / "run"
    flags = [sys.executable, "-m", "camal_rl.ppo", "--env", "basic", "--run-dir", str(run_dir), *tiny(100_000)]
    first = subprocess.Popen(flags, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while not (run_dir / runs.WRITER_LOCK).exists() and time.time() < deadline:
            time.sleep(0.1)
        second = command("train", "--env", "basic", "--run-dir", run_dir, *TINY)
        one_line_error(second, "being written by another process", f"pid {first.pid}")
        one_line_error(command("train", "--resume", run_dir), "being written by another process", f"pid {first.pid}")
        with pytest.raises(runs.RunFolderError, match="being written by another process"):
            runs.check_no_writer(run_dir)  # what a new run or a resume asks before it reads the folder
    finally:
        first.terminate()
        first.wait(timeout=60)
    assert not (run_dir / runs.SUMMARY).exists()  # the refused trainers wrote nothing


def test_a_sweep_has_one_writer_and_a_grid_no_repeated_cell(tmp_path):
    one_line_error(command("sweep", "--envs", "basic", "--seeds", "1", "1", "--out", tmp_path / "s", "--", *TINY),
                   "--seeds names 1 twice")
    out = tmp_path / "busy"
    out.mkdir()
    with runs.one_writer(out, ".sweep.lock"):  # as a running sweep holds it
        one_line_error(command("sweep", "--envs", "basic", "--seeds", "1", "--out", out, "--", *TINY),
                       "being written by another process")
    assert not list(out.glob("basic__*"))


@pytest.mark.parametrize("extra, words", [
    (["--seed", "7"], "change --seed"),
    (["--camal-coef", "0"], "change --camal-coef / --regularizer"),
    (["--num-envs", "x"], "not camal-train's"),
])
def test_flags_after_the_double_dash_may_not_move_a_run_off_its_cell(tmp_path, extra, words):
    one_line_error(command("sweep", "--envs", "basic", "--methods", "camal", "--seeds", "1", "--out", tmp_path / "s",
                           "--", *TINY, *extra), words)
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").glob("basic__*"))


def test_a_finished_fold_is_not_handed_back_under_other_settings(tmp_path):
    common = ["--model", "small_cnn", "--dataset", "decoy_digits", "--folds", "2", "--only-folds", "0",
              "--image-size", "32", "--faithfulness-steps", "2", "--out", tmp_path, "--no-cuda", "--no-progress"]
    first = command("classify", *common, "--epochs", "1")
    assert first.returncode == 0, first.stderr[-2000:]
    folder = tmp_path / "small_cnn__decoy_digits__camal"
    before = fingerprint(folder)
    again = command("classify", *common, "--epochs", "1")
    assert again.returncode == 0 and fingerprint(folder) == before  # the same settings: reused, nothing written
    one_line_error(command("classify", *common, "--epochs", "2", "--camal-coef", "0.5"), "was made with other settings",
                   "epochs 1 (now 2)")
    assert fingerprint(folder) == before
    result = json.loads((folder / runs.fold_result(0)).read_text())
    assert result["args"]["epochs"] == 1


def test_a_sweep_compares_settings_on_a_remote_storage_too(finished_run, tmp_path):
    remote = tmp_path / "bucket"
    copy_of(finished_run, remote, "basic__camal__1")
    swept = command("sweep", "--envs", "basic", "--methods", "camal", "--seeds", "1", "--storage", f"file://{remote}",
                    "--no-compare", "--", *tiny(256), "--learning-rate", "0.001")
    one_line_error(swept, "other settings", "learning_rate")


def test_a_scenario_name_cannot_lead_out_of_the_sweep_folder(tmp_path):
    spec = tmp_path / "escape.toml"
    spec.write_text('name = "../../outside"\nconfig = "basic"\nmask_categories = ["Monster"]\n')
    one_line_error(command("sweep", "--envs", spec, "--out", tmp_path / "s", "--", *TINY), "cannot name a file")
    one_line_error(command("sweep", "--task", "classify", "--datasets", "../x", "--out", tmp_path / "c"),
                   "cannot name a file")
    assert not (tmp_path / "outside").exists()


def test_a_recorded_scenario_with_a_key_this_version_lacks_is_one_line(finished_run, tmp_path):
    run = copy_of(finished_run, tmp_path)
    checkpoint = checkpoints.load(run / runs.CHECKPOINT)
    checkpoint["scenario"]["gravity"] = 0.5
    checkpoints.save(checkpoint, run / runs.CHECKPOINT)
    one_line_error(command("eval", run, "--episodes", "1"), "gravity")
    summary = json.loads((run / runs.SUMMARY).read_text())
    summary["eval_return_mean"] = "high"
    (run / runs.SUMMARY).write_text(json.dumps(summary))
    one_line_error(command("compare", run, "--out", tmp_path / "r", "--reps", MIN_REPS), "eval_return_mean", "str")


def test_track_without_a_wandb_key_is_one_line(tmp_path):
    pytest.importorskip("wandb", reason="the track extra installs wandb")
    env = {"WANDB_MODE": "online", "WANDB_API_KEY": "", "HOME": str(tmp_path), "WANDB_DIR": str(tmp_path),
           "WANDB_CONFIG_DIR": str(tmp_path), "NETRC": str(tmp_path / "none")}
    result = command("train", "--env", "basic", "--run-dir", tmp_path / "run", *TINY, "--track", env=env, timeout=300)
    one_line_error(result, "--track", "Weights & Biases did not start", "WANDB_MODE=offline")
    assert not (tmp_path / "run").exists()


def test_engines_write_nothing_into_the_working_folder(tmp_path):
    result = command("train", "--env", "basic", "--run-dir", tmp_path / "run", *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no _vizdoom.ini, no _vizdoom/


def test_a_checkpoint_holds_only_data(finished_run):
    """The pickle inside names no class but torch's storage rebuilders and the ordered dict of a state
    dict: tensors and plain values only (numpy's random state went in as a tensor and numbers)."""
    with zipfile.ZipFile(finished_run / runs.CHECKPOINT) as archive:
        data = archive.read(next(name for name in archive.namelist() if name.endswith("data.pkl")))
    named = {argument for opcode, argument, _ in pickletools.genops(data) if opcode.name in ("GLOBAL", "STACK_GLOBAL")}
    allowed = ("torch ", "torch._utils _rebuild_tensor", "collections OrderedDict")
    assert named and all(name.startswith(allowed) for name in named), named


@pytest.mark.parametrize("program, make_args, words", [
    ("record", lambda run, tmp: ["--panel", run, run, "--out", tmp / "x.mp4"], ["--panel draws a picture"]),
    ("record", lambda run, tmp: [run, "--out", tmp / "x.png"], ["must end in .mp4"]),
    ("train", lambda run, tmp: ["--env", "basic", "--seed", "-1", "--run-dir", tmp / "r"], ["--seed", "4294967295"]),
    ("train", lambda run, tmp: ["--env", "basic", "--seed", "4294967296", "--run-dir", tmp / "r"], ["--seed"]),
    ("eval", lambda run, tmp: [run, "--seed", "4294967296"], ["--seed", "4294967295"]),
    ("classify", lambda run, tmp: ["--seed", "-1", "--out", tmp / "c"], ["--seed", "4294967295"]),
    ("train", lambda run, tmp: ["--resume", "", "--run-dir", tmp / "r"], ["--resume needs a run folder"]),
])
def test_the_issues_examples_are_one_line(finished_run, tmp_path, program, make_args, words):
    one_line_error(command(program, *make_args(finished_run, tmp_path)), *words)
    assert not (tmp_path / "r").exists() and not (tmp_path / "c").exists()


def test_a_spec_whose_config_is_not_a_vizdoom_cfg_is_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("these are not engine settings\n")
    spec = tmp_path / "odd.toml"
    spec.write_text('config = "notes.txt"\nmask_categories = ["Monster"]\n')
    one_line_error(command("train", "--env", spec, "--run-dir", tmp_path / "r", *TINY), "is not a ViZDoom .cfg")
    assert not (tmp_path / "r").exists()


def test_a_cfg_that_names_a_missing_wad_is_one_line(tmp_path):
    (tmp_path / "moved.cfg").write_text("doom_scenario_path = gone.wad\navailable_buttons = { ATTACK }\n")
    spec = tmp_path / "moved.toml"
    spec.write_text('config = "moved.cfg"\nmask_categories = ["Monster"]\n')
    one_line_error(command("train", "--env", spec, "--run-dir", tmp_path / "r", *TINY), "gone.wad", "does not exist",
                   "beside the .cfg")
    assert not (tmp_path / "r").exists()


def test_a_spec_files_own_name_must_be_able_to_name_a_folder(tmp_path):
    spec = tmp_path / "My Map.toml"
    spec.write_text('config = "basic"\nmask_categories = ["Monster"]\n')
    one_line_error(command("train", "--env", spec, "--run-dir", tmp_path / "r", *TINY), "cannot name a file",
                   "rename the file")


@pytest.mark.parametrize("damage, words", [
    (lambda scenario: scenario.update(resolution="RES_1X1"), "not ViZDoom's"),
    (lambda scenario: scenario.update(random_score=scenario["reference_score"]), "scores are equal"),
])
def test_a_recorded_scenario_is_checked_as_a_spec_is(finished_run, tmp_path, damage, words):
    run = copy_of(finished_run, tmp_path)
    checkpoint = checkpoints.load(run / runs.CHECKPOINT)
    damage(checkpoint["scenario"])
    checkpoints.save(checkpoint, run / runs.CHECKPOINT)
    one_line_error(command("eval", run, "--episodes", "1"), words)


def test_a_rollout_larger_than_the_machine_is_refused_before_it_starts(tmp_path):
    one_line_error(command("train", "--env", "basic", "--obs-size", "20000", "20000", "--run-dir", tmp_path / "r",
                           *TINY), "rollout storage", "GiB")
    assert not (tmp_path / "r").exists()


def test_a_trained_agent_opens_with_its_weights_settings_and_scenario(finished_run):
    from camal_rl.errors import RunFolderError

    trained = runs.open_trained_agent(finished_run, purpose="test")
    assert (trained.run.env, trained.run.method, trained.spec.name) == ("basic", "camal", "basic")
    agent = trained.network(trained.checkpoint["obs_shape"], trained.checkpoint["num_actions"])
    assert not agent.training
    for name, weight in agent.state_dict().items():
        assert torch.equal(weight, trained.checkpoint["agent"][name]), name
    channels, height, width = trained.checkpoint["obs_shape"]
    with pytest.raises(RunFolderError, match="is for a network with observations"):
        trained.network((channels, height * 2, width), trained.checkpoint["num_actions"])
