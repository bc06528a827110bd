"""Data for ``train.py``: scikit-learn's bundled digits, or a folder of images by class.

Both give a :class:`Dataset`: NHWC float32 images at the model's size, standardised with
the training split's per-channel mean and standard deviation (or, with ``normalize=(mean,
std)``, with fixed statistics such as a pretrained model's), integer labels, and a fixed,
seeded, stratified train/test split. Nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from PIL import Image, UnidentifiedImageError
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

#: file suffixes read from a ``--data`` folder (case-insensitive)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


#: ``(mean, std)``: one value per channel, of images in [0, 1]
Normalization = tuple[Sequence[float], Sequence[float]]


class DataError(ValueError):
    """The data cannot be used; the message says why and where."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A train/test split of NHWC images.

    ``train_images``: ``(n_train, size, size, channels)`` float32; ``train_labels``:
    ``(n_train,)`` int32 in ``[0, len(classes))``; likewise for ``test_*``.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple[str, ...]

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[-1])

    def with_channels(self, channels: int) -> Dataset:
        """Gray images repeated over ``channels`` (for models with a fixed RGB input)."""
        if channels == self.channels:
            return self
        if self.channels != 1:
            raise DataError(f"cannot give {self.channels}-channel images to a model that takes {channels}")
        return dataclasses.replace(
            self,
            train_images=np.repeat(self.train_images, channels, axis=-1),
            test_images=np.repeat(self.test_images, channels, axis=-1),
        )


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """``(n, h, w, c)`` float32 -> ``(n, size, size, c)``, bilinear, in one call."""
    if images.shape[1:3] == (size, size):
        return images
    shape = (len(images), size, size, images.shape[-1])
    return np.asarray(jax.image.resize(images, shape, method="bilinear"), np.float32)


def _normalize(
    train_x: np.ndarray, test_x: np.ndarray, normalize: Normalization | None
) -> tuple[np.ndarray, np.ndarray]:
    """Both splits standardised: with the training split's per-channel mean and standard
    deviation, or ``(x - mean) / std`` with ``normalize``'s (gray images are first repeated
    over as many channels as it has: a pretrained RGB model's statistics)."""
    if normalize is None:
        mean = train_x.mean(axis=(0, 1, 2), keepdims=True)
        std = train_x.std(axis=(0, 1, 2), keepdims=True) + 1e-6
    else:
        mean, std = (np.asarray(v, np.float32).reshape(1, 1, 1, -1) for v in normalize)
        channels = mean.shape[-1]
        if std.shape[-1] != channels:
            raise DataError(f"normalize: {channels} means but {std.shape[-1]} standard deviations")
        if train_x.shape[-1] == 1 and channels > 1:
            train_x, test_x = (np.repeat(x, channels, axis=-1) for x in (train_x, test_x))
        if train_x.shape[-1] != channels:
            raise DataError(
                f"cannot normalise {train_x.shape[-1]}-channel images with {channels}-channel statistics"
            )
    return ((train_x - mean) / std).astype(np.float32), ((test_x - mean) / std).astype(np.float32)


def _split(
    images: np.ndarray,
    labels: np.ndarray,
    classes,
    *,
    test_fraction: float,
    seed: int,
    normalize: Normalization | None = None,
) -> Dataset:
    counts = np.bincount(labels, minlength=len(classes))
    if len(classes) < 2:
        raise DataError(f"need at least two classes to train a classifier, found {len(classes)}: {classes}")
    if counts.min() < 2:
        thin = [c for c, n in zip(classes, counts, strict=True) if n < 2]
        raise DataError(f"every class needs at least two images (one to train, one to test): {thin}")
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels
    )
    train_x, test_x = _normalize(train_x, test_x, normalize)
    return Dataset(train_x, train_y.astype(np.int32), test_x, test_y.astype(np.int32), tuple(classes))


def load_digits_dataset(
    image_size: int, *, test_fraction: float = 0.2, seed: int = 0, normalize: Normalization | None = None
) -> Dataset:
    """scikit-learn's 1,797 8x8 gray digits (ships with scikit-learn), in [0, 1], resized to
    ``image_size``; ``normalize=(mean, std)`` (e.g. a pretrained model's RGB statistics)
    replaces the training split's statistics, the gray images repeated over its channels."""
    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[..., None]
    return _split(
        _resize(images, image_size),
        digits.target.astype(np.int64),
        tuple(str(c) for c in range(10)),
        test_fraction=test_fraction,
        seed=seed,
        normalize=normalize,
    )


def load_folder_dataset(
    root: str | Path,
    image_size: int,
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    normalize: Normalization | None = None,
) -> Dataset:
    """Images in ``root/<class name>/*`` (one subfolder per class), as RGB in [0, 1], resized
    to ``image_size`` x ``image_size``, with a seeded, stratified held-out split, standardised
    with the training split's statistics or ``normalize=(mean, std)``.

    Raises:
      DataError: the folder is missing or empty, has fewer than two classes, a class has
        fewer than two images, or an image cannot be read (the message names the file).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--data {root}: no such folder")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"--data {root}: expected one subfolder per class, found no subfolders")
    images, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        files = sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(
                f"--data {root}: class folder {class_dir.name!r} has no images ({sorted(IMAGE_SUFFIXES)})"
            )
        for file in files:
            try:
                with Image.open(file) as image:
                    rgb = image.convert("RGB").resize((image_size, image_size), Image.Resampling.BILINEAR)
            except (UnidentifiedImageError, OSError) as error:
                raise DataError(f"--data {root}: cannot read image {file}: {error}") from error
            images.append(np.asarray(rgb, np.float32) / 255.0)
            labels.append(label)
    return _split(
        np.stack(images),
        np.asarray(labels),
        tuple(p.name for p in class_dirs),
        test_fraction=test_fraction,
        seed=seed,
        normalize=normalize,
    )
