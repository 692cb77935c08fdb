"""Generated hostile input for every command (issue 34, item 8).

Hypothesis throws damaged files and flag values at the real commands, called in this process
(their ``cli``, stderr captured), and holds each to one property: the command gives its result
with exit 0, or exits 2 (1 for a machine fault) printing exactly one line on stderr,
``camal-<command>: error: ...``, and no traceback; and no file of an earlier run changed, nor
was anything written but what the command was asked to write. tyro's own parse errors print a
multi-line box and exit 2: that is accepted (with no traceback) only when tyro's parser itself
ended the command. Where an input is known to be good, or known to be bad, the test also says
which line (or result) must come, so each property can fail. Derandomised and bounded for CI;
nothing trains inside an example (a valid trainer or classifier flag set always meets a value
that stops it before an engine starts or data is read).
"""

import contextlib
import copy
import io
import itertools
import json
import math
import re
import shutil
import signal
import sys
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import tyro
from cli_helpers import copy_of, fingerprint
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from camal_rl import analysis, arguments, checkpoints, evaluation, ppo, record, runs, schema, sweep
from camal_rl.errors import run_cli
from camal_rl.vision import train as classify

TRACEBACK = "Traceback (most recent call last)"
RESULT = "exit 0"
PARSER = "tyro's parser refused"
TOO_SHORT = "--total-timesteps 1 is below one rollout"
LINE_BREAKS = re.compile(r"\r\n|\r|\n")  # what a terminal or a log file breaks a line on


def fuzz(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


# ---------------------------------------------------------------------------------------
# Calling a command in this process, and the property
# ---------------------------------------------------------------------------------------
@dataclass
class Outcome:
    code: object  # the exit code, or "traceback" when an exception left the command
    stderr: str
    stdout: str
    parser_refused: bool  # the last tyro.cli call ended in SystemExit: tyro's own refusal


def call(function, *args) -> Outcome:
    """``function(*args)`` (a command's ``cli``) with stdout and stderr captured, the warnings it would
    print added to stderr, SIGTERM's handler given back afterwards (``run_cli`` installs its own), and
    whether tyro's parser refused."""
    err, out = io.StringIO(), io.StringIO()
    real_cli, refused = tyro.cli, [False]

    def watched_cli(*a, **k):
        refused[0] = False
        try:
            return real_cli(*a, **k)
        except SystemExit:
            refused[0] = True
            raise

    sigterm = signal.getsignal(signal.SIGTERM)
    tyro.cli = watched_cli
    code = 0
    with warnings.catch_warnings(record=True) as shown:
        # the warnings a command prints on its own (Python's default filters), not pytest's capture of them
        warnings.simplefilter("default")
        for quiet in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.filterwarnings("ignore", category=quiet)
        warnings.filterwarnings("ignore", "random_state is deprecated", FutureWarning)  # rliable's, as pyproject
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                function(*args)
        except SystemExit as stop:
            code = 0 if stop.code is None else stop.code
        except Exception:  # the property fails on it below, with the traceback shown
            code = "traceback"
            err.write(traceback.format_exc())
        finally:
            tyro.cli = real_cli
            signal.signal(signal.SIGTERM, sigterm)
    printed = "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno) for w in shown)
    return Outcome(code, printed + err.getvalue(), out.getvalue(), refused[0])


def verdict(outcome: Outcome, prog: str) -> str:
    """The property. Returns ``RESULT`` (exit 0), ``PARSER`` (tyro's box, exit 2) or the one error line
    (a line ends at a newline or a carriage return; other separators Python's splitlines knows, such as
    \\x1e, do not break a line on a terminal)."""
    assert outcome.code != "traceback" and TRACEBACK not in outcome.stderr, outcome.stderr[-4000:]
    if outcome.code == 0:
        event(f"{prog}: exit 0")  # --hypothesis-show-statistics: how often each ending came
        return RESULT
    lines = LINE_BREAKS.split(outcome.stderr.strip())
    one_line = len(lines) == 1 and lines[0].startswith(f"{prog}: error: ")
    if not one_line and outcome.parser_refused and outcome.code == 2:
        event(f"{prog}: tyro's parse error")
        return PARSER  # tyro's own parse errors print a multi-line box and exit 2: accepted, no traceback
    assert outcome.code in (1, 2), (outcome.code, outcome.stderr[-4000:])
    assert one_line, outcome.stderr[-4000:]
    if outcome.code == 1:
        assert lines[0].startswith(f"{prog}: error: cannot use "), lines[0]  # an OS fault, named
    event(f"{prog}: one line, exit {outcome.code}")
    return lines[0]


def check_trainer_flags(argv: list[str]) -> None:
    """camal-train up to its engines: everything the trainer checks before one starts (``ppo.cli``
    would train on a valid set of flags)."""
    run_cli("camal-train", lambda: arguments.start_or_resume(arguments.parse(ppo.Args, argv)))


def classify_cli(argv: list[str]) -> None:
    saved = sys.argv
    sys.argv = ["camal-classify", *argv]  # its cli reads sys.argv
    try:
        classify.cli()
    finally:
        sys.argv = saved


# ---------------------------------------------------------------------------------------
# Each example in its own folder, and nothing written but what was asked
# ---------------------------------------------------------------------------------------
_examples = itertools.count()


def example_folder(tmp_path: Path) -> Path:
    """A fresh folder per example, deep below ``tmp_path``: a name with '..' that leads out of it
    still lands where ``watched`` looks."""
    shutil.rmtree(tmp_path / "a", ignore_errors=True)  # the earlier examples' folders, and what escaped them
    folder = tmp_path / "a" / "b" / "c" / f"example{next(_examples)}"
    folder.mkdir(parents=True)
    return folder


def tree(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if not path.name.endswith(".lock")}


@contextlib.contextmanager
def watched(tmp_path: Path, folder: Path, *inputs: Path, allowed: tuple[str, ...] = ()):
    """Run the block in ``folder``; afterwards nothing under ``tmp_path`` (nor beside it in pytest's
    folder of this session) is new except under ``folder / allowed``, nothing is gone, and every file
    of ``inputs`` (copies of earlier runs, fold files, specs) keeps its bytes (lock files aside)."""
    session = tmp_path.parent
    before, beside = tree(tmp_path), set(session.iterdir())
    prints = {path: fingerprint(path) for path in inputs}
    with contextlib.chdir(folder):
        yield
    after = tree(tmp_path)
    stray = sorted(p for p in after - before if not any(p.is_relative_to(folder / name) for name in allowed))
    outside = set(session.iterdir()) - beside
    for path in [*stray, *outside]:  # removed, so that Hypothesis sees the same failure when it tries again
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    assert not stray, f"written where it was not asked to: {list(map(str, stray))[:5]}"
    assert not outside, f"written beside the test's folder: {sorted(map(str, outside))}"
    assert not before - after, f"gone: {sorted(map(str, before - after))[:5]}"
    for path, printed in prints.items():
        assert fingerprint(path) == printed, f"{path}: a file of an earlier run changed"


# ---------------------------------------------------------------------------------------
# Hostile values and damaged files
# ---------------------------------------------------------------------------------------
SPECIAL_NUMBERS = [0, -0.0, -1, 1, 0.5, 1.5, 1.0, -1e-300, 2**31, 2**32, 2**63, 2**64, 10**30, 1e308, -1e308,
                   math.nan, math.inf, -math.inf]
text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=16)
numbers = st.one_of(st.sampled_from(SPECIAL_NUMBERS), st.integers(-2**70, 2**70), st.floats())
# what a played checkpoint may hold: no number that would size a network or a frame in gigabytes (an
# allocation that large fails at once; one of a few gigabytes might not)
play_numbers = st.one_of(st.sampled_from([n for n in SPECIAL_NUMBERS if not 300 < abs(n) < 2**60]),
                         st.integers(-3, 300), st.integers(2**60, 2**70), st.floats(-300, 300))


def values_of(numbers):
    return st.recursive(st.one_of(st.none(), st.booleans(), numbers, text),
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                        max_leaves=6)


json_values = values_of(numbers)
toml_values = st.recursive(st.one_of(st.booleans(), numbers, text),  # TOML has no null
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                           max_leaves=6)
not_a_table = st.one_of(st.none(), st.booleans(), numbers, text, st.lists(json_values, max_size=3))


def damages(paths: list[tuple], parents: list[tuple], values, max_size: int = 3, min_size: int = 1):
    """A list of edits of a record: ("set", path, value) (a path may name a key the record lacks),
    ("delete", path, None), or a key no schema knows set under one of ``parents``."""
    replace = st.tuples(st.just("set"), st.sampled_from(paths), values)
    delete = st.tuples(st.just("delete"), st.sampled_from(paths), st.none())
    unknown = st.builds(lambda parent, name, value: ("set", (*parent, f"zz_{name}"), value), st.sampled_from(parents),
                        text, values)
    return st.lists(st.one_of(replace, delete, unknown), min_size=min_size, max_size=max_size)


def damaged(record: dict, edits: list) -> dict:
    record = copy.deepcopy(record)
    for kind, path, value in edits:
        node = record
        for part in path[:-1]:
            inside = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, list) and isinstance(part, int) and part < len(node):
                inside = node[part]
            node = inside
        key = path[-1]
        if isinstance(node, dict):
            if kind == "set":
                node[key] = value
            else:
                node.pop(key, None)
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            if kind == "set":
                node[key] = value
            else:
                del node[key]
    return record


@st.composite
def file_forms(draw, whole=not_a_table):
    """How a (damaged) record reaches its file: mostly as itself, else as another value, cut short,
    as bytes that are not UTF-8, or as any text."""
    kind = draw(st.sampled_from(["record"] * 5 + ["other", "truncated", "bytes", "text"]))
    extra = {"record": st.none(), "other": whole, "truncated": st.integers(0, 4000),
             "bytes": st.binary(min_size=1, max_size=48), "text": text}[kind]
    return kind, draw(extra)


def written(record, form, dumps=json.dumps) -> bytes:
    kind, extra = form
    if kind == "record":
        return dumps(record).encode()
    if kind == "other":
        return dumps(extra).encode()
    if kind == "truncated":
        whole = dumps(record)
        return whole[: min(extra, len(whole) - 1)].encode()
    if kind == "bytes":
        return b"\xff" + extra  # 0xff starts no UTF-8 character
    return extra.encode()


JSON_TYPES = {schema.NUMBER: (int, float), schema.INTEGER: (int,), schema.TEXT: (str,), schema.FLAG: (bool,),
              schema.LIST: (list,), schema.TABLE: (dict,)}


def plainly_wrong(value, key: schema.Key) -> bool:
    """A value of another JSON type than its key's (null where none is allowed, true for a number)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):  # NaN: older files' null
        return not key.nullable and value is None
    return isinstance(value, bool) != (key.kind == schema.FLAG) or not isinstance(value, JSON_TYPES[key.kind])


def surely_refused(data: bytes, table: dict, nested: dict | None = None) -> bool:
    """What every reader must refuse, whatever else: not JSON, not a table, a required key missing,
    a key the schema does not know or a value of another type (also in the ``nested`` tables)."""
    try:
        record = json.loads(data)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return True
    if not isinstance(record, dict) or set(record) - set(table):
        return True
    if any(name not in record for name, key in table.items() if key.required):
        return True
    if any(plainly_wrong(record[name], key) for name, key in table.items() if name in record):
        return True
    return any(isinstance(record.get(name), dict) and surely_refused(json.dumps(record[name]).encode(), inner)
               for name, inner in (nested or {}).items())


def strict_results(out: Path) -> dict:
    """A report was written, and results.json is strict JSON (no NaN, no infinity)."""
    def refuse(constant):
        raise AssertionError(f"{constant} in results.json")

    assert (out / "report.md").is_file()
    return json.loads((out / "results.json").read_text(), parse_constant=refuse)


# ---------------------------------------------------------------------------------------
# 1. Hostile summaries -> camal-compare
# ---------------------------------------------------------------------------------------
ARGS_KEYS = ("env", "seed", "num_envs", "camal_coef", "learning_rate", "obs_size", "total_timesteps", "frame_skip")
SUMMARY_PATHS = ([(name,) for name in schema.SUMMARY] + [("scenario", name) for name in schema.SCENARIO]
                 + [("args", name) for name in ARGS_KEYS]
                 + [("scenario", "actions", 0), ("scenario", "mask_categories", 0), ("scenario", "recipes", "tuned"),
                    ("scenario", "recipes", "tuned", "learning_rate")])


def two_runs(finished_run: Path, root: Path) -> tuple[Path, Path]:
    """The finished CAMAL run (without its checkpoint: camal-compare reads summaries and events) and a
    Vanilla run made from its summary: what camal-compare compares, valid as they are."""
    camal = root / "basic__camal__1"
    shutil.copytree(finished_run, camal, ignore=shutil.ignore_patterns(runs.CHECKPOINT, "*.lock"))
    summary = json.loads((camal / runs.SUMMARY).read_text())
    vanilla = root / "basic__vanilla__1"
    vanilla.mkdir()
    summary = {**summary, "method": "vanilla", "args": {**summary["args"], "camal_coef": 0.0}}
    (vanilla / runs.SUMMARY).write_text(json.dumps(summary))
    return camal, vanilla


def compare_argv(paths, out: Path, skip_broken: bool) -> list[str]:
    return [*map(str, paths), "--out", str(out), "--no-plots", "--reps", "1000", *(["--skip-broken"] * skip_broken)]


@fuzz(40)
@given(target=st.sampled_from(["camal", "vanilla"]),
       edits=damages(SUMMARY_PATHS, [(), ("scenario",), ("args",)], json_values),
       form=file_forms(), skip_broken=st.booleans())
@example(target="vanilla", edits=[("set", ("eval_return_mean",), "high")], form=("record", None), skip_broken=False)
def test_hostile_summaries(finished_run, tmp_path, target, edits, form, skip_broken):
    folder = example_folder(tmp_path)
    root = folder / "runs"
    camal, vanilla = two_runs(finished_run, root)
    path = (camal if target == "camal" else vanilla) / runs.SUMMARY
    data = written(damaged(json.loads(path.read_text()), edits), form)
    path.write_bytes(data)
    out = folder / "out"
    with watched(tmp_path, folder, root, allowed=("out",)):
        said = verdict(call(analysis.cli, compare_argv([root], out, skip_broken)), "camal-compare")
        refused = surely_refused(data, schema.SUMMARY, {"scenario": schema.SCENARIO})
        if said == RESULT:
            results = strict_results(out)
            if refused:
                assert skip_broken and any(str(path.parent) in line for line in results["left_out"]), results
        elif refused and not skip_broken:
            assert str(path.parent) in said, said  # the line names the run that was refused


# ---------------------------------------------------------------------------------------
# 2. Hostile fold files -> camal-compare
# ---------------------------------------------------------------------------------------
FOLD_PATHS = [(name,) for name in schema.FOLD] + [("args", "epochs"), ("args",)]
fold_values = st.one_of(json_values, st.floats(-2, 3), st.sampled_from([1.5, -0.5, 1.0000001, -1e-9, True, "1", 2**70]))


def fold_files(root: Path) -> list[Path]:
    """Three valid folds of CAMAL and of Vanilla, as camal-classify writes them."""
    paths = []
    for method, accuracy in (("camal", 0.9), ("vanilla", 0.8)):
        for fold in range(3):
            path = root / f"small_cnn__decoy_digits__{method}" / runs.fold_result(fold)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(fold_record(method, fold, accuracy)))
            paths.append(path)
    return paths


def fold_record(method: str, fold: int, accuracy: float = 0.9) -> dict:
    return {"task": "classification", "model": "small_cnn", "dataset": "decoy_digits", "method": method, "fold": fold,
            "folds": 3, "epochs": 1, "test_accuracy": accuracy - 0.01 * fold, "test_iou": 0.5 + 0.01 * fold,
            "deletion_auc": 0.3, "insertion_auc": 0.6, "args": {"epochs": 1}}


@fuzz(100)
@given(target=st.integers(0, 6), edits=damages(FOLD_PATHS, [(), ("args",)], fold_values), form=file_forms(),
       skip_broken=st.booleans())
@example(target=1, edits=[("set", ("test_accuracy",), 1.5)], form=("record", None), skip_broken=False)
def test_hostile_fold_files(tmp_path, target, edits, form, skip_broken):
    folder = example_folder(tmp_path)
    root = folder / "folds"
    paths = fold_files(root)
    if target < len(paths):
        path, base = paths[target], json.loads(paths[target].read_text())
    else:  # a fold file beside the valid ones
        path, base = paths[0].with_name(runs.fold_result(3)), fold_record("camal", 3)
    data = written(damaged(base, edits), form)
    path.write_bytes(data)
    out = folder / "out"
    with watched(tmp_path, folder, root, allowed=("out",)):
        said = verdict(call(analysis.cli, compare_argv([root], out, skip_broken)), "camal-compare")
        refused = surely_refused(data, schema.FOLD)
        if said == RESULT:
            results = strict_results(out)
            if refused:
                assert skip_broken and any(str(path) in line for line in results["left_out"]), results
        elif refused and not skip_broken:
            assert str(path) in said, said


# ---------------------------------------------------------------------------------------
# 3. Hostile scenario specs -> camal-train --total-timesteps 1
# ---------------------------------------------------------------------------------------
SPEC = {"name": "fuzzed_basic", "description": "Basic, fuzzed", "config": "basic", "mask_categories": ["Monster"],
        "actions": [["MOVE_LEFT"], ["MOVE_RIGHT"], ["ATTACK"]], "frame_skip": 4, "resolution": "RES_160X120",
        "episode_timeout": 300, "random_score": -120.6, "reference_score": 95.0,
        "recipes": {"tuned": {"learning_rate": 0.001, "num_envs": 2}}}
SPEC_PATHS = ([(name,) for name in schema.SPEC_FILE]
              + [("actions", 0), ("actions", 0, 0), ("mask_categories", 0), ("mask_objects",), ("recipes", "tuned"),
                 ("recipes", "tuned", "learning_rate"), ("recipes", "tuned", "num_envs"),
                 ("recipes", "tuned", "num_minibatches"), ("recipes", "tuned", "total_timesteps")])
NAMES = ["../../x", "../../../../../escape", "a/b", "/abs", "with space", "..", ".", "", "-dash", "x" * 300, "ok_name",
         "a\\b", "ünï", "name.", "a..b"]
CONFIGS = ["basic", "notes.txt", "nonexistent.cfg", "../../../nowhere/basic.cfg", "/nonexistent/x.cfg", ".", "",
           "basic.cfg", "specs", "notes"]
spec_edits = st.lists(st.one_of(
    st.tuples(st.just("set"), st.just(("name",)), st.one_of(st.sampled_from(NAMES), text)),
    st.tuples(st.just("set"), st.just(("config",)), st.one_of(st.sampled_from(CONFIGS), text)),
    st.tuples(st.just("set"), st.just(("actions",)),
              st.sampled_from(["MOVE_LEFT", [1, 2], [["MOVE_LEFT", 3]], [], [[]], [["NO_SUCH_BUTTON"]]])),
    st.tuples(st.just("set"), st.just(("frame_skip",)), st.sampled_from([10**9, 2**63, 0, -1, 1000, 1001, 4.0, "4"])),
    damages(SPEC_PATHS, [(), ("recipes",), ("recipes", "tuned")], toml_values, max_size=1).map(lambda e: e[0]),
), max_size=3)


def toml(value) -> str:
    """``value`` as TOML (a table at the top: ``key = value`` lines; nested tables inline)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # TOML's basic strings take JSON's escapes
    if isinstance(value, list):
        return "[" + ", ".join(map(toml, value)) + "]"
    return "{" + ", ".join(f"{json.dumps(str(k), ensure_ascii=False)} = {toml(v)}" for k, v in value.items()) + "}"


def toml_file(record) -> str:
    if not isinstance(record, dict):
        return f"value = {toml(record)}\n"
    return "".join(f"{json.dumps(str(k), ensure_ascii=False)} = {toml(v)}\n" for k, v in record.items())


@fuzz(150)
@given(edits=spec_edits, form=file_forms(toml_values), notes=text)
@example(edits=[("set", ("name",), "../../x")], form=("record", None), notes="")
@example(edits=[("set", ("config",), "a\nb")], form=("record", None), notes="")
@example(edits=[("set", ("config",), "a\x00b")], form=("record", None), notes="")
def test_hostile_scenario_specs(tmp_path, edits, form, notes):
    folder = example_folder(tmp_path)
    specs = folder / "specs"
    specs.mkdir()
    (specs / "notes.txt").write_text(notes)  # a config that is not a ViZDoom cfg
    spec, record = specs / "spec.toml", damaged(SPEC, edits)
    spec.write_bytes(written(record, form, dumps=toml_file))
    run_dir = folder / "run"
    # --num-steps 8: whatever num_envs a spec's recipe sets, one rollout is more than 1 agent step
    argv = ["--env", str(spec), "--total-timesteps", "1", "--num-steps", "8", "--run-dir", str(run_dir),
            "--no-progress", "--no-cuda"]
    with watched(tmp_path, folder, specs):
        said = verdict(call(ppo.cli, argv), "camal-train")
    assert said not in (RESULT, PARSER), said  # a spec is never trained on with 1 agent step, nor a tyro error
    assert not run_dir.exists()
    if not edits and form[0] == "record":
        assert TOO_SHORT in said, said  # the valid spec: only the budget is refused
    if record.get("name") == "../../x" and form[0] == "record":
        assert TOO_SHORT not in said, said  # refused, whatever else is wrong with it


# ---------------------------------------------------------------------------------------
# 4. Hostile recorded scenarios and checkpoint metadata -> camal-eval, camal-train --resume
# ---------------------------------------------------------------------------------------
PLAY_ARGS = ("env", "seed", "num_envs", "frame_stack", "frame_skip", "obs_size", "grayscale", "resolution", "attention",
             "paper_frames", "camal_coef", "regularizer", "total_timesteps")
CHECKPOINT_PATHS = ([("scenario", name) for name in schema.SCENARIO] + [("scenario", "actions", 0)]
                    + [(name,) for name in ("obs_shape", "num_actions", "iteration", "format", "env", "action_names",
                                            "global_step", "dead_attention_step")]
                    + [("args", name) for name in PLAY_ARGS])
checkpoint_values = st.one_of(values_of(play_numbers), st.lists(st.integers(-2, 100), max_size=4).map(tuple),
                              st.sampled_from([2, 3, 1, 0, "basic", [4, 60, 80], (4, 60, 80), "gradcam", "RES_1X1"]))
_checkpoints: dict = {}


def played_checkpoint(finished_run: Path) -> dict:
    """The finished run's checkpoint with 10-step episodes, read once: a valid variation plays quickly."""
    if finished_run not in _checkpoints:
        checkpoint = checkpoints.load(finished_run / runs.CHECKPOINT)
        checkpoint["scenario"]["episode_timeout"] = 40
        _checkpoints[finished_run] = checkpoint
    return _checkpoints[finished_run]


@fuzz(20)
@given(edits=damages(CHECKPOINT_PATHS, [(), ("scenario",)], checkpoint_values, max_size=2, min_size=0))
@example(edits=[("set", ("args", "seed"), "x")])
@example(edits=[("set", ("format",), 3)])
def test_hostile_checkpoints(finished_run, tmp_path, edits):
    changed = damaged(played_checkpoint(finished_run), edits)  # a copy: the tensors stay tensors, the cache as read
    folder = example_folder(tmp_path)
    run = folder / "run"
    shutil.copytree(finished_run, run, ignore=shutil.ignore_patterns(runs.CHECKPOINT, "*.lock"))
    checkpoints.save(changed, run / runs.CHECKPOINT)
    with watched(tmp_path, folder, run):
        evaluated = verdict(call(evaluation.cli, [str(run), "--episodes", "1", "--no-cuda"]), "camal-eval")
        resumed = verdict(call(check_trainer_flags, ["--resume", str(run), "--no-cuda"]), "camal-train")
    if not edits:
        assert evaluated == RESULT and resumed == RESULT, (evaluated, resumed)
    if changed.get("format", 2) != 2:
        assert "checkpoint format" in evaluated and "checkpoint format" in resumed, (evaluated, resumed)


# ---------------------------------------------------------------------------------------
# 5. Hostile flag values, every command
# ---------------------------------------------------------------------------------------
HOSTILE = ["-1", "0", "-0", "-0.0", "1e9", "1e400", "99999999999999999999", "nan", "inf", "-inf", "0.5", "1.5",
           "1e-320", "2", "4294967296", "18446744073709551616", "0x10", "1_000", " 1", "", "abc", "None", "True", "[1]",
           "--", "-", "--help-not"]
# numbers twice over text: most hostile values should get past tyro's parser to the commands' own checks
hostile_tokens = st.one_of(st.sampled_from(HOSTILE), st.integers(-2**70, 2**70).map(str), st.floats().map(str),
                           st.sampled_from(HOSTILE), st.sampled_from(SPECIAL_NUMBERS).map(str),
                           text).filter(lambda token: token != "--")  # "--" would end camal-sweep's own flags


@dataclass(frozen=True)
class Flag:
    good: tuple  # token lists a valid run accepts (jointly with the other flags' good values)
    values: int | None = 1  # tokens the flag takes (None: a list)


@st.composite
def flag_sets(draw, table: dict[str, Flag], max_flags: int = 3):
    """(argv, whether every value is a good one): a few flags of ``table``, each given a good value or
    hostile tokens."""
    argv, good = [], True
    for name in draw(st.lists(st.sampled_from(sorted(table)), unique=True, max_size=max_flags)):
        flag = table[name]
        if draw(st.booleans()):
            argv += [name, *draw(st.sampled_from(flag.good))]
            continue
        good = False
        count = draw(st.integers(0, 3)) if flag.values is None else draw(st.sampled_from([flag.values] * 6 + [0, 2]))
        argv += [name, *draw(st.lists(hostile_tokens, min_size=count, max_size=count))]
    return argv, good


TRAIN_FLAGS = {
    "--env": Flag((["basic"],)), "--seed": Flag((["0"], ["1"], ["4294967295"])),
    "--recipe": Flag((["paper"], ["default"])), "--total-timesteps": Flag((["4096"], ["100000"])),
    "--num-envs": Flag((["1"], ["2"], ["8"])), "--num-steps": Flag((["8"], ["64"], ["128"])),
    "--num-minibatches": Flag((["1"], ["2"], ["4"])), "--update-epochs": Flag((["1"], ["4"])),
    "--learning-rate": Flag((["0.001"], ["2.5e-4"], ["1"])), "--gamma": Flag((["0"], ["0.99"], ["1"])),
    "--gae-lambda": Flag((["0.95"],)), "--clip-coef": Flag((["0.1"],)), "--camal-coef": Flag((["0"], ["1"])),
    "--target-kl": Flag((["0.01"],)), "--frame-stack": Flag((["1"], ["4"])), "--frame-skip": Flag((["1"], ["4"])),
    "--obs-size": Flag((["60", "80"], ["36", "36"]), values=2), "--env-workers": Flag((["0"], ["2"])),
    "--env-groups": Flag((["1"],)), "--threads": Flag((["0"], ["1"])), "--eval-interval": Flag((["0"], ["1000"])),
    "--eval-episodes": Flag((["0"], ["3"])), "--checkpoint-interval": Flag((["1"],)),
    "--checkpoint-minutes": Flag((["0"], ["2.5"])), "--attention": Flag((["gradcam"], ["layercam"])),
    "--resolution": Flag((["RES_160X120"],)),
}


@fuzz(150)
@given(chosen=flag_sets(TRAIN_FLAGS), resume=st.booleans())
@example(chosen=(["--gamma", "nan"], False), resume=False)
def test_hostile_trainer_flags(finished_run, tmp_path, chosen, resume):
    argv, good = chosen
    run = tmp_path / "finished"
    if resume and not run.exists():
        copy_of(finished_run, tmp_path, "finished")
    folder = example_folder(tmp_path)
    fresh = folder / "new_run"
    # --num-minibatches 1 first (a flag drawn may change it): it divides every good rollout size
    start = ["--resume", str(run)] if resume else ["--run-dir", str(fresh), "--num-minibatches", "1"]
    with watched(tmp_path, folder, *([run] if resume else [])):
        said = verdict(call(check_trainer_flags, [*start, *argv, "--no-cuda"]), "camal-train")
    assert not fresh.exists()
    if good and not resume:
        assert said == RESULT, said
    if argv == ["--gamma", "nan"]:
        assert "--gamma must be a finite number" in said, said


NO_RUN = "no checkpoint at"


def ends_refused(tmp_path: Path, cli_function, make_argv, command: str) -> tuple[str, Path]:
    """Run a command on arguments made for a fresh example folder; it must not end in a result (these
    examples are built so that even valid flags end in one line). (What it said, the folder.)"""
    folder = example_folder(tmp_path)
    with watched(tmp_path, folder):
        said = verdict(call(cli_function, make_argv(folder)), command)
    assert said != RESULT
    return said, folder
EVAL_FLAGS = {"--episodes": Flag((["1"], ["10"])), "--seed": Flag((["0"], ["7"], ["4294967295"])),
              "--num-envs": Flag((["1"], ["4"])), "--json": Flag((["results.json"],))}


@fuzz(100)
@given(chosen=flag_sets(EVAL_FLAGS), runs_given=st.integers(0, 2))
@example(chosen=(["--episodes", "0"], False), runs_given=1)
def test_hostile_eval_flags(tmp_path, chosen, runs_given):
    argv, good = chosen
    said, _ = ends_refused(tmp_path, evaluation.cli, lambda folder: [
        *(str(folder / f"no_run{i}") for i in range(runs_given)), *argv, "--no-cuda"], "camal-eval")
    if good and runs_given:
        assert NO_RUN in said, said
    if argv == ["--episodes", "0"] and runs_given:
        assert "--episodes must be >= 1" in said, said


RECORD_FLAGS = {"--episodes": Flag((["1"], ["10"])), "--seed": Flag((["0"], ["7"])), "--fps": Flag((["1"], ["30"])),
                "--scale": Flag((["1"], ["3"])), "--max-steps": Flag((["1"], ["500"])),
                "--max-seconds": Flag((["0.5"], ["60"])), "--out": Flag((["video.mp4"], ["video.avi"]))}


@fuzz(100)
@given(chosen=flag_sets(RECORD_FLAGS))
@example(chosen=(["--max-seconds", "1e308"], False))
def test_hostile_record_flags(tmp_path, chosen):
    argv, good = chosen
    said, _ = ends_refused(tmp_path, record.cli, lambda folder: [str(folder / "no_run"), *argv, "--no-cuda"],
                           "camal-record")
    if good:
        assert NO_RUN in said, said


COMPARE_FLAGS = {"--reps": Flag((["1000"], ["2000"])), "--min-runs": Flag((["1"], ["5"])),
                 "--at-step": Flag((["256"],)), "--seed": Flag((["0"], ["4294967295"]))}


def many_reps(argv: list[str]) -> bool:
    """--reps so large that a real bootstrap would take long (an example stays short)."""
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag == "--reps":
            with contextlib.suppress(ValueError):
                return int(value) > 5000
    return False


@fuzz(60)
@given(chosen=flag_sets(COMPARE_FLAGS), real=st.booleans(),
       setting=st.one_of(st.none(), st.just({"frames": "60x80 grey"}), json_values, st.sampled_from([".", "none"])))
@example(chosen=(["--seed", "-1"], False), real=True, setting=None)
def test_hostile_compare_flags(finished_run, tmp_path, chosen, real, setting):
    argv, good = chosen
    assume(not (real and many_reps(argv)))
    folder = example_folder(tmp_path)
    root = folder / "runs"
    if real:
        two_runs(finished_run, root)
    extra = []
    if isinstance(setting, str):  # a folder, or a file that is not there
        extra = ["--setting", setting]
    elif setting is not None:
        (folder / "setting.json").write_text(json.dumps(setting))
        extra = ["--setting", "setting.json"]
    good = good and (setting is None or setting == {"frames": "60x80 grey"})
    out = folder / "out"
    with watched(tmp_path, folder, *([root] if real else []), allowed=("out",)):
        said = verdict(call(analysis.cli, [str(root), "--out", str(out), "--no-plots", *argv, *extra]), "camal-compare")
        if said == RESULT:
            strict_results(out)
    if good:
        assert said == RESULT if real else "does not exist" in said, said
    if argv == ["--seed", "-1"]:
        assert said != RESULT


SWEEP_FLAGS = {
    "--envs": Flag((["basic"],), values=None), "--methods": Flag((["camal"], ["camal", "vanilla"], ["suppress"]), None),
    "--seeds": Flag((["1"], ["1", "2"], ["0", "4294967295"]), values=None), "--workers": Flag((["auto"], ["1"], ["2"])),
    "--folds": Flag((["2"], ["10"])), "--reps": Flag((["1000"],)), "--max-retries": Flag((["0"], ["3"])),
    "--cpus-per-run": Flag((["1"], ["0.5"])), "--gpus-per-run": Flag((["0"], ["0.25"])),
    "--gpu-memory-per-run": Flag((["2"], ["0.5"])), "--task": Flag((["train"],)),
    "--models": Flag((["resnet18"],), values=None), "--datasets": Flag((["decoy_digits"], ["../x"]), values=None),
}


@fuzz(100)
@given(chosen=flag_sets(SWEEP_FLAGS))
@example(chosen=(["--seeds", "1", "1"], False))
def test_hostile_sweep_flags(tmp_path, chosen):
    argv, good = chosen
    # every job is refused when its flags are read (1 agent step is below one rollout): nothing runs
    said, folder = ends_refused(tmp_path, sweep.cli, lambda folder: [
        *argv, "--out", "sweep", "--no-compare", "--", "--total-timesteps", "1"], "camal-sweep")
    assert not (folder / "sweep").exists()
    if good:
        assert TOO_SHORT in said, said
    if argv == ["--seeds", "1", "1"]:
        assert "--seeds names 1 twice" in said, said


CLASSIFY_FLAGS = {
    "--epochs": Flag((["1"], ["500"])), "--folds": Flag((["2"], ["10"])),
    "--only-folds": Flag((["0"], ["0", "1"]), values=None), "--seed": Flag((["0"], ["4294967295"])),
    "--image-size": Flag((["16"], ["224"])), "--batch-size": Flag((["1"], ["32"])), "--lr": Flag((["0.001"],)),
    "--camal-coef": Flag((["0"], ["1"])), "--weight-decay": Flag((["0"], ["0.01"])),
    "--num-workers": Flag((["0"], ["2"])), "--faithfulness-steps": Flag((["1"], ["20"])),
    "--model": Flag((["small_cnn"], ["resnet18"])), "--dataset": Flag((["decoy_digits"],)),
    "--method": Flag((["camal"], ["vanilla"], ["suppress"])),
}


@fuzz(100)
@given(chosen=flag_sets(CLASSIFY_FLAGS))
@example(chosen=(["--only-folds", "10"], False))
def test_hostile_classify_flags(tmp_path, chosen):
    argv, good = chosen
    # --prior-threshold 1.5 is refused by the last of camal-classify's checks: a valid set never trains
    tail = ["--out", "cls", "--no-cuda", "--no-progress", "--prior-threshold", "1.5"]
    said, folder = ends_refused(tmp_path, classify_cli, lambda folder: [*argv, *tail], "camal-classify")
    assert not (folder / "cls").exists()
    if good:
        assert "--prior-threshold must lie between 0 and 1" in said, said
    if argv == ["--only-folds", "10"]:
        assert "folds are numbered 0 to 9" in said, said


DATASET_NAMES = ["../x", "/../../../../x", "a/../../../../x", "..", ".", "", "with space", "x" * 300, "oxford_pets",
                 "no_such_dataset", "-x", "a/b"]


@fuzz(30)
@given(dataset=st.one_of(st.sampled_from(DATASET_NAMES), text).filter(lambda name: name != "decoy_digits"))
@example(dataset="/../../../../x")
def test_hostile_dataset_names_stay_inside_out(tmp_path, dataset):
    """A dataset name becomes a folder name: whatever it is, camal-classify writes only under --out (and
    never trains: only decoy_digits is there without --data-root)."""
    folder = example_folder(tmp_path)
    argv = ["--model", "small_cnn", "--dataset", dataset, "--folds", "2", "--only-folds", "0", "--epochs", "1",
            "--image-size", "32", "--out", "out/cls", "--no-cuda", "--no-progress"]
    with watched(tmp_path, folder, allowed=("out",)):
        said = verdict(call(classify_cli, argv), "camal-classify")
    assert said != RESULT
