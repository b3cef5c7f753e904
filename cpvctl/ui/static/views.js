// Rendering: every value from the registry or the daemon becomes text (textContent), never
// markup, so a metric named "<script>" shows as those characters.
"use strict";
(function () {
  function h(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function button(label, onClick) {
    const b = h("button", label);
    b.type = "button";
    b.addEventListener("click", function (ev) { ev.stopPropagation(); onClick(); });
    return b;
  }

  function bytes(n) {
    if (typeof n !== "number") return "";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  function pairs(obj) {
    return Object.entries(obj || {}).map(([k, v]) => k + "=" + (typeof v === "object" ? JSON.stringify(v) : v)).join("  ");
  }

  function stageSpans(stages) {
    const td = h("td");
    for (const s of stages || []) td.append(h("span", s, "stage"));
    return td;
  }

  function row(cells) {
    const tr = h("tr");
    for (const c of cells) tr.append(c instanceof Node ? c : h("td", c));
    return tr;
  }

  function artifacts(tbody, list, paused, actions) {
    tbody.replaceChildren();
    for (const a of list) {
      const stages = a.stages || {};
      const watching = h("td");
      const isPaused = paused === "all" || (Array.isArray(paused) && paused.includes(a.name));
      watching.append(document.createTextNode(isPaused ? "paused " : "on "));
      watching.append(isPaused ? button("resume", () => actions.resume(a.name))
                               : button("pause", () => actions.pause(a.name)));
      const tr = row([a.name, a.kind, a.latest || "–", a.current || "–", stages.best || "–",
                      pairs(stages), a.count, bytes(a.bytes), watching]);
      tr.dataset.artifact = a.name;
      tr.addEventListener("click", () => actions.open(a.name));
      tbody.append(tr);
    }
  }

  function jobLine(j) {
    return (j.artifact || "") + "  " + (j.source || "") + (j.step ? "  (" + j.step + ")" : "");
  }

  function runningItem(j, p) {
    const li = h("li", jobLine(j));
    li.dataset.job = j.id;
    const bar = h("progress");
    bar.max = (p && p.total) || j.size || 1;
    bar.value = p ? p.bytes : 0;
    li.append(h("br"), bar, h("span", p ? " " + p.phase + " " + bytes(p.bytes) + " / " + bytes(p.total) : "", "phase"));
    return li;
  }

  function queue(els, status, progress, actions) {
    const jobs = status.jobs || [];
    els.running.replaceChildren();
    els.waiting.replaceChildren();
    els.failed.replaceChildren();
    for (const j of jobs) {
      if (j.state === "running") {
        els.running.append(runningItem(j, progress[j.id]));
        continue;
      }
      const li = h("li", jobLine(j));
      li.dataset.job = j.id;
      if (j.state === "failed") {
        li.append(h("br"), h("span", j.error || "failed", "error"), h("br"),
                  button("retry", () => actions.retry(j)));
        els.failed.append(li);
      } else {
        li.append(h("span", "  queued" + (j.error ? ": " + j.error : ""), "reason"));
        els.waiting.append(li);
      }
    }
    for (const w of status.waiting || []) {
      const li = h("li", (w.artifact || "") + "  " + (w.path || ""));
      li.append(h("br"), h("span", w.reason || "", "reason"));
      els.waiting.append(li);
    }
    for (const ul of [els.running, els.waiting, els.failed]) {
      if (!ul.children.length) ul.append(h("li", "none"));
    }
  }

  function versions(tbody, rows, selected, actions) {
    tbody.replaceChildren();
    for (const v of rows) {
      const md5 = h("td", (v.md5 || "").slice(0, 12), "md5");
      md5.title = v.md5 || "";
      const act = h("td");
      act.append(button("promote", () => actions.promote(v)), button("revert", () => actions.revert(v)));
      const tr = row([v.version + (v.current ? " (current)" : ""), v.created_at, bytes(v.size), md5,
                      pairs(v.metrics), stageSpans(v.stages), pairs(v.lineage),
                      v.relpath || v.source || "", act]);
      tr.dataset.version = v.version;
      if (v.version === selected) tr.className = "selected";
      tr.addEventListener("click", () => actions.select(v));
      tbody.append(tr);
    }
  }

  function lineage(box, version, usedBy) {
    box.replaceChildren();
    const up = h("ul");
    for (const [name, ver] of Object.entries(version.lineage || {})) up.append(h("li", "trained on " + name + "@" + ver));
    const down = h("ul");
    for (const u of usedBy) down.append(h("li", "used by " + u));
    if (!up.children.length) up.append(h("li", "trained on: nothing recorded"));
    if (!down.children.length) down.append(h("li", "used by: no model version"));
    box.append(up, down);
  }

  window.CPVViews = { h: h, bytes: bytes, artifacts: artifacts, queue: queue, runningItem: runningItem, versions: versions,
                      lineage: lineage };
})();
