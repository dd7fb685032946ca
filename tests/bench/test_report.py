"""Summary metrics from the store, the HTML report, and the report in headless Chromium."""

from __future__ import annotations

import re

import numpy as np
import pytest

from robustvision.bench import metrics as M
from robustvision.bench.report import PLOTS, write_report
from robustvision.bench.summary import family_comparison, summarize, technique_deltas


@pytest.fixture
def store(synthetic_store, tmp_path):
    s = synthetic_store(f"sqlite:///{tmp_path / 'syn.db'}")
    yield s
    s.close()


def test_summary_metrics_match_the_formulas_on_stored_samples(store):
    summary = summarize(store)
    board = summary.leaderboard.set_index(["model", "technique"])
    cells = store.cells()
    samples = store.samples(cells["id"].tolist())
    for (model, tech), g in cells.groupby(["model", "technique"]):
        clean = samples[int(g[g["noise"] == "clean"]["id"].iloc[0])][0]
        advs = [samples[int(i)][0] for i in g[g["kind"] == "adversarial"]["id"]]
        row = board.loc[(model, tech)]
        assert row["clean_accuracy"] == pytest.approx(clean.mean())
        assert row["wcar"] == pytest.approx(M.worst_case_adversarial_robustness(clean, advs))
        assert row["ar"] == pytest.approx(np.mean([M.adversarial_robustness(clean, a) for a in advs]))
        lv3 = [samples[int(i)][0] for i in g[(g["kind"] == "adversarial") & (g["level"] == 3)]["id"]]
        assert row["wcar_level3"] == pytest.approx(M.worst_case_adversarial_robustness(clean, lv3))
        sys_acc = [samples[int(i)][0].mean() for i in g[g["kind"] == "system"]["id"]]
        assert row["nsd"] == pytest.approx(-np.std(sys_acc))
        assert row["system_std_lower_better"] == pytest.approx(np.std(sys_acc))
    # mCE is normalised by the first standard model, which therefore scores 1.
    assert summary.baseline == "resnet_s/standard"
    assert board.loc[("resnet_s", "standard"), "mce_lower_better"] == pytest.approx(1.0)
    assert summarize(store, baseline="vit_s").baseline == "vit_s/standard"
    with pytest.raises(ValueError, match="mCE baseline"):
        summarize(store, baseline="nosuchnet")
    assert summarize(store, baseline="alexnet").baseline == "alexnet"  # AlexNet's published errors


def test_family_and_technique_analyses(store):
    cells = summarize(store).cells
    fam = family_comparison(cells)
    assert set(fam["family"]) == {"cnn", "transformer"}
    assert {"clean", "adversarial", "natural", "system"} <= set(fam["kind"])
    deltas = technique_deltas(cells).set_index(["technique", "kind"])
    # pgd_at drops less under attack in the synthetic data; its clean delta is negative (0.85 vs 0.95 base rate).
    assert deltas.loc[("pgd_at", "clean"), "delta"] < 0
    assert deltas.loc[("pgd_at", "adversarial"), "models"] == 1


def test_report_is_self_contained_with_every_plot(store, tmp_path):
    out = write_report(store, tmp_path / "rep" / "report.html")
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)=["']https?://""", html), "the report must not load anything from a network"
    assert 'class="sortable"' in html and "<script>" in html and "<style>" in html
    for name, *_ in PLOTS:
        png = out.parent / f"report-{name}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert html.count("data:image/png;base64,") == len(PLOTS)
    assert "resnet_s/standard" in html  # the named mCE baseline


def test_empty_store_report_says_so(tmp_path):
    from robustvision.bench.store import ResultsStore

    with ResultsStore(tmp_path / "empty.db") as s:
        html = write_report(s, tmp_path / "r.html").read_text()
    assert "holds no cells yet" in html


@pytest.mark.integration
def test_report_renders_in_headless_chromium_without_console_errors(chromium, store, tmp_path, artifacts_dir):
    out = write_report(store, tmp_path / "report.html")
    # A copy that clicks the "clean acc" header (found by its label) twice (descending) and records the row order.
    probe = out.read_text().replace(
        "</body>",
        "<script>var t=document.querySelector('table.sortable');var ths=t.querySelectorAll('th');"
        "var i=Array.prototype.findIndex.call(ths,function(h){return /^clean/i.test(h.textContent.trim());});"
        "var th=ths[i];th.click();th.click();"
        "document.body.setAttribute('data-order',Array.prototype.map.call(t.tBodies[0].rows,"
        "function(r){return r.cells[i].getAttribute('data-v');}).join('|'));</script></body>",
    )
    probe_path = tmp_path / "probe.html"
    probe_path.write_text(probe)
    dom = chromium("--dump-dom", probe_path.as_uri())
    assert "js-ready" in dom.stdout
    order = re.search(r'data-order="([^"]*)"', dom.stdout).group(1).split("|")
    values = [float(v) for v in order]
    assert values == sorted(values, reverse=True) and len(values) == 3
    shot = artifacts_dir / "bench_report.png"
    chromium("--window-size=1280,2600", f"--screenshot={shot}", out.as_uri())
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape[1] == 1280 and img.std() > 10  # not a blank page
