"""``robustvision noises list``."""

from __future__ import annotations

from typer.testing import CliRunner

from robustvision.cli import app
from robustvision.commands.noises import builder_defaults
from robustvision.noises import NOISES

runner = CliRunner()


def test_noises_list_shows_every_noise_with_budgets():
    result = runner.invoke(app, ["noises", "list"])
    assert result.exit_code == 0, result.output
    for name in NOISES:
        assert name in result.output
    assert "8/255" in result.output and "adversarial" in result.output


def test_noises_list_filters_and_scales():
    result = runner.invoke(app, ["noises", "list", "pgd_l*", "--image-size", "224"])
    assert result.exit_code == 0, result.output
    assert "pgd_l1" in result.output and "1600" in result.output and "fgsm" not in result.output
    small = runner.invoke(app, ["noises", "list", "pgd_l2", "--image-size", "32"])
    assert "0.2857" in small.output  # 2.0 * sqrt(3*32*32 / (3*224*224))


def test_noises_list_bad_input_is_one_clear_error():
    result = runner.invoke(app, ["noises", "list", "--kind", "cosmic"])
    assert result.exit_code != 0
    assert "unknown kind" in str(result.exception) or "unknown kind" in result.output
    result = runner.invoke(app, ["noises", "list", "nothing*"])
    assert result.exit_code != 0


def test_builder_defaults_reads_partials():
    params = builder_defaults(NOISES.get("pgd_l2"))
    assert "eps" in params and "steps=20" in params
    assert not any(p.startswith("norm") for p in params), "bound arguments are not settings"
