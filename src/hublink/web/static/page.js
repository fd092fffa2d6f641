// hublink's local page: refresh the status without a reload, and send the
// buttons' forms with fetch. Without this script every form still works as a
// plain post; with it nothing runs inline (the page's CSP forbids that).
"use strict";

(function () {
  const REFRESH_MS = 5000;
  let lastStatus = null;
  let busy = false;

  // Swap the parts of the current page that a freshly rendered one changed.
  function swap(html, ids) {
    const fresh = new DOMParser().parseFromString(html, "text/html");
    const focused = document.activeElement && document.activeElement.closest("form")
      ? document.activeElement.closest("form").getAttribute("action") : null;
    for (const id of ids) {
      const now = document.getElementById(id);
      const next = fresh.getElementById(id);
      if (now && next) {
        now.replaceWith(document.adoptNode(next));
      } else if (!now && next) {
        document.getElementById("main").appendChild(document.adoptNode(next));
      }
    }
    enhance(document);
    if (focused) {
      const again = document.querySelector('form[action="' + CSS.escape(focused) + '"] button');
      if (again) again.focus();
    }
  }

  function announce(text) {
    const live = document.getElementById("live");
    if (live) {
      live.textContent = "";
      window.setTimeout(function () { live.textContent = text; }, 50);
    }
  }

  async function refresh() {
    if (busy || !document.getElementById("status")) return;
    try {
      const answer = await fetch("/api/status", { headers: { Accept: "application/json" } });
      if (answer.status === 401) { window.location.reload(); return; }
      if (!answer.ok) return;
      const text = await answer.text();
      if (text === lastStatus) return;
      const first = lastStatus === null;
      lastStatus = text;
      if (first) return;
      const page = await fetch("/", { headers: { Accept: "text/html" } });
      if (page.ok) swap(await page.text(), ["status"]);
    } catch (err) {
      // The daemon may be restarting: the next tick tries again.
    }
  }

  async function submit(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const button = form.querySelector("button");
    busy = true;
    if (button) { button.disabled = true; button.setAttribute("aria-busy", "true"); }
    try {
      const answer = await fetch(form.action, {
        method: "POST",
        body: new URLSearchParams(new FormData(form)),
        headers: { Accept: "text/html" },
      });
      const html = await answer.text();
      swap(html, ["status", "checks"]);
      showNotice(html);
    } catch (err) {
      form.submit();
    } finally {
      busy = false;
      const again = document.querySelector('form[action="' + CSS.escape(form.getAttribute("action")) + '"] button');
      if (again) { again.disabled = false; again.removeAttribute("aria-busy"); }
    }
  }

  // The server puts the action's result in a notice on the next page.
  function showNotice(html) {
    const fresh = new DOMParser().parseFromString(html, "text/html");
    let notice = fresh.querySelector("#main > .notice");
    if (!notice && fresh.querySelector("#main .error")) {
      notice = fresh.querySelector("#main .error");
      notice.classList.add("notice");
    }
    const old = document.querySelector("#main > .notice");
    if (old) old.remove();
    if (notice) {
      notice.removeAttribute("role");
      document.getElementById("main").prepend(document.adoptNode(notice));
      announce(notice.textContent.trim());
    }
  }

  function enhance(root) {
    for (const form of root.querySelectorAll("form[data-enhance]")) {
      if (!form.dataset.enhanced) {
        form.dataset.enhanced = "1";
        form.addEventListener("submit", submit);
      }
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    enhance(document);
    refresh();
    window.setInterval(refresh, REFRESH_MS);
  });
})();
