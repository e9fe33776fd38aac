"""Training-time augmentation of single-cell crops: geometry, colour, stain, blur and JPEG.

Paper A's rotation/flip/scale augmentation plus mild colour jitter (:data:`AUGMENTATIONS`), and
the scanner and stain robustness recipes chosen by leave-one-source-out comparisons
(:data:`ROBUST_AUGMENTATIONS`). All of it is stateless and seeded, so a run is repeatable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

AUGMENTATIONS = ("hflip", "vflip", "rotate90", "scale", "colour")
# Scanner and stain robustness (LOSO-chosen recipes): strong stain jitter in HED space, wider
# hue/saturation/brightness/contrast, defocus blur and JPEG re-compression.
ROBUST_AUGMENTATIONS = ("stain", "blur", "jpeg")
ALL_AUGMENTATIONS = AUGMENTATIONS + ROBUST_AUGMENTATIONS

# Haematoxylin, eosin and DAB optical-density vectors (Ruifrok & Johnston; skimage's
# ``rgb_from_hed``): stain jitter rescales each stain's amount, as another lab's staining would.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], np.float32)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED).astype(np.float32)


def _stain_jitter(x: tf.Tensor, seeds) -> tf.Tensor:
    """Per-stain scale (0.75-1.25) and shift (+-0.05 OD) in HED space; x in 0..1."""
    od = -tf.math.log((x * 255.0 + 1.0) / 256.0)
    hed = tf.tensordot(od, _HED_FROM_RGB, 1)
    alpha = tf.random.stateless_uniform([3], seeds[0], 0.75, 1.25)
    beta = tf.random.stateless_uniform([3], seeds[1], -0.05, 0.05)
    od = tf.tensordot(hed * alpha + beta, _RGB_FROM_HED, 1)
    return (tf.exp(-od) * 256.0 - 1.0) / 255.0


def _blur(image: tf.Tensor, seed, size) -> tf.Tensor:
    """Defocus and lower optical resolution: down to 45-100% of the side and back up."""
    factor = tf.random.stateless_uniform([], seed, 0.45, 1.0)
    small = tf.cast(tf.round(tf.cast(size, tf.float32) * factor), tf.int32)
    return tf.image.resize(tf.image.resize(image, [small, small], antialias=True), [size, size])


def augment(image: tf.Tensor, seed: tf.Tensor, kinds: Sequence[str] = AUGMENTATIONS) -> tf.Tensor:
    """Random flips, 90-degree rotation, scale, blur, colour/stain jitter and JPEG artefacts.

    The background stays black. ``colour`` alone is a mild jitter; with ``stain`` the jitter
    is strong (HED stain amounts, hue +-0.08, saturation 0.6-1.4, brightness +-0.15, contrast
    0.7-1.3), as between labs and scanners.

    Args:
        image: ``(H, W, 3)`` float image in 0..255.
        seed: Stateless seed pair.
        kinds: Which of :data:`ALL_AUGMENTATIONS` to apply.
    """
    unknown = set(kinds) - set(ALL_AUGMENTATIONS)
    if unknown:
        raise ValueError(f"Unknown augmentation(s) {sorted(unknown)}; choose from "
                         f"{ALL_AUGMENTATIONS}.")  # fmt: skip
    seeds = tf.random.experimental.stateless_split(seed, 14)
    size = tf.shape(image)[0]
    if "hflip" in kinds:
        image = tf.image.stateless_random_flip_left_right(image, seeds[0])
    if "vflip" in kinds:
        image = tf.image.stateless_random_flip_up_down(image, seeds[1])
    if "rotate90" in kinds:
        k = tf.random.stateless_uniform([], seeds[2], 0, 4, dtype=tf.int32)
        image = tf.image.rot90(image, k)
    if "scale" in kinds:
        zoom = tf.random.stateless_uniform([], seeds[3], 0.9, 1.1)
        scaled = tf.cast(tf.round(tf.cast(size, tf.float32) * zoom), tf.int32)
        image = tf.image.resize(image, [scaled, scaled])
        image = tf.image.resize_with_crop_or_pad(image, size, size)
    cell = tf.cast(tf.reduce_max(image, axis=-1, keepdims=True) > 4.0, tf.float32)
    if "blur" in kinds:
        image = _blur(image, seeds[8], size)
    x = image / 255.0
    strong = "stain" in kinds
    if strong:
        x = _stain_jitter(x, seeds[9:11])
    if "colour" in kinds or strong:
        x = tf.image.stateless_random_brightness(x, 0.15 if strong else 0.08, seeds[4])
        x = tf.image.stateless_random_contrast(x, *((0.7, 1.3) if strong else (0.85, 1.15)),
                                               seeds[5])  # fmt: skip
        x = tf.image.stateless_random_hue(x, 0.08 if strong else 0.03, seeds[6])
        x = tf.image.stateless_random_saturation(x, *((0.6, 1.4) if strong else (0.85, 1.15)),
                                                 seeds[7])  # fmt: skip
    x = tf.clip_by_value(x, 0.0, 1.0)
    if "jpeg" in kinds:
        x = tf.image.stateless_random_jpeg_quality(x, 40, 95, seeds[11])
    return x * 255.0 * cell
