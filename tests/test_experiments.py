"""The top-of-backbone fine-tuning experiment's model surgery (train.experiments)."""

from __future__ import annotations

import numpy as np
import pytest

from leukemia_core.models.architectures import build_classifier
from train.experiments.loso_top_finetune import activations, top_of


@pytest.fixture(scope="module")
def model():
    return build_classifier("efficientnet_lite0", input_size=64, weights="imagenet")


def test_the_top_on_cached_activations_gives_the_whole_model_s_output(model):
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    cached = activations(model, "block6d_add", cells, views=2, augmentations=("hflip",))
    assert cached.shape[:2] == (2, 3) and cached.dtype == np.float16
    top, layers = top_of(model, "block6d_add")
    assert layers[0].name == "block7a_expand_conv"
    kernel, bias = model.get_layer("logits").get_weights()  # spread the calls out of 0.5
    model.get_layer("logits").set_weights([rng.normal(0, 0.05, kernel.shape), bias])
    whole = model.predict((cells.astype(np.float32) - 127) / 128, verbose=0)
    np.testing.assert_allclose(top.predict(cached[0].astype(np.float32), verbose=0), whole,
                               atol=2e-3)  # fmt: skip
    # Shared weights: changing the top changes the model the app would save.
    assert np.ptp(whole[:, 0]) > 0.05
    top.get_layer("logits").set_weights([kernel * 0, bias + 1])
    assert np.allclose(model.get_layer("logits").get_weights()[0], 0)


def test_a_cut_before_a_residual_block_or_an_unknown_layer_is_refused(model):
    with pytest.raises(ValueError, match="residual"):
        top_of(model, "block6c_add")
    with pytest.raises(ValueError, match="No layer"):
        top_of(model, "block99_add")
