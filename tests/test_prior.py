"""Prior baseline: CLIP pseudo-regions from a small randomly initialised open_clip model."""

import pytest
import torch

open_clip = pytest.importorskip("open_clip", reason="the prior extra installs open_clip_torch")

from camal_rl.vision import data, prior  # noqa: E402


def tiny_clip():
    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=open_clip.CLIPVisionCfg(layers=2, width=64, head_width=32, patch_size=8, image_size=32),
        text_cfg=open_clip.CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=2, layers=2),
    )
    return model, open_clip.get_tokenizer("ViT-B-32")


def test_regions_have_image_size_and_are_binary():
    model, tokenizer = tiny_clip()
    clip = prior.ClipGradCAM(model, tokenizer, [str(i) for i in range(10)])
    images = torch.rand(3, 3, 40, 40)
    regions = clip.regions(images, torch.tensor([1, 4, 7]), imagenet_normalized=False)
    assert regions.shape == (3, 40, 40) and regions.dtype == torch.uint8
    assert set(torch.unique(regions).tolist()) <= {0, 1} and regions.sum() > 0


def test_prior_masks_are_cached(tmp_path):
    model, tokenizer = tiny_clip()
    digits = data.DecoyDigits(num_images=6)
    clip = prior.ClipGradCAM(model, tokenizer, digits.class_names)
    wrapped = prior.PriorMasks(digits, digits.class_names, clip=clip, cache_dir=tmp_path / "cache")
    first = [wrapped[i][1] for i in range(4)]
    assert wrapped.computed == 4 and len(list((tmp_path / "cache").glob("*.npy"))) == 4
    second = [wrapped[i][1] for i in range(4)]
    assert wrapped.computed == 4 and all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    # a new wrapper (another fold, another process) reads the disk cache instead of CLIP
    again = prior.PriorMasks(digits, digits.class_names, clip=clip, cache_dir=tmp_path / "cache")
    assert torch.equal(again[2][1], first[2]) and again.computed == 0
    image, mask, label = again[5]
    assert mask.shape == image.shape[-2:] and again.computed == 1
    again.precompute()  # batched: only index 4 is left
    assert again.computed == 2 and len(list((tmp_path / "cache").glob("*.npy"))) == 6


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="weights file not found"):
        prior.load_clip("ViT-B-32", str(tmp_path / "nope.bin"))


def test_classify_with_prior_regions_end_to_end(tmp_path, monkeypatch):
    from camal_rl.vision import train

    weights = tmp_path / "clip.pt"
    weights.write_bytes(b"stand-in: load_clip is replaced below by a small random model")
    monkeypatch.setattr(prior, "load_clip", lambda name, path, device="cpu": tiny_clip())
    args = train.ClassifyArgs(model="small_cnn", dataset="decoy_digits", method="prior", prior_weights=str(weights),
                              epochs=1, folds=10, only_folds=[3], out=str(tmp_path / "out"), progress=False,
                              cuda=False, faithfulness_steps=4)
    result = train.run(args)[0]
    assert result["method"] == "prior" and 0 <= result["test_accuracy"] <= 1
    cache = tmp_path / "out" / "small_cnn__decoy_digits__prior" / "prior_cache"
    assert len(list(cache.glob("*.npy"))) > 1000  # one region per training image, computed once
