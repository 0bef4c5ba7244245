// selfiescope review: selection, keyboard actions and paging for the grid and the detail view.
// Plain script, no library: the app's Content-Security-Policy allows only this file.
"use strict";
(() => {
  const body = document.body;
  const csrf = body.dataset.csrf;
  const labels = JSON.parse(body.dataset.labels || "[]");
  const view = body.dataset.view;
  const status = document.getElementById("status");
  const REQUEST_DEADLINE_MS = 150000;  // above the server's own deadline on the dataset (120 s)
  const POLL_MS = 3000;

  function say(text, kind) {
    status.textContent = text;
    status.className = "status " + (kind || "");
    status.dataset.kind = kind || "";
  }

  // A request with a deadline: a server that does not answer is reported, never waited on forever.
  async function call(path, options) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), REQUEST_DEADLINE_MS);
    try {
      const res = await fetch(path, Object.assign({ credentials: "same-origin", signal: abort.signal }, options || {}));
      let data = null;
      try { data = await res.json(); } catch (e) { data = null; }
      return { ok: res.ok, status: res.status, data: data };
    } catch (e) {
      return { ok: false, status: 0, data: { error: "the server did not answer" } };
    } finally {
      clearTimeout(timer);
    }
  }

  // A change: "saved" only once the server has answered that it stored it.
  async function post(path, payload, pending) {
    say(pending || "saving…", "pending");
    const res = await call(path, {
      method: "POST",
      headers: { "content-type": "application/json", "x-csrf-token": csrf },
      body: JSON.stringify(payload || {}),
    });
    if (!res.ok) {
      const why = (res.data && res.data.error) || ("HTTP " + res.status);
      say("not saved: " + why, res.data && res.data.busy ? "busy" : "error");
      if (res.data && res.data.busy) pollSoon();  // the bar names the run that holds the dataset
      return null;
    }
    return res.data;
  }

  function flashAfterReload(text) { sessionStorage.setItem("selfiescope-flash", text); }
  const flash = sessionStorage.getItem("selfiescope-flash");
  if (flash) { sessionStorage.removeItem("selfiescope-flash"); say(flash, "saved"); }

  // --- the grid ---------------------------------------------------------------------------
  const grid = document.getElementById("grid");
  const selected = new Set();
  let focusIndex = -1;
  let anchor = -1;

  function tiles() { return Array.from(grid ? grid.querySelectorAll("li.tile") : []); }

  function paint() {
    tiles().forEach((li, i) => {
      li.classList.toggle("selected", selected.has(li.dataset.id));
      li.classList.toggle("focus", i === focusIndex);
    });
    const n = selected.size;
    const count = document.getElementById("selection");
    if (count) count.textContent = n ? n + " selected" : "";
  }

  function focusOn(i) {
    const all = tiles();
    if (!all.length) return;
    focusIndex = Math.max(0, Math.min(all.length - 1, i));
    all[focusIndex].scrollIntoView({ block: "nearest" });
    paint();
  }

  function columns() {
    const all = tiles();
    if (all.length < 2) return 1;
    const top = all[0].offsetTop;
    const n = all.findIndex((li) => li.offsetTop !== top);
    return n > 0 ? n : all.length;
  }

  function targets() {
    if (view === "detail") return [body.dataset.id];
    if (selected.size) return Array.from(selected);
    const all = tiles();
    return focusIndex >= 0 && all[focusIndex] ? [all[focusIndex].dataset.id] : [];
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function tileElement(t) {
    const li = el("li", "tile decision-" + t.decision + (t.excluded ? " excluded" : "") + (t.reviewed ? " reviewed" : ""));
    li.dataset.id = t.id;
    li.dataset.label = t.label;
    const a = el("a", "open");
    const query = body.dataset.query;
    a.href = "/i/" + t.id + (query ? "?" + query : "");
    a.draggable = false;
    if (t.has_thumbnail) {
      const img = el("img");
      img.src = "/thumb/" + t.id; img.alt = ""; img.loading = "lazy"; img.width = 160; img.height = 160;
      a.appendChild(img);
    } else {
      a.appendChild(el("span", "nothumb", "bytes not reachable"));
    }
    li.appendChild(a);
    const badges = el("span", "badges");
    badges.appendChild(el("span", "lbl", t.label));
    if (t.decision !== "accepted") {
      const dec = el("span", "dec", t.decision + (t.reason ? ": " + t.reason : ""));
      dec.title = t.reason || "";
      badges.appendChild(dec);
    }
    if (t.probability !== null && t.probability !== undefined) badges.appendChild(el("span", "p", "p=" + t.probability.toFixed(2)));
    if (t.excluded) badges.appendChild(el("span", "ex", "excluded"));
    if (t.reviewed) badges.appendChild(el("span", "rv", "reviewed"));
    li.appendChild(badges);
    return li;
  }

  function update(saved) {
    for (const t of saved || []) {
      const old = grid && grid.querySelector('li.tile[data-id="' + t.id + '"]');
      if (old) old.replaceWith(tileElement(t));
    }
    paint();
  }

  function setTotal(n) {
    const total = document.getElementById("total");
    if (total) total.textContent = String(n);
  }

  async function act(action, value, note) {
    const ids = targets();
    if (!ids.length) { say("select an image first (click, or arrows and x)", "error"); return; }
    const data = await post("/api/action", { action: action, ids: ids, value: value, note: note });
    if (!data) return;
    // The answer carries the saved state of the first few hundred images: a larger selection reloads.
    const partial = data.changed > 0 && (data.tiles || []).length < ids.length && data.tiles_limited;
    if (view === "detail" || partial) { flashAfterReload("saved: " + data.message); location.reload(); return; }
    update(data.tiles);
    say("saved: " + data.message, "saved");
  }

  async function undo() {
    const data = await post("/api/undo", {}, "undoing…");
    if (!data) return;
    flashAfterReload("saved: " + data.message);
    location.reload();
  }

  async function forget() {
    const ids = targets();
    if (!ids.length) { say("select an image first (click, or arrows and x)", "error"); return; }
    const plan = await post("/api/forget-plan", { ids: ids }, "checking what would go…");
    if (!plan) return;
    say("", "");
    if (!window.confirm(plan.plan + "\n\nForget " + ids.length + " image(s)? This cannot be undone.")) {
      say("nothing forgotten", "");
      return;
    }
    const data = await post("/api/forget", { ids: ids }, "forgetting…");
    if (!data) return;
    if (view === "detail") {
      flashAfterReload("saved: " + data.message);
      location.href = document.querySelector("a.back").getAttribute("href");
      return;
    }
    for (const id of data.forgotten || ids) {
      const li = grid.querySelector('li.tile[data-id="' + id + '"]');
      if (li) li.remove();
      selected.delete(id);
    }
    const total = document.getElementById("total");
    if (total) setTotal(Math.max(0, Number(total.textContent) - (data.forgotten || ids).length));
    shownTotal = Math.max(0, shownTotal - (data.forgotten || ids).length);
    focusOn(Math.min(focusIndex, tiles().length - 1));
    say("saved: " + data.message, "saved");
  }

  function exclude() {
    const n = targets().length;
    if (!n) { say("select an image first (click, or arrows and x)", "error"); return; }
    const note = window.prompt("Exclude " + n + " image(s) from training. A note saying why (optional):", "");
    if (note === null) return;
    act("exclude", null, note);
  }

  if (grid) {
    grid.addEventListener("click", (ev) => {
      const li = ev.target.closest("li.tile");
      if (!li || ev.button !== 0) return;
      ev.preventDefault();
      const all = tiles();
      const i = all.indexOf(li);
      if (ev.shiftKey && anchor >= 0) {
        const [a, b] = anchor < i ? [anchor, i] : [i, anchor];
        all.slice(a, b + 1).forEach((t) => selected.add(t.dataset.id));
      } else if (ev.ctrlKey || ev.metaKey) {
        if (selected.has(li.dataset.id)) selected.delete(li.dataset.id); else selected.add(li.dataset.id);
        anchor = i;
      } else {
        selected.clear();
        selected.add(li.dataset.id);
        anchor = i;
      }
      focusIndex = i;
      paint();
    });
    grid.addEventListener("dblclick", (ev) => {
      const li = ev.target.closest("li.tile");
      if (li) location.href = li.querySelector("a.open").getAttribute("href");
    });
  }

  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.target.closest && ev.target.closest("input, textarea, select")) return;
    const k = ev.key;
    const moves = { ArrowRight: 1, j: 1, J: 1, ArrowLeft: -1, k: -1, K: -1, ArrowDown: "down", ArrowUp: "up" };
    let handled = true;
    if (view === "grid" && k in moves) {
      const step = moves[k] === "down" ? columns() : moves[k] === "up" ? -columns() : moves[k];
      const from = focusIndex;
      focusOn(focusIndex + step);
      if (ev.shiftKey) {  // shift + a move extends the selection over the tiles passed
        const all = tiles();
        const [a, b] = from < focusIndex ? [Math.max(from, 0), focusIndex] : [focusIndex, from];
        all.slice(a, b + 1).forEach((t) => selected.add(t.dataset.id));
        anchor = focusIndex;
        paint();
      }
    }
    else if (view === "grid" && k === "x") {
      const li = tiles()[focusIndex];
      if (li) {
        if (selected.has(li.dataset.id)) selected.delete(li.dataset.id); else selected.add(li.dataset.id);
        anchor = focusIndex;
        paint();
      }
    } else if (view === "grid" && k === "Escape") { selected.clear(); paint(); }
    else if (view === "grid" && (k === "Enter" || k === "o")) {
      const li = tiles()[focusIndex];
      if (li) location.href = li.querySelector("a.open").getAttribute("href");
    } else if (/^[1-9]$/.test(k) && labels[Number(k) - 1] !== undefined) act("relabel", labels[Number(k) - 1]);
    else if (k === "e") exclude();
    else if (k === "i") act("include");
    else if (k === "r") act("reviewed");
    else if (k === "u") undo();
    else if (k === "f") forget();
    else handled = false;
    if (handled) ev.preventDefault();
  });

  // --- paging and news ----------------------------------------------------------------------
  let shownTotal = 0;
  let pageBase = null;  // the grid's filters and sort, as a query
  let version = Number(body.dataset.version);

  // Every few seconds: which run holds the dataset now, and (on the grid) whether images came.
  let polling = false;
  async function poll() {
    if (polling) return;  // the poll under way sets the next timer
    polling = true;
    try {
      await pollOnce();
    } finally {
      polling = false;
      clearTimeout(pollTimer);
      pollTimer = setTimeout(poll, POLL_MS);
    }
  }
  async function pollOnce() {
    const res = await call("/api/version");
    const busyNote = document.getElementById("busy");
    if (res.ok && busyNote) {
      busyNote.hidden = !res.data.busy_note;
      busyNote.textContent = res.data.busy_note || "";
    }
    if (res.ok && res.data.version !== version) {
      version = res.data.version;
      if (pageBase !== null) {
        const page = await call("/api/page?" + pageBase + "&limit=0");
        if (page.ok && page.data.total > shownTotal) {
          const n = page.data.total - shownTotal;
          document.getElementById("news-text").textContent = n + " new image" + (n === 1 ? "" : "s");
          document.getElementById("news").hidden = false;
        }
      }
    }
  }
  // One poll at a time: an earlier one brought forward replaces the waiting one.
  function pollSoon() {
    clearTimeout(pollTimer);
    pollTimer = setTimeout(poll, 0);
  }
  let pollTimer = setTimeout(poll, POLL_MS);

  if (view === "grid") {
    const state = JSON.parse(body.dataset.page || "{}");
    let cursor = state.next_cursor || null;
    shownTotal = state.total || 0;
    const query = body.dataset.query;
    const sort = body.dataset.sort;
    const base = (query ? query + "&" : "") + "sort=" + encodeURIComponent(sort);
    pageBase = base;
    const more = document.getElementById("more");
    let loading = false;

    async function loadMore() {
      if (loading || !cursor) return;
      loading = true;
      const res = await call("/api/page?" + base + "&cursor=" + encodeURIComponent(cursor));
      loading = false;
      if (!res.ok) { more.textContent = "could not load more: " + ((res.data && res.data.error) || res.status); return; }
      for (const t of res.data.tiles) grid.appendChild(tileElement(t));
      cursor = res.data.next_cursor;
      more.hidden = !cursor;
      paint();
      if (cursor && more.getBoundingClientRect().top < window.innerHeight) loadMore();
    }
    if (more && "IntersectionObserver" in window) {
      new IntersectionObserver((entries) => { if (entries.some((e) => e.isIntersecting)) loadMore(); }).observe(more);
    }

    document.getElementById("news-reload").addEventListener("click", (ev) => { ev.preventDefault(); location.reload(); });
    if (tiles().length) focusOn(0);
  }
})();
