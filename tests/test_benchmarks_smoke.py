"""``benchmarks/smoke.py`` (``make smoke``): how it classifies benchmarks, that every benchmark joins in, and the
smoke run itself (slow)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
SMOKE = BENCH / "smoke.py"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_") and p.name != "smoke.py")


def run_smoke(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SMOKE), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )


def test_smoke_passes_skips_and_fails_each_for_its_reason(tmp_path: Path) -> None:
    scripts = {
        "ok": "import os, sys\nassert sys.argv[1:] == ['--quick']\nprint('home', os.environ['ROBUSTVISION_HOME'])\n",
        "skip": "import sys\nprint('skipped: GrabCut is missing; get it from X and pass --root', file=sys.stderr)\n"
        "sys.exit(77)\n",
        "boom": "raise RuntimeError('unguarded')\n",
        "guarded": f"import sys\nsys.path.insert(0, {str(BENCH)!r})\nfrom _support import run\nrun(lambda: 1 / 0)\n",
        "exit3": "import sys\nprint('error: bad input', file=sys.stderr)\nsys.exit(3)\n",
        "_helper": "raise SystemExit('helpers are not benchmarks')\n",
    }
    for name, code in scripts.items():
        (tmp_path / f"{name}.py").write_text(code)
    out = run_smoke("--benchmarks", str(tmp_path))
    assert out.returncode == 1, out.stdout + out.stderr
    table = [line for line in out.stdout.splitlines() if line and not line.startswith(" ")]  # not the progress lines
    rows = {line.split()[0]: line for line in table if line.split()[0] in scripts}
    assert set(rows) == {"ok", "skip", "boom", "guarded", "exit3"}
    assert rows["ok"].split()[1] == "passed" and "rv_smoke_" in rows["ok"]  # ran in the temporary home
    assert rows["skip"].split()[1] == "skipped" and "skipped: GrabCut is missing" in rows["skip"]
    assert rows["boom"].split()[1] == "failed" and "traceback" in rows["boom"]
    # _support.run turns the exception into one line, so it fails by its exit status, not by a traceback
    assert rows["guarded"].split()[1] == "failed" and "exit 1: error: guarded.py: ZeroDivisionError" in rows["guarded"]
    assert rows["exit3"].split()[1] == "failed" and "exit 3: error: bad input" in rows["exit3"]
    assert "1 passed, 1 skipped, 3 failed" in out.stdout

    ok = run_smoke("--benchmarks", str(tmp_path), "--only", "ok,skip")
    assert ok.returncode == 0 and "1 passed, 1 skipped, 0 failed" in ok.stdout, ok.stdout + ok.stderr
    bad = run_smoke("--benchmarks", str(tmp_path), "--only", "okk")
    assert bad.returncode == 2 and "unknown benchmark(s) okk" in bad.stderr


def test_smoke_ends_a_hung_benchmark_with_its_children(tmp_path: Path) -> None:
    marker = tmp_path / "child-still-alive"
    (tmp_path / "_child.py").write_text(f"import pathlib, time\ntime.sleep(4)\npathlib.Path({str(marker)!r}).touch()\n")
    (tmp_path / "hang.py").write_text(
        f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, {str(tmp_path / '_child.py')!r}])\n"
        "time.sleep(60)\n"
    )
    out = run_smoke("--benchmarks", str(tmp_path), "--timeout", "2")
    assert out.returncode == 1 and "timed out after 2 s" in out.stdout, out.stdout + out.stderr
    time.sleep(4)
    assert not marker.exists(), "the benchmark's child process outlived the timeout"


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_every_benchmark_has_quick_prints_its_prerequisites_and_never_tracebacks(script: Path) -> None:
    tree = ast.parse(script.read_text())
    options = {
        a.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument"
        for a in node.args
        if isinstance(a, ast.Constant)
    }
    assert "--quick" in options, f"{script.name} has no --quick (make smoke runs every benchmark with it)"
    called = {getattr(n.func, "id", None) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert "print_prerequisites" in called, f"{script.name} does not print its prerequisite commands"
    main_block = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.unparse(n.test)]
    assert main_block and "run(main)" in ast.unparse(main_block[0]), f"{script.name}: call main through _support.run"


def test_das_prints_the_prerequisites_its_doc_lists() -> None:
    tree = ast.parse((BENCH / "das.py").read_text())
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "FULL_PREREQUISITES")
    printed = [ast.literal_eval(e) if isinstance(e, ast.Constant) else _ext(tree) for e in node.value.elts]
    doc = (ROOT / "docs" / "physical-attack.md").read_text()
    reproduce = doc[doc.index("## Reproduce") :]
    flat = " ".join(reproduce.replace("\\\n", " ").split())
    for cmd in printed:
        assert " ".join(cmd.split()) in flat, f"docs/physical-attack.md 'Reproduce' lacks: {cmd}"


def _ext(tree: ast.Module) -> str:
    node = next(n for n in tree.body if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "EXT")
    return ast.literal_eval(node.value)


def test_support_exits_in_one_line(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(BENCH)!r})
        from _support import missing_data
        missing_data("the GrabCut evaluation set", "https://example.org/grabcut", "--root DIR")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 77
    assert out.stderr.strip().splitlines() == [
        "skipped: the GrabCut evaluation set is missing; get it from https://example.org/grabcut and pass --root DIR"
    ]


@pytest.mark.slow
@pytest.mark.timeout(7200)
@pytest.mark.parametrize("shared", [False, True], ids=["without-shared-data", "with-shared-data"])
def test_make_smoke_passes(shared: bool, request: pytest.FixtureRequest) -> None:
    if shared:
        request.getfixturevalue("shared_data")  # skips when ../shared/data is absent
    out = run_smoke(*([] if shared else ["--no-shared"]), timeout=7000)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-2000:]
    assert " 0 failed" in out.stdout
