"""Image + segmentation-mask data sets in their published on-disk layouts, and DecoyDigits.

Every item is ``(image [3, S, S] float, mask [S, S] uint8 0/1, label int)``. The paper's
preprocessing (resize the short side to 256, centre crop 224, ImageNet normalisation) is applied
with the SAME geometry to image and mask (mask with nearest neighbour). ``resize``/``crop``
can be made smaller for quick runs.

* ``OxfordPets(root)``: ``oxford-iiit-pet/images/<id>.jpg``, ``annotations/{trainval,test}.txt`` (both: the whole set)
  (``id class species breed``, class 1-37), ``annotations/trimaps/<id>.png`` (1 = pet).
* ``Flowers102(root)``: ``flowers-102/jpg/image_%05d.jpg``, ``imagelabels.mat``, ``setid.mat``,
  masks ``segmim/segmim_%05d.jpg`` = the flower on a blue (0, 0, 254) background (JPEG, so the
  blue is matched with a tolerance).
* ``BUSI(root)``: ``Dataset_BUSI_with_GT/{benign,malignant,normal}/"benign (1).png"`` with
  ``"benign (1)_mask.png"`` and extra lesions ``_mask_1.png``, ... (OR-ed together).
* ``DecoyDigits``: scikit-learn's bundled 8x8 digits, scaled onto a larger canvas at random
  places; training images carry a class-correlated decoy patch, test images an uncorrelated one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from camal_rl.errors import CamalError, ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DATASETS = ("oxford_pets", "flowers102", "busi", "decoy_digits")


class CorruptFile(CamalError):
    """An image or mask file that exists but cannot be decoded; the message names it."""


class DatasetMissing(CamalError, FileNotFoundError):
    """A data set folder or file is not where its published layout puts it."""


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DatasetMissing(f"{what} not found: {path}")
    return path


class Preprocess:
    """Resize short side -> centre crop -> tensor, identically for image and mask."""

    def __init__(self, resize: int = 256, crop: int = 224, normalize: bool = True):
        self.resize, self.crop, self.normalize = resize, crop, normalize

    def __call__(self, image: Image.Image, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision.transforms.v2 import functional as TF

        picture = TF.to_image(image.convert("RGB"))
        mask_tensor = torch.as_tensor(np.asarray(mask, dtype=np.uint8))[None]
        picture = TF.center_crop(TF.resize(picture, self.resize, antialias=True), self.crop)
        mask_tensor = TF.center_crop(TF.resize(mask_tensor, self.resize, interpolation=TF.InterpolationMode.NEAREST),
                                     self.crop)
        picture = TF.to_dtype(picture, torch.float32, scale=True)
        if self.normalize:
            picture = TF.normalize(picture, IMAGENET_MEAN, IMAGENET_STD)
        return picture, mask_tensor[0]


class MaskedImages(Dataset):
    """Common base: ``self.items`` holds (image path, mask source, label)."""

    num_classes: int
    class_names: list[str]

    def __init__(self, preprocess: Preprocess | None):
        self.preprocess = preprocess or Preprocess()
        self.items: list[tuple] = []

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> np.ndarray:
        return np.array([item[-1] for item in self.items])

    def load_mask(self, source) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, index):
        image_path, mask_source, label = self.items[index]
        try:
            image = Image.open(image_path)
            image.load()
        except (OSError, ValueError, SyntaxError) as error:  # PIL's errors for a damaged or empty file
            raise CorruptFile(f"image {image_path} cannot be read ({type(error).__name__}: {error}); replace or "
                              f"remove it") from None
        try:
            mask = self.load_mask(mask_source)
        except (OSError, ValueError, SyntaxError) as error:
            raise CorruptFile(f"mask {mask_source} of {image_path} cannot be read ({type(error).__name__}: {error}); "
                              f"replace or remove it") from None
        image, mask = self.preprocess(image, mask)
        return image, mask, label


class OxfordPets(MaskedImages):
    """``split`` ``"trainval"`` or ``"test"``; ``None`` (default) is the whole set, both lists,
    which the paper's k folds are cut from."""

    def __init__(self, root, split: str | None = None, preprocess: Preprocess | None = None):
        super().__init__(preprocess)
        base = _require(Path(root) / "oxford-iiit-pet", "Oxford-IIIT-Pet folder")
        splits = ["trainval", "test"] if split is None else [split]
        lines = []
        for name in splits:
            listing = _require(base / "annotations" / f"{name}.txt", f"Oxford-IIIT-Pet split file '{name}'")
            lines += listing.read_text().splitlines()
        names = {}
        for line in lines:
            if not line.strip() or line.startswith("#"):
                continue
            image_id, class_id = line.split()[:2]
            image = _require(base / "images" / f"{image_id}.jpg", "Oxford-IIIT-Pet image")
            trimap = _require(base / "annotations" / "trimaps" / f"{image_id}.png", "Oxford-IIIT-Pet trimap")
            self.items.append((image, trimap, int(class_id) - 1))
            names[int(class_id) - 1] = image_id.rsplit("_", 1)[0]
        self.num_classes = 37
        self.class_names = [names.get(i, f"class {i + 1}").replace("_", " ") for i in range(37)]

    def load_mask(self, trimap) -> np.ndarray:
        return (np.asarray(Image.open(trimap)) == 1).astype(np.uint8)  # 1 = pet, 2 = background, 3 = border


class Flowers102(MaskedImages):
    SPLITS = {"train": "trnid", "val": "valid", "test": "tstid"}

    def __init__(self, root, split: str | None = None, preprocess: Preprocess | None = None):
        super().__init__(preprocess)
        from scipy.io import loadmat

        base = _require(Path(root) / "flowers-102", "Flowers102 folder")
        labels = loadmat(_require(base / "imagelabels.mat", "Flowers102 imagelabels.mat"))["labels"].ravel()
        if split is None:
            indices = np.arange(1, len(labels) + 1)
        else:
            setid = loadmat(_require(base / "setid.mat", "Flowers102 setid.mat"))
            indices = setid[self.SPLITS[split]].ravel()
        for index in indices:
            image = _require(base / "jpg" / f"image_{index:05d}.jpg", "Flowers102 image")
            segmentation = _require(base / "segmim" / f"segmim_{index:05d}.jpg",
                                    "Flowers102 segmentation (102segmentations.tgz)")
            self.items.append((image, segmentation, int(labels[index - 1]) - 1))
        self.num_classes = 102
        self.class_names = [f"flower {i + 1}" for i in range(102)]

    def load_mask(self, segmentation) -> np.ndarray:
        rgb = np.asarray(Image.open(segmentation).convert("RGB")).astype(int)
        # background is pure blue (0, 0, 254), blurred by JPEG: allow a margin
        background = (rgb[..., 2] > 180) & (rgb[..., 0] < 70) & (rgb[..., 1] < 70)
        return (~background).astype(np.uint8)


class BUSI(MaskedImages):
    CLASSES = ("benign", "malignant", "normal")

    def __init__(self, root, preprocess: Preprocess | None = None):
        super().__init__(preprocess)
        base = _require(Path(root) / "Dataset_BUSI_with_GT", "BUSI folder Dataset_BUSI_with_GT")
        for label, name in enumerate(self.CLASSES):
            folder = _require(base / name, f"BUSI class folder '{name}'")
            for image in sorted(p for p in folder.glob("*.png") if "_mask" not in p.name):
                masks = sorted(folder.glob(f"{image.stem}_mask*.png"))
                if not masks:
                    raise DatasetMissing(f"BUSI mask not found for {image} (expected {image.stem}_mask.png)")
                self.items.append((image, masks, label))
        if not self.items:
            raise DatasetMissing(f"no BUSI images under {base}")
        self.num_classes = 3
        self.class_names = list(self.CLASSES)

    def load_mask(self, masks) -> np.ndarray:
        merged = None
        for path in masks:  # several lesions: OR them
            lesion = np.asarray(Image.open(path).convert("L")) > 127
            merged = lesion if merged is None else merged | lesion
        return merged.astype(np.uint8)


class DecoyDigits(Dataset):
    """Digits at random places on a canvas plus a decoy patch whose place depends on the class
    in ``train`` mode and is random in ``test`` mode; mask = the digit's pixels.

    Every index has both variants, fixed by ``seed`` and the index, so k-fold splits can train on
    the correlated and test on the uncorrelated version of disjoint images.
    """

    def __init__(self, *, canvas: int = 40, digit_scale: int = 2, decoy_size: int = 5, seed: int = 0,
                 num_images: int | None = None, train: bool = True):
        from sklearn.datasets import load_digits

        digits = load_digits()
        count = len(digits.target) if num_images is None else min(num_images, len(digits.target))
        self.digits = digits.images[:count] / 16.0
        self.targets = digits.target[:count]
        self.canvas, self.scale, self.decoy_size, self.seed, self.train = canvas, digit_scale, decoy_size, seed, train
        self.num_classes = 10
        self.class_names = [str(i) for i in range(10)]
        # one decoy place per class along the border, away from where digits are drawn
        self.decoy_places = [(1, 1 + i * (canvas - decoy_size - 2) // 9) for i in range(10)]

    def __len__(self):
        return len(self.targets)

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.targets)

    def variant(self, train: bool) -> DecoyDigits:
        other = object.__new__(DecoyDigits)
        other.__dict__.update(self.__dict__)
        other.train = train
        return other

    def __getitem__(self, index):
        rng = np.random.default_rng((self.seed, index))
        side = 8 * self.scale
        digit = np.kron(self.digits[index], np.ones((self.scale, self.scale)))
        top = rng.integers(self.decoy_size + 3, self.canvas - side)
        left = rng.integers(0, self.canvas - side)
        image = np.zeros((self.canvas, self.canvas), np.float32)
        image[top : top + side, left : left + side] = digit
        mask = np.zeros((self.canvas, self.canvas), np.uint8)
        mask[top : top + side, left : left + side] = digit > 0.25
        label = int(self.targets[index])
        decoy_class = label if self.train else int(np.random.default_rng((self.seed, index, 1)).integers(10))
        row, col = self.decoy_places[decoy_class]
        image[row : row + self.decoy_size, col : col + self.decoy_size] = 1.0
        image += 0.05 * rng.standard_normal(image.shape).astype(np.float32)
        tensor = torch.as_tensor(np.repeat(image[None], 3, axis=0))
        return tensor, torch.as_tensor(mask), label


def load_dataset(name: str, root: str | None = None, *, resize: int = 256, crop: int = 224, seed: int = 0):
    """A data set by name; the real ones read ``root`` (their folder's parent)."""
    if name == "decoy_digits":
        return DecoyDigits(seed=seed)
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if root is None:
        raise DatasetMissing(f"dataset {name} needs --data-root (the folder holding its published layout)")
    preprocess = Preprocess(resize, crop)
    if name == "oxford_pets":
        return OxfordPets(root, None, preprocess)  # the whole set: the folds are cut from it
    if name == "flowers102":
        return Flowers102(root, None, preprocess)
    return BUSI(root, preprocess)
