"""Image augmentation and soft-target mixing for training batches, built from the `augment` config section.

Order of operations on targets (documented contract): the pipeline yields probability vectors (one-hot or soft),
MixUp/CutMix mix them, and the loss `CategoricalCrossentropy(label_smoothing=ε)` smooths the result. Because
smoothing y ↦ y(1−ε)+ε/K is affine with weights summing to one, smoothing then mixing (timm's order) and mixing
then smoothing give exactly the same target:

    λ·s(a) + (1−λ)·s(b) = s(λ·a + (1−λ)·b)

so applying ε in the loss after mixing is the same as timm's "smooth, then mix". Evaluation never mixes,
augments or smooths: only the training dataset gets these functions, and metrics use hard labels.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerasls.config import AugmentConfig


def build_augmenter(config: AugmentConfig, seed=None):
    """A `keras.Sequential` of random image layers (inputs in [0, 255]), or None when nothing is switched on."""
    # float32 whatever the global policy: the pipeline yields float32 images (under mixed precision these layers
    # would otherwise cast batches to bfloat16/float16 inside tf.data; the model casts its own inputs).
    steps = []
    if config.flip != "none":
        steps.append(keras.layers.RandomFlip(config.flip, seed=seed, dtype="float32"))
    if config.rotation > 0:
        steps.append(keras.layers.RandomRotation(config.rotation, fill_mode="reflect", seed=seed, dtype="float32"))
    if config.zoom > 0:
        steps.append(keras.layers.RandomZoom(config.zoom, fill_mode="reflect", seed=seed, dtype="float32"))
    if config.rand_augment:
        steps.append(keras.layers.RandAugment(value_range=(0, 255), seed=seed, dtype="float32"))
    if not steps:
        return None
    augmenter = keras.Sequential(steps, name="augment")

    def augment(images):
        return augmenter(images, training=True)

    return augment


def build_mixer(config: AugmentConfig, seed=None):
    """A function (images, targets) -> (images, targets) mixing a batch with MixUp or CutMix, or None.

    Per batch, u ~ U(0, 1): MixUp when u < p_mixup, CutMix when p_mixup <= u < p_mixup + p_cutmix, else the
    batch is left as it is.
    """
    p_mixup, p_cutmix = config.mixup.probability, config.cutmix.probability
    if p_mixup == 0 and p_cutmix == 0:
        return None
    # float32 layers: under a mixed policy they would cast images and targets to bfloat16/float16, and the
    # branches of the tf.case below would disagree in dtype
    mixup = keras.layers.MixUp(alpha=config.mixup.alpha, seed=seed, dtype="float32")
    cutmix = keras.layers.CutMix(factor=config.cutmix.alpha, seed=seed, dtype="float32")
    generator = tf.random.Generator.from_seed(seed if seed is not None else 0)

    def apply(layer, images, targets):
        mixed = layer({"images": images, "labels": targets}, training=True)
        return tf.cast(mixed["images"], tf.float32), tf.cast(mixed["labels"], tf.float32)

    def mix(images, targets):
        u = generator.uniform([])
        return tf.case(
            [(u < p_mixup, lambda: apply(mixup, images, targets)),
             (u < p_mixup + p_cutmix, lambda: apply(cutmix, images, targets))],
            default=lambda: (images, targets),
        )

    return mix
