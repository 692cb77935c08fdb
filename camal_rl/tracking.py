"""Where a run's curves go: TensorBoard always; Weights & Biases too with ``--track``.

W&B is imported only when asked for (the ``[track]`` extra); it mirrors the TensorBoard scalars
and the attention image grid (``sync_tensorboard``) and stores the run's arguments as its config.
``WANDB_MODE=offline`` logs without a network.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter

from camal_rl.errors import ConfigError
from camal_rl.runs import Tag


def open_writer(run_dir: Path, config: dict, *, fresh: bool, track: bool = False, project: str = "camal-rl",
                entity: str | None = None, group: str | None = None) -> SummaryWriter:
    if track:
        try:
            import wandb
        except ImportError:
            raise ConfigError("--track needs Weights & Biases: pip install 'camal-rl[track]'") from None
        try:
            wandb.init(project=project, entity=entity, group=group, name=run_dir.name,
                       id=run_dir.name.replace("__", "-")[-128:], resume="allow", dir=str(run_dir), config=config,
                       sync_tensorboard=True, save_code=False)
        except Exception as error:  # W&B raises its own types for a missing key, a network, a bad entity
            said = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
            raise ConfigError(f"--track: Weights & Biases did not start ({said}); log in with `wandb login` or set "
                              f"WANDB_API_KEY, or set WANDB_MODE=offline to log without a network") from None
    writer = SummaryWriter(str(run_dir))
    if fresh:
        writer.add_text("hyperparameters",
                        "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in config.items()))
    return writer


def log_episodes(writer: SummaryWriter, step: int, returns, lengths) -> None:
    """The episodes that ended at agent step ``step``: their returns and lengths in one event
    (readers see the scalars ``add_scalar`` would write; one event instead of two per episode saves
    host time: docs/performance.md, "Small choices")."""
    values = []
    for episodic_return, length in zip(returns, lengths, strict=True):
        values.append(Summary.Value(tag=Tag.EPISODIC_RETURN, simple_value=float(episodic_return)))
        values.append(Summary.Value(tag=Tag.EPISODIC_LENGTH, simple_value=float(length)))
    if values:
        writer.file_writer.add_summary(Summary(value=values), step)


def close_writer(writer: SummaryWriter | None) -> None:
    if writer is not None:
        writer.close()
    if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
        sys.modules["wandb"].finish()
