"""The recipe search's known points, minibatch bound and objectives (scripts/tune_recipe.py), without training."""


import optuna
import pytest

from camal_rl import doom, recipes


@pytest.fixture(scope="module")
def tune(load_script):
    return load_script("tune_recipe")


def test_known_points_lie_in_the_search_space(tune):
    spec = doom.load_spec("defend_the_center")
    points = tune.known_points(spec, ["from_basic", "neutral"])  # neutral sets a frame skip: not searched
    assert len(points) == 4 and "frame_skip" in spec.recipes["neutral"]
    for point in points:
        sampled = tune.sample_recipe(optuna.trial.FixedTrial(point))  # raises where a value is not a choice
        assert sampled == {**{"reward_scale": 1.0}, **point}
    assert points[0]["learning_rate"] == recipes.PAPER["learning_rate"]
    assert points[2]["learning_rate"] == spec.recipes["from_basic"]["learning_rate"]


def test_unknown_start_recipe_is_named(tune):
    with pytest.raises(ValueError, match="no such recipe"):
        tune.known_points(doom.load_spec("basic"), ["from_nowhere"])


def test_minibatch_bound(tune):
    points = tune.known_points(doom.load_spec("basic"), ["tuned"])
    assert [tune.minibatch_size(p) for p in points] == [256, 64, 64]
    tiny = {**points[0], "num_envs": 4, "num_steps": 32, "num_minibatches": 32}
    assert tune.minibatch_size(tiny) == 4
    with pytest.raises(optuna.TrialPruned, match="minibatch of 4"):
        tune.refuse_small_minibatches(tiny, 64)
    for point in points:
        tune.refuse_small_minibatches(point, 64)


def write_episodes(run_dir, spec, normalised_by_step):
    """A TensorBoard file as camal-train writes it: one episodic return per (step, normalised value)."""
    from torch.utils.tensorboard import SummaryWriter

    from camal_rl import runs

    writer = SummaryWriter(str(run_dir))
    for step, value in normalised_by_step:
        raw = spec.random_score + value * (spec.reference_score - spec.random_score)
        writer.add_scalar(runs.Tag.EPISODIC_RETURN, raw, step)
    writer.close()


def test_area_rewards_learning_early_and_end_rewards_still_climbing(tune, tmp_path):
    spec, steps = doom.load_spec("basic"), 30_000
    write_episodes(tmp_path / "stalls", spec, [(step, 0.6) for step in range(500, steps + 1, 500)])
    write_episodes(tmp_path / "climbs", spec, [(step, 0.0 if step <= 15_000 else 0.5 if step <= 22_000 else 1.0)
                                               for step in range(500, steps + 1, 500)])
    curves = {name: tune.training_curve(tmp_path / name, spec, steps, bins=30) for name in ("stalls", "climbs")}
    assert curves["stalls"] == pytest.approx([0.6] * 30)
    assert tune.score(curves["stalls"], "area") > tune.score(curves["climbs"], "area")
    assert tune.score(curves["climbs"], "end") == pytest.approx(1.0)  # the last quarter: 7 of 30 slices
    assert tune.score(curves["climbs"], "end") > tune.score(curves["stalls"], "end")


def test_a_resumed_search_does_not_replay_its_first_random_draws(tune):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")

    def draw(study):
        study.sampler = tune.sampler_for(study)
        trial = study.ask()
        value = trial.suggest_float("x", 0.0, 1.0)
        study.tell(trial, value)
        return value

    first = [draw(study) for _ in range(3)]  # three sessions, each resuming the study
    fresh = optuna.create_study(direction="maximize")
    assert draw(fresh) == first[0]  # a new search is seeded 0, as before
    assert len(set(first)) == 3


def test_the_sampler_seed_chooses_the_random_draws(tune):
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def first_draw(seed):
        study = optuna.create_study(direction="maximize")
        study.sampler = tune.sampler_for(study, seed)
        return study.ask().suggest_float("x", 0.0, 1.0)

    assert first_draw(0) == first_draw(0)  # a search is reproducible
    assert first_draw(1) != first_draw(0)  # and another seed draws other recipes


@pytest.fixture
def search(tune, tmp_path, monkeypatch):
    """``search(*flags)``: the script's main on Basic with a tiny budget into ``tmp_path``; training is
    replaced by ``trained`` (each call's seed and steps are recorded), Optuna and its study are real."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    calls = []

    def trained(env, recipe, seed, method, options, root):
        calls.append((seed, options.steps))
        return 0.1 * len(calls), 1.0

    monkeypatch.setattr(tune, "train_once", trained)

    def run(*flags):
        tune.main(["--env", "basic", "--seeds", "101", "--methods", "camal", "--objective", "area",
                   "--out", str(tmp_path), *flags])

    run.calls = calls
    return run


def test_a_search_whose_trials_are_all_pruned_stops(tune, search, tmp_path):
    says = (r"^3 trials in a row were pruned or failed \(the last pruned: minibatch of \d+ < --min-minibatch 100000\); "
            r"stopped with 0 of 2 trials complete")
    with pytest.raises(tune.SearchError, match=says):
        search("--trials", "2", "--steps", "1000", "--min-minibatch", "100000", "--give-up-after", "3")
    assert search.calls == []  # pruned before training
    assert not (tmp_path / "best.toml").exists() and not (tmp_path / "trials.csv").exists()


def test_a_search_whose_runs_all_fail_stops(tune, search, tmp_path, monkeypatch, capsys):
    def fails(env, recipe, seed, method, *rest):
        raise RuntimeError(f"seed {seed}: the loss became nan in iteration 1")

    monkeypatch.setattr(tune, "train_once", fails)
    with pytest.raises(tune.SearchError, match=r"^2 trials in a row were pruned or failed \(the last failed: seed 101: "
                                               r"the loss became nan in iteration 1\); stopped with 0 of 5"):
        search("--trials", "5", "--steps", "1000", "--give-up-after", "2")
    assert capsys.readouterr().out.splitlines() == [f"trial {n} failed: seed 101: the loss became nan in iteration 1"
                                                    for n in (0, 1)]
    assert not (tmp_path / "best.toml").exists()


def test_a_failed_trial_between_complete_ones_does_not_stop_the_search(tune, search, tmp_path, monkeypatch):
    outcomes = iter([RuntimeError("seed 101: died"), 0.4, RuntimeError("seed 101: died"), 0.6])

    def sometimes(*args):
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome, 1.0

    monkeypatch.setattr(tune, "train_once", sometimes)
    search("--trials", "2", "--steps", "1000", "--give-up-after", "2")
    assert "2 trials (0.00 h), 1,000 agent steps" in (tmp_path / "best.toml").read_text()


def test_a_resumed_search_keeps_its_budget(tune, search, tmp_path):
    search("--trials", "1", "--steps", "1000")
    best = (tmp_path / "best.toml").read_text()
    assert best.startswith("# Optuna TPE, 1 trials (0.00 h), 1,000 agent steps x seeds [101], methods camal")
    assert "\n[recipes.tuned]\n" in best  # scored on CAMAL alone
    assert "\ntotal_timesteps = 1000  # the budget its trials trained toward\n" in best
    with pytest.raises(tune.SearchError, match=r"was searched with --steps 1000, not 2000; resume it with its own"):
        search("--trials", "2", "--steps", "2000")
    with pytest.raises(tune.SearchError, match=r"--steps 1000, not 3000; --seeds 101, not 101 102; "
                                               r"--min-minibatch 64, not 32;"):
        tune.main(["--env", "basic", "--seeds", "101", "102", "--methods", "camal", "--objective", "area",
                   "--out", str(tmp_path), "--trials", "2", "--steps", "3000", "--min-minibatch", "32"])
    assert (tmp_path / "best.toml").read_text() == best and search.calls == [(101, 1000)]
    search("--trials", "2", "--steps", "1000")  # the same settings resume it
    assert (tmp_path / "best.toml").read_text().startswith("# Optuna TPE, 2 trials (0.00 h), 1,000 agent steps")
    assert search.calls == [(101, 1000), (101, 1000)]
    with pytest.raises(tune.SearchError, match=r"holds the search 'basic-camal-area', not 'basic-camal-end'"):
        search("--trials", "2", "--steps", "1000", "--objective", "end")


def test_a_search_keeps_the_frame_skip_its_trials_ran_at(tune, search, tmp_path, monkeypatch, capsys):
    """Trials train at the scenario spec's frame skip: a search resumed after the spec's changed is
    refused; one stored before the frame skip was takes this command's and records it."""
    search("--trials", "1", "--steps", "1000")
    study = tune.open_study(tmp_path / "study.db", "basic-camal-area")
    assert study.user_attrs["search"]["frame_skip"] == doom.load_spec("basic").frame_skip
    older = {k: v for k, v in study.user_attrs["search"].items() if k != "frame_skip"}
    study.set_user_attr("search", older)
    search("--trials", "2", "--steps", "1000")
    assert "a search from before frame_skip was stored; taking this command's" in capsys.readouterr().out
    assert tune.open_study(tmp_path / "study.db", "basic-camal-area").user_attrs["search"]["frame_skip"] == 4
    study.set_user_attr("search", {k: v for k, v in older.items() if k != "combine"})
    with pytest.raises(tune.SearchError, match=r"was searched with --combine None, not worst;"):  # not adopted
        search("--trials", "3", "--steps", "1000")
    study.set_user_attr("search", {**older, "frame_skip": 4})
    finer = doom.load_spec("basic")
    monkeypatch.setattr(tune.doom, "load_spec", lambda name: type(finer)(**{**vars(finer), "frame_skip": 2}))
    with pytest.raises(tune.SearchError, match=r"was searched with the scenario spec's frame_skip 4, not 2;"):
        search("--trials", "3", "--steps", "1000")


def test_a_corrupt_study_is_one_line(tune, tmp_path, capsys):
    import signal

    (tmp_path / "study.db").write_bytes(b"not sqlite at all" * 100)
    handler = signal.getsignal(signal.SIGTERM)  # run_cli turns SIGTERM into a stop; give pytest its own back
    try:
        with pytest.raises(SystemExit) as stopped:
            tune.cli(["--env", "basic", "--steps", "1000", "--out", str(tmp_path)])
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"tune_recipe: error: {tmp_path / 'study.db'} cannot be read as an Optuna study ((sqlite3.DatabaseError) file "
        "is not a database); move it away to start a new search, or give another --out"]


def test_a_trial_scores_the_worse_method_and_the_budget_ends_the_search(tune, tmp_path, monkeypatch):
    """Each trial trains every method; with --combine worst its value is the worse method's mean over
    seeds (a recipe that helps one method only loses). Once the trials took --budget-hours, none starts."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    scores = {"camal": 0.8, "vanilla": 0.3}
    calls = []

    def trained(env, recipe, seed, method, options, root):
        calls.append((method, seed))
        return scores[method] + 0.01 * seed, 1800.0  # half an hour of wall time per run

    monkeypatch.setattr(tune, "train_once", trained)
    monkeypatch.setattr(tune.time, "time", iter(range(0, 10**9, 1800)).__next__)  # each trial: 1800 s
    tune.main(["--env", "basic", "--seeds", "1", "2", "--minutes", "1", "--budget-hours", "1", "--trials", "5",
               "--out", str(tmp_path)])
    trials = tune.open_study(tmp_path / "study.db", "basic-camal-vanilla-wall").trials
    assert len(trials) == 2  # 0.5 h each: the third would start past the hour
    assert trials[0].value == pytest.approx(0.3 + 0.015)  # vanilla's mean over seeds 1 and 2: the worse
    scores_of = trials[0].user_attrs["scores"]
    assert scores_of["camal"] == pytest.approx([0.81, 0.82]) and scores_of["vanilla"] == pytest.approx([0.31, 0.32])
    assert sorted(set(calls)) == [("camal", 1), ("camal", 2), ("vanilla", 1), ("vanilla", 2)]
    best = (tmp_path / "best.toml").read_text()
    assert "methods camal vanilla (worst counts)" in best and "the first 1 wall-clock minutes" in best
    assert "\n[recipes.neutral]\n" in best  # scored on both methods: the table --recipe default prefers


def test_the_wall_clock_curve_takes_episodes_by_when_they_ended(tune):
    curve = tune.slices([(40.0, 0.5), (50.0, 1.0), (130.0, 2.0)], 120.0, 4)
    assert curve == [0.0, 0.75, 0.75, 0.75]  # nothing before 30 s; 30-60 s: both; then kept; 130 s is past the end


def test_a_killed_search_loses_no_recipe(tune, search, tmp_path, capsys):
    """A trial left running by a killed search is marked failed and its recipe runs again on resume."""
    search("--trials", "1", "--steps", "1000")
    study = tune.open_study(tmp_path / "study.db", "basic-camal-area")
    killed = study.ask()  # the next queued point, as a search killed in its trial leaves it
    recipe = study.trials[killed.number].system_attrs["fixed_params"]
    waiting = len(study.get_trials(states=(optuna.trial.TrialState.WAITING,)))
    search("--trials", str(2 + waiting), "--steps", "1000")
    assert f"trial {killed.number} was cut off by a stopped search: queued its recipe again" in capsys.readouterr().out
    trials = tune.open_study(tmp_path / "study.db", "basic-camal-area").trials
    assert trials[killed.number].state == optuna.trial.TrialState.FAIL
    assert [t.params for t in trials if t.state == optuna.trial.TrialState.COMPLETE].count(recipe) == 1


def test_two_searches_on_one_folder_are_refused(tune, search, tmp_path):
    from camal_rl import runs

    with runs.one_writer(tmp_path), pytest.raises(runs.RunFolderError, match=r"being written by another process"):
        search("--trials", "1", "--steps", "1000")
    assert not (tmp_path / "study.db").exists()


class EndsAsItIsStopped:
    """A trainer process that ends by itself just as its wall-clock time is up: SIGTERM finds Python
    shutting down, without its handler, and the process dies of the signal (returncode -15)."""

    def __init__(self, *args, timeout_first=True, **kwargs):
        self.timeout_first = timeout_first
        self.returncode = None

    def communicate(self, timeout=None):
        import signal
        import subprocess

        if self.timeout_first and timeout is not None:
            self.timeout_first = False
            raise subprocess.TimeoutExpired("camal-train", timeout)
        self.returncode = -signal.SIGTERM
        return "", ""

    def send_signal(self, signum):
        pass


def test_a_run_that_ends_as_its_time_is_up_still_scores(tune, tmp_path, monkeypatch):
    options = tune.parse_options(["--env", "basic", "--minutes", "0.01", "--out", str(tmp_path)])
    options.total_timesteps = 1024
    monkeypatch.setattr(tune, "training_curve", lambda *args, **kwargs: [0.5] * 30)
    monkeypatch.setattr(tune.subprocess, "Popen", EndsAsItIsStopped)
    score, _ = tune.train_once("basic", {}, 101, "vanilla", options, tmp_path)
    assert score == pytest.approx(0.5)
    # the same death without our stop is a failure
    monkeypatch.setattr(tune.subprocess, "Popen", lambda *a, **k: EndsAsItIsStopped(timeout_first=False))
    with pytest.raises(RuntimeError, match="vanilla seed 101: failed"):
        tune.train_once("basic", {}, 101, "vanilla", options, tmp_path)


def test_a_stopped_search_runs_its_cut_off_recipe_again_once(tune, search, tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM mid-trial: Optuna marks the trial failed; the resumed search queues its recipe
    again, and a second resume does not queue it twice."""
    real = tune.train_once

    def stopped(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(tune, "train_once", stopped)
    with pytest.raises(KeyboardInterrupt):
        search("--trials", "1", "--steps", "1000")
    study = tune.open_study(tmp_path / "study.db", "basic-camal-area")
    recipe = study.trials[0].system_attrs["fixed_params"]
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    monkeypatch.setattr(tune, "train_once", real)
    search("--trials", "1", "--steps", "1000")
    search("--trials", "1", "--steps", "1000")  # nothing left to queue
    trials = tune.open_study(tmp_path / "study.db", "basic-camal-area").trials
    queued_again = [t for t in trials if t.system_attrs.get("fixed_params") == recipe and t.number > 0]
    assert len(queued_again) == 1 and queued_again[0].state != optuna.trial.TrialState.FAIL


def test_a_stop_ends_the_running_trainers_at_once(tune, tmp_path, monkeypatch, request):
    """SIGTERM or Ctrl-C mid-trial reaches the trainers now (not when their minutes are up), and the
    trial's queued runs never start."""
    import os
    import signal
    import sys
    import threading
    import time

    started = []
    real_start = tune.LiveRuns.start

    def sleeper(self, command):
        started.append(command)
        return real_start(self, [sys.executable, "-c", "import time; time.sleep(120)"])

    monkeypatch.setattr(tune.LiveRuns, "start", sleeper)
    # Ctrl-C as a fresh script has it; an earlier test in this process may have left its own handler
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT)).start()  # a real signal wakes a wait
    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        tune.main(["--env", "basic", "--trials", "1", "--minutes", "2", "--seeds", "101", "102",
                   "--out", str(tmp_path)])
    assert time.monotonic() - began < 30, "the stop waited for the runs' minutes"
    assert len(started) == 2, "a queued run of the stopped trial started"
    assert not tune.LIVE_RUNS._processes
    trial = tune.open_study(tmp_path / "study.db", "basic-camal-vanilla-wall").trials[0]
    assert trial.user_attrs.get("interrupted") and trial.state == optuna.trial.TrialState.FAIL


@pytest.mark.parametrize(("methods", "combine", "table"), [
    (["camal", "vanilla"], "worst", "neutral"), (["vanilla", "camal"], "worst", "neutral"),
    (["camal"], "worst", "tuned"), (["camal"], "mean", "tuned"),
    (["camal", "vanilla"], "mean", "tuned_camal_vanilla_mean"), (["vanilla"], "worst", "tuned_vanilla")])
def test_a_winner_goes_in_the_table_that_says_how_it_was_found(tune, methods, combine, table):
    assert tune.recipe_table(methods, combine) == table
