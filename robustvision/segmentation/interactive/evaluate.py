"""The Number-of-Clicks (NoC) protocol of RITM/f-BRS, with per-click latency.

For each instance the simulated user (:class:`~robustvision.segmentation.interactive.clicks.Clicker`)
clicks up to ``max_clicks`` (20) times; after each click the prediction is thresholded at 0.49 and its IoU
with the ground truth (ignore pixels excluded) recorded. NoC@t is the index of the first click reaching
IoU >= t, or ``max_clicks`` when none does. Like RITM's ``evaluate_sample`` the loop stops early once IoU
reaches ``stop_iou`` (0.95) and at least ``min_clicks`` clicks were made; IoU@k after such a stop repeats
the last IoU (the user would stop clicking there).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from robustvision.segmentation.interactive.clicks import PRED_THRESHOLD, Click, Clicker, iou
from robustvision.segmentation.interactive.predictor import Predictor, to_image_tensor

NOC_THRESHOLDS = (0.85, 0.90)


@dataclass
class SampleResult:
    """One instance's interaction.

    Attributes:
        name: the instance's name.
        ious: IoU after each click.
        clicks: the clicks the simulated user made.
        click_seconds: wall time of each ``predict`` call.
        set_image_seconds: wall time of ``set_image``.
    """

    name: str
    ious: list[float]
    clicks: list[Click]
    click_seconds: list[float]
    set_image_seconds: float

    def iou_at(self, k: int) -> float:
        """IoU after ``k`` clicks (the last IoU when the loop stopped earlier)."""
        return self.ious[min(k, len(self.ious)) - 1]


def number_of_clicks(ious: Sequence[float], threshold: float, max_clicks: int = 20) -> int:
    """NoC for one instance: 1-based index of the first IoU >= ``threshold``, else ``max_clicks``.

    Example:
        >>> number_of_clicks([0.5, 0.86, 0.91], 0.85), number_of_clicks([0.5, 0.86, 0.91], 0.95, 20)
        (2, 20)
    """
    for i, v in enumerate(ious[:max_clicks]):
        if v >= threshold:
            return i + 1
    return max_clicks


def evaluate_sample(
    predictor: Predictor,
    image: object,
    mask: np.ndarray,
    *,
    name: str = "sample",
    max_clicks: int = 20,
    pred_threshold: float = PRED_THRESHOLD,
    stop_iou: float = 0.95,
    min_clicks: int = 1,
) -> SampleResult:
    """Run the simulated user on one instance.

    Args:
        predictor: any :class:`Predictor`.
        image: ``H x W x 3`` uint8 or ``3 x H x W`` float in [0, 1].
        mask: ``H x W`` ground truth, 0 background, 1 object, 255 ignore (or boolean).
        name: the instance's name for reports.
        max_clicks: the click budget (20 in the protocol).
        pred_threshold: probability threshold (0.49).
        stop_iou: stop once IoU reaches this (RITM's ``--target-iou`` 0.95) ...
        min_clicks: ... and at least this many clicks were made.

    Returns:
        The per-click IoUs, clicks and timings.

    Raises:
        ValueError: the mask is not ``H x W`` of the image's size, or has no object pixel.
    """
    img = to_image_tensor(image)
    m = np.asarray(mask)
    if m.shape != tuple(img.shape[1:]):
        raise ValueError(f"{name}: mask has shape {m.shape} but the image is {tuple(img.shape[1:])}")
    clicker = Clicker(m)
    if not clicker.gt.any():
        raise ValueError(f"{name}: the mask has no object pixel")
    t0 = time.perf_counter()
    predictor.set_image(img)
    set_image_s = time.perf_counter() - t0
    pred = np.zeros(m.shape, bool)
    ious: list[float] = []
    seconds: list[float] = []
    for i in range(max_clicks):
        clicker.make_next_click(pred)
        t0 = time.perf_counter()
        probs = predictor.predict(clicker.clicks)
        seconds.append(time.perf_counter() - t0)
        pred = probs > pred_threshold
        ious.append(iou(pred, clicker.gt, clicker.valid))
        if ious[-1] >= stop_iou and i + 1 >= min_clicks:
            break
    return SampleResult(name, ious, list(clicker.clicks), seconds, set_image_s)


@dataclass
class NocSummary:
    """Aggregate NoC figures over a data set.

    Attributes:
        predictor: the predictor's name.
        n: number of instances.
        noc: mean NoC per threshold.
        over_max: instances that never reached each threshold.
        iou_at: mean IoU after k clicks.
        latency_median_ms / latency_p95_ms: per-click ``predict`` time (after ``set_image``).
        set_image_median_ms: per-image ``set_image`` time.
        spc: seconds per click, RITM's SPC (total predict time / total clicks).
        samples: the per-instance results.
    """

    predictor: str
    n: int
    noc: dict[float, float]
    over_max: dict[float, int]
    iou_at: dict[int, float]
    latency_median_ms: float
    latency_p95_ms: float
    set_image_median_ms: float
    spc: float
    samples: list[SampleResult] = field(default_factory=list, repr=False)

    def as_row(self) -> dict[str, float | int | str]:
        """A flat dict for tables/CSV."""
        row: dict[str, float | int | str] = {"predictor": self.predictor, "n": self.n}
        for t, v in self.noc.items():
            row[f"NoC@{round(t * 100)}"] = round(v, 3)
        for t, v in self.over_max.items():
            row[f">=max@{round(t * 100)}"] = v
        for k, v in self.iou_at.items():
            row[f"IoU@{k}"] = round(v, 4)
        row["click_ms_median"] = round(self.latency_median_ms, 1)
        row["click_ms_p95"] = round(self.latency_p95_ms, 1)
        row["set_image_ms"] = round(self.set_image_median_ms, 1)
        return row


def summarize(
    name: str,
    results: Sequence[SampleResult],
    thresholds: Sequence[float] = NOC_THRESHOLDS,
    ks: Sequence[int] = (1, 3, 5),
    max_clicks: int = 20,
) -> NocSummary:
    """Aggregate per-instance results into a :class:`NocSummary`."""
    if not results:
        raise ValueError("no results to summarise (the data set is empty)")
    nocs = {t: [number_of_clicks(r.ious, t, max_clicks) for r in results] for t in thresholds}
    over = {t: sum(1 for r in results if max(r.ious) < t) for t in thresholds}
    lat = np.array([s for r in results for s in r.click_seconds]) * 1000.0
    return NocSummary(
        predictor=name,
        n=len(results),
        noc={t: float(np.mean(v)) for t, v in nocs.items()},
        over_max=over,
        iou_at={k: float(np.mean([r.iou_at(k) for r in results])) for k in ks},
        latency_median_ms=float(np.median(lat)),
        latency_p95_ms=float(np.percentile(lat, 95)),
        set_image_median_ms=float(np.median([r.set_image_seconds for r in results]) * 1000.0),
        spc=float(lat.sum() / 1000.0 / len(lat)),
        samples=list(results),
    )


def evaluate_dataset(
    predictor: Predictor,
    samples: Iterable[tuple[str, object, np.ndarray]],
    *,
    max_clicks: int = 20,
    stop_iou: float = 0.95,
    min_clicks: int = 5,
    thresholds: Sequence[float] = NOC_THRESHOLDS,
    ks: Sequence[int] = (1, 3, 5),
    progress: Callable[[SampleResult], None] | None = None,
) -> NocSummary:
    """NoC over a data set of ``(name, image, mask)`` triples.

    ``min_clicks`` defaults to 5 so IoU@1/3/5 are measured, not carried over (NoC is unaffected by it).
    """
    results = []
    for name, image, mask in samples:
        r = evaluate_sample(
            predictor, image, mask, name=name, max_clicks=max_clicks, stop_iou=stop_iou, min_clicks=min_clicks
        )
        results.append(r)
        if progress is not None:
            progress(r)
    return summarize(predictor.name, results, thresholds, ks, max_clicks)
