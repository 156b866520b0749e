// Live updates of a dashboard page, from the server-sent events of /live.
// Every fragment comes rendered (and escaped) by the server; this script only puts it in place.
"use strict";
(function () {
  const main = document.querySelector("main[data-live]");
  if (!main || !window.EventSource) return;
  const banner = document.getElementById("live-status");
  const page = main.dataset.page;
  let source = null;
  let retryTimer = null;

  function showStatus(connected, text) {
    if (!banner) return;
    banner.hidden = connected;
    banner.textContent = connected ? "" : "Live updates paused: " + text;
    main.dataset.liveConnected = connected ? "yes" : "no";
  }

  function replace(id, html) {
    const element = document.getElementById(id);
    if (!element) return false;
    const holder = document.createElement("template");
    holder.innerHTML = html;
    const fresh = holder.content.firstElementChild;
    if (fresh) element.replaceWith(fresh);
    return true;
  }

  function newer(element, update) {
    return !element || Number(element.dataset.updated || 0) <= update.updated;
  }

  function matchesFilters(update) {
    const state = main.dataset.filterState;
    const study = main.dataset.filterStudy;
    return (!state || update.state === state) && (!study || update.studies.includes(study));
  }

  function applyToList(update) {
    const id = "row-" + update.id;
    const html = update.parts[id];
    if (!html) return;
    const row = document.getElementById(id);
    if (row) {
      if (newer(row, update)) replace(id, html);
      return;
    }
    if (main.dataset.first !== "yes" || !matchesFilters(update)) return;
    const body = document.getElementById("release-rows");
    const empty = document.getElementById("no-releases");
    if (empty) empty.remove();
    const holder = document.createElement("template");
    holder.innerHTML = html;
    if (holder.content.firstElementChild) body.prepend(holder.content.firstElementChild);
  }

  async function reloadFragment(name, targetId) {
    const response = await fetch("/releases/" + main.dataset.release + "/fragments/" + name, {
      credentials: "same-origin",
      headers: { Accept: "text/html" },
    });
    if (!response.ok) return;
    const target = document.getElementById(targetId);
    if (target) target.innerHTML = await response.text();
  }

  function applyToRelease(update) {
    if (update.id !== main.dataset.release || !newer(main, update)) return;
    for (const [id, html] of Object.entries(update.parts)) replace(id, html);
    main.dataset.updated = String(update.updated);
    const held = update.held ? "yes" : "no";
    if (main.dataset.state !== update.state || main.dataset.held !== held) {
      main.dataset.state = update.state;
      main.dataset.held = held;
      reloadFragment("actions", "actions");
      if (main.dataset.eventsFirst === "yes") reloadFragment("events", "audit");
    }
  }

  function connect() {
    const url = new URL(main.dataset.live, window.location.href);
    url.searchParams.set("since", main.dataset.since);
    source = new EventSource(url);
    source.addEventListener("update", function (event) {
      const update = JSON.parse(event.data);
      main.dataset.since = event.lastEventId || main.dataset.since;
      if (page === "releases") applyToList(update);
      else applyToRelease(update);
    });
    source.addEventListener("status", function (event) {
      const status = JSON.parse(event.data);
      showStatus(status.connected, status.text);
    });
    source.addEventListener("reload", function () {
      window.location.reload();
    });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) {
        // The server refused the stream (it is restarting, say): try again from scratch shortly.
        showStatus(false, "the dashboard server is not answering; retrying");
        clearTimeout(retryTimer);
        retryTimer = setTimeout(connect, 3000);
      } else {
        showStatus(false, "the connection to the dashboard server was lost; reconnecting");
      }
    });
  }

  // Keep the "5m 03s ago" texts current between updates.
  function refreshAges() {
    const now = Date.now();
    for (const time of document.querySelectorAll("time[data-age], td[data-label='Age'] time")) {
      const seconds = Math.max(0, (now - Date.parse(time.getAttribute("datetime"))) / 1000);
      time.textContent = seconds < 1 ? "just now" : describe(seconds) + " ago";
    }
  }
  function describe(seconds) {
    if (seconds < 10) return seconds.toFixed(1) + "s";
    const whole = Math.floor(seconds);
    const pad = (n) => String(n).padStart(2, "0");
    if (whole < 60) return whole + "s";
    if (whole < 3600) return Math.floor(whole / 60) + "m " + pad(whole % 60) + "s";
    if (whole < 86400) return Math.floor(whole / 3600) + "h " + pad(Math.floor((whole % 3600) / 60)) + "m";
    return Math.floor(whole / 86400) + "d " + Math.floor((whole % 86400) / 3600) + "h";
  }

  connect();
  setInterval(refreshAges, 15000);
})();
