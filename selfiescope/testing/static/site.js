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

  document.querySelectorAll('[role="dialog"]').forEach(function (dialog) {
    dialog.querySelectorAll("button[data-close]").forEach(function (button) {
      button.addEventListener("click", function () {
        closeDialog(dialog, button.getAttribute("data-cookie"));
      });
    });
  });
  if (anyDialogOpen()) document.body.style.overflow = "hidden";

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

  async function loadMore() {
    if (loading || !more || anyDialogOpen()) return;
    loading = true;
    let retryAfterMs = 0;
    try {
      const url = "/api/v1/tags/" + encodeURIComponent(cfg.tag) + "/sections/?max_id=" + encodeURIComponent(cursor);
      const response = await fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json", "X-IG-App-ID": "936619743392459" } });
      if (response.status === 429) {
        retryAfterMs = 1000 * parseFloat(response.headers.get("Retry-After") || "1");
        return;
      }
      const data = await response.json();
      if (!response.ok || data.status !== "ok") {
        document.getElementById("ss-status").textContent = data.message || ("HTTP " + response.status);
        more = false;
        return;
      }
      data.sections.forEach(function (section) {
        section.layout_content.medias.forEach(function (item) { grid.appendChild(tile(item.media)); });
      });
      cursor = data.next_max_id;
      more = data.more_available;
      grid.setAttribute("data-count", String(grid.querySelectorAll("article").length));
      if (!more) document.getElementById("ss-status").textContent = "No more posts";
    } catch (err) {
      retryAfterMs = 2000;
    } finally {
      loading = false;
      if (retryAfterMs) setTimeout(maybeLoadMore, retryAfterMs);
      else if (more) requestAnimationFrame(maybeLoadMore);
    }
  }

  function maybeLoadMore() {
    if (grid && sentinel && cfg.tag && nearBottom()) loadMore();
  }

  new IntersectionObserver(function (entries) {
    if (entries.some(function (e) { return e.isIntersecting; })) loadMore();
  }, { rootMargin: "0px 0px 400px 0px" }).observe(sentinel);
  window.addEventListener("scroll", maybeLoadMore, { passive: true });
})();
