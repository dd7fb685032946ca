"""Health checks inside the bench (stored as cells, the health column, the worst case), cards, and the commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from robustvision.bench.health import CHECK_KIND, check_table
from robustvision.bench.plan import load_config
from robustvision.bench.report import write_report
from robustvision.bench.runner import run_bench
from robustvision.bench.sources import resolve_models
from robustvision.bench.store import ResultsStore
from robustvision.bench.summary import summarize
from robustvision.checks import CHEAP_CHECKS
from robustvision.cli import app
from robustvision.errors import UserError

runner = CliRunner()


def cfg_for(ckpts, store, **kw):
    base = dict(
        checkpoints=[str(ckpts)],
        models=["lenet5"],
        store=str(store),
        n_examples=48,
        n_adversarial=32,
        n_checks=24,
        attack_steps=3,
        noises=["fgsm", "pgd_linf@2/255,8/255", "gaussian_noise@3", "jpeg_reencode_q50", "precision_bf16"],
        out="",
        threads=1,
        workers=1,
    )
    base.update(kw)
    return load_config("quick", **base)


@pytest.fixture(scope="module")
def stored(bench_checkpoints, tmp_path_factory):
    path = tmp_path_factory.mktemp("health") / "h.db"
    cfg = cfg_for(bench_checkpoints, path)
    models = resolve_models(cfg)
    with ResultsStore(cfg.store) as store:
        first = run_bench(cfg, models, store)
        again = run_bench(cfg, models, store)
    return cfg, models, first, again, path


def test_checks_are_stored_as_cells_and_resume(stored):
    cfg, models, first, again, path = stored
    assert len(models) == 2  # lenet5 standard and label smoothing
    with ResultsStore(path, create=False) as store:
        cells = store.cells()
        rows = store.results()
    checks = cells[cells["kind"] == CHECK_KIND]
    assert len(checks) == len(models) * len(CHEAP_CHECKS)
    assert set(checks["noise"]) == {f"check:{n}" for n in CHEAP_CHECKS}
    assert (checks["n"] == 24).all()
    verdict_rows = rows[(rows["kind"] == CHECK_KIND) & rows["metric"].isin(["check_ok", "check_skipped"])]
    assert len(verdict_rows) == len(checks)  # every check has its verdict as a numeric row
    # The checks compare with a reference PGD of the bench's step count and Madry's step (2.5 eps / steps); the
    # bench's own pgd_linf cell is the default figure, so the checks do not rerun it.
    params = json.loads(checks["params_json"].iloc[0])
    assert params["steps"] == cfg.attack_steps and params["rel_stepsize"] is None and params["default_steps"] == 0
    assert again.written == 0 and again.skipped_existing == first.planned


def test_summary_keeps_checks_apart_and_adds_health_and_worst_case(stored):
    cfg, models, _, _, path = stored
    with ResultsStore(path, create=False) as store:
        summary = summarize(store)
        board = summary.leaderboard
        assert CHECK_KIND not in set(summary.cells["kind"])
        table = check_table(summary.checks)
        for _, row in board.iterrows():
            mine = table[(table["model"] == row["model"]) & (table["technique"] == row["technique"])]
            warned = mine[mine["verdict"] == "warn"]["check"].tolist()
            assert row["health"] == ("warn: " + ", ".join(warned) if warned else "ok")
            # The worst case is the AND of every l-inf attack at 8/255 (fgsm, pgd, the checks' APGD-DLR and
            # Square), on the first 24 images, and PGD's figure is measured on the same images.
            cells = store.cells()
            mine_cells = cells[(cells["model"] == row["model"]) & (cells["technique"] == row["technique"])]
            at = mine_cells[np.isclose(mine_cells["severity"], 8 / 255)]
            at = at[at["noise"].isin(["fgsm", "pgd_linf", "check:apgd_dlr", "check:square"])]
            assert len(at) == 4
            samples = store.samples(at["id"].tolist())
            worst = np.logical_and.reduce([samples[int(i)][0][:24] for i in at["id"]])
            pgd_id = int(at[at["noise"] == "pgd_linf"]["id"].iloc[0])
            assert row["worst_robust_accuracy"] == pytest.approx(worst.mean())
            assert row["pgd_robust_accuracy"] == pytest.approx(samples[pgd_id][0][:24].mean())
            assert row["worst_robust_accuracy"] <= row["pgd_robust_accuracy"]
            # The default attack gap is information about the bench's PGD, beside its figure (not a health verdict).
            gap = row["pgd_robust_accuracy"] - row["worst_robust_accuracy"]
            assert row["default_attack_gap_lower_better"] == pytest.approx(gap)


def test_report_has_the_health_column_and_links_one_card_per_model(stored, tmp_path):
    _, models, _, _, path = stored
    with ResultsStore(path, create=False) as store:
        out = write_report(store, tmp_path / "report.html")
    text = out.read_text()
    assert "health" in text and ("&#10003;" in text or "&#9888;" in text)
    assert "PGD gap" in text and "not a health warning" in text
    cards = sorted((tmp_path / "report-cards").glob("*.html"))
    assert len(cards) == len(models)
    for card in cards:
        assert f'href="report-cards/{card.name}"' in text
        assert card.with_suffix(".png").stat().st_size > 10_000
        page = card.read_text()
        for section in ("Robust accuracy per threat model", "Health checks", "Corruptions and system noise",
                        "Training recipe"):  # fmt: skip
            assert section in page
        assert "data:image/png;base64," in page and "http" not in page.replace('href="../report.html"', "")
        assert "gaussian_noise" in page and "pgd_linf" in page and "technique" in page
        assert "default attack gap" in page and "not a health warning" in page


def test_card_command_writes_html_and_png(stored, tmp_path):
    _, _, _, _, path = stored
    result = runner.invoke(
        app, ["card", "lenet5/label_smoothing", "--store", str(path), "--out", str(tmp_path / "c.html")]
    )
    assert result.exit_code == 0, result.output
    page = (tmp_path / "c.html").read_text()
    assert "lenet5/label_smoothing" in page and "label_smoothing" in page
    assert (tmp_path / "c.png").is_file()
    bad = runner.invoke(app, ["card", "lenet6", "--store", str(path), "--out", str(tmp_path / "x.html")])
    assert isinstance(bad.exception, UserError) and "did you mean" in str(bad.exception)
    assert "\n" not in str(bad.exception) and not (tmp_path / "x.html").exists()


def test_bench_without_checks_has_no_check_cells(bench_checkpoints, tmp_path):
    cfg = cfg_for(bench_checkpoints, tmp_path / "n.db", checks=False, noises=["fgsm"])
    with ResultsStore(cfg.store) as store:
        run_bench(cfg, resolve_models(cfg), store)
        assert CHECK_KIND not in set(store.cells()["kind"])
        board = summarize(store).leaderboard
    assert set(board["health"]) == {"-"}


def test_check_command_flags_a_masked_checkpoint(bench_checkpoints, tmp_path):
    ckpt = str(bench_checkpoints / "lenet5_standard.safetensors")
    common = ["--checks", "gradients,unbounded", "--n-examples", "24", "--steps", "5", "--threads", "1"]
    plain = runner.invoke(app, ["check", ckpt, *common, "--json", str(tmp_path / "plain.json")])
    assert plain.exit_code == 0, plain.output
    assert "healthy" in plain.output
    masked = runner.invoke(app, ["check", ckpt, *common, "--mask", "temperature", "--fail-on-warn"])
    assert masked.exit_code == 1, masked.output
    assert "warn: gradients, unbounded" in masked.output
    data = json.loads((tmp_path / "plain.json").read_text())
    assert [c["check"] for c in data["checks"]] == ["gradients", "unbounded"]
    assert data["config"]["n_examples"] == 24 and data["dataset"] == "digits"
    # The default attack gap is printed as information, beside the verdicts, and written to the JSON.
    assert "info: default attack gap" in plain.output
    gap = data["default_pgd_accuracy"] - data["worst_case_accuracy"]
    assert data["default_attack_gap"] == pytest.approx(gap) and gap >= 0
    assert data["config"]["reference_rel_stepsize"] == pytest.approx(2.5 / 5)
    none = runner.invoke(app, ["check", ckpt, *common, "--default-steps", "0"])
    assert none.exit_code == 0 and "default attack gap" not in none.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--mask", "softmax"], "--mask must be one of"),
        (["--checks", "sqare"], "did you mean 'square'"),
        (["--eps", "2"], "eps must lie in"),
        (["--eps", "x/255"], "not a number"),
        (["--default-steps", "-1"], "default_steps must be >= 0"),
    ],
)
def test_check_bad_input_is_one_line(bench_checkpoints, args, message):
    ckpt = str(bench_checkpoints / "lenet5_standard.safetensors")
    result = runner.invoke(app, ["check", ckpt, *args])
    assert isinstance(result.exception, UserError), result.output
    assert message in str(result.exception) and "\n" not in str(result.exception)


def test_check_missing_checkpoint_is_one_line(tmp_path):
    result = runner.invoke(app, ["check", str(tmp_path / "none.safetensors")])
    assert isinstance(result.exception, UserError) and "not found" in str(result.exception)
