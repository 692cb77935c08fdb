"""Dataset loaders on small fake copies written here in the published layouts."""

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("torchvision", reason="the vision extra installs torchvision")

from camal_rl.vision import data  # noqa: E402

SMALL = data.Preprocess(resize=40, crop=32)


def square_image(path, size=(60, 48), box=(10, 8, 30, 28), colour=(200, 50, 50)):
    array = np.full((size[1], size[0], 3), 30, np.uint8)
    x0, y0, x1, y1 = box
    array[y0:y1, x0:x1] = colour
    Image.fromarray(array).save(path)


def check_mask_on_object(image, mask):
    assert image.shape == (3, 32, 32) and mask.shape == (32, 32)
    assert set(torch.unique(mask).tolist()) <= {0, 1} and mask.sum() > 0
    brightness = image[0]  # the object is red: high first channel inside the mask
    assert brightness[mask == 1].mean() > brightness[mask == 0].mean() + 1.0


def write_pets(tmp_path):
    """Three pets in Oxford-IIIT-Pet's layout under ``tmp_path/oxford-iiit-pet``."""
    base = tmp_path / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations" / "trimaps").mkdir(parents=True)
    lines = []
    for name, cls in [("Abyssinian_1", 1), ("beagle_2", 4), ("beagle_7", 4)]:
        square_image(base / "images" / f"{name}.jpg")
        trimap = np.full((48, 60), 2, np.uint8)
        trimap[8:28, 10:30] = 1
        trimap[7, 10:30] = 3
        Image.fromarray(trimap).save(base / "annotations" / "trimaps" / f"{name}.png")
        lines.append(f"{name} {cls} 1 1")
    (base / "annotations" / "trainval.txt").write_text("\n".join(lines[:2]))
    (base / "annotations" / "test.txt").write_text(lines[2])
    return base


def test_oxford_pets(tmp_path):
    write_pets(tmp_path)
    assert len(data.OxfordPets(tmp_path, "trainval", SMALL)) == 2
    dataset = data.load_dataset("oxford_pets", str(tmp_path), resize=SMALL.resize, crop=SMALL.crop)
    assert len(dataset) == 3 and list(dataset.labels) == [0, 3, 3]  # the folds are cut from the whole set
    image, mask, label = dataset[1]
    check_mask_on_object(image, mask)
    assert label == 3


def test_flowers102(tmp_path):
    from scipy.io import savemat

    base = tmp_path / "flowers-102"
    (base / "jpg").mkdir(parents=True)
    (base / "segmim").mkdir()
    for index in (1, 2, 3):
        square_image(base / "jpg" / f"image_{index:05d}.jpg")
        segmentation = np.zeros((48, 60, 3), np.uint8)
        segmentation[..., 2] = 254  # blue background
        segmentation[8:28, 10:30] = (200, 50, 50)
        Image.fromarray(segmentation).save(base / "segmim" / f"segmim_{index:05d}.jpg", quality=75)
    savemat(base / "imagelabels.mat", {"labels": np.array([[5, 7, 5]])})
    savemat(base / "setid.mat", {"trnid": np.array([[1, 3]]), "valid": np.array([[2]]), "tstid": np.array([[2]])})
    dataset = data.Flowers102(tmp_path, None, SMALL)
    assert list(dataset.labels) == [4, 6, 4]
    image, mask, _ = dataset[0]
    check_mask_on_object(image, mask)
    assert len(data.Flowers102(tmp_path, "train", SMALL)) == 2


def test_busi_merges_lesion_masks(tmp_path):
    for name in data.BUSI.CLASSES:
        folder = tmp_path / "Dataset_BUSI_with_GT" / name
        folder.mkdir(parents=True)
        square_image(folder / f"{name} (1).png", box=(5, 5, 55, 43))
        first = np.zeros((48, 60), np.uint8)
        first[5:20, 5:25] = 255
        Image.fromarray(first).save(folder / f"{name} (1)_mask.png")
        if name == "benign":
            second = np.zeros((48, 60), np.uint8)
            second[25:43, 35:55] = 255
            Image.fromarray(second).save(folder / f"{name} (1)_mask_1.png")
    dataset = data.BUSI(tmp_path, data.Preprocess(resize=48, crop=48, normalize=False))
    assert list(dataset.labels) == [0, 1, 2]
    _, benign_mask, _ = dataset[0]
    _, malignant_mask, _ = dataset[1]
    assert benign_mask.sum() > malignant_mask.sum()  # the second lesion was OR-ed in
    assert benign_mask[30, 40 - 6] == 1  # inside the second lesion (after the resize/crop geometry)


@pytest.mark.parametrize("cls, kwargs, missing", [
    (data.OxfordPets, {}, "oxford-iiit-pet"),
    (data.Flowers102, {}, "flowers-102"),
    (data.BUSI, {}, "Dataset_BUSI_with_GT"),
])
def test_missing_folder_is_named(tmp_path, cls, kwargs, missing):
    with pytest.raises(data.DatasetMissing, match=missing):
        cls(tmp_path / "nowhere", **kwargs)


def test_missing_file_is_named(tmp_path):
    base = tmp_path / "oxford-iiit-pet" / "annotations"
    base.mkdir(parents=True)
    (base / "trainval.txt").write_text("Abyssinian_1 1 1 1\n")
    with pytest.raises(data.DatasetMissing, match="split file 'test'"):
        data.OxfordPets(tmp_path)  # the whole set needs both lists
    with pytest.raises(data.DatasetMissing, match="Abyssinian_1.jpg"):
        data.OxfordPets(tmp_path, "trainval")


def test_decoy_digits_variants():
    dataset = data.DecoyDigits(num_images=50, seed=3)
    image, mask, label = dataset[7]
    assert image.shape == (3, 40, 40) and mask.sum() > 10
    again, _, _ = dataset[7]
    assert torch.equal(image, again)  # deterministic per index
    test_image, test_mask, test_label = dataset.variant(False)[7]
    assert torch.equal(mask, test_mask) and label == test_label
    # the digit is the same, only the decoy may move
    assert torch.allclose(image[:, mask == 1], test_image[:, mask == 1])
    row, col = dataset.decoy_places[label]
    assert image[0, row + 2, col + 2] > 0.8


def test_a_zero_byte_mask_or_image_names_the_file(tmp_path):
    base = write_pets(tmp_path)
    mask = base / "annotations" / "trimaps" / "beagle_2.png"
    mask.write_bytes(b"")
    dataset = data.load_dataset("oxford_pets", str(tmp_path), resize=SMALL.resize, crop=SMALL.crop)
    with pytest.raises(data.CorruptFile, match=f"mask {mask}"):
        dataset[1]
    image = base / "images" / "beagle_7.jpg"
    image.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(data.CorruptFile, match=f"image {image}"):
        dataset[2]
