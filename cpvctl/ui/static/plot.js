// A metric across versions as an inline SVG, drawn here (no library). Names and values from
// the registry go into attributes and textContent only, never into markup.
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const W = 760, H = 260, L = 60, R = 20, T = 16, B = 40;
  const MAX_POINTS = 600; // beyond this only the line and the marked versions get a dot

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmt(v) {
    return Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ? v.toExponential(2) : String(+v.toPrecision(4));
  }

  // rows: versions, oldest first, each {version, metrics, stages}
  function points(rows, key) {
    const out = [];
    rows.forEach(function (row, i) {
      const v = row.metrics ? row.metrics[key] : undefined;
      if (typeof v === "number" && isFinite(v)) out.push({ i: i, value: v, row: row });
    });
    return out;
  }

  function draw(container, rows, key) {
    container.replaceChildren();
    const pts = points(rows, key);
    if (!pts.length) {
      container.append(document.createTextNode("no numeric values for this metric"));
      return;
    }
    let lo = Math.min.apply(null, pts.map(p => p.value));
    let hi = Math.max.apply(null, pts.map(p => p.value));
    if (lo === hi) { lo -= 1; hi += 1; }
    const n = Math.max(rows.length - 1, 1);
    const x = i => L + (W - L - R) * i / n;
    const y = v => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
    const svg = el("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img",
                             "data-metric": key });
    svg.append(el("title", {}, key + " across versions"));
    svg.append(el("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#888" }));
    svg.append(el("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#888" }));
    svg.append(el("text", { x: 4, y: y(hi) + 4 }, fmt(hi)));
    svg.append(el("text", { x: 4, y: y(lo) + 4 }, fmt(lo)));
    svg.append(el("text", { x: L, y: H - B + 16 }, rows[0].version));
    svg.append(el("text", { x: W - R, y: H - B + 16, "text-anchor": "end" },
                  rows[rows.length - 1].version));
    svg.append(el("text", { x: (W + L) / 2, y: H - 6, "text-anchor": "middle" }, key));
    const line = pts.map(p => x(p.i).toFixed(1) + "," + y(p.value).toFixed(1)).join(" ");
    svg.append(el("polyline", { class: "line", points: line }));
    const dense = pts.length > MAX_POINTS;
    for (const p of pts) {
      const stages = p.row.stages || [];
      if (dense && !stages.length) continue;
      const cls = stages.includes("best") ? "pt best" : stages.length ? "pt staged" : "pt";
      const dot = el("circle", { class: cls, cx: x(p.i).toFixed(1), cy: y(p.value).toFixed(1),
                                 r: stages.length ? 5 : 3, "data-version": p.row.version,
                                 "data-value": p.value });
      dot.append(el("title", {}, p.row.version + ": " + key + " = " + p.value +
                                 (stages.length ? " [" + stages.join(", ") + "]" : "")));
      svg.append(dot);
      if (stages.length) {
        svg.append(el("text", { class: "mark", x: x(p.i) + 6, y: y(p.value) - 6 },
                      stages.join(",")));
      }
    }
    container.append(svg);
  }

  window.CPVPlot = { draw: draw, points: points };
})();
