"""The data: replace this module with yours.

Default: scikit-learn's handwritten digits as 8x8 grey images, which ship inside scikit-learn,
so training works offline.

Contract, checked by `fit` before training: `load_datasets(config)` returns
`(train_ds, None)`: a batched `tf.data.Dataset` of float32 images of shape
`(batch, *config.image_shape)` with pixels in [-1, 1], the range of the generator's `tanh`
output, and no validation split (a GAN is not evaluated against held-out images). There are
no labels.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits

from .config import Config
from .engine.batches import shuffled_batches

MAX_PIXEL = 16.0  # The digits' pixels are counts from 0 to 16.


def load_images(config: Config) -> np.ndarray:
    """All images as float32 of shape `(n, *config.image_shape)`, pixels in [-1, 1]."""
    pixels, _ = load_digits(return_X_y=True)
    images = pixels.reshape((-1, *config.image_shape)).astype(np.float32)
    return images / (MAX_PIXEL / 2) - 1.0


def load_datasets(config: Config) -> tuple[tf.data.Dataset, None]:
    """Shuffled batches of images, and no validation split.

    The order follows `config.seed` and changes every epoch.
    """
    return shuffled_batches(load_images(config), config.batch_size, seed=config.seed), None
