"""DefaultPredictor: exported by detkit.engine, returns the model's ``{"instances": ...}``,
and refuses a model without weights unless asked."""

import os

import numpy as np
import pytest

from detkit.config import get_cfg
from detkit.engine import DefaultPredictor
from detkit.structures import Instances

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def shapes_cfg():
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs/quickstart/shapes.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    return cfg


def test_empty_weights_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="random boxes.*allow_random_weights=True"):
        DefaultPredictor(shapes_cfg())


def test_output_is_the_model_output_of_one_image_in_its_pixels():
    predictor = DefaultPredictor(shapes_cfg(), allow_random_weights=True)
    image = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    output = predictor(image)
    assert set(output) == {"instances"}
    instances = output["instances"]
    assert isinstance(instances, Instances)
    assert instances.image_size == (40, 60)
    boxes = instances.pred_boxes.tensor
    assert len(boxes) == 0 or (boxes[:, 2].max() <= 60 and boxes[:, 3].max() <= 40)
