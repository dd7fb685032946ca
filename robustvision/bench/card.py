"""A one-page robustness card per model: self-contained HTML (plots as base64 PNG) plus the same page as a PNG.

The card reads only from the results store (a :class:`~robustvision.bench.summary.Summary`) and the model card
stored with the model's health checks (or given by the caller). It shows the clean accuracy; per threat model and
budget the lowest robust accuracy and the attack that achieved it, with the worst case over every l-inf attack
beside the PGD figure; the corruption error profile over the ImageNet-C corruptions (a bar per corruption, mean
over severities); the system-noise spread; the health checks; and the training recipe.

Example:
    >>> summary = summarize(store)                                          # doctest: +SKIP
    >>> render_card(summary, ("digits", "lenet5", "standard"), "card.html")  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from robustvision.bench.health import check_table, model_cards
from robustvision.bench.selectors import CellKind, flip_scored_rows
from robustvision.bench.summary import Summary

CardKey = tuple[str, str, str]  # (dataset, model, technique)

# Recipe fields worth a reader's eye (the card keeps every field of the stored config; these come first).
RECIPE_FIRST = (
    "epochs",
    "optimizer",
    "lr",
    "batch_size",
    "schedule",
    "weight_decay",
    "adv_training",
    "adv_eps",
    "adv_steps",
    "trades_beta",
    "label_smoothing",
    "mixup_alpha",
    "cutmix_alpha",
    "augmix",
    "ema_decay",
    "seed",
)
RECIPE_HIDDEN = ("checkpoint_dir", "progress", "resume", "device", "threads", "workers", "eval_every", "amp")

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:20px auto;max-width:1000px;color:#222;
padding:0 16px}h1{font-size:1.5em;margin-bottom:2px}h2{font-size:1.1em;margin:1.4em 0 .4em;border-bottom:1px solid
#ddd}.meta{color:#666;font-size:.9em}table{border-collapse:collapse;font-size:.85em}th,td{border:1px solid #ddd;
padding:3px 8px;text-align:left}td.num{text-align:right}.pass{color:#1a7f37}.warn{color:#b35900;font-weight:bold}
.skip{color:#777}.badge{display:inline-block;padding:2px 10px;border-radius:10px;font-weight:bold}
.ok{background:#dafbe1;color:#1a7f37}.bad{background:#fff1e5;color:#b35900}.none{background:#eee;color:#555}
.plot img{max-width:100%;border:1px solid #eee}.grid{display:flex;gap:24px;flex-wrap:wrap}
"""


def _group(df: pd.DataFrame, key: CardKey) -> pd.DataFrame:
    if df.empty:
        return df
    ds, model, tech = key
    return df[(df["dataset"] == ds) & (df["model"] == model) & (df["technique"] == tech)]


def card_keys(summary: Summary) -> list[CardKey]:
    """Every (dataset, model, technique) with cells in the summary."""
    board = summary.leaderboard
    if board.empty:
        return []
    return [(r["dataset"], r["model"], r["technique"]) for _, r in board.iterrows()]


def find_key(summary: Summary, model: str, dataset: str | None = None) -> CardKey:
    """The card key of ``model`` (``name`` or ``name/technique``); unknown names suggest close ones."""
    import difflib

    keys = [k for k in card_keys(summary) if dataset is None or k[0] == dataset]
    name, _, tech = model.partition("/")
    hits = [k for k in keys if k[1] == name and (not tech or k[2] == tech)]
    if not tech and len(hits) > 1:
        std = [k for k in hits if k[2] == "standard"]
        hits = std or hits[:1]
    if not hits:
        have = sorted({f"{k[1]}/{k[2]}" for k in keys})
        close = difflib.get_close_matches(model, have, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"no results for model {model!r} in the store{hint} (have: {', '.join(have) or 'none'}); "
            "run `robustvision bench --models ...` or `--checkpoints ...` first"
        )
    return hits[0]


def threat_table(summary: Summary, key: CardKey) -> pd.DataFrame:
    """Per threat model (norm) and budget: the lowest robust accuracy over the bench's attacks and its attack."""
    from robustvision.bench.selectors import noise_norm

    adv = _group(summary.cells, key)
    adv = adv[adv["kind"] == CellKind.ADVERSARIAL] if not adv.empty else adv
    cols = ["threat model", "eps", "robust accuracy", "attack", "attacks run"]
    if adv.empty:
        return pd.DataFrame(columns=cols)
    adv = adv.assign(norm=adv["noise"].map(_safe_norm(noise_norm)))
    rows = []
    for (norm, eps), g in adv.groupby(["norm", "severity"], sort=True):
        worst = g.loc[g["accuracy"].idxmin()]
        eps_text = f"{eps * 255:.3g}/255" if norm == "linf" else f"{eps:.4g}"
        rows.append(
            [f"l-{norm[1:]}", eps_text, float(worst["accuracy"]), worst["noise"], ", ".join(sorted(g["noise"]))]
        )
    return pd.DataFrame(rows, columns=cols)


def _safe_norm(fn):
    def norm(name: str) -> str:
        try:
            return fn(name)
        except KeyError:
            return "?"

    return norm


def corruption_profile(summary: Summary, key: CardKey) -> pd.Series:
    """Corruption error (1 - accuracy, mean over severities) per corruption, in the registry's order."""
    nat = _group(summary.cells, key)
    if nat.empty:
        return pd.Series(dtype=float)
    nat = nat[(nat["kind"] == CellKind.NATURAL) & ~flip_scored_rows(nat["noise"])]
    return (1.0 - nat.groupby("noise")["accuracy"].mean()).sort_index()


def system_spread(summary: Summary, key: CardKey) -> pd.Series:
    sysn = _group(summary.cells, key)
    if sysn.empty:
        return pd.Series(dtype=float)
    sysn = sysn[sysn["kind"] == CellKind.SYSTEM]
    return sysn.set_index("noise")["accuracy"].sort_values()


def recipe(card: dict[str, Any]) -> list[tuple[str, str]]:
    """The training recipe from a model card as ``(field, value)`` pairs, the telling fields first."""
    out: list[tuple[str, str]] = []
    for k in ("arch", "technique", "dataset", "zoo_preset", "model_kwargs", "train_seconds"):
        if card.get(k) not in (None, {}, ""):
            out.append((k, json.dumps(card[k]) if isinstance(card[k], dict) else str(card[k])))
    config = dict(card.get("config") or {})
    for k in RECIPE_FIRST:
        if k in config:
            out.append((k, f"{config.pop(k)!r}".strip("'")))
    out.extend((k, f"{v!r}".strip("'")) for k, v in sorted(config.items()) if k not in RECIPE_HIDDEN)
    return out


def _figure(summary: Summary, key: CardKey, row: pd.Series, health: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threats = threat_table(summary, key)
    prof = corruption_profile(summary, key)
    spread = system_spread(summary, key)
    fig = plt.figure(figsize=(12, 4.2))
    gs = fig.add_gridspec(1, 3, width_ratios=[1.1, 1.6, 0.8])
    ax = fig.add_subplot(gs[0])
    labels = ["clean"] + [f"{t} {e}" for t, e in zip(threats["threat model"], threats["eps"], strict=True)]
    values = [float(row.get("clean_accuracy", np.nan))] + threats["robust accuracy"].tolist()
    colors = ["#4c72b0"] + ["#c44e52"] * len(threats)
    if not np.isnan(float(row.get("worst_robust_accuracy", np.nan))):
        labels.append("l-inf worst case")
        values.append(float(row["worst_robust_accuracy"]))
        colors.append("#8c1c1c")
    bars = ax.barh(range(len(values)), 100 * np.asarray(values, dtype=float), color=colors)
    ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=2)
    ax.set_yticks(range(len(values)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("accuracy %")
    ax.set_title("clean and robust accuracy (lowest per budget)", fontsize=9)
    ax = fig.add_subplot(gs[1])
    if prof.empty:
        ax.text(0.5, 0.5, "no corruption cells", ha="center", va="center")
        ax.axis("off")
    else:
        ax.bar(range(len(prof)), 100 * prof.to_numpy(), color="#55a868")
        ax.set_xticks(range(len(prof)), prof.index, rotation=75, fontsize=7)
        ax.set_ylabel("corruption error % (mean over severities)")
        ax.set_ylim(0, 100)
        ax.set_title(f"corruption error profile ({len(prof)} corruptions)", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    ax = fig.add_subplot(gs[2])
    if spread.empty:
        ax.text(0.5, 0.5, "no system-noise cells", ha="center", va="center")
        ax.axis("off")
    else:
        ax.boxplot([100 * spread.to_numpy()], showmeans=True)
        xs = 1 + np.linspace(-0.15, 0.15, len(spread))  # spread dots evenly, no randomness
        ax.scatter(xs, 100 * spread.to_numpy(), s=8, alpha=0.6, color="#8172b2")
        ax.set_xticks([1], [f"{len(spread)} settings"])
        ax.set_ylabel("accuracy %")
        ax.set_title(f"system noise: std {100 * spread.std(ddof=0):.2f} points", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    ds, model, tech = key
    title = f"{model}/{tech} on {ds} — health: {health}"
    gap = row.get("default_attack_gap_lower_better", np.nan)
    if gap is not None and not np.isnan(float(gap)):
        title += f" — default attack gap {100 * float(gap):.1f} points (info)"
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _pct(v: object) -> str:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "&ndash;"
    return "&ndash;" if np.isnan(f) else f"{100 * f:.1f} %"


def _rows(pairs: list[list[str]], head: list[str]) -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(pairs_i) + "</tr>" for pairs_i in pairs)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def render_card(
    summary: Summary,
    key: CardKey,
    out: str | Path,
    *,
    card: dict[str, Any] | None = None,
    png: bool = True,
    back_link: str | None = None,
) -> Path:
    """Write the card of ``key`` to ``out`` (HTML) and, with ``png``, the same page's figure beside it (``.png``).

    Args:
        summary: the store's summary (:func:`robustvision.bench.summary.summarize`).
        key: ``(dataset, model, technique)``.
        out: HTML path.
        card: the model card (training recipe); default: the one stored with the model's health checks.
        png: also write ``out`` with suffix ``.png``.
        back_link: a relative link to the report, shown at the top.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    board = _group(summary.leaderboard, key)
    if board.empty:
        raise ValueError(f"no leaderboard row for {key[1]}/{key[2]} on {key[0]}")
    row = board.iloc[0]
    checks = check_table(_group(summary.checks, key))
    health = str(row.get("health", "-"))
    card = card if card is not None else model_cards(_group(summary.checks, key)).get(key, {})
    fig_png = _png(_figure(summary, key, row, health))
    if png:
        out.with_suffix(".png").write_bytes(fig_png)
    ds, model, tech = key
    badge_cls = "ok" if health == "ok" else "none" if health == "-" else "bad"
    badge_txt = "&#10003; healthy" if health == "ok" else "no checks" if health == "-" else f"&#9888; {health}"
    parts = [f"<h1>{html.escape(model)}/{html.escape(tech)}</h1>"]
    meta = f"data set {html.escape(ds)}; family {html.escape(str(row.get('family', '') or '?'))}"
    if back_link:
        meta += f'; <a href="{html.escape(back_link)}">back to the report</a>'
    parts.append(f'<p class="meta">{meta}</p>')
    parts.append(
        f'<p><span class="badge {badge_cls}">{badge_txt}</span> &nbsp; clean accuracy '
        f"<b>{_pct(row.get('clean_accuracy'))}</b>; PGD-l-inf {_pct(row.get('pgd_robust_accuracy'))}, worst case over "
        f"every l-inf attack {_pct(row.get('worst_robust_accuracy'))} (same images)</p>"
    )
    gap = row.get("default_attack_gap_lower_better", np.nan)
    if gap is not None and not np.isnan(float(gap)):
        parts.append(
            f'<p class="meta">info &mdash; default attack gap <b>{100 * float(gap):.1f} points</b>: the bench\'s '
            "PGD-l-inf figure minus the worst case over every l-inf attack. It measures how much the default attack "
            "overstates this model's robustness; it is not a health warning (the checks compare with a Madry-tuned "
            "reference PGD).</p>"
        )
    b64 = base64.b64encode(fig_png).decode()
    parts.append(
        f'<div class="plot"><img alt="robustness card of {html.escape(model)}" src="data:image/png;base64,{b64}"></div>'
    )
    threats = threat_table(summary, key)
    parts.append("<h2>Robust accuracy per threat model</h2>")
    if threats.empty:
        parts.append("<p>No adversarial cells.</p>")
    else:
        rows = [
            [
                f"<td>{html.escape(t.threat_model)}</td>",
                f"<td>{html.escape(t.eps)}</td>",
                f'<td class="num">{_pct(t.robust_accuracy)}</td>',
                f"<td>{html.escape(t.attack)}</td>",
                f"<td>{html.escape(t.attacks_run)}</td>",
            ]
            for t in threats.rename(columns=lambda c: c.replace(" ", "_")).itertuples()
        ]
        parts.append(_rows(rows, ["threat model", "eps", "lowest robust accuracy", "achieved by", "attacks run"]))
    parts.append("<h2>Health checks</h2>")
    if checks.empty:
        parts.append("<p>No health checks stored for this model (run <code>robustvision bench</code>).</p>")
    else:
        rows = [
            [
                f"<td>{html.escape(c.check)}</td>",
                f'<td class="{html.escape(c.verdict)}">{html.escape(c.verdict)}</td>',
                f"<td>{html.escape(c.message)}</td>",
            ]
            for c in checks.itertuples()
        ]
        parts.append(_rows(rows, ["check", "verdict", "what was measured"]))
    prof = corruption_profile(summary, key)
    spread = system_spread(summary, key)
    parts.append('<h2>Corruptions and system noise</h2><div class="grid">')
    if not prof.empty:
        rows = [[f"<td>{html.escape(n)}</td>", f'<td class="num">{_pct(v)}</td>'] for n, v in prof.items()]
        parts.append("<div>" + _rows(rows, ["corruption", "error (mean over severities)"]) + "</div>")
    if not spread.empty:
        sp = f"mean {_pct(spread.mean())}, std {100 * spread.std(ddof=0):.2f} points over {len(spread)} settings"
        rows = [[f"<td>{html.escape(n)}</td>", f'<td class="num">{_pct(v)}</td>'] for n, v in spread.items()]
        parts.append(f"<div><p>{sp}</p>" + _rows(rows, ["system-noise setting", "accuracy"]) + "</div>")
    parts.append("</div>")
    parts.append("<h2>Training recipe (model card)</h2>")
    rec = recipe(card)
    if rec:
        parts.append(
            _rows([[f"<td>{html.escape(k)}</td>", f"<td>{html.escape(v)}</td>"] for k, v in rec], ["field", "value"])
        )
    else:
        parts.append("<p>No model card stored for this model.</p>")
    title = f"robustness card: {model}/{tech}"
    doc = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{html.escape(title)}</title><style>{CSS}</style></head><body>'
        + "\n".join(parts)
        + "</body></html>"
    )
    out.write_text(doc, encoding="utf-8")
    return out


def card_filename(key: CardKey) -> str:
    """A file name for the card of ``key`` (safe characters only)."""
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "__".join(key)) + ".html"
