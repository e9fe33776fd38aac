"""Grad-CAM family heatmaps of the blast class for classifier-domain crops, via tf-keras-vis.

Computing a heatmap (:func:`compute_heatmaps`) and drawing it (:func:`overlay_heatmap`) are
separate, as in the keras-io Grad-CAM tutorial. Heatmaps are explanations of what the network
looked at, for review; they are not a second opinion on the label.

Three quirks of tf-keras-vis 0.8.7 under Keras 3 are handled here:

- ``ReplaceToLinear`` sets ``layer.activation`` on the output layer, but our output is a
  ``Softmax`` layer, which ignores that attribute: the softmax would silently stay. The model
  modifier :func:`_to_logits` instead cuts the classifier at its ``logits`` layer. It builds a
  new model on the same layers and changes nothing, so no clone is needed and the caller's
  model keeps its softmax. Score-CAM applies its own softmax to these logits, as it should.
- ``Scorecam`` calls ``model.predict`` with a one-element list, which Keras 3 warns about and
  shows a progress bar for; :class:`_LogitsModel` unwraps the list and predicts quietly.
- ``Scorecam`` keeps the ``max_N`` maps of highest variance over the whole batch (the union of
  every crop's picks), so a crop's map would depend on its batch-mates and the cost would grow
  with the batch size squared; Score-CAM therefore runs one crop at a time.
"""

from __future__ import annotations

import threading
import warnings
import weakref
from collections.abc import Sequence

import cv2
import keras
import numpy as np

from leukemia_core.classify import DEFAULT_BATCH_SIZE
from leukemia_core.errors import InvalidImageError, ModelIntegrityError
from leukemia_core.models.architectures import get_architecture
from leukemia_core.models.folder import LoadedModel
from leukemia_core.models.inputs import check_crop, model_inputs

with warnings.catch_warnings():  # tf-keras-vis 0.8 imports zoom from a deprecated scipy module
    warnings.filterwarnings(
        "ignore", "Please import `zoom` from the `scipy.ndimage` namespace", DeprecationWarning,
        r"tf_keras_vis\.",
    )  # fmt: skip
    from tf_keras_vis import ModelVisualization
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.scorecam import Scorecam
    from tf_keras_vis.utils.scores import CategoricalScore

__all__ = ["METHODS", "compute_heatmaps", "overlay_heatmap"]

METHODS = ("gradcam", "gradcam++", "scorecam")
_VISUALISERS = {"gradcam": Gradcam, "gradcam++": GradcamPlusPlus, "scorecam": Scorecam}


class _LogitsModel(keras.Model):
    """The classifier up to its logits, with the ``predict`` that tf-keras-vis' Score-CAM needs.

    ``predict`` takes the one-element list Score-CAM passes, shows no progress bar, and runs
    ``predict_on_batch`` per chunk: Keras' ``predict`` builds a tf.data pipeline per call,
    which was most of Score-CAM's time on small models.
    """

    def predict(self, x, batch_size=None, verbose=0, **kwargs):
        if isinstance(x, list | tuple) and len(x) == 1:
            x = x[0]
        step = batch_size or DEFAULT_BATCH_SIZE
        chunks = [self.predict_on_batch(x[i : i + step]) for i in range(0, len(x), step)]
        return np.concatenate(chunks)


def _to_logits(model: keras.Model) -> keras.Model:
    """Model modifier: the softmax replaced by the identity (what ``ReplaceToLinear`` means)."""
    return _LogitsModel(model.input, model.get_layer("logits").output, name=f"{model.name}_logits")


# A visualiser per (Keras model, method): its logits model keeps Keras' traced predict function,
# which Score-CAM would otherwise retrace on every call (~1.5 s for EfficientNet-Lite0 on CPU).
# Building one costs ~10 ms. Entries go when their Keras model is garbage-collected.
_VISUALISER_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


def _visualiser(keras_model: keras.Model, method: str) -> ModelVisualization:
    with _CACHE_LOCK:
        per_model = _VISUALISER_CACHE.setdefault(keras_model, {})
        if method not in per_model:
            visualiser = _VISUALISERS[method]
            per_model[method] = visualiser(keras_model, model_modifier=_to_logits, clone=False)
        return per_model[method]


def _gradcam_layer(model: LoadedModel) -> str:
    config = model.config
    layer = config.gradcam_layer or get_architecture(config.architecture).gradcam_layer
    if layer not in {existing.name for existing in model.keras_model.layers}:
        raise ModelIntegrityError(
            f"model {config.name!r} names Grad-CAM layer {layer!r}, which its network does not "
            f"have; set gradcam_layer in its config.json to the last convolutional feature "
            f"layer of {config.architecture} (see models.get_architecture)."
        )
    return layer


def _crop_size(crops: Sequence[np.ndarray]) -> tuple[int, int]:
    """The one (height, width) all crops share; raises InvalidImageError otherwise."""
    sizes = [check_crop(crop, i).shape[:2] for i, crop in enumerate(crops)]
    if len(set(sizes)) > 1:
        j = next(i for i, size in enumerate(sizes) if size != sizes[0])
        raise InvalidImageError(
            f"crops have different sizes: crop 0 is {sizes[0][0]}×{sizes[0][1]} px, crop {j} is "
            f"{sizes[j][0]}×{sizes[j][1]} px; pass crops of one size (as one crop_cells call "
            "makes) or call compute_heatmaps once per size."
        )
    return sizes[0]


def _to_unit_range(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    heat = cv2.resize(cam.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    low, high = float(heat.min()), float(heat.max())
    if not high > low:  # a flat map (e.g. no positive evidence) carries no location
        return np.zeros(size, np.float32)
    return np.clip((heat - low) / (high - low), 0.0, 1.0).astype(np.float32)


def compute_heatmaps(
    model: LoadedModel,
    crops: Sequence[np.ndarray],
    *,
    method: str = "gradcam",
    score_maps: int = 8,
    class_index: int = 0,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> np.ndarray:
    """Class-activation heatmaps of crops, at the crops' own size.

    Crops are resized and preprocessed exactly as :class:`~leukemia_core.classify.Classifier`
    does. The CAM of the model's ``gradcam_layer`` for ``class_index``'s logit (softmax
    replaced by the identity) is resized to the crop with bilinear interpolation and scaled
    to [0, 1] per crop, so values compare places within a crop, not crops with each other.
    The map explains the crop as shown; a model with ``test_time_views`` > 1 averages its
    probability over turned and mirrored copies, whose maps would be the turned map only when
    the model is itself symmetric, so they are not computed (that would cost 4-8 times more).

    Args:
        model: A loaded classifier; its config gives input size, preprocessing and layer.
        crops: RGB uint8 ``(S, S, 3)`` crops, all of one size.
        method: One of :data:`METHODS`.
        score_maps: Score-CAM only: feature maps used (``max_N``; the most varied ones),
            at most the layer's channel count.
        class_index: Class to explain; 0 is ``blast``.
        batch_size: Crops per network call (Grad-CAM, Grad-CAM++) or masked images per
            call (Score-CAM, which runs one crop at a time; see the module docstring).

    Returns:
        ``(N, S, S)`` float32 in [0, 1]; ``(0, size, size)`` for no crops, ``size`` being
        the model's input size. A map with no positive evidence is all zeros.

    Raises:
        ValueError: Unknown method or out-of-range number.
        InvalidImageError: A crop is not RGB uint8, or the crops differ in size.
        ModelIntegrityError: The config names a Grad-CAM layer the network lacks.

    Example:
        >>> heat = compute_heatmaps(load_model(), [cell.crop for cell in cells])  # doctest: +SKIP
    """
    if method not in METHODS:
        raise ValueError(
            f"unknown explanation method {method!r}; valid methods: {', '.join(METHODS)}"
        )
    num_classes = model.keras_model.output_shape[-1]
    if not 0 <= class_index < num_classes:
        raise ValueError(f"class_index must be in [0, {num_classes - 1}], got {class_index}")
    if score_maps < 1 or batch_size < 1:
        raise ValueError(
            f"score_maps and batch_size must be >= 1, got {score_maps} and {batch_size}"
        )
    input_size = model.config.input_size
    if len(crops) == 0:
        return np.zeros((0, input_size, input_size), np.float32)
    size = _crop_size(crops)
    layer = _gradcam_layer(model)
    visualiser = _visualiser(model.keras_model, method)
    options = {"penultimate_layer": layer, "seek_penultimate_conv_layer": False,
               "expand_cam": False, "normalize_cam": False}  # fmt: skip
    step = batch_size
    if method == "scorecam":
        channels = model.keras_model.get_layer(layer).output.shape[-1]
        options.update(max_N=min(score_maps, channels), batch_size=batch_size)
        step = 1
    heatmaps = np.zeros((len(crops), *size), np.float32)
    for start in range(0, len(crops), step):
        batch = model_inputs(crops[start : start + step], model.config.input_spec)
        score = CategoricalScore([class_index] * len(batch))
        cams = np.asarray(visualiser(score, batch, **options), np.float32)
        for offset, cam in enumerate(cams):
            heatmaps[start + offset] = _to_unit_range(cam, size)
    return heatmaps


def overlay_heatmap(crop: np.ndarray, heatmap: np.ndarray, *, opacity: float = 0.4) -> np.ndarray:
    """The crop with its heatmap blended over it in the JET colour map (blue cold, red hot).

    On the crop's pure-black background the colour is weighted by the heat as well, so the
    background stays dark where the model paid no attention and shows where it did.

    Args:
        crop: RGB uint8 ``(S, S, 3)``.
        heatmap: ``(S, S)`` values in [0, 1], as :func:`compute_heatmaps` returns.
        opacity: Weight of the colour on the cell, in [0, 1]; 0 returns the crop unchanged.

    Returns:
        RGB uint8 of the crop's shape.

    Raises:
        ValueError: Opacity outside [0, 1].
        InvalidImageError: Crop not RGB uint8, or heatmap of another size.
    """
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    crop, heatmap = np.asarray(crop), np.asarray(heatmap, np.float32)
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        raise InvalidImageError(
            f"crop is {crop.dtype} of shape {crop.shape}; expected RGB uint8 (S, S, 3)."
        )
    if heatmap.shape != crop.shape[:2]:
        raise InvalidImageError(
            f"heatmap has shape {heatmap.shape} but the crop is {crop.shape[0]}×{crop.shape[1]}; "
            "pass the heatmap compute_heatmaps made for this crop."
        )
    heat = np.clip(np.nan_to_num(heatmap), 0.0, 1.0)
    levels = np.rint(heat * 255).astype(np.uint8)
    colours = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    background = ~crop.any(axis=2)
    alpha = (opacity * np.where(background, heat, 1.0))[..., None]
    blended = crop.astype(np.float32) * (1.0 - alpha) + colours.astype(np.float32) * alpha
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
