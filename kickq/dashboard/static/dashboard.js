// kickq dashboard: live updates. No framework and no build step.
//
// The server sends a `change` message (server-sent events, /events) at most every 0.3 s while
// jobs change: the event counts, the names touched, some job ids and the latest events. A page
// whose content may have changed re-reads itself, at most once a second: the same URL with
// X-Kickq-Fragment: 1, which returns the content alone, rendered and escaped by the server, and
// swaps it in. Pages that no event describes (workers, schedules) re-read themselves every
// 10 s instead. The feed of latest events is built with textContent only: event data is never
// read as markup.
"use strict";

(function () {
  const main = document.getElementById("live");
  const conn = document.getElementById("conn");
  const feed = document.getElementById("feed");
  if (!main) return;
  // where the dashboard is mounted ("" at the top of a site, "/admin/kickq" inside an app)
  const root = document.body.dataset.root || "";

  const MIN_INTERVAL = 1000; // ms between two re-reads, however busy the queues are
  const HANDOVER = 1000; // ms a deferred job's page waits after a parent's end to re-read
  const POLL = 10000; // ms between two re-reads of a page no event describes (workers, schedules)
  let busy = false;
  let timer = null;
  let last = 0;

  function refresh() {
    if (timer === null) timer = setTimeout(reread, Math.max(0, last + MIN_INTERVAL - Date.now()));
  }

  async function reread() {
    timer = null;
    if (busy) { refresh(); return; }
    busy = true;
    last = Date.now();
    try {
      const response = await fetch(location.href, {
        headers: { "X-Kickq-Fragment": "1" },
        credentials: "same-origin",
        cache: "no-store",
      });
      if (response.ok) {
        const doc = new DOMParser().parseFromString(await response.text(), "text/html");
        main.replaceChildren(...doc.body.childNodes);
        main.dataset.refreshed = String(Date.now());
      }
      polled(response.ok);
    } catch (error) {
      polled(false); // the next change or poll tries again
    } finally {
      busy = false;
    }
  }

  function concerns(change) {
    if (change.overflow) return true;
    if (main.dataset.job) {
      if (change.ids.includes(main.dataset.job)) return true;
      // A deferred job hears of a parent's end through a hand-over that follows the parent's
      // event (and may change the job without an event of its own): re-read a moment later.
      const parents = JSON.parse(main.dataset.parents || "[]");
      if (parents.some((id) => change.ids.includes(id))) setTimeout(refresh, HANDOVER);
      return false;
    }
    if (main.dataset.names) {
      const names = JSON.parse(main.dataset.names);
      return names.some((name) => change.names.includes(name));
    }
    return true;
  }

  function showEvents(recent) {
    if (!feed) return;
    const empty = feed.querySelector(".empty");
    if (empty) empty.remove();
    for (const note of recent) {
      const item = document.createElement("li");
      const kind = document.createElement("span");
      kind.className = "badge event-" + note.event;
      kind.textContent = note.event;
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = note.name;
      item.append(kind, " ", name, " ");
      if (note.event !== "delete") {
        const link = document.createElement("a");
        link.href = root + "/jobs/" + encodeURIComponent(note.id);
        link.textContent = note.id;
        item.append(link);
      } else {
        item.append(note.id);
      }
      feed.prepend(item);
    }
    while (feed.children.length > 20) feed.lastElementChild.remove();
  }

  function polled(ok) {
    if (!conn || main.dataset.refresh !== "poll") return;
    conn.textContent = ok ? "updates every " + POLL / 1000 + " s" : "update failed, retrying";
    conn.classList.toggle("poll", ok);
  }

  function setConnected(live) {
    if (!conn) return;
    conn.textContent = live ? "live" : "reconnecting…";
    conn.classList.toggle("live", live);
  }

  if (main.dataset.refresh === "poll") {
    // no event stream here: say how the page is kept up to date, not "offline"
    if (conn) {
      conn.textContent = "updates every " + POLL / 1000 + " s";
      conn.classList.add("poll");
      conn.title = "this page re-reads itself every " + POLL / 1000 + " seconds";
    }
    setInterval(refresh, POLL);
  } else if (window.EventSource) {
    const source = new EventSource(root + "/events");
    source.addEventListener("open", () => setConnected(true));
    source.addEventListener("error", () => setConnected(false));
    source.addEventListener("change", (message) => {
      const change = JSON.parse(message.data);
      showEvents(change.recent);
      if (concerns(change)) refresh();
    });
  }

  // Destructive actions ask first (the form says what it will do in data-confirm).
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });
})();
