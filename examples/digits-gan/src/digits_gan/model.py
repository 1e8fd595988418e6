"""The generator and the discriminator. This module is yours: change them freely.

`build_model(config)` holds both in one `gan.GAN`, the model the training loop runs.
Contract, checked by the loop before training: `build_generator(config)` maps noise of
shape `(batch, config.latent_dim)` to images of shape `(batch, *config.image_shape)` in [-1, 1]
(a `tanh` output); `build_discriminator(config)` maps such images to one logit each, shape
`(batch, 1)`, float32, with no activation on the last layer (the loss applies the sigmoid,
numerically safely).
"""

from __future__ import annotations

import math

import keras

from .config import Config
from .gan import GAN


def build_generator(config: Config) -> keras.Model:
    """A multilayer perceptron from noise to an image."""
    noise = keras.Input(shape=(config.latent_dim,), name="noise")
    x = keras.layers.Dense(128)(noise)
    x = keras.layers.LeakyReLU(negative_slope=0.2)(x)
    x = keras.layers.Dense(math.prod(config.image_shape), activation="tanh")(x)
    images = keras.layers.Reshape(config.image_shape, name="images")(x)
    return keras.Model(noise, images, name="generator")


def build_discriminator(config: Config) -> keras.Model:
    """A multilayer perceptron from an image to one logit: real (high) or fake (low)."""
    images = keras.Input(shape=config.image_shape, name="images")
    x = keras.layers.Flatten()(images)
    x = keras.layers.Dense(128)(x)
    x = keras.layers.LeakyReLU(negative_slope=0.2)(x)
    # float32 under any dtype policy: the loss needs float32 logits with mixed precision.
    logits = keras.layers.Dense(1, name="logits", dtype="float32")(x)
    return keras.Model(images, logits, name="discriminator")


def build_model(config: Config) -> GAN:
    """The generator and the discriminator, as one model for the training loop."""
    return GAN(build_generator(config), build_discriminator(config), name="digits_gan")
