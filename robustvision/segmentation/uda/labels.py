"""Cityscapes label ids, the 19 training ids used by GTA5 -> Cityscapes adaptation, names and palette.

The table is the one in ``cityscapesscripts/helpers/labels.py`` (and ADVENT's ``cityscapes_list/info.json``
``label2train``): every Cityscapes label id 0..33 maps to a train id in 0..18 or to 255 (ignore). GTA5 labels use
the same ids. It is kept here as a visible literal so that no optional package is needed to read the data.
"""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255

# Cityscapes label id -> train id. Ids not listed as a class (void, ground, parking, rail track, guard rail,
# bridge, tunnel, polegroup, caravan, trailer) map to 255. 0..33 is every id a uint8 label file may hold
# (-1, the licence plate, only appears in instance files).
ID_TO_TRAINID: dict[int, int] = {
    0: 255, 1: 255, 2: 255, 3: 255, 4: 255, 5: 255, 6: 255,
    7: 0,  # road
    8: 1,  # sidewalk
    9: 255, 10: 255,
    11: 2,  # building
    12: 3,  # wall
    13: 4,  # fence
    14: 255, 15: 255, 16: 255,
    17: 5,  # pole
    18: 255,
    19: 6,  # traffic light
    20: 7,  # traffic sign
    21: 8,  # vegetation
    22: 9,  # terrain
    23: 10,  # sky
    24: 11,  # person
    25: 12,  # rider
    26: 13,  # car
    27: 14,  # truck
    28: 15,  # bus
    29: 255, 30: 255,
    31: 16,  # train
    32: 17,  # motorcycle
    33: 18,  # bicycle
}  # fmt: skip

CLASS_NAMES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
NUM_CLASSES = len(CLASS_NAMES)

# The Cityscapes colour of each train id (cityscapesscripts' ``color``), used for overlays.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip

_LUT = np.full(256, -1, dtype=np.int64)
for _id, _train in ID_TO_TRAINID.items():
    _LUT[_id] = _train


def ids_to_train_ids(label_ids: np.ndarray, *, source: str = "label") -> np.ndarray:
    """Map a Cityscapes/GTA5 label-id image to train ids (0..18, 255 = ignore).

    Args:
        label_ids: integer array (any shape) of Cityscapes label ids 0..33.
        source: how error messages name the array (a file path, usually).

    Returns:
        An ``int64`` array of the same shape with values in 0..18 or 255.

    Raises:
        ValueError: a value outside the id table (negative or above 33).

    Example:
        >>> ids_to_train_ids(np.array([7, 26, 0])).tolist()
        [0, 13, 255]
    """
    arr = np.asarray(label_ids)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{source}: label ids must be integers, got dtype {arr.dtype}")
    bad = (arr < 0) | (arr > 255)
    out = np.full(arr.shape, -1, dtype=np.int64)
    out[~bad] = _LUT[arr[~bad].astype(np.int64)]
    if bad.any() or (out < 0).any():
        unknown = sorted(set(np.unique(arr[(out < 0) | bad]).tolist()))
        raise ValueError(
            f"{source}: label ids {unknown[:10]} are outside the Cityscapes id table (0..33); "
            "is this a train-id or colour label image rather than *_labelIds / GTA5 labels?"
        )
    return out


def class_index(names: list[str] | tuple[str, ...]) -> list[int]:
    """Train ids of the given class names (``ValueError`` naming the unknown ones)."""
    unknown = [n for n in names if n not in CLASS_NAMES]
    if unknown:
        raise ValueError(f"unknown class names {unknown}; known: {', '.join(CLASS_NAMES)}")
    return [CLASS_NAMES.index(n) for n in names]
