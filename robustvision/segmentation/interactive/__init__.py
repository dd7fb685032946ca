"""Interactive segmentation: clicks, the RITM simulated user, predictors (EdgeFlow and classic baselines), NoC.

The annotation tool and the benchmark share everything here::

    from robustvision.segmentation.interactive import Click, Clicker, create_predictor
    p = create_predictor("edgeflow")          # or "edgeflow_noedge", "grabcut", "random_walker"
    p.set_image(image_uint8_hwc)              # heavy per-image work, once
    probs = p.predict([Click(120, 200, True)])  # cheap, per click; H x W float32 in [0, 1]

Reference: Hao et al., "EdgeFlow: Achieving Practical Interactive Segmentation with Edge-Guided Flow",
ICCV 2021 Workshops, arXiv:2109.09406.
"""

from robustvision.segmentation.interactive.clicks import (
    DISK_RADIUS,
    PRED_THRESHOLD,
    Click,
    Clicker,
    check_clicks,
    click_maps,
    clicks_to_points,
    disk_maps,
    iou,
    sample_next_click,
)
from robustvision.segmentation.interactive.evaluate import (
    NocSummary,
    evaluate_dataset,
    evaluate_sample,
    number_of_clicks,
)
from robustvision.segmentation.interactive.history import ClickHistory, Step
from robustvision.segmentation.interactive.predictor import (
    PREDICTORS,
    InferenceConfig,
    NetPredictor,
    Predictor,
    create_predictor,
    list_predictors,
    to_image_tensor,
)

__all__ = [
    "DISK_RADIUS",
    "PRED_THRESHOLD",
    "PREDICTORS",
    "Click",
    "ClickHistory",
    "Clicker",
    "InferenceConfig",
    "NetPredictor",
    "NocSummary",
    "Predictor",
    "Step",
    "check_clicks",
    "click_maps",
    "clicks_to_points",
    "create_predictor",
    "disk_maps",
    "evaluate_dataset",
    "evaluate_sample",
    "iou",
    "list_predictors",
    "number_of_clicks",
    "sample_next_click",
    "to_image_tensor",
]
