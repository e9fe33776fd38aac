"""The top-of-backbone fine-tuning experiment's model surgery (train.experiments)."""

from __future__ import annotations

import numpy as np
import pytest

from leukemia_core.models.architectures import PREPROCESSING_SCHEMES, build_classifier
from train.experiments.loso_top_finetune import top_of
from train.fit import FitConfig
from train.head import backbone_features


@pytest.fixture(scope="module")
def model():
    return build_classifier("efficientnet_lite0", input_size=64, weights="imagenet")


def test_the_top_on_cached_activations_gives_the_whole_model_s_output(model):
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    config = FitConfig(architecture="efficientnet_lite0", input_size=64, cached_features=True)
    cached = backbone_features(model, cells, config, views=2, layer="block6d_add")
    assert cached.shape == (2, 3, 2, 2, 192)  # views, cells, then block 6's 64 px activations
    top, layers = top_of(model, "block6d_add")
    assert layers[0].name == "block7a_expand_conv"
    kernel, bias = model.get_layer("logits").get_weights()  # spread the calls out of 0.5
    model.get_layer("logits").set_weights([rng.normal(0, 0.05, kernel.shape), bias])
    whole = model.predict(PREPROCESSING_SCHEMES["lite"](cells.astype(np.float32)), verbose=0)
    assert np.ptp(whole[:, 0]) > 0.05
    np.testing.assert_allclose(top.predict(cached[0], verbose=0), whole,
                               atol=2e-3)  # fmt: skip
    # Shared weights: changing the top changes the model the app would save.
    top.get_layer("logits").set_weights([kernel * 0, bias + 1])
    assert np.allclose(model.get_layer("logits").get_weights()[0], 0)


def test_a_cut_before_a_residual_block_or_an_unknown_layer_is_refused(model):
    with pytest.raises(ValueError, match="residual"):
        top_of(model, "block6c_add")
    with pytest.raises(ValueError, match="No layer"):
        top_of(model, "block99_add")
