// The page's state, its calls to the daemon (through cpvctl ui) and the live event stream.
"use strict";
(function () {
  const V = window.CPVViews, P = window.CPVPlot;
  const $ = id => document.getElementById(id);
  const PAGE = 100;
  const state = { artifacts: [], status: {}, artifact: null, offset: 0, total: 0,
                  sort: "version", order: "desc", metric: null, rows: [], all: [],
                  selected: null, progress: {}, online: false };

  function say(text) {
    $("message").textContent = text;
    clearTimeout(say.timer);
    say.timer = setTimeout(() => { $("message").textContent = ""; }, 6000);
  }

  function setConn(kind, text) {
    const c = $("conn");
    c.className = "conn " + kind;
    c.textContent = text;
    state.online = kind === "ok";
  }

  async function api(method, path, body) {
    const opts = { method: method, headers: {}, credentials: "same-origin" };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const resp = await fetch(path, opts);
    const data = await resp.json().catch(() => null);
    if (resp.status === 502) setConn("down", "daemon not reachable — reconnecting");
    if (!resp.ok) {
      const err = data && data.error ? data.error.message : resp.statusText;
      throw new Error(err);
    }
    return { data: data, total: +(resp.headers.get("X-Cpv-Total") || 0) };
  }

  const enc = encodeURIComponent;

  async function loadStatus() {
    state.status = (await api("GET", "/v1/status")).data;
    state.statusAt = Date.now() / 1000;
    const paused = (state.status.daemon || {}).paused;
    $("paused").textContent = paused === "all" ? "Versioning is paused for all artifacts." :
      (Array.isArray(paused) && paused.length ? "Paused: " + paused.join(", ") : "");
    V.queue({ running: $("running"), waiting: $("waiting"), failed: $("failed") },
            state.status, state.progress, actions);
    showLag();
  }

  function showLag() {
    const s = state.status, d = s.durability;
    const since = state.statusAt ? Date.now() / 1000 - state.statusAt : 0;  // ticks between loads
    let lag = d && typeof d.lag_seconds === "number" ? d.lag_seconds + (d.lag_seconds ? since : 0) : null;
    if (lag === null) {
      const open = (s.jobs || []).filter(j => j.state !== "failed").map(j => j.created_at);
      lag = open.length ? Math.max(0, Date.now() / 1000 - Math.min.apply(null, open)) : 0;
    }
    const parts = ["durability lag " + lag.toFixed(0) + " s"];
    const points = (d && d.recovery_points) || {};
    const mine = state.artifact && points[state.artifact];
    if (mine) parts.push("recovery point " + (mine.age_seconds + since).toFixed(0) + " s ago");
    if (s.upload_cap) parts.push("upload cap " + V.bytes(s.upload_cap) + "/s");
    if ((s.superseded || []).length) parts.push(s.superseded.length + " superseded");
    if ((s.behind || []).length) parts.push("BEHIND: saves come faster than uploads");
    $("lag").textContent = parts.join(" · ");
    $("lag").title = Object.keys(points).sort().map(a =>
      a + ": recovery point " + points[a].age_seconds.toFixed(0) + " s ago").join("\n");
  }

  async function loadArtifacts() {
    state.artifacts = (await api("GET", "/v1/artifacts")).data;
    V.artifacts($("artifacts").querySelector("tbody"), state.artifacts,
                (state.status.daemon || {}).paused, actions);
  }

  function sortParam() {
    return state.sort === "metric" ? "metric:" + (state.metric || "") : state.sort;
  }

  async function loadPage() {
    if (!state.artifact) return;
    const q = "/v1/versions?artifact=" + enc(state.artifact) + "&offset=" + state.offset +
              "&limit=" + PAGE + "&sort=" + enc(sortParam()) + "&order=" + state.order;
    const r = await api("GET", q);
    state.rows = r.data;
    state.total = r.total;
    V.versions($("versions").querySelector("tbody"), state.rows, state.selected, actions);
    const last = Math.min(state.offset + PAGE, state.total);
    $("page-info").textContent = (state.total ? state.offset + 1 : 0) + "–" + last + " of " + state.total;
    $("prev").disabled = state.offset === 0;
    $("next").disabled = last >= state.total;
    for (const th of document.querySelectorAll("#versions th[data-sort]")) {
      th.className = th.dataset.sort === state.sort ? "sorted-" + state.order : "";
    }
  }

  async function loadPlot() {
    if (!state.artifact) return;
    const q = "/v1/versions?artifact=" + enc(state.artifact) +
              "&fields=version,metrics,stages&sort=version&order=asc&limit=10000";
    state.all = (await api("GET", q)).data;
    const counts = new Map();  // the metric most versions have is drawn first
    for (const v of state.all) {
      for (const k of Object.keys(v.metrics || {})) counts.set(k, (counts.get(k) || 0) + 1);
    }
    const keys = new Set(counts.keys());
    const common = [...keys].sort((a, b) => counts.get(b) - counts.get(a) || (a < b ? -1 : 1));
    const select = $("metric");
    const chosen = state.metric && keys.has(state.metric) ? state.metric : common[0] || null;
    select.replaceChildren();
    for (const k of [...keys].sort()) {
      const o = document.createElement("option");
      o.value = k;
      o.textContent = k;
      select.append(o);
    }
    state.metric = chosen;
    if (chosen !== null) select.value = chosen;
    P.draw($("plot"), state.all, chosen);
  }

  async function usedBy(version) {
    const out = [];
    for (const a of state.artifacts) {
      if (a.kind !== "model" || a.name === state.artifact) continue;
      const q = "/v1/versions?artifact=" + enc(a.name) + "&fields=version,lineage&limit=10000";
      for (const v of (await api("GET", q)).data) {
        if ((v.lineage || {})[state.artifact] === version.version) out.push(a.name + "@" + v.version);
      }
    }
    return out;
  }

  async function openArtifact(name) {
    if (state.artifact !== name) {
      state.artifact = name;
      state.offset = 0;
      state.selected = null;
      $("lineage").replaceChildren();
      $("lineage-of").textContent = "(click a version)";
    }
    $("artifact-name").textContent = name;
    showLag();
    $("versions-view").hidden = false;
    await Promise.all([loadPage(), loadPlot()]);
  }

  function confirmThen(text, withStage) {
    return new Promise(resolve => {
      const dlg = $("confirm");
      $("confirm-text").textContent = text;
      $("stage-row").hidden = !withStage;
      const done = ok => { dlg.close(); $("confirm-ok").onclick = $("confirm-cancel").onclick = null; resolve(ok); };
      $("confirm-ok").onclick = () => done(true);
      $("confirm-cancel").onclick = () => done(false);
      dlg.showModal();
    });
  }

  async function act(text, withStage, call) {
    if (!(await confirmThen(text, withStage))) return;
    try {
      await call();
      say("done: " + text);
      refresh();
    } catch (e) {
      say("failed: " + e.message);
    }
  }

  const actions = {
    open: name => openArtifact(name).catch(e => say(e.message)),
    select: async v => {
      state.selected = v.version;
      $("lineage-of").textContent = state.artifact + "@" + v.version;
      V.versions($("versions").querySelector("tbody"), state.rows, state.selected, actions);
      V.lineage($("lineage"), v, await usedBy(v).catch(() => []));
    },
    promote: v => act("Promote " + state.artifact + "@" + v.version + " to the stage below?", true,
      () => api("POST", "/v1/promote", { artifact: state.artifact, version: v.version, stage: $("stage").value.trim() })),
    revert: v => act("Revert " + state.artifact + " to " + v.version + "? Its bytes are restored where the checkpoint was found.", false,
      () => api("POST", "/v1/revert", { artifact: state.artifact, version: v.version })),
    pause: name => act("Pause versioning of " + name + "?", false, () => api("POST", "/v1/pause", { artifact: name })),
    resume: name => act("Resume versioning of " + name + "?", false, () => api("POST", "/v1/resume", { artifact: name })),
    retry: job => act("Retry the failed job for " + job.source + "?", false,
      () => api("POST", "/v1/jobs/" + enc(job.id) + "/retry")),
  };

  async function refresh() {
    try {
      await loadStatus();
      await loadArtifacts();
      if (state.artifact) await openArtifact(state.artifact);
    } catch (e) {
      say(e.message);
    }
  }

  setInterval(showLag, 1000);  // the lag grows with no event to say so

  let pending = null;
  function refreshSoon() {
    if (pending) return;
    pending = setTimeout(() => { pending = null; refresh(); }, 300);
  }

  function onProgress(ev) {
    const d = JSON.parse(ev.data);
    const p = d.data && d.type ? d.data : d;
    state.progress[p.job_id] = p;
    let li = document.querySelector('#running li[data-job="' + CSS.escape(String(p.job_id)) + '"]');
    if (!li) {  // a job the last status did not list yet: show it now, refresh for the rest
      li = V.runningItem({ id: p.job_id, artifact: p.artifact, source: "", state: "running" }, p);
      const none = $("running").querySelector("li:not([data-job])");
      if (none) none.remove();
      $("running").append(li);
      refreshSoon();
    }
    const bar = li.querySelector("progress");
    bar.max = p.total || 1;
    bar.value = p.bytes || 0;
    li.querySelector(".phase").textContent = " " + p.phase + " " + V.bytes(p.bytes) + " / " + V.bytes(p.total);
  }

  function connect() {
    const es = new EventSource("/v1/events");
    es.onopen = () => {
      const was = state.online;
      setConn("ok", "live");
      if (!was) refresh();
    };
    es.addEventListener("progress", onProgress);
    es.onmessage = refreshSoon;
    for (const t of ["detected", "waiting", "queued", "versioned", "unchanged", "renumbered",
                     "done", "failed", "skipped", "promoted", "reverted", "pushed", "vanished",
                     "paused", "resumed", "superseded", "pruned"]) {
      es.addEventListener(t, refreshSoon);
    }
    es.onerror = () => {
      setConn("down", "daemon not reachable — reconnecting");
      if (es.readyState === EventSource.CLOSED) setTimeout(connect, 1000);
    };
  }

  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); loadPage(); });
  $("next").addEventListener("click", () => { state.offset += PAGE; loadPage(); });
  $("metric").addEventListener("change", () => {
    state.metric = $("metric").value;
    P.draw($("plot"), state.all, state.metric);
    if (state.sort === "metric") loadPage();
  });
  for (const th of document.querySelectorAll("#versions th[data-sort]")) {
    th.addEventListener("click", () => {
      const key = th.dataset.sort;
      state.order = state.sort === key && state.order === "desc" ? "asc" : "desc";
      state.sort = key;
      state.offset = 0;
      loadPage().catch(e => say(e.message));
    });
  }
  connect();
  refresh();
})();
