"""The report: one self-contained HTML file (inline CSS and JS, plots as base64 PNG), read from the store.

One section per capability with rows in the store. The benchmark's follows RobustART's analyses: a sortable
leaderboard, a model x noise heatmap, accuracy against the adversarial budget, accuracy against corruption severity,
the spread over system-noise settings, architecture families per noise kind and training-technique deltas against
``standard``. Defence, physical attack, interactive segmentation and domain adaptation each get a table and a plot
(:mod:`robustvision.bench.sections`). Every plot is also written as a PNG beside the HTML (``<stem>-<plot>.png``).
Nothing is fetched from a network: the file opens offline.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from robustvision.bench.capabilities import BENCHMARK, CAPABILITIES, latest_results
from robustvision.bench.metrics import METRICS
from robustvision.bench.sections import SECTIONS, Section
from robustvision.bench.selectors import CellKind, flip_scored_rows
from robustvision.bench.store import ResultsStore
from robustvision.bench.summary import Summary, family_comparison, summarize, technique_deltas

LEADERBOARD_COLUMNS = [
    "clean_accuracy",
    "robust_accuracy",
    "pgd_robust_accuracy",
    "worst_robust_accuracy",
    "default_attack_gap_lower_better",
    "ar",
    "wcar",
    "corruption_accuracy",
    "mean_ce_lower_better",
    "mce_lower_better",
    "relative_mce_lower_better",
    "flip_probability_lower_better",
    "system_mean_accuracy",
    "system_std_lower_better",
    "nsd",
    "system_flip_lower_better",
]
PERCENT = {c for c in LEADERBOARD_COLUMNS if c not in ("mce_lower_better", "relative_mce_lower_better")} | {
    "wcar_level1",
    "wcar_level2",
    "wcar_level3",
    "value",
}
KIND_COLORS = {"clean": "#4c72b0", "adversarial": "#c44e52", "natural": "#55a868", "system": "#8172b2"}

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;color:#222;
padding:0 16px}
h1{font-size:1.6em;margin-bottom:0}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#666;font-size:.9em}table{border-collapse:collapse;font-size:.85em;margin:8px 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#f4f4f4;cursor:pointer;user-select:none;position:sticky;top:0}
th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
td.txt,th.txt{text-align:left}tr:nth-child(even){background:#fafafa}
.plot{margin:12px 0}.plot img{max-width:100%;border:1px solid #eee}
.note{color:#555;font-size:.9em;max-width:900px}.scroll{overflow-x:auto;max-height:600px}
code{background:#f4f4f4;padding:1px 4px;border-radius:3px}
.ok{color:#1a7f37;font-weight:bold}.warn{color:#b35900;font-weight:bold}
section.capability{margin-top:2.5em}section.capability>h2{font-size:1.45em;border-bottom:2px solid #bbb}
nav.toc a{margin-right:1em}
"""

JS = """
document.body.classList.add('js-ready');
document.querySelectorAll('table.sortable').forEach(function(table){
  var heads = table.querySelectorAll('th');
  heads.forEach(function(th, col){
    th.addEventListener('click', function(){
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var asc = !th.classList.contains('sorted-asc');
      heads.forEach(function(h){h.classList.remove('sorted-asc','sorted-desc');});
      th.classList.add(asc ? 'sorted-asc' : 'sorted-desc');
      rows.sort(function(a, b){
        var x = a.cells[col].getAttribute('data-v'), y = b.cells[col].getAttribute('data-v');
        var nx = parseFloat(x), ny = parseFloat(y);
        var cmp;
        if (isNaN(nx) && isNaN(ny)) { cmp = String(x).localeCompare(String(y)); }
        else if (isNaN(nx)) { return 1; } else if (isNaN(ny)) { return -1; }
        else { cmp = nx - ny; }
        return asc ? cmp : -cmp;
      });
      rows.forEach(function(r){ body.appendChild(r); });
    });
  });
});
"""


def _fmt(col: str, v: object, percent: frozenset[str] | set[str] = frozenset()) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "&ndash;"
    if isinstance(v, (float, np.floating)):
        return f"{100 * v:.1f}" if col in PERCENT or col in percent else f"{v:.3f}"
    return html.escape(str(v))


def _header(col: str, percent: frozenset[str] | set[str] = frozenset()) -> str:
    info = METRICS.get(col)
    if col in percent:
        return f"<th>{html.escape(col)} %</th>"
    if info is None:
        label = col.replace("_", " ")
        if col.startswith("wcar_level"):
            label = f"WCAR L{col[-1]}"
            return f'<th title="WCAR over the attacks at budget level {col[-1]}">{label} &uarr;</th>'
        return f"<th>{html.escape(label)}</th>"
    arrow = "&uarr;" if info.higher_is_better else "&darr;"
    unit = " %" if col in PERCENT else ""
    return f'<th title="{html.escape(info.formula)}">{html.escape(info.label)}{unit} {arrow}</th>'


def table_html(
    df: pd.DataFrame, text_cols: list[str], cls: str = "sortable", percent: frozenset[str] | set[str] = frozenset()
) -> str:
    """An HTML table whose cells carry ``data-v`` sort keys (numbers sort numerically).

    ``percent`` names further columns of fractions shown in % (besides the leaderboard's own).
    """
    cols = list(df.columns)
    head = "".join(f'<th class="txt">{html.escape(c)}</th>' if c in text_cols else _header(c, percent) for c in cols)
    body = []
    for _, row in df.iterrows():
        tds = []
        for c in cols:
            v = row[c]
            if c == "card":  # a relative link to the model's robustness card
                link = f'<a href="{html.escape(str(v))}">card</a>' if v else "&ndash;"
                tds.append(f'<td class="txt" data-v="{html.escape(str(v))}">{link}</td>')
            elif c == "health":
                tds.append(f'<td class="txt" data-v="{html.escape(str(v))}">{_health(str(v))}</td>')
            elif c in text_cols:
                tds.append(f'<td class="txt" data-v="{html.escape(str(v))}">{html.escape(str(v))}</td>')
            else:
                key = "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{float(v):.6g}"
                tds.append(f'<td data-v="{key}">{_fmt(c, v, percent)}</td>')
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _health(label: str) -> str:
    """A green tick when every health check passed, else a warning naming the checks that warned."""
    if label == "ok":
        return '<span class="ok" title="every health check passed">&#10003;</span>'
    if label.startswith("warn"):
        return f'<span class="warn" title="a health check warned">&#9888; {html.escape(label[5:].strip())}</span>'
    return '<span title="no health checks stored">&ndash;</span>'


# ------------------------------------------------------------------------------------------------------ plots
def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _label(row) -> str:
    return f"{row.model}/{row.technique}"


def plot_heatmap(cells: pd.DataFrame):
    import matplotlib.pyplot as plt

    acc = cells[~flip_scored_rows(cells["noise"])].copy()
    if acc.empty:
        return None
    acc["variant"] = acc["model"] + "/" + acc["technique"]
    order = {"clean": 0, "adversarial": 1, "natural": 2, "system": 3}
    noises = (
        acc[["noise", "kind"]]
        .drop_duplicates()
        .assign(o=lambda d: d["kind"].map(order).fillna(4))
        .sort_values(["o", "noise"])
    )
    grid = acc.pivot_table(index="variant", columns="noise", values="accuracy", aggfunc="mean")[noises["noise"]]
    fig, ax = plt.subplots(figsize=(max(6, 0.28 * grid.shape[1] + 3), max(2.5, 0.4 * grid.shape[0] + 1.5)))
    im = ax.imshow(100 * grid.values, aspect="auto", cmap="viridis", vmin=0, vmax=100)
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=90, fontsize=7)
    ax.set_yticks(range(grid.shape[0]), grid.index, fontsize=8)
    for tick, kind in zip(ax.get_xticklabels(), noises["kind"], strict=True):
        tick.set_color(KIND_COLORS.get(kind, "#333"))
    fig.colorbar(im, ax=ax, label="accuracy % (mean over severities / budgets)")
    ax.set_title("Accuracy per model and noise (labels coloured by kind)")
    return fig


def plot_eps_curves(cells: pd.DataFrame):
    import matplotlib.pyplot as plt

    adv = cells[cells["kind"] == CellKind.ADVERSARIAL]
    if adv.empty:
        return None
    noises = sorted(adv["noise"].unique())
    clean = cells[cells["kind"] == CellKind.CLEAN].set_index(["model", "technique"])["accuracy"]
    cols = min(3, len(noises))
    rows = (len(noises) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, noise in zip(axes.flat, noises, strict=False):
        sub = adv[adv["noise"] == noise]
        for (m, t), g in sub.groupby(["model", "technique"]):
            g = g.sort_values("severity")
            xs = [0.0, *g["severity"].tolist()]
            ys = [clean.get((m, t), np.nan), *g["accuracy"].tolist()]
            ax.plot(xs, 100 * np.asarray(ys, dtype=float), marker="o", ms=3, label=f"{m}/{t}")
        ax.set_title(noise)
        smallest = float(sub["severity"][sub["severity"] > 0].min()) if (sub["severity"] > 0).any() else 1.0
        ax.set_xscale("symlog", linthresh=smallest)  # RobustART's budgets grow x4 per level
        ax.set_xlabel("eps (symlog; 0 = clean)")
        ax.set_ylabel("accuracy %")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(noises) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Accuracy against the adversarial budget")
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    return fig


def plot_severity(cells: pd.DataFrame):
    import matplotlib.pyplot as plt

    nat = cells[(cells["kind"] == CellKind.NATURAL) & ~flip_scored_rows(cells["noise"])]
    if nat.empty:
        return None
    clean = cells[cells["kind"] == CellKind.CLEAN].set_index(["model", "technique"])["accuracy"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for (m, t), g in nat.groupby(["model", "technique"]):
        per = g.groupby("severity")["accuracy"].mean()
        xs = [0, *per.index.tolist()]
        ys = [clean.get((m, t), np.nan), *per.tolist()]
        ax.plot(xs, 100 * np.asarray(ys, dtype=float), marker="o", ms=3, label=f"{m}/{t}")
    ax.set_xlabel("corruption severity (0 = clean)")
    ax.set_ylabel("accuracy % (mean over corruptions)")
    ax.set_title("Accuracy against corruption severity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return fig


def plot_system_spread(cells: pd.DataFrame):
    import matplotlib.pyplot as plt

    sysn = cells[cells["kind"] == CellKind.SYSTEM].copy()
    if sysn.empty:
        return None
    sysn["variant"] = sysn["model"] + "/" + sysn["technique"]
    variants = sorted(sysn["variant"].unique())
    data = [100 * sysn[sysn["variant"] == v]["accuracy"].to_numpy() for v in variants]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(variants) + 2), 4))
    ax.boxplot(data, showmeans=True)
    rng = np.random.default_rng(0)  # jitter only, for legibility
    for i, d in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(d)), d, s=8, alpha=0.6, color="#8172b2")
    ax.set_xticks(range(1, len(variants) + 1), variants, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("accuracy % per system-noise setting")
    ax.set_title("System-noise spread (decoders, resizes, JPEG, colour, precision)")
    ax.grid(alpha=0.3, axis="y")
    return fig


def _grouped_bars(df: pd.DataFrame, group: str, value: str, title: str, ylabel: str, percent: bool = True):
    import matplotlib.pyplot as plt

    kinds = [k for k in ("clean", "adversarial", "natural", "system") if k in set(df["kind"])]
    groups = sorted(df[group].unique())
    fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(kinds) + 2), 3.8))
    width = 0.8 / max(1, len(groups))
    for i, gname in enumerate(groups):
        vals = [df[(df[group] == gname) & (df["kind"] == k)][value].mean() for k in kinds]
        ax.bar(
            np.arange(len(kinds)) + i * width - 0.4 + width / 2,
            (100 if percent else 1) * np.array(vals),
            width,
            label=gname,
        )
    ax.set_xticks(range(len(kinds)), kinds)
    ax.axhline(0, color="#333", lw=0.8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return fig


def plot_families(cells: pd.DataFrame):
    fam = family_comparison(cells)
    if fam.empty or fam["family"].nunique() < 1:
        return None
    return _grouped_bars(fam, "family", "mean_accuracy", "Architecture families per noise kind", "mean accuracy %")


def plot_techniques(cells: pd.DataFrame):
    d = technique_deltas(cells)
    if d.empty:
        return None
    return _grouped_bars(d, "technique", "delta", "Technique vs standard per noise kind", "accuracy delta (points)")


PLOTS: list[tuple[str, str, Callable, str]] = [
    ("heatmap", "Model x noise heatmap", plot_heatmap, "Mean accuracy over each noise's severities or budgets."),
    (
        "eps_curves",
        "Accuracy against the adversarial budget",
        plot_eps_curves,
        "Budgets follow RobustART (l-inf 0.5/255, 2/255, 8/255; l2 0.5, 2, 8; l1 100, 400, 1600 at 224x224), "
        "scaled to the image size (l-inf unchanged, l2 by sqrt(d/d224), l1 by d/d224).",
    ),
    ("severity", "Accuracy against corruption severity", plot_severity, "Mean over the ImageNet-C corruptions."),
    (
        "system_spread",
        "System-noise spread",
        plot_system_spread,
        "Each dot is one system-noise setting; NSD = -std of these accuracies (higher is better).",
    ),
    (
        "families",
        "Architecture families (CNN / Transformer / MLP)",
        plot_families,
        "Mean accuracy per noise kind over each family's standard models.",
    ),
    (
        "techniques",
        "Training-technique ablation",
        plot_techniques,
        "Each technique's mean accuracy per noise kind minus the same architecture's standard model's.",
    ),
]


# ----------------------------------------------------------------------------------------------------- report
def _write_cards(summary: Summary, out: Path) -> list[str]:
    """Write one robustness card per leaderboard row into ``<stem>-cards/``; the relative links, in board order."""
    from robustvision.bench.card import card_filename, render_card

    folder = out.parent / f"{out.stem}-cards"
    links = []
    for _, row in summary.leaderboard.sort_values("clean_accuracy", ascending=False).iterrows():
        key = (row["dataset"], row["model"], row["technique"])
        name = card_filename(key)
        render_card(summary, key, folder / name, back_link=f"../{out.name}")
        links.append(f"{folder.name}/{name}")
    return links


def _plot_html(name: str, heading: str, note: str, fig, out: Path) -> list[str]:
    """The HTML of one plot (inline base64 PNG), also written as ``<stem>-<name>.png`` beside the report."""
    png = _png(fig)
    (out.parent / f"{out.stem}-{name}.png").write_bytes(png)
    b64 = base64.b64encode(png).decode()
    return [
        f"<h3>{html.escape(heading)}</h3><p class='note'>{html.escape(note)}</p>"
        if heading
        else f"<p class='note'>{html.escape(note)}</p>",
        f'<div class="plot"><img alt="{html.escape(heading or name)}" src="data:image/png;base64,{b64}"></div>',
    ]


def _benchmark_html(summary: Summary, out: Path, cards: bool) -> list[str]:
    """The benchmark's section: leaderboard (health, card links), the RobustART plots and every cell."""
    cells, board = summary.cells, summary.leaderboard
    parts = []
    board = board.sort_values("clean_accuracy", ascending=False)
    if cards:
        board = board.assign(card=_write_cards(summary, out))
    cols = [c for c in ["model", "technique", "family", "health", "card", *LEADERBOARD_COLUMNS] if c in board.columns]
    cols += sorted(c for c in board.columns if c.startswith("wcar_level"))
    parts.append("<h3>Leaderboard</h3>")
    parts.append(
        '<p class="note">Click a header to sort. &uarr; higher is better, &darr; lower is better; hover a header '
        "for its formula. Accuracies, AR and WCAR in %. AR counts the clean-correct samples that survive an "
        "attack (averaged over attacks and budgets); WCAR those that survive every attack. "
        + (
            "mCE and relative mCE are normalised by AlexNet's published ImageNet-C errors (Hendrycks), over the 15 "
            "main corruptions. "
            if summary.baseline == "alexnet"
            else f"mCE and relative mCE are normalised by <b>{html.escape(summary.baseline)}</b> (in place of "
            "Hendrycks' AlexNet). "
            if summary.baseline
            else ""
        )
        + "Flip probability: ImageNet-P sequences; NSD: negative std of accuracy over system-noise settings. "
        "Health: the cheap gradient-masking checks (&#10003; all passed, &#9888; names the checks that warned; "
        "see a model's card; the checks compare with a Madry-tuned reference PGD); PGD acc is the bench's "
        "PGD-l-inf at the largest l-inf budget, worst acc the worst case over every l-inf attack at that budget, "
        "health checks included, on the same images, and PGD gap their difference: how much the default attack "
        "overstates the model's robustness (information about the attack, not a health warning).</p>"
    )
    text = ["model", "technique", "family", "health", "card"]
    parts.append(f'<div class="scroll">{table_html(board[cols], text)}</div>')
    for name, heading, fn, note in PLOTS:
        fig = fn(cells)
        if fig is not None:
            parts += _plot_html(name, heading, note, fig, out)
    detail = cells[["model", "technique", "kind", "noise", "severity", "n", "accuracy", "ar"]].copy()
    detail = detail.rename(columns={"accuracy": "value"})
    detail["severity"] = detail["severity"].map(lambda s: f"{s:.4g}")
    parts.append("<h3>Every cell</h3>")
    parts.append(
        '<p class="note">value = accuracy (clean, natural, system), robust accuracy (adversarial) or flip '
        "probability (ImageNet-P, lower is better), in %.</p>"
    )
    detail_html = table_html(detail, ["model", "technique", "kind", "noise", "severity"])
    parts.append(f'<details><summary>{len(detail)} cells</summary><div class="scroll">{detail_html}</div></details>')
    return parts


def _capability_html(name: str, section: Section, out: Path) -> list[str]:
    """One non-benchmark capability's section body: its table and its plot."""
    parts = [f'<p class="note">{html.escape(section.note)}</p>']
    table = table_html(section.table, section.text, percent=section.percent)
    parts.append(f'<div class="scroll">{table}</div>')
    if section.figure is not None:
        parts += _plot_html(name, "", "Plot of the table above.", section.figure, out)
    return parts


def render_report(
    summary: Summary,
    out: str | Path,
    *,
    store_url: str = "",
    title: str = "robustvision report",
    cards: bool = True,
    sections: dict[str, Section] | None = None,
) -> Path:
    """Write the HTML report and one PNG per plot beside it; returns the HTML path.

    Args:
        summary: the benchmark's tables (:func:`~robustvision.bench.summary.summarize`); its section is left out
            when it holds no cells.
        out: the HTML file.
        store_url: the store's URL, shown in the header.
        title: the page title.
        cards: write one robustness card per benchmark model in ``<stem>-cards/``, linked from the leaderboard.
        sections: the other capabilities' sections (:data:`~robustvision.bench.sections.SECTIONS`), by name.
    """
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sections = sections or {}
    cells, board = summary.cells, summary.leaderboard
    present = ([BENCHMARK] if not cells.empty else []) + [c for c in CAPABILITIES if c in sections]
    parts = [f"<h1>{html.escape(title)}</h1>"]
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    datasets = ", ".join(sorted(cells["dataset"].unique())) if not cells.empty else "none"
    parts.append(
        f'<p class="meta">Generated {when} from <code>{html.escape(store_url)}</code>; benchmark data set(s): '
        f"{html.escape(datasets)}; {len(cells)} cells, {len(board)} model variants.</p>"
    )
    if not present:
        parts.append(
            "<p>The results store holds no cells yet: run <code>robustvision bench</code> (or "
            "<code>defend evaluate</code>, <code>das optimize</code>, <code>iseg evaluate</code>, "
            "<code>adapt train</code>) first.</p>"
        )
    else:
        links = " ".join(f'<a href="#{c}">{html.escape(CAPABILITIES[c].title.split(":")[0])}</a>' for c in present)
        parts.append(f'<nav class="toc">Sections: {links}</nav>')
    for name in present:
        cap = CAPABILITIES[name]
        body = (
            _benchmark_html(summary, out, cards) if name == BENCHMARK else _capability_html(name, sections[name], out)
        )
        parts.append(
            f'<section class="capability" id="{name}"><h2>{html.escape(cap.title)}</h2>'
            f'<p class="meta">Written by <code>{html.escape(cap.command)}</code>.</p>' + "\n".join(body) + "</section>"
        )
    doc = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{html.escape(title)}</title><style>{CSS}</style></head><body>'
        + "\n".join(parts)
        + f"<script>{JS}</script></body></html>"
    )
    out.write_text(doc, encoding="utf-8")
    return out


def capability_sections(
    store: ResultsStore, *, run_id: str | None = None, dataset: str | None = None
) -> dict[str, Section]:
    """The section of every capability other than the benchmark that has rows in the store (filters as given)."""
    out = {}
    for name, build in SECTIONS.items():
        rows = latest_results(store, name, run_id=run_id, dataset=dataset)
        if not rows.empty:
            out[name] = build(rows)
    return out


def write_report(
    store: ResultsStore,
    out: str | Path,
    *,
    run_id: str | None = None,
    dataset: str | None = None,
    baseline: str | None = None,
) -> Path:
    """Summarise the store and write the report to ``out`` (one section per capability with results)."""
    import matplotlib

    matplotlib.use("Agg")  # the sections draw their figures before the report renders
    summary = summarize(store, run_id=run_id, dataset=dataset, baseline=baseline)
    sections = capability_sections(store, run_id=run_id, dataset=dataset)
    return render_report(summary, out, store_url=store.display_url, sections=sections)
