"""Every capability writes its results to the store; the report shows one section per capability.

The module fixture fills one store with one small real run of each capability's command (bench, defend evaluate,
das optimize and evaluate, iseg evaluate, adapt train and evaluate); the report built from it has five sections.
"""

from __future__ import annotations

import re
import sqlite3

import pytest
import torch
from typer.testing import CliRunner

from robustvision.bench.capabilities import CAPABILITIES, Result, defend_rows, latest_results
from robustvision.bench.report import write_report
from robustvision.bench.store import ResultsStore, StoreError
from robustvision.cli import app

runner = CliRunner()
FIVE = ["benchmark", "defend", "das", "iseg", "adapt"]


def _row(value: float = 0.5, model: str = "m", metric: str = "accuracy") -> Result:
    return Result("mnist", model, "gbn", metric, value, 16, 0, "linf", "adversarial", 0.3)


# ------------------------------------------------------------------------------------------------- the store
def test_write_results_stores_rows_once_per_config(tmp_path):
    with ResultsStore(tmp_path / "r.db") as store:
        assert store.write_results("defend", [_row(), _row(metric="e2e_accuracy")], config={"n": 16}) == 2
        # the same run stored again: kept, nothing written
        assert store.write_results("defend", [_row(0.9)], config={"n": 16}) == 0
        assert store.write_results("defend", [_row(0.7)], config={"n": 32}) == 1
        df = store.results(capability="defend")
        assert sorted(df["value"]) == [0.5, 0.5, 0.7] and set(df["capability"]) == {"defend"}
        assert store.results(capability="das").empty
        latest = latest_results(store, "defend")
        assert len(latest) == 2 and latest.set_index("metric").loc["accuracy", "value"] == 0.7
        run = store.runs().iloc[-1]
        assert run["preset"] == "defend" and store.run_config(run["run_id"])["capability"] == "defend"
        with pytest.raises(ValueError, match="did you mean 'defend'"):
            store.write_results("defned", [_row()], config={})
        with pytest.raises(ValueError, match="unknown capability 'benchmark'"):
            store.write_results("benchmark", [_row()], config={})  # bench rows come with their cells
        with pytest.raises(ValueError, match="no das results"):
            store.write_results("das", [], config={})


def test_a_store_without_the_capability_column_is_read_as_is_and_migrated_when_written(synthetic_store, tmp_path):
    path = tmp_path / "old.db"
    synthetic_store(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:  # the layout of a store written before capabilities had rows
        conn.execute("ALTER TABLE results DROP COLUMN capability")
    with ResultsStore(path, create=False) as store:
        df = store.results()
        assert len(df) > 0 and set(df["capability"]) == {"benchmark"}
        assert store.results(capability="defend").empty
    with sqlite3.connect(path) as conn:  # reading wrote nothing
        assert "capability" not in {r[1] for r in conn.execute("PRAGMA table_info(results)")}
    with ResultsStore(path) as store:
        assert set(store.results()["capability"]) == {"benchmark"}
        assert store.write_results("iseg", [_row()], config={}) == 1
        assert set(store.results()["capability"]) == {"benchmark", "iseg"}


def test_defend_rows_carry_the_routing_diagnosis():
    report = {
        "n": 8,
        "budgets": {"l2": 2.0, "linf": 0.3},
        "clean": 0.9,
        "per_norm": {"l2": 0.5, "linf": 0.4},
        "union": 0.25,
        "perfect_routing_per_norm": {"l2": 0.6, "linf": 0.7},
        "perfect_routing_union": 0.5,
        "gate_accuracy": {"net.bn1": {"clean": 1.0, "l2": 0.75}},
        "routing": {"linf": {"net.bn1": {"linf": 0.875, "l2": 0.125}}},
        "branch_alone": {"l2": {"l2": 0.5, "mixture": 0.25}},
    }
    rows = {(r.noise, r.metric): r for r in defend_rows(report, dataset="mnist", model="ck", technique="gbn", seed=3)}
    assert rows[("union", "accuracy")].value == 0.25 and rows[("linf", "accuracy")].severity == 0.3
    assert rows[("clean", "accuracy")].kind == "clean" and rows[("clean", "accuracy")].severity == 0.0
    assert rows[("union", "perfect_routing_accuracy")].value == 0.5
    assert rows[("l2", "gate_accuracy:net.bn1")].value == 0.75
    assert rows[("linf", "routing:net.bn1:l2")].value == 0.125
    assert rows[("l2", "branch_alone:mixture")].value == 0.25
    assert {r.n for r in rows.values()} == {8} and {r.seed for r in rows.values()} == {3}


def test_store_option_errors_are_one_clear_line(tmp_path):
    from robustvision.bench.capabilities import store_results

    (tmp_path / "dir").mkdir()
    with pytest.raises(StoreError, match="is a folder"):
        store_results(str(tmp_path / "dir"), "iseg", [_row()], {})


def test_results_show_on_a_store_without_bench_rows(tmp_path):
    db = tmp_path / "r.db"
    with ResultsStore(db) as store:
        store.write_results("defend", [_row()], config={})
    out = " ".join(_ok(["results", "show", "--store", str(db)]).split())
    assert "holds no benchmark results (it holds 1 defend rows)" in out
    assert "1 result rows" in _ok(["results", "show", "--store", str(db), "--raw"])
    html = write_report(ResultsStore(db, create=False), tmp_path / "r.html").read_text()
    assert re.findall(r'<section class="capability" id="(\w+)"', html) == ["defend"]


# --------------------------------------------------------------------------------------------- five commands
def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, f"{args}: {result.output}\n{result.exception!r}"
    return result.output


@pytest.fixture(scope="module")
def filled_store(fake_grabcut, tmp_path_factory):
    """One store filled by one small run of every capability's command."""
    from robustvision.models import create_model
    from robustvision.models.checkpoints import save_checkpoint
    from robustvision.physical.targets import build_classifier, save_model

    tmp = tmp_path_factory.mktemp("capabilities")
    db = tmp / "results.db"
    store = ["--store", str(db)]
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROBUSTVISION_HOME", str(tmp / "home"))
        mp.setenv("ROBUSTVISION_STORE", str(db))  # the default store: commands run without --store write here
        # benchmark: an untrained LeNet-5 checkpoint, clean and one PGD budget
        torch.manual_seed(0)
        lenet = create_model("lenet5", num_classes=10, image_size=32).eval()
        save_checkpoint(lenet, tmp / "lenet5.safetensors", {"technique": "standard"})
        _ok(["bench", "--checkpoints", str(tmp / "lenet5.safetensors"), "--noises", "clean,pgd_linf@8/255",
             "--n-examples", "32", "--n-adversarial", "16", "--attack-steps", "2", "--no-checks", "--out", "",
             *store])  # fmt: skip
        # defend: a GBN LeNet-5 trained for two steps on the embedded digits, evaluated with the quick attacks
        ckpt = tmp / "digits_gbn.safetensors"
        _ok(["defend", "train", "--method", "gbn", "--dataset", "digits", "--arch", "lenet5", "--epochs", "1",
             "--max-steps", "2", "--attack-steps", "1", "--out", str(ckpt), "--threads", "1"])  # fmt: skip
        defend_out = _ok(["defend", "evaluate", str(ckpt), "--n", "8", "--preset", "quick", "--threads", "1", *store])
        # das: an untrained car classifier attacked for two steps on the generated car, then evaluated again
        torch.manual_seed(0)
        target = tmp / "das_resnet.safetensors"
        save_model(
            build_classifier("das_resnet", 2, 32),
            target,
            {"kind": "classifier", "arch": "das_resnet", "num_classes": 2, "image_size": 32,
             "classes": ["not_car", "car"]},
        )  # fmt: skip
        _ok(["das", "optimize", "--model", str(target), "--procedural", "--views", "3", "--steps", "2",
             "--batch-size", "2", "--eval-views", "2", "--out", str(tmp / "atk"), *store])  # fmt: skip
        _ok(["das", "evaluate", "--texture", str(tmp / "atk" / "texture.pt"), "--procedural", "--models",
             str(target), "--views", "2", *store])  # fmt: skip
        # iseg: GrabCut (the algorithm) on two generated instances; no --store: the default store
        fake_grabcut(tmp / "gc")
        iseg_out = _ok(["iseg", "evaluate", "-p", "grabcut", "--root", str(tmp / "gc"), "--max-clicks", "3"])
        # adapt: three CFContra steps on tiny generated domains, then the checkpoint evaluated again
        mp.setattr("robustvision.segmentation.uda.specs.SYNTHETIC_SIZES", {"source": 8, "target": 8, "eval": 4})
        adapted = tmp / "cfcontra.safetensors"
        _ok(["adapt", "train", "--method", "cfcontra", "--iters", "3", "--batch-size", "2", "--image-size",
             "24x48", "--out", str(adapted), *store])  # fmt: skip
        _ok(["adapt", "evaluate", str(adapted), "--out", str(tmp / "eval"), "--overlays", "1", *store])
    torch.set_num_threads(old)
    return {"db": db, "tmp": tmp, "defend_out": defend_out, "iseg_out": iseg_out}


def test_every_capability_command_writes_its_rows(filled_store):
    assert "defend rows written" in filled_store["defend_out"]
    assert "iseg rows written" in filled_store["iseg_out"]  # the default store, from $ROBUSTVISION_STORE
    with ResultsStore(filled_store["db"], create=False) as store:
        df = store.results()
        assert set(df["capability"]) == set(FIVE)
        defend = latest_results(store, "defend").set_index(["noise", "metric"])["value"]
        assert {"clean", "l1", "l2", "linf", "union"} <= {n for n, m in defend.index if m == "accuracy"}
        assert defend[("union", "accuracy")] <= min(defend[(n, "accuracy")] for n in ("l1", "l2", "linf"))
        assert ("union", "perfect_routing_accuracy") in defend.index  # the GBN routing diagnosis
        das = latest_results(store, "das")
        cars = das[das["metric"] == "car_accuracy"]
        assert set(cars["model"]) == {"das_resnet"} and set(cars["technique"]) == {"original", "seed", "atk"}
        assert set(cars["noise"]) == {"2 views, seed 2334", "2 views, seed 7"}  # optimize's and evaluate's views
        iseg = latest_results(store, "iseg").set_index("metric")["value"]
        assert {"noc@85", "noc@90", "iou@1", "iou@3"} <= set(iseg.index) and 1 <= iseg["noc@90"] <= 3
        adapt = latest_results(store, "adapt")
        miou = adapt[adapt["metric"] == "miou"]
        assert (
            set(miou["technique"]) == {"cfcontra"}
            and set(miou["seed"]) == {0}
            and set(miou["dataset"]) == {"synthetic"}
        )
        # adapt train's evaluation and adapt evaluate measure the same checkpoint on the same images
        everything = store.results(capability="adapt")
        assert everything[everything["metric"] == "miou"]["value"].nunique() == 1


def test_the_report_has_one_section_per_capability(filled_store, tmp_path):
    with ResultsStore(filled_store["db"], create=False) as store:
        out = write_report(store, tmp_path / "report.html")
    html = out.read_text()
    assert re.findall(r'<section class="capability" id="(\w+)"', html) == FIVE
    for name in FIVE:
        assert CAPABILITIES[name].title in html
    for name in FIVE[1:]:  # each capability's plot, inline and beside the report
        png = out.parent / f"report-{name}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert html.count("data:image/png;base64,") >= 6  # the benchmark's plots and four others
    assert 'id="benchmark"' in html and "report-cards/" in html  # leaderboard with card links kept
    assert not re.search(r"""(src|href)=["']https?://""", html)
    # a filter keeps the sections that have rows for it
    with ResultsStore(filled_store["db"], create=False) as store:
        html = write_report(store, tmp_path / "grabcut.html", dataset="grabcut").read_text()
    assert re.findall(r'<section class="capability" id="(\w+)"', html) == ["iseg"]


def test_report_command_on_the_filled_store(filled_store, tmp_path):
    out = tmp_path / "cli.html"
    _ok(["report", "--store", str(filled_store["db"]), "--out", str(out)])
    assert re.findall(r'<section class="capability" id="(\w+)"', out.read_text()) == FIVE


@pytest.mark.integration
def test_five_section_report_in_headless_chromium(chromium, filled_store, tmp_path, artifacts_dir):
    with ResultsStore(filled_store["db"], create=False) as store:
        out = write_report(store, tmp_path / "report.html")
    probe = out.read_text().replace(
        "</body>",
        "<script>document.body.setAttribute('data-sections',Array.prototype.map.call("
        "document.querySelectorAll('section.capability'),function(s){return s.id+':'+"
        "s.querySelectorAll('img').length+':'+s.querySelectorAll('table tbody tr').length;}).join('|'));"
        "</script></body>",
    )
    probe_path = tmp_path / "probe.html"
    probe_path.write_text(probe)
    dom = chromium("--dump-dom", probe_path.as_uri())
    assert "js-ready" in dom.stdout
    sections = re.search(r'data-sections="([^"]*)"', dom.stdout).group(1).split("|")
    assert [s.split(":")[0] for s in sections] == FIVE
    for s in sections:  # every section shows a plot and a table with rows
        _, images, rows = s.split(":")
        assert int(images) >= 1 and int(rows) >= 1, s
    shot = artifacts_dir / "report_five_sections.png"
    chromium("--window-size=1280,4000", f"--screenshot={shot}", out.as_uri())
