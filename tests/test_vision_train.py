"""camal-classify on DecoyDigits: the decoy shortcut, CAMAL against it, fold files and resume."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("torchvision", reason="the vision extra installs torchvision")
pytest.importorskip("sklearn", reason="the vision extra installs scikit-learn")

from camal_rl.vision.train import ClassifyArgs, run  # noqa: E402


def decoy_run(tmp_path, method, **overrides):
    settings = dict(model="small_cnn", dataset="decoy_digits", method=method, camal_coef=0.3, epochs=20, folds=10,
                    only_folds=[0], image_size=40, out=str(tmp_path), progress=False, cuda=False, faithfulness_steps=10)
    settings.update(overrides)
    return run(ClassifyArgs(**settings))[0]


@pytest.mark.slow
def test_camal_resists_the_decoy_shortcut(tmp_path):
    vanilla = decoy_run(tmp_path, "vanilla")
    camal = decoy_run(tmp_path, "camal")
    print({k: (round(vanilla[k], 3), round(camal[k], 3))
           for k in ("test_accuracy", "test_accuracy_matched_decoy", "test_iou", "deletion_auc", "insertion_auc")})
    # Vanilla learned the decoy: right while decoys match, far worse once they stop matching
    assert vanilla["test_accuracy_matched_decoy"] > 0.9
    assert vanilla["test_accuracy"] < vanilla["test_accuracy_matched_decoy"] - 0.4
    # CAMAL (same seed, folds and steps) keeps more accuracy and looks at the digit
    assert camal["test_accuracy"] > vanilla["test_accuracy"] + 0.1
    assert camal["test_iou"] > vanilla["test_iou"] + 0.1
    on_disk = json.loads((tmp_path / "small_cnn__decoy_digits__camal" / "fold_00.json").read_text())
    for key in ("task", "model", "dataset", "method", "fold", "test_accuracy", "test_iou", "deletion_auc",
                "insertion_auc"):
        assert key in on_disk
    assert on_disk["task"] == "classification" and 0 <= on_disk["deletion_auc"] <= 1


@pytest.mark.slow
def test_finished_folds_are_not_retrained(tmp_path):
    first = decoy_run(tmp_path, "suppress", epochs=1, only_folds=[1])
    folder = tmp_path / "small_cnn__decoy_digits__suppress"
    stamp = (folder / "fold_01.json").stat().st_mtime_ns
    again = decoy_run(tmp_path, "suppress", epochs=1, only_folds=[1])
    assert again == first and (folder / "fold_01.json").stat().st_mtime_ns == stamp
    assert not list(folder.glob("*.ckpt.pt"))  # the per-epoch checkpoint goes once the fold is done


def test_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="data-root"):
        run(ClassifyArgs(dataset="oxford_pets", out=str(tmp_path), progress=False))
    with pytest.raises(FileNotFoundError, match="oxford-iiit-pet"):
        run(ClassifyArgs(dataset="oxford_pets", data_root=str(tmp_path / "none"), out=str(tmp_path), progress=False))
    with pytest.raises(ValueError, match="prior-weights"):
        run(ClassifyArgs(method="prior", out=str(tmp_path), progress=False))
    result = subprocess.run([sys.executable, "-m", "camal_rl.vision.train", "--dataset", "flowers102", "--data-root",
                             str(tmp_path / "none"), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1 and "flowers-102" in result.stderr


def test_a_full_disk_at_the_fold_checkpoint_is_one_line_naming_it(tmp_path):
    """The per-epoch checkpoint goes through the same writer as the RL trainer's: no torch traceback."""
    folder = tmp_path / "small_cnn__decoy_digits__vanilla"
    folder.mkdir()
    (folder / "fold_00.ckpt.partial.pt").symlink_to("/dev/full")  # every write to it: ENOSPC
    result = subprocess.run([sys.executable, "-m", "camal_rl.vision.train", "--model", "small_cnn", "--dataset",
                             "decoy_digits", "--method", "vanilla", "--epochs", "1", "--folds", "10",
                             "--only-folds", "0",
                             "--image-size", "40", "--faithfulness-steps", "2", "--out", str(tmp_path), "--no-progress",
                             "--no-cuda"], capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "fold_00.ckpt.pt" in result.stderr
    assert "disk is full" in result.stderr and not (folder / "fold_00.ckpt.pt").exists()


@pytest.mark.slow
def test_crash_inside_a_fold_resumes_at_the_last_finished_epoch(tmp_path, monkeypatch):
    from camal_rl.vision import train

    real_evaluate, real_loss = train.evaluate, train.training_loss
    calls = {"loss": 0}

    def crash(*args, **kwargs):
        raise RuntimeError("power cut")

    def counting_loss(*args, **kwargs):
        calls["loss"] += 1
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train, "evaluate", crash)
    monkeypatch.setattr(train, "training_loss", counting_loss)
    with pytest.raises(RuntimeError, match="power cut"):
        decoy_run(tmp_path, "camal", epochs=2, only_folds=[2])
    folder = tmp_path / "small_cnn__decoy_digits__camal"
    assert (folder / "fold_02.ckpt.pt").exists() and not (folder / "fold_02.json").exists()
    steps_for_two_epochs = calls["loss"]
    monkeypatch.setattr(train, "evaluate", real_evaluate)
    result = decoy_run(tmp_path, "camal", epochs=2, only_folds=[2])
    assert calls["loss"] == steps_for_two_epochs  # both epochs were done: no training step repeated
    assert result["fold"] == 2 and (folder / "fold_02.json").exists()


@pytest.mark.slow
def test_resumed_fold_equals_the_uninterrupted_fold(tmp_path, monkeypatch):
    """Model, optimizer, CPU (and CUDA) RNG and the loader's shuffle order all come back: same numbers."""
    from camal_rl.vision import train

    straight = decoy_run(tmp_path / "straight", "camal", epochs=3, only_folds=[3])
    real_loss = train.training_loss
    calls = {"n": 0}

    def counting_loss(*args, **kwargs):
        calls["n"] += 1
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train, "training_loss", counting_loss)
    decoy_run(tmp_path / "count", "camal", epochs=1, only_folds=[3])
    steps_per_epoch = calls["n"]

    def crash_in_second_epoch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == steps_per_epoch + 5:
            raise RuntimeError("power cut")
        return real_loss(*args, **kwargs)

    calls["n"] = 0
    monkeypatch.setattr(train, "training_loss", crash_in_second_epoch)
    with pytest.raises(RuntimeError, match="power cut"):
        decoy_run(tmp_path / "resumed", "camal", epochs=3, only_folds=[3])
    monkeypatch.setattr(train, "training_loss", real_loss)
    resumed = decoy_run(tmp_path / "resumed", "camal", epochs=3, only_folds=[3])
    for key in ("test_accuracy", "test_accuracy_matched_decoy", "test_iou", "deletion_auc", "insertion_auc"):
        assert resumed[key] == straight[key], key


def test_vit_chooses_the_math_kernel_itself_when_a_camal_loss_may_follow(monkeypatch):
    """Vanilla and evaluation keep PyTorch's fused attention; only CAMAL's loss on gradients needs MATH."""
    import torch
    from torch.nn.attention import SDPBackend

    from camal_rl import camal
    from camal_rl.vision import models

    chosen = []
    import torch.nn.attention as attention

    original = attention.sdpa_kernel

    def spy(backends, *args, **kwargs):
        chosen.append(backends)
        return original(backends, *args, **kwargs)

    monkeypatch.setattr(attention, "sdpa_kernel", spy)
    model = models.create("vit_b_16", 3, image_size=32)
    images = torch.rand(2, 3, 32, 32)
    model(images, double_backward=False)
    assert chosen == []  # Vanilla training says so: the fused kernel, even with gradients on
    model.eval()
    model(images)
    with torch.no_grad():
        model.train()
        model(images)
    assert chosen == []  # evaluation, or no gradients: nothing will differentiate the gradients
    model.train()
    logits, features = model(images)  # a training forward with gradients: a CAMAL loss may follow
    assert chosen == [SDPBackend.MATH]
    maps = camal.normalize(camal.attention(features, logits[:, 0], method="gradcam"))
    camal.camal_loss(maps, torch.ones(2, 32, 32)).backward()  # the double backward works without a flag
