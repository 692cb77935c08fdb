"""ViZDoom scenarios as gymnasium environments whose observations carry a segmentation mask.

Every observation is a Dict: ``image`` (uint8 ``[frame_stack * channels, H, W]``, oldest
frame first) and ``mask`` (uint8 ``[screen H, screen W]``, 0/1), the mask of the NEWEST frame in
the stack, built from ViZDoom's labels buffer at the engine's screen resolution. The mask is
never resized: attention maps are upsampled to it (``camal.alpha_beta`` does that implicitly),
so an object covers exactly the pixels its label covers. Because the mask is part of the
observation it cannot fall one step behind through vector envs or autoreset.

Episodes are seeded: episode ``j`` after ``reset(seed=s)`` runs with ``episode_seed(s, j)``, so an
episode is a pure function of its seed and its actions. That is what lets a training run resume
mid-episode bit for bit (``DoomEnv.replay``) and what keeps parallel evaluation reproducible.

Which labelled objects form the mask, the .cfg, the action set and the score range used to
normalise returns are read from a TOML spec (see ``envs/*.toml`` at the repository root,
installed as ``camal_rl/envs``). This module never imports torch; the worker processes that feed
the trainer live in ``camal_rl.vector``.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import gymnasium as gym
import numpy as np
import vizdoom as vzd

from camal_rl.errors import CamalError
from camal_rl.recipes import check as check_recipe
from camal_rl.schema import FRAME_SKIP, SCENARIO, SPEC_FILE, SchemaError, check_record, safe_name, value_problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# Specs live in the repository's top-level envs/; a wheel installs them as camal_rl/envs.
_INSTALLED_SPECS = Path(__file__).parent / "envs"
BUNDLED_SPECS = _INSTALLED_SPECS if _INSTALLED_SPECS.is_dir() else Path(__file__).parent.parent / "envs"
# OpenCV's thread pool buys nothing on 160x120 frames, and a pool inherited by a forked env
# worker deadlocks it (measured: a worker hung in cv2.setNumThreads). One thread, process-wide.
cv2.setNumThreads(1)
# Extra folders of user specs, searched before the bundled ones (os.pathsep-separated).
SPEC_PATH_VARIABLE = "CAMAL_ENVS"
# Label values that can never be a target: walls, floor/ceiling, the player's own weapon.
NEVER_MASKED_VALUES = (0, 1, 255)
# ViZDoom's GRAY8 matches Rec. 709 luma of its RGB24 frames (mean error 0.4 grey levels,
# measured); colour-path envs (videos) use it so that agents see the grey they trained on.
ENGINE_GRAY_WEIGHTS = np.array([[0.2126, 0.7152, 0.0722]], dtype=np.float32)

# Engines one command may start (each a process of its own): a bound on --num-envs everywhere.
MAX_ENGINES = 256
# The paper's four scenarios (section 4), named once: studies, sweeps and reports use this.
PAPER_SCENARIOS = ("basic", "defend_the_line", "defend_the_center", "take_cover")
# ViZDoom's object categories (state.labels[i].object_category).
KNOWN_CATEGORIES = {
    "Self", "Monster", "Ammo", "Armor", "Decoration", "Explosive", "Gibs", "Health",
    "Powerup", "Weapon", "Key", "Unknown",
}
# Actor class names of Doom II / Freedoom and ViZDoom's scenarios. A WAD with its own
# actors lists them under the spec key 'custom_objects'.
KNOWN_OBJECTS = {
    "ZombieMan", "ShotgunGuy", "ChaingunGuy", "WolfensteinSS", "DoomImp", "Demon", "Spectre",
    "LostSoul", "Cacodemon", "HellKnight", "BaronOfHell", "Arachnotron", "PainElemental",
    "Revenant", "Fatso", "Archvile", "SpiderMastermind", "Cyberdemon", "MarineChainsawVzd",
    "DoomImpBall", "CacodemonBall", "BaronBall", "Rocket", "PlasmaBall", "BFGBall",
    "ArachnotronPlasma", "RevenantTracer", "FatShot", "ArchvileFire", "BulletPuff", "Blood",
    "Medikit", "Stimpack", "HealthBonus", "ArmorBonus", "GreenArmor", "BlueArmor", "Soulsphere",
    "Megasphere", "Berserk", "InvulnerabilitySphere", "BlurSphere", "RadSuit", "Infrared",
    "Allmap", "Clip", "ClipBox", "Shell", "ShellBox", "RocketAmmo", "RocketBox", "Cell",
    "CellPack", "Backpack", "Pistol", "Shotgun", "SuperShotgun", "Chaingun", "RocketLauncher",
    "PlasmaRifle", "BFG9000", "Chainsaw", "ExplosiveBarrel", "DoomPlayer", "BlueCard", "RedCard",
    "YellowCard", "BlueSkull", "RedSkull", "YellowSkull", "Poison", "CustomMedikit",
}


class FrameStack:
    """Observation stacks: the newest ``frame_stack`` frames, oldest first, their channels side by side,
    ``[..., S*C, H, W]`` from frames ``[..., C, H, W]``; numpy arrays and torch tensors alike (the
    trainer's storage builds the same stacks by indexing, ``camal_rl.rollout.FrameStorage``). A stack
    never reaches back before its episode's first frame: it repeats that frame, channels in order."""

    def __init__(self, frame_stack: int, channels: int):
        self.channels = channels
        self._tiled = np.tile(np.arange(channels), frame_stack)  # [0..C-1] S times: whole frames repeated
        self._older = np.arange(channels, frame_stack * channels)

    def first(self, frame):
        """The stack of an episode's first frame."""
        return frame[..., self._tiled, :, :]

    def push(self, stack, frame, starts=None):
        """``stack`` moved on by ``frame`` in place (and returned); rows flagged in ``starts`` begin anew."""
        stack[..., : -self.channels, :, :] = stack[..., self._older, :, :]
        stack[..., -self.channels :, :, :] = frame
        if starts is not None and starts.any():
            stack[starts] = self.first(frame[starts])
        return stack


class SpecError(CamalError, ValueError):
    """A scenario spec that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class ScenarioSpec:
    name: str
    config: Path
    mask_categories: tuple[str, ...] = ()
    mask_objects: tuple[str, ...] = ()
    actions: tuple[tuple[str, ...], ...] = ()
    frame_skip: int = 4
    resolution: str = "RES_160X120"
    episode_timeout: int | None = None
    random_score: float = 0.0
    reference_score: float = 1.0
    description: str = ""
    source: Path = field(default=Path("."), compare=False)
    # recipe name -> hyperparameters (camal_rl.recipes); compare=False: a dict is not hashable
    recipes: dict = field(default_factory=dict, compare=False, hash=False)

    def normalize_return(self, episodic_return: float) -> float:
        """Return on a common scale: 0 = random policy, 1 = reference score."""
        return (episodic_return - self.random_score) / (self.reference_score - self.random_score)

    def record(self) -> dict:
        """Everything needed to rebuild the env and normalise returns, for a run's checkpoint and summary."""
        return {"name": self.name, "config": str(self.config), "mask_categories": list(self.mask_categories),
                "mask_objects": list(self.mask_objects), "actions": [list(a) for a in self.actions],
                "frame_skip": self.frame_skip, "resolution": self.resolution, "episode_timeout": self.episode_timeout,
                "random_score": self.random_score, "reference_score": self.reference_score,
                "description": self.description, "source": str(self.source), "recipes": self.recipes}

    @classmethod
    def from_record(cls, record: dict) -> ScenarioSpec:
        """The scenario a run recorded (``record``), checked against its schema first."""
        try:
            check_record(record, SCENARIO, "a recorded scenario")
            check_recipes(record.get("recipes", {}), "a recorded scenario")
            if not is_resolution(record["resolution"]):
                raise SpecError(f"a recorded scenario: resolution {record['resolution']!r} is not ViZDoom's")
            if record["random_score"] == record["reference_score"]:
                raise SpecError("a recorded scenario: its random and reference scores are equal")
        except (SchemaError, SpecError) as error:
            raise SpecError(f"{error}; the run was not written by this camal-rl") from None
        values = dict(record)
        values["config"], values["source"] = Path(values["config"]), Path(values.get("source", "."))
        values["mask_categories"] = tuple(values.get("mask_categories", ()))
        values["mask_objects"] = tuple(values.get("mask_objects", ()))
        values["actions"] = tuple(tuple(a) for a in values.get("actions", ()))
        return cls(**values)


def screen_size(resolution: str) -> tuple[int, int]:
    """(height, width) of a ViZDoom resolution name such as ``RES_160X120``."""
    width, height = resolution.removeprefix("RES_").split("X")
    return int(height), int(width)


def is_resolution(name: str) -> bool:
    return isinstance(name, str) and name.startswith("RES_") and hasattr(vzd.ScreenResolution, name)


def spec_of_run(saved: dict, env: str) -> ScenarioSpec:
    """The scenario a run (checkpoint or summary) was trained on: its recorded spec where the run
    has one (so a moved or edited .toml still gives the run's own scenario), else ``env`` looked up."""
    record = saved.get("scenario")
    if isinstance(record, dict):
        spec = ScenarioSpec.from_record(record)
        if spec.config.is_file():
            return spec
    return load_spec(env)


def spec_search_path() -> list[Path]:
    extra = [Path(p) for p in os.environ.get(SPEC_PATH_VARIABLE, "").split(os.pathsep) if p]
    return extra + [Path.cwd() / "envs", BUNDLED_SPECS]


def available_scenarios() -> list[str]:
    names = set()
    for folder in spec_search_path():
        if folder.is_dir():
            names.update(p.stem for p in folder.glob("*.toml"))
    return sorted(names)


def _find_spec_file(name_or_path: str | os.PathLike) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.exists():
        if not candidate.is_file():
            raise SpecError(f"scenario spec file {candidate} does not exist")
        return candidate
    for folder in spec_search_path():
        path = folder / f"{candidate}.toml"
        if path.is_file():
            return path
    raise SpecError(
        f"unknown scenario {str(name_or_path)!r}; available: {', '.join(available_scenarios())} "
        f"(or pass the path of a .toml spec)"
    )


def _resolve_config(value: str, spec_file: Path) -> Path:
    relative = (spec_file.parent / value).resolve()
    if relative.is_file():
        return relative
    bundled = Path(vzd.scenarios_path) / (value if value.endswith(".cfg") else f"{value}.cfg")
    if bundled.is_file():
        return bundled
    raise SpecError(f"{spec_file}: key 'config': no .cfg at {relative} nor {bundled}")


def load_spec(name_or_path: str | os.PathLike | ScenarioSpec) -> ScenarioSpec:
    """Load a scenario spec by name (searched in $CAMAL_ENVS, ./envs, the bundled specs) or path;
    a ``ScenarioSpec`` is returned as it is."""
    if isinstance(name_or_path, ScenarioSpec):
        return name_or_path
    path = _find_spec_file(name_or_path)
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SpecError(f"{path}: not valid TOML ({error})") from None
    try:
        check_record(raw, SPEC_FILE, str(path))
    except SchemaError as error:
        raise SpecError(f"{error}; see envs/basic.toml for a spec's keys") from None
    _check_spec_values(raw, path)
    unsafe = safe_name(raw.get("name", path.stem))
    if unsafe:  # the name becomes folder names (runs, sweeps): the file's stem when no name is given
        raise SpecError(f"{path}: the scenario's name {unsafe}; rename the file or give name = ...")
    return ScenarioSpec(
        name=raw.get("name", path.stem),
        config=_resolve_config(raw["config"], path),
        mask_categories=tuple(raw.get("mask_categories", ())),
        mask_objects=tuple(raw.get("mask_objects", ())),
        actions=tuple(tuple(a) for a in raw.get("actions", ())),
        frame_skip=raw.get("frame_skip", 4),
        resolution=raw.get("resolution", "RES_160X120"),
        episode_timeout=raw.get("episode_timeout"),
        random_score=float(raw.get("random_score", 0.0)),
        reference_score=float(raw.get("reference_score", 1.0)),
        description=raw.get("description", ""),
        source=path,
        recipes=raw.get("recipes", {}),
    )


def _check_spec_values(raw: dict, path: Path) -> None:
    """What a spec's keys mean: known objects and categories, a resolution, buttons, a score range."""
    if not raw.get("mask_categories") and not raw.get("mask_objects"):
        raise SpecError(f"{path}: give 'mask_categories' and/or 'mask_objects' (which objects form the mask)")
    unknown = sorted(set(raw.get("mask_categories", ())) - KNOWN_CATEGORIES)
    if unknown:
        raise SpecError(f"{path}: key 'mask_categories': unknown {unknown}; known: {sorted(KNOWN_CATEGORIES)}")
    unknown = sorted(set(raw.get("mask_objects", ())) - KNOWN_OBJECTS - set(raw.get("custom_objects", ())))
    if unknown:
        raise SpecError(
            f"{path}: key 'mask_objects': unknown object name(s) {unknown}; use Doom actor class "
            f"names (e.g. Cacodemon, DoomImpBall) or list your WAD's own under 'custom_objects'"
        )
    resolution = raw.get("resolution", "RES_160X120")
    if not is_resolution(resolution):
        raise SpecError(f"{path}: key 'resolution': unknown {resolution!r}, e.g. RES_160X120 or RES_320X240")
    buttons = [button for action in raw.get("actions", ()) for button in action]
    unknown = sorted({str(b) for b in buttons if not isinstance(b, str) or not hasattr(vzd.Button, b)})
    if unknown:
        raise SpecError(f"{path}: key 'actions': unknown button(s) {unknown}; use ViZDoom's names, e.g. "
                        f"MOVE_LEFT, ATTACK")
    if raw.get("reference_score", 1.0) == raw.get("random_score", 0.0):
        raise SpecError(f"{path}: 'reference_score' must differ from 'random_score'")
    check_recipes(raw.get("recipes", {}), str(path))


def check_recipes(recipes, where: str) -> None:
    if not isinstance(recipes, dict) or not all(isinstance(v, dict) for v in recipes.values()):
        raise SpecError(f"{where}: key 'recipes' must be tables of hyperparameters, e.g. [recipes.tuned] "
                        f"learning_rate = 3e-4")
    for recipe_name, recipe in recipes.items():
        try:
            check_recipe(recipe, f"{where}: [recipes.{recipe_name}]")
        except ValueError as error:
            raise SpecError(str(error)) from None


def labels_to_mask(labels_buffer: np.ndarray, labels: list, spec: ScenarioSpec) -> np.ndarray:
    """Binary mask (uint8, screen size) of the labelled objects the spec names."""
    lookup = np.zeros(256, dtype=np.uint8)  # label value -> in mask; cv2.LUT beats numpy's gather (docs/performance.md)
    for label in labels:
        if label.object_category in spec.mask_categories or label.object_name in spec.mask_objects:
            lookup[label.value] = 1
    lookup[list(NEVER_MASKED_VALUES)] = 0
    return cv2.LUT(labels_buffer, lookup)


def episode_seed(base_seed: int, episode_index: int) -> int:
    """Engine seed of episode ``episode_index`` after ``reset(seed=base_seed)``; episode 0 uses the seed itself."""
    if episode_index == 0:
        return int(base_seed) % (2**31)
    return int(np.random.SeedSequence([int(base_seed) % (2**63), int(episode_index)]).generate_state(1)[0]) % (2**31)


# ---------------------------------------------------------------------------------------
# Engines outlive a killed process: a reaper ends them
# ---------------------------------------------------------------------------------------
# A ViZDoom engine is a child process that ignores SIGTERM and outlives a parent killed with
# SIGKILL. A small reaper process per Python process holds the list of its live engines and kills
# them when the pipe from its parent closes without a goodbye (the parent died).
_REAPER_CODE = """
import os, signal, sys
live = set()
for line in sys.stdin:
    sign, pid = line[0], int(line[1:])
    if sign == "+":
        live.add(pid)
    else:
        live.discard(pid)
for pid in live:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
"""


class _EngineReaper:
    _instance: _EngineReaper | None = None

    def __init__(self):
        import subprocess

        self.owner = os.getpid()
        self.process = subprocess.Popen([sys.executable, "-c", _REAPER_CODE], stdin=subprocess.PIPE, text=True,
                                        start_new_session=True)  # Ctrl-C in the terminal must not end it first

    @classmethod
    def get(cls) -> _EngineReaper:
        if cls._instance is None or cls._instance.owner != os.getpid():
            cls._instance = cls()
        return cls._instance

    def tell(self, sign: str, pid: int) -> None:
        try:
            self.process.stdin.write(f"{sign}{pid}\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass


def _forget_parent_reaper() -> None:
    # A forked child must not hold its parent's pipe open (the reaper would never see it close).
    reaper = _EngineReaper._instance
    if reaper is not None and reaper.owner != os.getpid():
        try:
            reaper.process.stdin.close()  # this process's copy of the pipe only
        except OSError:
            pass
        reaper.process.returncode = 0  # not ours to wait for
        _EngineReaper._instance = None


os.register_at_fork(after_in_child=_forget_parent_reaper)


def _engine_says(call, *args):
    """``call(*args)`` with what the engine library writes to stderr caught (it writes with C, not Python):
    (the result, the text)."""
    with tempfile.TemporaryFile() as caught:
        saved = os.dup(2)
        try:
            os.dup2(caught.fileno(), 2)
            result = call(*args)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        caught.seek(0)
        return result, caught.read().decode(errors="replace")


def engine_folder() -> Path:
    """Where this user's ViZDoom engines keep their files."""
    folder = Path(tempfile.gettempdir()) / f"camal-rl-vizdoom-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


@contextmanager
def _ctrl_c_held():
    """SIGINT blocked while an engine starts: the engine inherits the blocked mask (a terminal's Ctrl-C
    never ends it), and this process gets a Ctrl-C that came meanwhile once the block lifts (its trainer
    then finishes its iteration and saves it)."""
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _child_pids() -> set[int]:
    pids: set[int] = set()
    try:
        for task in os.listdir(f"/proc/{os.getpid()}/task"):
            with open(f"/proc/{os.getpid()}/task/{task}/children") as children:
                pids.update(int(p) for p in children.read().split())
    except OSError:  # not Linux: no reaper
        pass
    return pids


class DoomEnv(gym.Env):
    """One ViZDoom game. See the module docstring for the observation layout.

    Besides the gymnasium API it offers what the trainer's workers use: ``play(action)`` steps
    and starts the next (seeded) episode by itself, leaving the newest frame in ``frame`` and its
    mask in ``mask`` without building the stack; ``episode_state()`` and ``replay(...)`` save and
    restore the position inside the current episode.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 35}

    def __init__(
        self,
        spec: ScenarioSpec,
        *,
        frame_skip: int | None = None,
        frame_stack: int = 4,
        obs_size: tuple[int, int] = (60, 80),
        grayscale: bool = True,
        clip_reward: bool = True,
        resolution: str | None = None,
        render_mode: str | None = None,
        seed: int | None = None,
    ):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.scenario = spec
        self.frame_skip = spec.frame_skip if frame_skip is None else frame_skip
        frame_skip_problem = value_problem(self.frame_skip, FRAME_SKIP)
        if frame_skip_problem:
            raise ValueError(f"frame_skip {frame_skip_problem}")
        self.frame_stack = frame_stack
        self.obs_size = tuple(obs_size)
        self.grayscale = grayscale
        self.clip_reward = clip_reward
        self.render_mode = render_mode

        game = vzd.DoomGame()
        loaded, said = _engine_says(game.load_config, str(spec.config))
        if not loaded:
            why = said.strip().splitlines()[0].split(". ", 1)[-1] if said.strip() else "the engine could not read it"
            raise SpecError(f"{spec.config} is not a ViZDoom .cfg ({why}; scenario {spec.name}); give the spec's "
                            f"'config' a ViZDoom config file or a bundled scenario name")
        game.set_window_visible(False)
        # the engine's own files (its .ini, saves) go to a folder of ours, never to the working directory,
        # which may be read-only or a user's project
        engine_files = engine_folder()
        game.set_doom_config_path(str(engine_files / "_vizdoom.ini"))
        game.add_game_args(f"-savedir {engine_files}")
        game.set_mode(vzd.Mode.PLAYER)
        # Grey frames straight from the engine unless colour is needed (training input or video).
        self._engine_gray = grayscale and render_mode is None
        game.set_screen_format(vzd.ScreenFormat.GRAY8 if self._engine_gray else vzd.ScreenFormat.RGB24)
        game.set_screen_resolution(getattr(vzd.ScreenResolution, resolution or spec.resolution))
        game.set_labels_buffer_enabled(True)  # the .cfg files ship with labels off
        game.set_depth_buffer_enabled(False)
        game.set_automap_buffer_enabled(False)
        if spec.episode_timeout is not None:
            game.set_episode_timeout(int(spec.episode_timeout))
        if seed is not None:
            game.set_seed(int(seed) % (2**31))
        before = _child_pids()
        try:
            with _ctrl_c_held():  # Ctrl-C is the trainer's, which stops cleanly
                game.init()
        except vzd.FileDoesNotExistException as error:  # a .wad (or other file) the .cfg names is missing
            raise SpecError(f"{spec.config}: {str(error).rstrip('.')} (scenario {spec.name}); put it beside the "
                            f".cfg or give the .cfg's doom_scenario_path its path") from None
        self.game = game
        self._engine_pids = _child_pids() - before
        for pid in self._engine_pids:
            _EngineReaper.get().tell("+", pid)

        buttons = [str(b).split(".")[-1] for b in game.get_available_buttons()]
        action_sets = spec.actions or tuple((b,) for b in buttons)
        unknown = sorted({b for a in action_sets for b in a} - set(buttons))
        if unknown:
            game.close()
            raise SpecError(f"{spec.source}: key 'actions': buttons {unknown} are not in {spec.config.name} "
                            f"({buttons})")
        self._actions = [[float(b in chosen) for b in buttons] for chosen in action_sets]
        self.action_names = [" + ".join(a) or "NOOP" for a in action_sets]

        channels = 1 if grayscale else 3
        height, width = self.obs_size
        self.screen_size = (game.get_screen_height(), game.get_screen_width())
        self.observation_space = gym.spaces.Dict(
            {
                "image": gym.spaces.Box(0, 255, (frame_stack * channels, height, width), np.uint8),
                "mask": gym.spaces.Box(0, 1, self.screen_size, np.uint8),
            }
        )
        self.action_space = gym.spaces.Discrete(len(self._actions))
        self.frame_shape = (channels, height, width)
        self._stack = FrameStack(frame_stack, channels)
        self._frames = np.zeros(self.observation_space["image"].shape, np.uint8)
        self.frame = np.zeros(self.frame_shape, np.uint8)  # newest processed frame
        self.mask = np.zeros(self.screen_size, np.uint8)  # its mask, screen resolution
        self.screen: np.ndarray | None = None  # native-resolution screen (RGB; grey when no render_mode)
        self.base_seed: int | None = seed
        self.episode_index = -1
        self.episode_actions: list[int] = []
        self.episode_return = 0.0  # unclipped
        self.episode_length = 0

    # -- frames ---------------------------------------------------------------------------
    def _process(self, state) -> None:
        screen = state.screen_buffer
        self.screen = screen
        self.mask = labels_to_mask(state.labels_buffer, state.labels, self.scenario)
        height, width = self.obs_size
        if self.grayscale and not self._engine_gray:
            frame = cv2.transform(screen, ENGINE_GRAY_WEIGHTS)  # same grey as the engine's GRAY8
        else:
            frame = screen
        if frame.shape[:2] != (height, width):
            frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
        self.frame = frame[None] if self.grayscale else frame.transpose(2, 0, 1)

    def _observation(self) -> dict[str, np.ndarray]:
        return {"image": self._frames.copy(), "mask": self.mask.copy()}

    # -- episodes ----------------------------------------------------------------------------
    def _start_episode(self) -> None:
        self.episode_index += 1
        if self.base_seed is not None:
            self.game.set_seed(episode_seed(self.base_seed, self.episode_index))
        self.game.new_episode()
        self._process(self.game.get_state())
        self.episode_actions = []
        self.episode_return = 0.0
        self.episode_length = 0

    def _advance(self, action: int) -> tuple[float, bool, bool]:
        """One agent step of the engine: (raw reward, terminated, truncated); new frame unless finished."""
        reward = self.game.make_action(self._actions[int(action)], self.frame_skip)
        self.episode_actions.append(int(action))
        self.episode_return += reward
        self.episode_length += 1
        if not self.game.is_episode_finished():
            self._process(self.game.get_state())
            return reward, False, False
        # No state after the end: the last frame and its mask stay as they were. Only the time
        # limit truncates; the engine says whether it was reached (counted from the episode's start).
        truncated = self.game.is_episode_timeout_reached() and not self.game.is_player_dead()
        return reward, not truncated, truncated

    def play(self, action: int) -> tuple[float, bool, bool, dict | None]:
        """Step; when the episode ends, start the next one (the same step, CleanRL's autoreset).

        Returns (raw reward, terminated, truncated, {"r": return, "l": length} or None); ``frame``
        and ``mask`` then hold the newest frame, the next episode's first after an end.
        """
        reward, terminated, truncated = self._advance(action)
        finished = None
        if terminated or truncated:
            finished = {"r": self.episode_return, "l": self.episode_length}
            self._start_episode()
        return reward, terminated, truncated, finished

    def episode_state(self) -> dict:
        """Where this env stands: its base seed, episode number and the actions taken in the episode."""
        return {"base_seed": self.base_seed, "episode_index": self.episode_index, "actions": list(self.episode_actions)}

    def replay(self, state: dict) -> None:
        """Return to a position saved by ``episode_state`` by replaying the episode from its seed."""
        if state["base_seed"] is None:
            raise ValueError("an env without a seed cannot be replayed; give make_env a seed")
        self.base_seed = int(state["base_seed"])
        self.episode_index = int(state["episode_index"]) - 1
        self._start_episode()
        for action in state["actions"]:
            _, terminated, truncated = self._advance(action)
            if terminated or truncated:
                raise RuntimeError("replayed actions end the episode early: the saved state belongs to another "
                                   "scenario or engine")
        self._frames = self._stack.first(self.frame)  # the stack is the learner's, not replayed

    # -- gymnasium API ----------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.base_seed, self.episode_index = int(seed), -1
        self._start_episode()
        self._frames = self._stack.first(self.frame)
        return self._observation(), {}

    def step(self, action):
        reward, terminated, truncated = self._advance(action)
        info: dict[str, Any] = {"raw_reward": reward}
        if terminated or truncated:
            info["episode"] = {"r": self.episode_return, "l": self.episode_length}
        else:
            self._stack.push(self._frames, self.frame)
        if self.clip_reward:
            reward = float(np.clip(reward, -1.0, 1.0))
        return self._observation(), float(reward), terminated, truncated, info

    def render(self):
        if self.render_mode == "rgb_array":
            return None if self.screen is None else self.screen.copy()
        return None

    def close(self):
        if getattr(self, "game", None) is not None:
            self.game.close()
            self.game = None
            for pid in self._engine_pids:
                _EngineReaper.get().tell("-", pid)


def make_env(name_or_path: str | os.PathLike, *, seed: int | None = None, **options) -> DoomEnv:
    """A ViZDoom scenario (spec name or .toml path) as a gymnasium env with masks.

    ``options`` are ``DoomEnv``'s: ``frame_skip`` (the spec's, 4), ``frame_stack=4``,
    ``obs_size=(60, 80)``, ``grayscale=True``, ``clip_reward=True``, ``resolution`` (the spec's),
    ``render_mode=None`` ("rgb_array" keeps native colour frames for videos).
    """
    return DoomEnv(load_spec(name_or_path), seed=seed, **options)


def make_vector_env(
    name_or_path: str | os.PathLike,
    *,
    num_envs: int,
    seed: int = 0,
    asynchronous: bool = False,
    **env_kwargs,
) -> gym.vector.VectorEnv:
    """Gymnasium vector env of ``num_envs`` copies with seeds ``seed + i``; autoreset in the same step.

    For users of the gymnasium API; the trainer uses ``camal_rl.vector.DoomVector``, which ships
    only the newest frame. The spec is loaded here first so that a bad name fails in this process.
    """
    load_spec(name_or_path)
    factories = [
        (lambda i=i: make_env(name_or_path, seed=seed + i, **env_kwargs)) for i in range(num_envs)
    ]
    mode = gym.vector.AutoresetMode.SAME_STEP
    if asynchronous:
        # fork: workers build their own game after the fork, and scripts need no __main__ guard
        return gym.vector.AsyncVectorEnv(factories, autoreset_mode=mode, context="fork")
    return gym.vector.SyncVectorEnv(factories, autoreset_mode=mode)


def random_policy_score(name_or_path: str | os.PathLike, *, episodes: int = 20, seed: int = 0) -> float:
    """Mean unclipped return of a uniform random policy (the spec's ``random_score``)."""
    env = make_env(name_or_path, seed=seed, clip_reward=False, obs_size=(30, 40), frame_stack=1)
    rng = np.random.default_rng(seed)
    returns = []
    try:
        for episode in range(episodes):
            env.reset(seed=seed + episode)
            done = False
            while not done:
                _, _, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
                done = terminated or truncated
            returns.append(info["episode"]["r"])
    finally:
        env.close()
    return float(np.mean(returns))
