"""``DefaultPredictor``: one image in, detections out, with the config's test-time input."""

from __future__ import annotations

import numpy as np
import torch

from detkit.config import CfgNode
from detkit.structures import Instances

__all__ = ["DefaultPredictor"]


class DefaultPredictor:
    """Builds the model of ``cfg``, loads ``MODEL.WEIGHTS`` and runs it on single images.

    The image is converted to ``INPUT.FORMAT`` and resized to ``INPUT.MIN_SIZE_TEST`` /
    ``MAX_SIZE_TEST`` exactly as the test loader does; detections come back in the
    coordinates of the image given, as ``{"instances": Instances}`` (what the model returns
    for one image).

    Args:
        cfg: the config; ``MODEL.WEIGHTS`` names the trained weights.
        allow_random_weights: accept an empty ``MODEL.WEIGHTS``. A model that was never
            trained draws random boxes, so without this an empty ``MODEL.WEIGHTS`` is
            refused (ValueError); pass True only to test plumbing (speed, shapes).

    Example::

        predictor = DefaultPredictor(cfg)  # cfg.MODEL.WEIGHTS = "output/model_final.pth"
        instances = predictor(cv2.imread("image.jpg"))["instances"]
    """

    def __init__(self, cfg: CfgNode, *, allow_random_weights: bool = False):
        from detkit.checkpoint import DetectionCheckpointer
        from detkit.modeling import build_model
        from detkit.modeling.meta_arch import select_memory_format
        from detkit.modeling.roi_heads import quantize_box_head

        if not cfg.MODEL.WEIGHTS and not allow_random_weights:
            raise ValueError(
                "DefaultPredictor: MODEL.WEIGHTS is empty, so the model would keep its random "
                "initialization and draw random boxes. Set MODEL.WEIGHTS to trained weights "
                "(e.g. OUTPUT_DIR/model_final.pth of a training run), or pass "
                "allow_random_weights=True if random detections are what you want (tests, "
                "speed measurements)."
            )
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg).eval()
        if cfg.MODEL.WEIGHTS:
            DetectionCheckpointer(self.model).load(cfg.MODEL.WEIGHTS)
        # MODEL.MEMORY_FORMAT "measure": the layout that runs this backbone faster here.
        self.model = select_memory_format(self.cfg, self.model, "inference")
        # MODEL.ROI_BOX_HEAD.QUANTIZE "int8": the trained box head's fcs in int8.
        self.model = quantize_box_head(self.cfg, self.model)
        self.input_format = cfg.INPUT.FORMAT
        self.min_size, self.max_size = cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST

    @torch.no_grad()
    def __call__(self, image_bgr: np.ndarray) -> dict[str, Instances]:
        """``image_bgr``: uint8 ``[H, W, 3]`` as OpenCV reads it -> ``{"instances":
        Instances}`` with ``pred_boxes``, ``scores``, ``pred_classes`` in its pixels (on
        the CPU)."""
        from detkit.data.transforms import ResizeTransform, resize_shortest_edge_shape

        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise ValueError(f"DefaultPredictor takes an HxWx3 BGR image; got {image_bgr.shape}.")
        image = image_bgr[:, :, ::-1] if self.input_format == "RGB" else image_bgr
        height, width = image.shape[:2]
        new_h, new_w = resize_shortest_edge_shape(height, width, self.min_size, self.max_size)
        resized = ResizeTransform(height, width, new_h, new_w).apply_image(
            np.ascontiguousarray(image)
        )
        tensor = torch.as_tensor(resized.astype(np.float32).transpose(2, 0, 1))
        outputs = self.model([{"image": tensor, "height": height, "width": width}])
        return {"instances": outputs[0]["instances"].to("cpu")}
