"""k-fold training of image classifiers with CAMAL: ``camal-classify --model resnet18 --dataset oxford_pets``.

Per fold (stratified, default 10) it trains with AdamW and writes ``fold_XX.json`` into
``OUT/<model>__<dataset>__<method>/``: test accuracy, mean attention IoU (tau 0.7, the attention
of the true class, ``--attention``, Grad-CAM by default, vs the mask; empty masks skipped and
counted), deletion and insertion AUC on one test image per class. ``camal-compare`` reads these
files for its Wilcoxon tables. A rerun resumes at the first unfinished fold (and inside it at the
last finished epoch).

Methods: ``vanilla`` (cross-entropy only), ``camal`` (+ lambda mean(beta - alpha)), ``suppress``
(+ lambda mean(beta)), ``prior`` (CAMAL against CLIP pseudo-regions instead of the masks).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
import tyro
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from camal_rl import camal, checkpoints, runs, schema
from camal_rl.errors import ConfigError, run_cli
from camal_rl.files import write_json
from camal_rl.vision import data as vision_data
from camal_rl.vision import faithfulness, models


@dataclass
class ClassifyArgs:
    """Train an image classifier with (or without) CAMAL over k stratified folds."""

    model: models.ArchitectureName = "resnet18"
    """classifier (camal_rl.vision.models.ARCHITECTURES)"""
    dataset: str = "decoy_digits"
    """oxford_pets, flowers102, busi (need --data-root) or decoy_digits (bundled)"""
    data_root: str | None = None
    """the folder holding the data set's published layout"""
    method: Literal["vanilla", "camal", "suppress", "prior"] = "camal"
    """vanilla: cross-entropy only; camal: + lambda mean(beta - alpha); suppress: + lambda mean(beta); prior: CAMAL against CLIP regions"""  # noqa: E501
    camal_coef: float = 1.0
    """lambda of Eq. 2"""
    attention: camal.AttentionName = "gradcam"
    """attention method of the true class's logit"""
    folds: int = 10
    """stratified folds"""
    only_folds: list[int] | None = None
    """run just these folds (the others can run elsewhere)"""
    epochs: int = 500
    """paper, Table 7"""
    batch_size: int = 32
    """images per step"""
    lr: float | None = None
    """default 1e-3, 1e-4 for vit_b_16, swin_v2_t, maxvit_t (Table 7)"""
    weight_decay: float = 0.01
    """AdamW weight decay"""
    pretrained: bool = False
    """ImageNet weights from the local torch cache (never downloaded)"""
    image_size: int = 224
    """centre crop size; images are first resized to image_size * 256 / 224"""
    seed: int = 0
    """seed of the folds, the model and the data order"""
    out: str = "runs/classify"
    """folder for <model>__<dataset>__<method>/fold_XX.json"""
    cuda: bool = field(default_factory=torch.cuda.is_available)
    """train on the GPU (default: on when one is available)"""
    num_workers: int = 0
    """data loader worker processes"""
    faithfulness_steps: int = 20
    """deletion / insertion steps per curve"""
    prior_weights: str | None = None
    """open_clip weights file for --method prior"""
    prior_model: str = "ViT-B-32"
    """open_clip model name for --method prior"""
    prior_threshold: float = 0.5
    """attention above this (0-1) forms the CLIP pseudo-region"""
    progress: bool = True
    """show progress bars"""


def run_dir(args: ClassifyArgs) -> Path:
    return Path(args.out) / f"{args.model}__{args.dataset}__{args.method}"


# Settings that say how a fold ran, not what it learned: a finished fold is reused whatever they were.
HOW_A_FOLD_RUNS = frozenset({"out", "only_folds", "cuda", "num_workers", "progress"})


def fold_settings(args: ClassifyArgs) -> dict:
    """What a fold's result and checkpoint record of the settings that made them."""
    return {name: value for name, value in asdict(args).items() if name not in HOW_A_FOLD_RUNS}


def check_same_settings(saved: dict, args: ClassifyArgs, source: Path) -> None:
    """A fold made under other settings is never handed back as this run's: refused, naming what differs."""
    asked = fold_settings(args)
    differ = [f"{name} {saved.get(name)!r} (now {value!r})" for name, value in asked.items()
              if saved.get(name) != (list(value) if isinstance(value, tuple) else value)]
    differ += [f"{name} {saved[name]!r} (unknown now)" for name in sorted(set(saved) - set(asked) - HOW_A_FOLD_RUNS)]
    if differ:
        raise ConfigError(f"{source} was made with other settings: {'; '.join(differ[:4])}; give another --out "
                          f"(or the same settings), or delete it to train that fold again")


def fold_indices(labels: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels))


def split_datasets(dataset, train_idx, test_idx):
    """DecoyDigits trains on its class-correlated variant and tests on the uncorrelated one."""
    if isinstance(dataset, vision_data.DecoyDigits):
        return Subset(dataset.variant(True), train_idx), Subset(dataset.variant(False), test_idx)
    return Subset(dataset, train_idx), Subset(dataset, test_idx)


def target_scores(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, labels[:, None]).squeeze(1)


def regularizer_of(method: str) -> str:
    """The core's regulariser for a method: suppress-only for ``suppress``, else CAMAL's beta - alpha."""
    return "suppress" if method == "suppress" else "camal"


def training_loss(model, images, masks, labels, args: ClassifyArgs):
    supervised = args.method != "vanilla" and args.camal_coef > 0
    logits, features = model(images, double_backward=supervised)
    loss = F.cross_entropy(logits, labels)
    regulariser = None
    if supervised:
        maps = camal.normalize(camal.attention(features, target_scores(logits, labels), method=args.attention))
        # implicit bilinear resize to the mask
        regulariser = camal.camal_loss(maps, masks, regularizer=regularizer_of(args.method))
        loss = loss + args.camal_coef * regulariser
    return loss, logits, regulariser


def evaluate(model, loader, device, args: ClassifyArgs) -> dict:
    model.eval()
    correct = total = 0
    ious, skipped = [], 0
    for images, masks, labels in loader:
        images, masks, labels = images.to(device), masks.to(device), labels.to(device)

        def forward(images=images, labels=labels):
            logits, features = model(images)
            return features, target_scores(logits, labels), (logits,)

        (logits,), maps = camal.inspect_attention(forward, tuple(masks.shape[-2:]), method=args.attention)
        correct += int((logits.argmax(1) == labels).sum())
        total += len(labels)
        iou = camal.attention_iou(maps, masks)
        ious += iou[~torch.isnan(iou)].tolist()
        skipped += int(torch.isnan(iou).sum())
    return {"test_accuracy": correct / max(total, 1), "test_iou": float(np.mean(ious)) if ious else float("nan"),
            "iou_samples": len(ious), "iou_skipped_empty_mask": skipped}


def faithfulness_scores(model, test_set, device, args: ClassifyArgs, fold: int) -> dict:
    model.eval()
    labels = np.array([test_set.dataset.labels[i] for i in test_set.indices])
    chosen = faithfulness.one_per_class(labels, seed=args.seed * 1000 + fold)
    deletion, insertion = [], []
    for position in chosen:
        image, _, _ = test_set[position]
        image = image.to(device)

        def forward(image=image):
            logits, features = model(image[None])
            predicted = logits.argmax(1)
            return features, target_scores(logits, predicted), (predicted,)

        (predicted,), attention = camal.inspect_attention(forward, tuple(image.shape[-2:]), method=args.attention)
        attention = attention[0]
        curve = faithfulness.deletion_insertion(model, image, attention, steps=args.faithfulness_steps,
                                                target=int(predicted))
        deletion.append(curve["deletion_auc"])
        insertion.append(curve["insertion_auc"])
    return {"deletion_auc": float(np.mean(deletion)), "insertion_auc": float(np.mean(insertion)),
            "faithfulness_samples": len(chosen)}


def train_fold(args: ClassifyArgs, dataset, fold: int, train_idx, test_idx, device, writer) -> dict:
    folder = run_dir(args)
    checkpoint_path = folder / runs.fold_checkpoint(fold)
    train_set, test_set = split_datasets(dataset, train_idx, test_idx)
    if args.method == "prior":
        from camal_rl.vision.prior import PriorMasks

        train_set = PriorMasks(train_set, dataset.class_names, weights=args.prior_weights, model_name=args.prior_model,
                               threshold=args.prior_threshold, cache_dir=folder / "prior_cache", device=device,
                               batch_size=args.batch_size)
        train_set.precompute(progress=args.progress)
    torch.manual_seed(args.seed * 1000 + fold)
    generator = torch.Generator().manual_seed(args.seed * 1000 + fold)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, generator=generator,
                              num_workers=args.num_workers, drop_last=len(train_set) > args.batch_size)
    test_loader = DataLoader(test_set, batch_size=args.batch_size, num_workers=args.num_workers)
    model = models.create(args.model, dataset.num_classes, pretrained=args.pretrained,
                          image_size=args.image_size).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr or models.default_learning_rate(args.model),
                                  weight_decay=args.weight_decay)
    start_epoch = 0
    if checkpoint_path.exists():
        start_epoch = resume_fold(checkpoint_path, args, model, optimizer, generator)
    started = time.time()
    bar = tqdm(total=args.epochs, initial=start_epoch, unit="epoch", disable=not args.progress, desc=f"fold {fold}")
    for epoch in range(start_epoch, args.epochs):
        model.train()
        losses, regularisers, correct, seen = [], [], 0, 0
        for images, masks, labels in train_loader:
            images, masks, labels = images.to(device), masks.to(device), labels.to(device)
            loss, logits, regulariser = training_loss(model, images, masks, labels, args)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if regulariser is not None:
                regularisers.append(regulariser.item())
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
        step = fold * args.epochs + epoch
        writer.add_scalar("train/loss", np.mean(losses), step)
        writer.add_scalar("train/accuracy", correct / max(seen, 1), step)
        if regularisers:
            writer.add_scalar("train/camal_loss", np.mean(regularisers), step)
        checkpoints.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                          "settings": fold_settings(args), "rng": checkpoints.rng_state(),
                          "loader_rng": generator.get_state()}, checkpoint_path)
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses):.3f}", acc=f"{correct / max(seen, 1):.2f}")
    bar.close()
    result = evaluate(model, test_loader, device, args)
    if isinstance(dataset, vision_data.DecoyDigits):  # the same test images with decoys that still match
        matched = DataLoader(Subset(dataset.variant(True), test_idx), batch_size=args.batch_size)
        result["test_accuracy_matched_decoy"] = evaluate(model, matched, device, args)["test_accuracy"]
    result.update(faithfulness_scores(model, test_set, device, args, fold))
    for key in ("test_accuracy", "test_iou", "deletion_auc", "insertion_auc"):
        if not math.isnan(result[key]):
            writer.add_scalar(f"test/{key}", result[key], fold)
    result.update({"task": "classification", "model": args.model, "dataset": args.dataset, "method": args.method,
                   "fold": fold, "folds": args.folds, "epochs": args.epochs, "train_seconds": time.time() - started,
                   "args": asdict(args)})
    return result


def resume_fold(path: Path, args: ClassifyArgs, model, optimizer, generator: torch.Generator) -> int:
    """Continue a fold from its checkpoint (data only; made under these settings); the next epoch."""
    state = checkpoints.load(path)
    if not isinstance(state.get("settings"), dict) or not isinstance(state.get("epoch"), int):
        raise ConfigError(f"checkpoint {path} is not a camal-classify fold checkpoint; delete it to restart the fold")
    check_same_settings(state["settings"], args, path)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        checkpoints.set_rng_state(state["rng"])
        generator.set_state(state["loader_rng"])
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"checkpoint {path} does not fit this model ({type(error).__name__}); delete it to "
                          f"restart the fold") from None
    return state["epoch"] + 1


def check_args(args: ClassifyArgs) -> None:
    """Every value checked before data is read or a file written."""
    if args.folds < 2:
        raise ConfigError("--folds must be at least 2")
    if schema.safe_name(args.dataset):  # it names the run's folder under --out
        raise ConfigError(f"--dataset {schema.safe_name(args.dataset)}")
    schema.check_seed(args.seed)
    for name, minimum in (("epochs", 1), ("batch_size", 1), ("image_size", 16), ("num_workers", 0),
                          ("faithfulness_steps", 1)):
        if getattr(args, name) < minimum:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= {minimum}, got {getattr(args, name)}")
    if args.only_folds is not None and not all(0 <= fold < args.folds for fold in args.only_folds):
        raise ConfigError(f"--only-folds {args.only_folds}: folds are numbered 0 to {args.folds - 1}")
    for name, value, low_open in (("lr", args.lr, True), ("camal_coef", args.camal_coef, False),
                                  ("weight_decay", args.weight_decay, False)):
        if value is not None and not (math.isfinite(value) and (value > 0 if low_open else value >= 0)):
            bound = "> 0" if low_open else ">= 0"
            raise ConfigError(f"--{name.replace('_', '-')} must be a finite number {bound}, got {value}")
    if not 0 < args.prior_threshold < 1:
        raise ConfigError(f"--prior-threshold must lie between 0 and 1, got {args.prior_threshold}")


def run(args: ClassifyArgs) -> list[dict]:
    """All requested folds; finished ones (a ``fold_XX.json`` made with these settings) are read back,
    not retrained. This process alone writes the requested folds while it runs (one lock per fold, so
    a sweep's processes train a folder's folds side by side)."""
    if args.method == "prior" and not args.prior_weights:
        raise ConfigError("--method prior needs --prior-weights FILE (open_clip weights; nothing is downloaded)")
    check_args(args)
    if args.model not in models.ARCHITECTURES:
        raise ConfigError(f"unknown model {args.model!r}; choose one of {', '.join(models.ARCHITECTURES)}")
    wanted = [fold for fold in range(args.folds) if args.only_folds is None or fold in args.only_folds]
    folder = run_dir(args)
    folder.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as held:
        for fold in wanted:
            held.enter_context(runs.one_writer(folder, runs.fold_lock(fold)))
        finished = {fold: finished_fold(folder, fold, args) for fold in wanted
                    if (folder / runs.fold_result(fold)).exists()}
        return train_folds(args, folder, [fold for fold in wanted if fold not in finished], finished)


def finished_fold(folder: Path, fold: int, args: ClassifyArgs) -> dict:
    """A fold's result, if these settings made it; refused naming what differs otherwise."""
    path = folder / runs.fold_result(fold)
    result = runs.read_fold(path)
    check_same_settings(result.get("args", {}), args, path)
    return result


def train_folds(args: ClassifyArgs, folder: Path, todo: list[int], finished: dict[int, dict]) -> list[dict]:
    for fold in todo:  # a fold half-trained under other settings is refused before any data is read
        if (folder / runs.fold_checkpoint(fold)).exists():
            check_same_settings(checkpoints.load(folder / runs.fold_checkpoint(fold)).get("settings", {}), args,
                                folder / runs.fold_checkpoint(fold))
    if not todo:
        return [finished[fold] for fold in sorted(finished)]
    dataset = vision_data.load_dataset(args.dataset, args.data_root, resize=round(args.image_size * 256 / 224),
                                       crop=args.image_size, seed=args.seed)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")
    from torch.utils.tensorboard import SummaryWriter

    splits = fold_indices(dataset.labels, args.folds, args.seed)
    results = dict(finished)
    with contextlib.closing(SummaryWriter(str(folder))) as writer:
        for fold in todo:
            train_idx, test_idx = splits[fold]
            result = train_fold(args, dataset, fold, train_idx, test_idx, device, writer)
            write_json(folder / runs.fold_result(fold), result)
            (folder / runs.fold_checkpoint(fold)).unlink(missing_ok=True)
            results[fold] = result
            iou = float("nan") if result["test_iou"] is None else result["test_iou"]
            print(f"fold {fold}: accuracy {result['test_accuracy']:.3f}  IoU {iou:.3f}  "
                  f"deletion {result['deletion_auc']:.3f}  insertion {result['insertion_auc']:.3f}", flush=True)
    return [results[fold] for fold in sorted(results)]


def cli() -> None:
    args = tyro.cli(ClassifyArgs)
    run_cli("camal-classify", lambda: run(args))


if __name__ == "__main__":
    cli()
