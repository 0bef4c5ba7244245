// The mock site's client: pop-up dialogs and the hashtag grid's infinite scroll.
(function () {
  "use strict";
  const cfg = JSON.parse(document.getElementById("ss-config").textContent);

  function anyDialogOpen() {
    return document.querySelector('[role="dialog"]') !== null;
  }

  function closeDialog(dialog, cookie) {
    if (cookie) document.cookie = cookie + "; path=/; max-age=31536000; samesite=lax";
    dialog.remove();
    if (!anyDialogOpen()) {
      document.body.style.overflow = "";
      maybeLoadMore();
    }
  }

  function wireDialog(dialog) {
    dialog.querySelectorAll("button[data-close]").forEach(function (button) {
      button.addEventListener("click", function () {
        closeDialog(dialog, button.getAttribute("data-cookie"));
      });
    });
  }
  document.querySelectorAll('[role="dialog"]').forEach(wireDialog);
  if (anyDialogOpen()) document.body.style.overflow = "hidden";

  function cookie(name) {
    const m = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return m ? decodeURIComponent(m[1]) : "";
  }
  // What the real web app sends with every API call (the site may require them).
  function apiHeaders() {
    return { "Accept": "application/json", "X-IG-App-ID": cfg.app_id || "", "X-CSRFToken": cookie("csrftoken"),
             "X-Requested-With": "XMLHttpRequest" };
  }
  const chaos = cfg.chaos || {};

  // A form whose submit control is a role=button <div> (the "labels" variant).
  document.querySelectorAll("form [data-submit]").forEach(function (el) {
    el.addEventListener("click", function () { el.closest("form").requestSubmit(); });
  });

  // The login form rendered by script, its button disabled until both fields are typed.
  if (cfg.login_form) setTimeout(function () { renderLogin(cfg.login_form); }, 300);

  function renderLogin(f) {
    const box = document.getElementById("ss-login");
    const form = document.createElement("form");
    form.className = cfg.classes.form;
    const user = document.createElement("input");
    const pass = document.createElement("input");
    pass.type = "password";
    if (f.labels) {
      [[user, f.user, "ss-u"], [pass, f.password, "ss-p"]].forEach(function (x) {
        const label = document.createElement("label");
        label.htmlFor = x[2];
        label.textContent = x[1];
        x[0].id = x[2];
        form.appendChild(label);
        form.appendChild(x[0]);
      });
    } else {
      user.setAttribute("aria-label", f.user);
      user.placeholder = f.user;
      pass.setAttribute("aria-label", f.password);
      pass.placeholder = f.password;
      form.appendChild(user);
      form.appendChild(pass);
    }
    const button = document.createElement("button");
    button.type = "submit";
    button.className = cfg.classes.button;
    button.textContent = f.button;
    button.disabled = true;
    form.appendChild(button);
    const alert = document.createElement("p");
    form.appendChild(alert);
    function update() { button.disabled = !(user.value && pass.value.length >= 1); }
    user.addEventListener("input", update);
    pass.addEventListener("input", update);
    form.addEventListener("submit", async function (e) {
      e.preventDefault();
      if (button.disabled) return;
      const body = new URLSearchParams({ username: user.value, password: pass.value, next: f.next });
      const headers = apiHeaders();
      headers["Content-Type"] = "application/x-www-form-urlencoded";
      const r = await fetch("/accounts/login/ajax/", { method: "POST", body: body, headers: headers, credentials: "same-origin" });
      const data = await r.json();
      if (data.authenticated) { location.href = f.next; return; }
      if (data.two_factor_required) { location.href = "/accounts/login/two_factor/?next=" + encodeURIComponent(f.next); return; }
      alert.setAttribute("role", "alert");
      alert.textContent = data.message || ("HTTP " + r.status);
    });
    box.replaceWith(form);
  }

  // Late pop-up (maybe in another language) that blocks loading until it is closed.
  if (chaos.late_dialog_ms && cfg.tag) {
    setTimeout(function () {
      const holder = document.createElement("div");
      holder.innerHTML = cfg.late_dialog;
      const dialog = holder.firstElementChild;
      document.body.appendChild(dialog);
      wireDialog(dialog);
      document.body.style.overflow = "hidden";
    }, chaos.late_dialog_ms);
  }

  // Beacons: a keepalive POST whose answer never ends, and a fetch the page cancels.
  if (chaos.hung_beacons && cfg.tag) {
    fetch("/api/v1/web/consent/update/", { method: "POST", keepalive: true, body: "consent=1", headers: apiHeaders() })
      .catch(function () {});
    const ctl = new AbortController();
    fetch("/api/v1/web/activity/", { signal: ctl.signal, headers: apiHeaders() })
      .then(function (r) { setTimeout(function () { ctl.abort(); }, 50); return r.text(); })
      .catch(function () {});
  }

  // A session that ended: the app goes to the login page by itself (and comes back after it).
  function toLogin() {
    location.href = "/accounts/login/?next=" + encodeURIComponent(location.pathname);
  }

  // A client-rendered post page: the data comes from the media API, then the image is drawn.
  if (cfg.post) {
    fetch("/api/v1/media/" + encodeURIComponent(cfg.post.media_id) + "/info/",
          { credentials: "same-origin", headers: apiHeaders() })
      .then(function (r) {
        if (r.status === 401) { toLogin(); return null; }
        return r.json();
      })
      .then(function (data) {
        if (!data || !data.items || !data.items.length) return;
        const media = data.items[0];
        const best = media.image_versions2.candidates[0];
        const post = document.getElementById("ss-post");
        const img = document.createElement("img");
        img.src = best.url;
        img.alt = "Photo by " + media.user.username;
        post.replaceChildren(img);
      })
      .catch(function () {});
  }

  const grid = document.querySelector("main [data-grid]");
  const sentinel = document.getElementById("ss-sentinel");
  if (!grid || !sentinel || !cfg.tag) return;
  let cursor = cfg.next_max_id;
  let more = cfg.more_available;
  let loading = false;
  if (!more) document.getElementById("ss-status").textContent = "No more posts";

  function nearBottom() {
    return sentinel.getBoundingClientRect().top < window.innerHeight + 400;
  }

  function tile(media) {
    const article = document.createElement("article");
    article.className = cfg.classes.article;
    const link = document.createElement("a");
    link.className = cfg.classes.link;
    link.href = "/p/" + media.code + "/";
    const img = document.createElement("img");
    img.className = cfg.classes.img;
    const byWidth = {};
    media.image_versions2.candidates.forEach(function (c) { byWidth[c.width] = c.url; });
    const widths = Object.keys(byWidth).map(Number).sort(function (a, b) { return a - b; });
    img.src = byWidth[widths[0]];
    img.srcset = widths.map(function (w) { return byWidth[w] + " " + w + "w"; }).join(", ");
    img.sizes = "(max-width: 735px) 33vw, 293px";
    img.alt = "Photo by " + media.user.username;
    img.loading = "lazy";
    link.appendChild(img);
    article.appendChild(link);
    return article;
  }

  async function loadMore(force) {
    if (loading || !more || (!force && anyDialogOpen())) return;
    loading = true;
    let retryAfterMs = 0;
    try {
      const url = "/api/v1/tags/" + encodeURIComponent(cfg.tag) + "/sections/?max_id=" + encodeURIComponent(cursor);
      const first = !grid.querySelector("article");
      const response = await fetch(url, { credentials: "same-origin", headers: apiHeaders() });
      if (response.status === 401) {
        more = false;
        toLogin();
        return;
      }
      if (response.status === 429) {
        if (cfg.first_from_api && first) {  // the app shows an error and waits for a reload
          document.getElementById("ss-status").textContent = "Please wait a few minutes before you try again.";
          more = false;
          return;
        }
        retryAfterMs = 1000 * parseFloat(response.headers.get("Retry-After") || "1");
        return;
      }
      const data = await response.json();
      if (!response.ok || data.status !== "ok") {
        document.getElementById("ss-status").textContent = data.message || ("HTTP " + response.status);
        more = false;
        return;
      }
      const page = data.data && data.data.recent ? data.data.recent : data;  // the web_info shape nests it
      page.sections.forEach(function (section) {
        section.layout_content.medias.forEach(function (item) { grid.appendChild(tile(item.media)); });
      });
      cursor = page.next_max_id;
      more = page.more_available;
      grid.setAttribute("data-count", String(grid.querySelectorAll("article").length));
      prune();
      if (!more) document.getElementById("ss-status").textContent = "No more posts";
    } catch (err) {
      retryAfterMs = 2000;
    } finally {
      loading = false;
      if (retryAfterMs) setTimeout(maybeLoadMore, retryAfterMs);
      else if (more) requestAnimationFrame(maybeLoadMore);
    }
  }

  // A virtualised grid: rows far above the viewport leave the DOM (a spacer keeps the height).
  function prune() {
    if (!chaos.virtual_grid) return;
    const tiles = grid.querySelectorAll("article");
    const rowHeight = tiles.length ? tiles[0].getBoundingClientRect().height + 4 : 0;
    let removed = 0;
    for (let i = 0; i + 3 <= tiles.length - chaos.virtual_grid * 3; i += 3) {
      if (tiles[i + 2].getBoundingClientRect().bottom > -chaos.virtual_grid * rowHeight) break;
      tiles[i].remove(); tiles[i + 1].remove(); tiles[i + 2].remove();
      removed += 1;
    }
    if (removed) grid.style.paddingTop = (parseFloat(grid.style.paddingTop || "0") + removed * rowHeight) + "px";
  }
  window.addEventListener("scroll", prune, { passive: true });

  function maybeLoadMore() {
    if (grid && sentinel && cfg.tag && nearBottom()) loadMore();
  }

  if (cfg.first_from_api && more) loadMore(true);  // the first page comes in even behind pop-ups

  new IntersectionObserver(function (entries) {
    if (entries.some(function (e) { return e.isIntersecting; })) loadMore();
  }, { rootMargin: "0px 0px 400px 0px" }).observe(sentinel);
  window.addEventListener("scroll", maybeLoadMore, { passive: true });
})();
