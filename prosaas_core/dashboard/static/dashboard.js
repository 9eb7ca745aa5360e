// prosaas dashboard: local times, and live values by polling a JSON endpoint (no library).
// Each page polls at most once per `data-interval` ms (>= 1000), and not while hidden.
"use strict";

(function () {
  const fmt = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach((el) => {
      const d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d)) { el.textContent = fmt.format(d); el.title = d.toISOString(); }
    });
    root.querySelectorAll("time[data-epoch]").forEach((el) => {
      const d = new Date(parseFloat(el.dataset.epoch) * 1000);
      const ago = Math.max(0, Math.round((Date.now() - d) / 1000));
      el.textContent = fmt.format(d) + " (" + ago + " s ago)";
      el.setAttribute("datetime", d.toISOString());
    });
    const tz = document.getElementById("tz");
    if (tz) tz.textContent = Intl.DateTimeFormat().resolvedOptions().timeZone || "local";
  }

  function every(el, fn) {
    const ms = Math.max(1000, parseInt(el.dataset.interval || "1000", 10));
    let busy = false;
    async function tick() {
      if (!busy && !document.hidden) {
        busy = true;
        try { await fn(); } catch (e) { /* a failed poll is retried on the next tick */ }
        busy = false;
      }
      setTimeout(tick, ms);
    }
    setTimeout(tick, ms);
  }

  function set(row, field, text) {
    const el = row.querySelector('[data-field="' + field + '"]');
    if (el && el.textContent !== text) el.textContent = text;
  }

  function applyJob(row, j) {
    const bar = row.querySelector('[data-field="progress"]');
    if (bar) {
      // no total: full when it succeeded, moving while it runs, empty otherwise
      const shown = j.percent !== null ? j.percent
        : j.status === "succeeded" ? 100 : j.status === "running" ? null : 0;
      if (shown === null) bar.removeAttribute("value");
      else bar.value = shown;
    }
    set(row, "counts", j.processed + (j.total === null ? "" : "/" + j.total));
    set(row, "rate", j.rate ? j.rate.toFixed(1) + "/s" : "–");
    set(row, "eta", j.eta_seconds === null ? "" : "ETA " + Math.round(j.eta_seconds) + "s");
    set(row, "attempts", j.attempts + "/" + j.max_attempts);
    set(row, "error", j.error || "");
    const st = row.querySelector('[data-field="status"]');
    if (st && st.textContent !== j.status) {
      st.textContent = j.status;
      st.className = "status s-" + j.status;
    }
    const cancelling = row.querySelector('[data-field="cancelling"]');
    if (cancelling) cancelling.hidden = j.status !== "running";
    row.dataset.status = j.status;
    row.querySelectorAll("[data-show-when]").forEach((f) => {
      f.hidden = !f.dataset.showWhen.split(" ").includes(j.status) ||
        (j.status !== "failed" && j.status !== "cancelled" && j.cancel_requested);
    });
  }

  function pollJobs(container) {
    const url = container.dataset.poll;
    every(container, async () => {
      const rows = Array.from(container.querySelectorAll("[data-job]"));
      const live = rows.filter((r) => r.dataset.status === "queued" || r.dataset.status === "running");
      if (!live.length) return;
      const ids = live.map((r) => r.dataset.job).join(",");
      const resp = await fetch(url + "?ids=" + ids, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!resp.ok) return;
      const body = await resp.json();
      const byId = new Map(body.jobs.map((j) => [String(j.id), j]));
      live.forEach((r) => { const j = byId.get(r.dataset.job); if (j) applyJob(r, j); });
    });
  }

  function pollHtml(container) {
    every(container, async () => {
      const resp = await fetch(container.dataset.pollHtml, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!resp.ok) return;
      const body = await resp.json();
      // keep keyboard focus where it was: only swap when nothing inside has focus
      if (container.contains(document.activeElement)) return;
      container.innerHTML = body.html;
      localTimes(container);
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    localTimes(document);
    document.querySelectorAll("[data-poll]").forEach(pollJobs);
    document.querySelectorAll("[data-poll-html]").forEach(pollHtml);
  });
})();
