// Turnout dashboard: follows /admin/live (Server-Sent Events) and refreshes profiling progress.
// No framework, no build step. Text goes into the page with textContent only.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const ms = (v) => (v == null ? "–" : v >= 1000 ? (v / 1000).toFixed(2) + " s" : Math.round(v) + " ms");
  let finished = 0;

  function cell(row, text, cls) {
    const td = document.createElement("td");
    td.textContent = text == null ? "–" : String(text);
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function clearEmpty(tbody) {
    tbody.querySelectorAll("tr.empty").forEach((tr) => tr.remove());
  }

  function renderInflight(rows) {
    const body = $("inflight");
    body.replaceChildren();
    if (!rows.length) {
      const tr = document.createElement("tr");
      tr.className = "empty";
      const td = cell(tr, "Nothing in flight.");
      td.colSpan = 5;
      body.appendChild(tr);
      return;
    }
    for (const r of rows) {
      const tr = document.createElement("tr");
      tr.dataset.requestId = r.request_id;
      cell(tr, r.request_id.slice(0, 12));
      cell(tr, r.model || r.requested_model || "routing…");
      cell(tr, r.backend);
      cell(tr, r.stream ? "yes" : "no");
      cell(tr, ms(r.age_ms));
      body.appendChild(tr);
    }
  }

  function addFinished(r) {
    const body = $("recent");
    if (body.querySelector(`tr[data-request-id="${CSS.escape(r.request_id || "")}"]`)) return;
    clearEmpty(body);
    const tr = document.createElement("tr");
    tr.dataset.requestId = r.request_id;
    tr.className = "fresh";
    const t = r.ts ? new Date(r.ts * 1000).toISOString().slice(11, 19) : "–";
    cell(tr, t);
    const link = document.createElement("a");
    link.href = "/ui/requests/" + encodeURIComponent(r.request_id);
    link.textContent = (r.request_id || "").slice(0, 12);
    const td = document.createElement("td");
    td.appendChild(link);
    tr.appendChild(td);
    cell(tr, (r.category || "–") + (r.level ? " " + r.level : ""));
    cell(tr, r.model);
    cell(tr, r.backend);
    cell(tr, r.status + (r.outcome && r.outcome !== "ok" ? " " + r.outcome : ""), r.status === 200 ? "ok" : "bad");
    cell(tr, ms(r.latency_ms));
    cell(tr, ms(r.ttft_ms));
    cell(tr, (r.reasons || []).join("; "), "reasons");
    body.insertBefore(tr, body.firstChild);
    while (body.rows.length > 50) body.deleteRow(body.rows.length - 1);
  }

  function follow() {
    const status = $("live-status");
    const source = new EventSource("/admin/live?interval=1");
    let first = true;
    source.addEventListener("snapshot", (ev) => {
      const snap = JSON.parse(ev.data);
      status.textContent = "live";
      status.className = "pill ok";
      renderInflight(snap.inflight || []);
      $("inflight-total").textContent = String(Math.max(snap.inflight_total || 0, (snap.inflight || []).length));
      for (const r of snap.finished || []) {
        addFinished(r);
        if (!first) finished += 1;
      }
      first = false;
      $("finished-count").textContent = String(finished);
    });
    source.onerror = () => {
      status.textContent = "reconnecting…";
      status.className = "pill bad";
    };
  }

  async function refreshProfiling() {
    try {
      const res = await fetch("/admin/profiling", { credentials: "same-origin" });
      if (!res.ok) return;
      const doc = await res.json();
      $("profiling-summary").textContent = `${doc.running.length} running, ${doc.queue.length} queued`;
      const body = $("profiling-body");
      body.replaceChildren();
      if (!doc.running.length) {
        const p = document.createElement("p");
        p.className = "muted";
        p.textContent = doc.queue.length ? "Queued: " + doc.queue.join(", ") : "Nothing is being profiled.";
        body.appendChild(p);
      }
      for (const r of doc.running) {
        const div = document.createElement("div");
        div.className = "gpu";
        div.textContent = `${r.model} `;
        const small = document.createElement("small");
        small.textContent = `${r.phase || ""} ${r.done}/${r.total}` + (r.eta_s != null ? `, ${Math.round(r.eta_s)} s left` : "");
        const bar = document.createElement("div");
        bar.className = "bar";
        const fill = document.createElement("div");
        fill.style.width = (r.percent || 0) + "%";
        bar.appendChild(fill);
        div.append(small, bar);
        body.appendChild(div);
      }
    } catch (e) {
      /* the next tick retries */
    }
  }

  // The gateway takes only JSON bodies (a cross-site form cannot send one): log in and out by fetch.
  async function post(path, body) {
    return fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
    });
  }

  const login = $("login");
  if (login) {
    login.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const res = await post("/ui/login", { key: login.elements.key.value });
      if (res.ok) {
        window.location.assign("/ui");
        return;
      }
      const err = $("login-error");
      err.textContent = "The key was refused (HTTP " + res.status + ").";
      err.hidden = false;
    });
  }
  const logout = $("logout");
  if (logout) {
    logout.addEventListener("click", async () => {
      await post("/ui/logout");
      window.location.assign("/ui/login");
    });
  }

  if ($("live")) {
    follow();
    setInterval(refreshProfiling, 3000);
  }
})();
