"""The commands the README and docs/*.md show exist: every ``robustvision`` subcommand and option, every
``python benchmarks/X.py`` script and option, every ``make`` target, every test file named (``tests/...py``). Docs and
code cannot drift apart.

Commands come from the shell code blocks (fenced, language ``bash``/``sh``/``shell``/``console`` or none) and
from inline code spans that start with ``robustvision``, ``python benchmarks/X.py`` or ``make``. Each
``robustvision`` command is parsed by the real click command tree (``--help`` of every command it reaches must
parse too); benchmark options are read from the scripts' ``add_argument`` calls without running them. All
in-process and fast.
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from robustvision.cli import app

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGS = {"", "bash", "sh", "shell", "console", "zsh"}
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", "$("}
TEST_FILE = re.compile(r"(?<![\w/.])tests/[\w/]*\.py\b")


@dataclass(frozen=True)
class Command:
    """One command found in a doc: its words (after the program) and where it was found."""

    kind: str  # robustvision | benchmark | make
    program: str  # the program as written (robustvision, benchmarks/das.py, make)
    args: tuple[str, ...]
    where: str  # file:line

    def text(self) -> str:
        return " ".join([self.program, *self.args])


# ------------------------------------------------------------------------------------------------ extraction
def shell_snippets(text: str) -> list[tuple[int, str]]:
    """``(line number, logical line)`` for every line of the shell code blocks, continuations joined."""
    out: list[tuple[int, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^\s*(```|~~~)\s*([\w+-]*)", lines[i])
        if not fence:
            i += 1
            continue
        lang, start = fence.group(2).lower(), i + 1
        end = start
        while end < len(lines) and not lines[end].lstrip().startswith(fence.group(1)):
            end += 1
        if lang in SHELL_LANGS:
            j = start
            while j < end:
                first, logical = j, lines[j]
                while logical.rstrip().endswith("\\") and j + 1 < end:
                    j += 1
                    logical = logical.rstrip()[:-1] + " " + lines[j]
                out.append((first + 1, re.sub(r"^\s*\$\s+", "", logical)))
                j += 1
        i = end + 1
    return out


def inline_snippets(text: str) -> list[tuple[int, str]]:
    """Inline code spans outside code blocks that start with ``robustvision``, ``python benchmarks/X.py`` or ``make``
    (the CLI table, the figures table, prose)."""
    out: list[tuple[int, str]] = []
    in_block = False
    for n, line in enumerate(text.splitlines(), 1):
        if re.match(r"^\s*(```|~~~)", line):
            in_block = not in_block
            continue
        if in_block:
            continue
        for span in re.findall(r"`([^`]+)`", line.replace("\\|", "\x00")):
            span = span.replace("\x00", "|")
            if re.match(r"(robustvision|python3? benchmarks/\S+\.py|make)( |$)", span):
                out.append((n, span))
    return out


def words(snippet: str) -> list[str]:
    """Shell words of a snippet; separators (``;``, ``&&``, ``|``, ``$(``...) kept as their own words, comments and
    the optional-part brackets of a usage line (``[--device cuda]``) removed."""
    lexer = shlex.shlex(snippet, posix=True, punctuation_chars="();<>&")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        raw = list(lexer)
    except ValueError:  # unbalanced quotes in a usage line: fall back to plain splitting
        raw = snippet.split("#")[0].split()
    out: list[str] = []
    for w in raw:
        if w in SEPARATORS or w in {"((", "))", ";;"}:
            out.append(w)
            continue
        if w.startswith("$("):
            out.append("$(")
            w = w[2:]
        if w.strip("[]") or not w:  # keep a quoted empty value (--models ""), drop a lone bracket
            out.append(w.strip("[]"))
    return out


def is_python(word: str) -> bool:
    return bool(re.fullmatch(r"(.*/)?python(3(\.\d+)?)?", word))


def commands_in(snippet: str, where: str) -> list[Command]:
    """The robustvision, benchmark and make commands of one logical shell line."""
    found: list[Command] = []
    segment: list[str] = []
    for w in [*words(snippet), ";"]:
        if w not in SEPARATORS:
            segment.append(w)
            continue
        for i, tok in enumerate(segment):
            rest = tuple(segment[i + 1 :])
            if tok == "robustvision" or tok.endswith("/robustvision"):
                found.append(Command("robustvision", "robustvision", rest, where))
                break
            if tok == "robustvision.cli" and i > 0 and segment[i - 1] == "-m":
                found.append(Command("robustvision", "robustvision", rest, where))
                break
            if tok.startswith("benchmarks/") and tok.endswith(".py") and i > 0 and is_python(segment[i - 1]):
                found.append(Command("benchmark", tok, rest, where))
                break
            if tok == "make" and i == 0:
                found.append(Command("make", "make", rest, where))
                break
        segment = []
    return found


def doc_commands(path: Path) -> list[Command]:
    text = path.read_text()
    rel = path.relative_to(ROOT)
    out: list[Command] = []
    for line, snippet in shell_snippets(text) + inline_snippets(text):
        out += commands_in(snippet, f"{rel}:{line}")
    return out


# ------------------------------------------------------------------------------------------------ checking
@cache
def root_command() -> Any:
    """The click command tree of the CLI (typer may vendor its own click, so nothing here imports click)."""
    return typer.main.get_command(app)


@cache
def help_parses(path: tuple[str, ...]) -> str | None:
    """None when ``robustvision PATH --help`` exits 0, else its output's last line."""
    result = CliRunner().invoke(app, [*path, "--help"])
    if result.exit_code == 0:
        return None
    lines = (result.output or str(result.exception)).strip().splitlines()
    return lines[-1] if lines else f"exit {result.exit_code}"


def check_cli(args: tuple[str, ...]) -> list[str]:
    """Problems of ``robustvision ARGS``: unknown commands and options, as click itself parses them."""
    return _walk(root_command(), "robustvision", (), list(args))


def _options(cmd: Any) -> str:
    return ", ".join(sorted(o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")))


def _walk(cmd: Any, shown: str, path: tuple[str, ...], args: list[str]) -> list[str]:
    # Only the option parser runs (unknown options, options missing their value), never the type conversion of
    # values: docs use placeholders such as $EXT or DIR. A group's own parse_args runs, so a default command
    # (`robustvision annotate DIR`) resolves as it does for a user.
    problems = []
    if (reason := help_parses(path)) is not None:
        problems.append(f"`{shown} --help` does not parse: {reason}")
    ctx = cmd.context_class(cmd, info_name=shown.split()[-1])
    group = hasattr(cmd, "resolve_command")
    args = [a for a in args if a != "--help"]  # checked above, by running it
    if group and not args:  # the group itself, named in prose
        return problems
    try:
        if group:
            cmd.parse_args(ctx, list(args))
            rest = [*getattr(ctx, "_protected_args", getattr(ctx, "protected_args", [])), *ctx.args]
        else:
            cmd.make_parser(ctx).parse_args(args=list(args))
    except Exception as err:
        if not hasattr(err, "format_message"):  # a click UsageError (from typer's click or click itself)
            raise
        return [*problems, f"`{shown}`: {err.format_message()} (it has {_options(cmd) or 'no options'})"]
    if not group or not rest or rest[0] == "...":
        return problems
    name = rest[0]
    alternatives = name.split("|") if "|" in name and name not in cmd.commands else [name]  # a usage line: a|b|c
    for alt in alternatives:
        sub = cmd.get_command(ctx, alt)
        if sub is None:
            known = ", ".join(sorted(cmd.list_commands(ctx)))
            problems.append(f"`{shown}` has no command {alt!r} (it has {known})")
            continue
        problems += _walk(sub, f"{shown} {alt}", (*path, alt), rest[1:])
    return problems


@cache
def script_options(script: Path) -> frozenset[str]:
    """Every option string of the script's ``add_argument`` calls (read from its source, not run)."""
    opts = {"-h", "--help"}
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            opts |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")}
    return frozenset(opts)


def check_benchmark(program: str, args: tuple[str, ...]) -> list[str]:
    script = ROOT / program
    if not script.is_file():
        return [f"`python {program}`: no such script"]
    known = script_options(script)
    problems = []
    for a in args:
        if not a.startswith("-") or a == "-" or re.fullmatch(r"-\d.*", a):
            continue
        opt = a.split("=", 1)[0]
        # argparse accepts unambiguous prefixes, but docs should spell options out
        if opt not in known:
            problems.append(f"`python {program}`: no option {opt} (it has {', '.join(sorted(known))})")
    return problems


@cache
def make_targets() -> frozenset[str]:
    text = (ROOT / "Makefile").read_text()
    return frozenset(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M))


def check_make(args: tuple[str, ...]) -> list[str]:
    targets = [a for a in args if not a.startswith("-") and "=" not in a]
    return [f"`make {t}`: the Makefile has no target {t!r}" for t in targets if t not in make_targets()]


def problems_of(cmd: Command) -> list[str]:
    if cmd.kind == "robustvision":
        found = check_cli(cmd.args)
    elif cmd.kind == "benchmark":
        found = check_benchmark(cmd.program, cmd.args)
    else:
        found = check_make(cmd.args)
    return [f"{cmd.where}: {p}" for p in found]


def missing_test_files(text: str) -> list[str]:
    """The test files a doc names (``tests/bench/test_store.py``) that the checkout does not hold."""
    return sorted({m for m in TEST_FILE.findall(text) if not (ROOT / m).is_file()})


# ------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("doc", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_every_documented_command_exists(doc: Path) -> None:
    problems = [p for cmd in doc_commands(doc) for p in problems_of(cmd)]
    problems += [f"{doc.relative_to(ROOT)}: no test file {name}" for name in missing_test_files(doc.read_text())]
    assert not problems, "documented commands or test files that do not exist:\n" + "\n".join(problems)


def test_the_docs_hold_commands_of_every_kind() -> None:
    cmds = [c for doc in DOCS for c in doc_commands(doc)]
    kinds = {c.kind for c in cmds}
    assert kinds == {"robustvision", "benchmark", "make"}, kinds
    assert sum(c.kind == "robustvision" for c in cmds) >= 40
    assert {c.args[0] for c in cmds if c.kind == "robustvision" and c.args} >= {"bench", "das", "iseg", "train"}


def test_the_checker_catches_drift(tmp_path: Path) -> None:
    doc = """
```bash
robustvision das train --data runs/das --epochs 3 --no-such-option 1   # a comment --not-checked
robustvision das trian --data runs/das
robustvision nosuchcommand
for s in 1 2; do robustvision das dataset --out runs/$s --seed $s; done
X=1 python benchmarks/das.py --quick --no-such-flag && make smoke && make no-such-target
python benchmarks/no_such_script.py
```

| command | what |
|---|---|
| `robustvision iseg train\\|evaluate\\|predikt` | usage line with alternatives |
| `robustvision zoo train --preset default [--device cuda] [--only lenet5]` | optional parts |
"""
    path = tmp_path / "doc.md"
    path.write_text(doc)
    text = path.read_text()
    cmds = [c for line, s in shell_snippets(text) + inline_snippets(text) for c in commands_in(s, f"doc.md:{line}")]
    assert [c.kind for c in cmds].count("robustvision") == 6
    problems = [p for c in cmds for p in problems_of(c)]
    joined = "\n".join(problems)
    assert "doc.md:3: `robustvision das train`" in joined and "--no-such-option" in joined
    assert "--not-checked" not in joined
    assert "no command 'trian'" in joined and "no command 'nosuchcommand'" in joined
    assert "no command 'predikt'" in joined and "no command 'train'" not in joined
    assert "no option --no-such-flag" in joined and "no such script" in joined
    assert "no target 'no-such-target'" in joined and "'smoke'" not in joined
    assert len(problems) == 7, joined
    named = "`tests/conftest.py`, `pytest tests/bench/no_such_test.py`, tests/test_bench_store.py, a.tests/x.py"
    assert missing_test_files(named) == ["tests/bench/no_such_test.py", "tests/test_bench_store.py"]
