"""The Pareto front drawn and written: a PNG (pairwise scatter, front highlighted), a
self-contained interactive HTML page (inline SVG + JavaScript, no network), and the table's
CSV / Markdown / JSON files."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path

from space.units import human_bytes, is_bytes_score
from tracking.pareto import RANK, TRIAL, ParetoTable, direction_arrow


def plot_pareto(table: ParetoTable, path: str | Path) -> Path:
    """The interactive HTML page for a ``.html`` path, else the PNG."""
    if str(path).lower().endswith((".html", ".htm")):
        return write_pareto_html(table, path)
    return plot_pareto_png(table, path)


def write_pareto_files(
    table: ParetoTable, folder: str | Path, stem: str = "pareto"
) -> dict[str, Path]:
    """Write CSV, Markdown, JSON, PNG and HTML into ``folder``; returns name -> path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {
        f"{stem}.csv": folder / f"{stem}.csv",
        f"{stem}.md": folder / f"{stem}.md",
        f"{stem}.json": folder / f"{stem}.json",
    }
    out[f"{stem}.csv"].write_text(table.to_csv())
    out[f"{stem}.md"].write_text(table.to_markdown())
    out[f"{stem}.json"].write_text(table.to_json())
    out[f"{stem}.png"] = plot_pareto_png(table, folder / f"{stem}.png")
    out[f"{stem}.html"] = write_pareto_html(table, folder / f"{stem}.html")
    return out


_FRONT_COLOR = "#d62728"
_RANK_COLORS = ("#ff7f0e", "#9467bd", "#8c8c8c")


def _use_log(values: Sequence[float]) -> bool:
    finite = [v for v in values if math.isfinite(v)]
    return bool(finite) and min(finite) > 0 and max(finite) / min(finite) >= 100


def _bytes_axis(axis, limits: tuple[float, float], scale: str) -> None:
    """A byte axis in binary units, ticked at round numbers of its unit (1, 2, 2.5, 5 MiB
    ...), not at round numbers of bytes (3.81 MiB)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator

    axis.set_major_formatter(FuncFormatter(lambda v, _: human_bytes(v)))
    lo, hi = limits
    top = max(abs(lo), abs(hi))
    if scale != "linear" or not math.isfinite(top) or top == 0:
        return
    unit = next((size for size in (2**30, 2**20, 2**10) if top >= size), 1)
    ticks = MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]).tick_values(lo / unit, hi / unit)
    axis.set_major_locator(FixedLocator([t * unit for t in ticks if lo <= t * unit <= hi]))


def plot_pareto_png(table: ParetoTable, path: str | Path) -> Path:
    """Pairwise scatter of the objectives, Pareto set in red and labelled by trial number.

    One panel per pair of objectives (one panel of value by trial for a single
    objective). A point of rank 0 may look dominated in a 2-D projection of three or
    more objectives: the rank is computed in the full objective space.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names, dirs = table.objective_names, table.directions
    ranked = [row for row in table.rows if row[RANK] is not None]
    pairs = [(a, b) for a in range(len(names)) for b in range(a + 1, len(names))]
    if not pairs:
        pairs = [(-1, 0)]  # x = trial number
    n_cols = min(3, len(pairs))
    n_rows = math.ceil(len(pairs) / n_cols)
    fig = Figure(figsize=(5.0 * n_cols, 4.2 * n_rows))
    FigureCanvasAgg(fig)
    n_excluded = len(table.rows) - len(ranked)
    suptitle = f"{table.title}: {len(table.front)} of {len(ranked)} trials on the front"
    if n_excluded:
        suptitle += f" ({n_excluded} excluded)"
    fig.suptitle(suptitle)
    for k, (a, b) in enumerate(pairs):
        ax = fig.add_subplot(n_rows, n_cols, k + 1)
        xs = [float(r[TRIAL]) if a < 0 else float(r[names[a]]) for r in ranked]
        ys = [float(r[names[b]]) for r in ranked]
        colors = []
        sizes = []
        for r in ranked:
            if r[RANK] == 0:
                colors.append(_FRONT_COLOR)
                sizes.append(60)
            else:
                colors.append(_RANK_COLORS[min(r[RANK] - 1, len(_RANK_COLORS) - 1)])
                sizes.append(25)
        order = sorted(range(len(ranked)), key=lambda i: -ranked[i][RANK])  # front on top
        ax.scatter(
            [xs[i] for i in order],
            [ys[i] for i in order],
            c=[colors[i] for i in order],
            s=[sizes[i] for i in order],
            edgecolors="black",
            linewidths=0.4,
        )
        for i, r in enumerate(ranked):
            if r[RANK] == 0:
                ax.annotate(
                    str(r[TRIAL]),
                    (xs[i], ys[i]),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=8,
                )
        if a < 0:
            ax.set_xlabel("trial")
        else:
            ax.set_xlabel(f"{names[a]} {direction_arrow(dirs[a])}")
            if _use_log(xs):
                ax.set_xscale("log")
        ax.set_ylabel(f"{names[b]} {direction_arrow(dirs[b])}")
        if _use_log(ys):
            ax.set_yscale("log")
        if a >= 0 and is_bytes_score(names[a]):
            _bytes_axis(ax.xaxis, ax.get_xlim(), ax.get_xscale())
        if is_bytes_score(names[b]):
            _bytes_axis(ax.yaxis, ax.get_ylim(), ax.get_yscale())
        ax.grid(True, alpha=0.3)
    handles = [
        _legend_handle(_FRONT_COLOR, "rank 0 (Pareto set)"),
        _legend_handle(_RANK_COLORS[0], "rank 1"),
        _legend_handle(_RANK_COLORS[1], "rank 2"),
        _legend_handle(_RANK_COLORS[2], "rank 3+"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    fig.savefig(path, dpi=100)
    return path


def _legend_handle(color: str, label: str):
    from matplotlib.lines import Line2D

    return Line2D(
        [], [], marker="o", linestyle="", markerfacecolor=color, markeredgecolor="k", label=label
    )


def write_pareto_html(table: ParetoTable, path: str | Path) -> Path:
    """A self-contained interactive page: pick the axes, hover a point for its trial,
    click it to find its row; the table sorts by any column. No network access needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "title": table.title,
        "objectives": list(table.objective_names),
        "directions": list(table.directions),
        "columns": table.columns,
        "rows": table.to_records(),
    }
    # Inside <script>, "</" would end the element: escape "<" in the JSON text.
    data = json.dumps(payload, allow_nan=False, default=str).replace("<", "\\u003c")
    page = (
        _HTML_TEMPLATE.replace("__TITLE__", html.escape(table.title))
        .replace("__STYLE__", _HTML_STYLE)
        .replace("__SCRIPT__", _HTML_SCRIPT)
        .replace("__DATA__", data)
    )
    path.write_text(page, encoding="utf-8")
    return path


_HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>__TITLE__</title>
<style>__STYLE__</style>
</head>
<body>
<h1>__TITLE__</h1>
<p id="summary"></p>
<div id="controls">
  <label>x <select id="x"></select></label>
  <label>y <select id="y"></select></label>
  <label><input type="checkbox" id="logx"> log x</label>
  <label><input type="checkbox" id="logy"> log y</label>
  <label><input type="checkbox" id="frontonly"> Pareto set only</label>
</div>
<div id="legend">
  <span><i style="background:#d62728"></i>rank 0 (Pareto set, labelled by trial)</span>
  <span><i style="background:#ff7f0e"></i>rank 1</span>
  <span><i style="background:#9467bd"></i>rank 2</span>
  <span><i style="background:#8c8c8c"></i>rank 3+</span>
  <span class="hint">ranks are over all objectives; hover a point for its trial, click it to
  find its row</span>
</div>
<div id="plotbox"><svg id="plot" width="760" height="480"></svg><div id="tip"></div></div>
<table id="table"><thead></thead><tbody></tbody></table>
<script id="data" type="application/json">__DATA__</script>
<script>__SCRIPT__</script>
</body>
</html>
"""

_HTML_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
#summary { max-width: 60em; line-height: 1.4; }
#controls label { margin-right: 1em; }
#legend { margin: 0.6em 0 0.2em; font-size: 13px; color: #444; }
#legend span { margin-right: 1.2em; white-space: nowrap; }
#legend span.hint { color: #777; white-space: normal; }
#legend i { display: inline-block; width: 10px; height: 10px; border-radius: 50%;
            border: 1px solid #000; margin-right: 4px; vertical-align: -1px; }
#plotbox { position: relative; display: inline-block; }
#tip { position: absolute; pointer-events: none; background: #fff; border: 1px solid #888;
       padding: 4px 6px; font-size: 12px; display: none; white-space: pre; z-index: 1; }
table { border-collapse: collapse; margin-top: 1em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
th { cursor: pointer; background: #f3f3f3; }
td.text { text-align: left; }
tr.front td { background: #fde8e8; }
tr.picked td { outline: 2px solid #d62728; }
circle { stroke: #000; stroke-width: 0.5; cursor: pointer; }
line.grid { stroke: #e5e5e5; }
text.label { font-size: 11px; fill: #a01b1c; }
"""

_HTML_SCRIPT = r"""
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("data").textContent);
  var SVG = "http://www.w3.org/2000/svg";
  var rankColors = ["#d62728", "#ff7f0e", "#9467bd", "#8c8c8c"];
  var svg = document.getElementById("plot"), tip = document.getElementById("tip");
  var W = 760, H = 480, M = {l: 80, r: 24, t: 20, b: 50};
  var axes = ["trial"].concat(D.objectives);
  var sortKey = "rank", sortAsc = true;
  // Columns every row leaves empty (e.g. "excluded" when nothing is) are not shown.
  var columns = D.columns.filter(function (k) {
    return D.rows.some(function (r) { return r[k] !== null && r[k] !== undefined && r[k] !== ""; });
  });

  function dirOf(name) {
    var i = D.objectives.indexOf(name);
    return i < 0 ? "" : (D.directions[i] === "maximize" ? " (max)" : " (min)");
  }
  function bytes(v) {
    var units = [["GiB", 1073741824], ["MiB", 1048576], ["KiB", 1024]];
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(v) >= units[i][1]) {
        return Number((v / units[i][1]).toPrecision(3)) + " " + units[i][0];
      }
    }
    return Math.round(v) + " B";
  }
  function fmt(v, key) {
    if (v === null || v === undefined) { return ""; }
    if (typeof v === "number") {
      if (key && /_bytes$/.test(key)) { return bytes(v); }
      return Number.isInteger(v) ? String(v) : Number(v.toPrecision(4)).toString();
    }
    if (typeof v === "boolean") { return v ? "yes" : "no"; }
    return String(v);
  }
  function el(name, attrs, text) {
    var e = document.createElementNS(SVG, name);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }
  // Round tick values: steps of 1, 2 or 5 times a power of ten (powers of ten on a log
  // axis that spans more than a decade).
  function niceTicks(a, b, log) {
    var out = [], k;
    if (log && b - a >= 1) {
      for (k = Math.ceil(a); k <= Math.floor(b); k++) { out.push(k); }
      return out;
    }
    var lo = log ? Math.pow(10, a) : a, hi = log ? Math.pow(10, b) : b;
    var raw = (hi - lo) / 6, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 5, 10].map(function (m) { return m * mag; })
      .filter(function (s) { return s >= raw * (1 - 1e-9); })[0];  // at most 6 intervals
    for (k = Math.ceil(lo / step); k * step <= hi + step * 1e-9; k++) {
      var v = Number((k * step).toPrecision(12));
      out.push(log ? Math.log10(v) : v);
    }
    return out.filter(function (t) { return isFinite(t); });
  }
  function scale(vals, lo, hi, log, key) {
    var f = log ? function (v) { return Math.log10(v); } : function (v) { return v; };
    var t = vals.map(f), a = Math.min.apply(null, t), b = Math.max.apply(null, t);
    if (a === b) { a -= log ? 0.5 : Math.max(Math.abs(a) * 0.1, 1); b = 2 * b - a; }
    var pad = (b - a) * 0.06; a -= pad; b += pad;
    var s = function (v) { return lo + (f(v) - a) / (b - a) * (hi - lo); };
    s.ticks = niceTicks(a, b, log).map(function (u) {
      var v = log ? Math.pow(10, u) : u;
      return {pos: lo + (u - a) / (b - a) * (hi - lo), label: fmt(v, key)};
    });
    return s;
  }
  function usable(r, k, log) {
    var v = r[k];
    return typeof v === "number" && isFinite(v) && (!log || v > 0);
  }
  function describe(r) {
    var lines = ["trial " + r.trial + "  rank " + r.rank, String(r.candidate)];
    D.objectives.forEach(function (k) { lines.push(k + dirOf(k) + ": " + fmt(r[k], k)); });
    return lines.join("\n");
  }
  function draw() {
    var xk = document.getElementById("x").value, yk = document.getElementById("y").value;
    var lx = document.getElementById("logx").checked, ly = document.getElementById("logy").checked;
    var only = document.getElementById("frontonly").checked;
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    var rows = D.rows.filter(function (r) {
      return r.rank !== null && (!only || r.rank === 0) && usable(r, xk, lx) && usable(r, yk, ly);
    });
    if (!rows.length) {
      svg.appendChild(el("text", {x: W / 2, y: H / 2, "text-anchor": "middle"}, "no points"));
      return;
    }
    var sx = scale(rows.map(function (r) { return r[xk]; }), M.l, W - M.r, lx, xk);
    var sy = scale(rows.map(function (r) { return r[yk]; }), H - M.b, M.t, ly, yk);
    sx.ticks.forEach(function (t) {
      svg.appendChild(el("line", {x1: t.pos, y1: M.t, x2: t.pos, y2: H - M.b, "class": "grid"}));
      svg.appendChild(el("text", {x: t.pos, y: H - M.b + 16, "text-anchor": "middle",
                                  "font-size": 11}, t.label));
    });
    sy.ticks.forEach(function (t) {
      svg.appendChild(el("line", {x1: M.l, y1: t.pos, x2: W - M.r, y2: t.pos, "class": "grid"}));
      svg.appendChild(el("text", {x: M.l - 6, y: t.pos + 4, "text-anchor": "end",
                                  "font-size": 11}, t.label));
    });
    svg.appendChild(el("line", {x1: M.l, y1: H - M.b, x2: W - M.r, y2: H - M.b, stroke: "#000"}));
    svg.appendChild(el("line", {x1: M.l, y1: M.t, x2: M.l, y2: H - M.b, stroke: "#000"}));
    svg.appendChild(el("text", {x: (M.l + W - M.r) / 2, y: H - 12, "text-anchor": "middle"},
                       xk + dirOf(xk)));
    svg.appendChild(el("text", {x: 16, y: (M.t + H - M.b) / 2, "text-anchor": "middle",
                                transform: "rotate(-90 16 " + (M.t + H - M.b) / 2 + ")"},
                       yk + dirOf(yk)));
    // Points that land on the same spot share one tooltip listing all of them.
    var at = {};
    rows.forEach(function (r) {
      var key = Math.round(sx(r[xk])) + "," + Math.round(sy(r[yk]));
      (at[key] = at[key] || []).push(r);
    });
    rows.slice().sort(function (a, b) { return b.rank - a.rank; }).forEach(function (r) {
      var cx = sx(r[xk]), cy = sy(r[yk]);
      var here = at[Math.round(cx) + "," + Math.round(cy)];
      var text = here.map(describe).join("\n\n");
      var c = el("circle", {cx: cx, cy: cy, r: r.rank === 0 ? 7 : 4.5,
                            fill: rankColors[Math.min(r.rank, rankColors.length - 1)],
                            "data-trial": r.trial, "data-rank": r.rank,
                            "class": r.rank === 0 ? "front" : "dominated"});
      c.appendChild(el("title", {}, text));
      c.addEventListener("mousemove", function (ev) {
        var box = svg.getBoundingClientRect();
        tip.textContent = text;
        tip.style.left = (ev.clientX - box.left + 14) + "px";
        tip.style.top = (ev.clientY - box.top + 14) + "px";
        tip.style.display = "block";
      });
      c.addEventListener("mouseleave", function () { tip.style.display = "none"; });
      c.addEventListener("click", function () { pick(r.trial); });
      svg.appendChild(c);
    });
    Object.keys(at).forEach(function (key) {  // the front's trial numbers beside their points
      var front = at[key].filter(function (r) { return r.rank === 0; });
      if (!front.length) { return; }
      var r = front[0];
      svg.appendChild(el("text", {x: sx(r[xk]) + 9, y: sy(r[yk]) - 8, "class": "label"},
                         front.map(function (f) { return f.trial; }).join(",")));
    });
  }
  function pick(trial) {
    var rowsEl = document.querySelectorAll("#table tbody tr");
    rowsEl.forEach(function (tr) {
      var hit = tr.dataset.trial === String(trial);
      tr.classList.toggle("picked", hit);
      if (hit) { tr.scrollIntoView({block: "nearest"}); }
    });
  }
  function compare(a, b) {
    var u = a[sortKey], v = b[sortKey];
    if (u === v) { return 0; }
    if (u === null || u === undefined) { return 1; }
    if (v === null || v === undefined) { return -1; }
    var c = (typeof u === "number" && typeof v === "number") ? u - v
      : String(u).localeCompare(String(v));
    return sortAsc ? c : -c;
  }
  function table() {
    var head = document.querySelector("#table thead"), body = document.querySelector("#table tbody");
    head.innerHTML = ""; body.innerHTML = "";
    var tr = document.createElement("tr");
    columns.forEach(function (k) {
      var th = document.createElement("th");
      th.textContent = k + dirOf(k) + (k === sortKey ? (sortAsc ? " \u25b2" : " \u25bc") : "");
      th.addEventListener("click", function () {
        sortAsc = sortKey === k ? !sortAsc : true; sortKey = k; table();
      });
      tr.appendChild(th);
    });
    head.appendChild(tr);
    D.rows.slice().sort(compare).forEach(function (r) {
      var row = document.createElement("tr");
      row.dataset.trial = String(r.trial);
      if (r.rank === 0) { row.className = "front"; }
      columns.forEach(function (k) {
        var td = document.createElement("td");
        td.textContent = fmt(r[k], k);
        if (typeof r[k] !== "number") { td.className = "text"; }
        row.appendChild(td);
      });
      body.appendChild(row);
    });
  }
  function init() {
    var front = D.rows.filter(function (r) { return r.rank === 0; });
    var nRanked = D.rows.filter(function (r) { return r.rank !== null; }).length;
    var named = front.slice(0, 8).map(function (r) {
      return "trial " + r.trial + (r.candidate ? " (" + r.candidate + ")" : "");
    });
    if (front.length > named.length) { named.push((front.length - named.length) + " more"); }
    document.getElementById("summary").textContent = front.length + " of " + nRanked +
      " ranked trials on the Pareto front" + (named.length ? ": " + named.join(", ") : "") +
      ". Objectives: " + D.objectives.map(function (k) { return k + dirOf(k); }).join(", ") +
      (D.rows.length > nRanked ? "; " + (D.rows.length - nRanked) + " excluded" : "") + ".";
    ["x", "y"].forEach(function (id, i) {
      var s = document.getElementById(id);
      axes.forEach(function (k) {
        var o = document.createElement("option"); o.value = k; o.textContent = k; s.appendChild(o);
      });
      s.value = D.objectives.length > 1 ? D.objectives[i] : axes[i];
      s.addEventListener("change", draw);
    });
    ["logx", "logy", "frontonly"].forEach(function (id) {
      document.getElementById(id).addEventListener("change", draw);
    });
    draw(); table();
  }
  init();
})();
"""
