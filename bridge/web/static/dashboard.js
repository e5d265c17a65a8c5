// The usage dashboard: reads the bridge's JSON API with the key the user typed. The key lives in this
// tab's sessionStorage only (never a URL, a cookie or localStorage); every value from the API is put in
// the page as text (textContent), never as markup.
"use strict";
(() => {
  const KEY = "bridge.dashboard.key";
  const ROLE = "bridge.dashboard.role";
  const LIVE_EVERY_MS = 5000;
  const PAGE = 50;
  const DAY_MS = 86400000;
  const MAX_DAYS = 1000; // the API's largest page: one row per day
  const LIVE_STATES = ["pending", "dialing", "connecting", "active"];
  const TOKENS = ["input_text_tokens", "output_text_tokens", "input_audio_tokens", "output_audio_tokens"];
  // The price table is in US dollars (estimated_cost_usd); costs per call are fractions of a cent.
  const money = new Intl.NumberFormat(undefined, {
    style: "currency", currency: "USD", minimumFractionDigits: 2, maximumFractionDigits: 4,
  });
  const count = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const $ = (id) => document.getElementById(id);

  let session = null; // {key, role: "admin" | "company"}
  let liveTimer = 0;
  let liveBusy = false;
  let generation = 0; // answers to an older load (or an earlier key) are dropped
  let conversationOffset = 0;
  let shown = null; // the range the tables show: paging and breakdowns keep to it

  const apiError = (status, message) => Object.assign(new Error(message), { status });

  async function api(path, params = {}, key = session && session.key) {
    const url = new URL(path, location.origin);
    for (const [name, value] of Object.entries(params)) url.searchParams.set(name, String(value));
    let response;
    try {
      response = await fetch(url, {
        headers: { Authorization: "Bearer " + key, Accept: "application/json" },
        cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer",
      });
    } catch {
      throw apiError(0, "the bridge did not answer");
    }
    const body = await response.json().catch(() => null);
    if (!response.ok || !body || body.success !== true) {
      throw apiError(response.status, (body && body.error) || response.statusText || "request failed");
    }
    return body.data;
  }

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (name === "class") node.className = value;
      else if (name.includes("-")) node.setAttribute(name, value);
      else node[name] = value;
    }
    for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
    return node;
  }

  function svg(tag, attributes = {}, text = null) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    if (text !== null) node.textContent = text;
    return node;
  }

  const isoDay = (ms) => new Date(ms).toISOString().slice(0, 10);
  const when = (iso) => (iso ? iso.replace("T", " ").slice(0, 19) : "—");
  const duration = (s) => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, "0")}`;
  const num = (value) => el("td", { class: "num" }, count.format(value));
  const cost = (value) => el("td", { class: "num cost" }, money.format(value));
  const sums = (row, withCalls = true) => [
    ...(withCalls ? [num(row.calls)] : []), ...TOKENS.map((name) => num(row[name])), cost(row.estimated_cost_usd),
  ];

  function fill(tbody, rows, empty) {
    const columns = tbody.closest("table").tHead.rows[0].cells.length;
    tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colSpan: columns, class: "empty" }, empty))]));
  }

  function say(text, isError = false) {
    $("status").textContent = text;
    $("status").classList.toggle("error", isError);
  }

  function range() {
    const start = Date.parse($("start").value + "T00:00:00Z");
    const end = Date.parse($("end").value + "T00:00:00Z");
    if (Number.isNaN(start) || Number.isNaN(end) || start > end) return null;
    if ((end - start) / DAY_MS >= MAX_DAYS) return null;
    const params = { start_date: isoDay(start) + "T00:00:00Z", end_date: isoDay(end + DAY_MS) + "T00:00:00Z" };
    return { start, end, params };
  }

  function fail(error) {
    if (error.status === 401) return logout("The key was refused (revoked or changed?): enter it again.");
    if (error.status === 429) return say("Too many requests: wait a moment and try again.", true);
    return say("Could not load: " + error.message, true);
  }

  // -- usage -------------------------------------------------------------------------------------

  function drawTotals(totals) {
    const items = [
      ["Estimated cost", money.format(totals.estimated_cost_usd)], ["Calls", count.format(totals.calls)],
      ["Text tokens in / out", `${count.format(totals.input_text_tokens)} / ${count.format(totals.output_text_tokens)}`],
      ["Audio tokens in / out", `${count.format(totals.input_audio_tokens)} / ${count.format(totals.output_audio_tokens)}`],
    ];
    $("totals").replaceChildren(...items.map(([name, value]) => el("div", {}, el("dt", {}, name), el("dd", {}, value))));
  }

  function niceTop(value) {
    const power = 10 ** Math.floor(Math.log10(value));
    return [1, 2, 2.5, 5, 10].map((m) => m * power).find((top) => top >= value);
  }

  function drawChart(rows, r) {
    const byDay = new Map(rows.map((row) => [row.day, row]));
    const days = [];
    for (let t = r.start; t <= r.end; t += DAY_MS) days.push(isoDay(t));
    const [width, height, left, bottom, top, right] = [760, 240, 72, 30, 12, 8];
    const plotW = width - left - right, plotH = height - top - bottom;
    const most = Math.max(0, ...days.map((day) => (byDay.get(day) || {}).estimated_cost_usd || 0));
    const ceiling = most > 0 ? niceTop(most) : 0.01;
    const y = (value) => top + plotH - (value / ceiling) * plotH;
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": "chart-title" });
    for (let i = 0; i <= 4; i++) {
      const value = (ceiling * i) / 4;
      chart.append(svg("line", { x1: left, x2: width - right, y1: y(value), y2: y(value), class: "grid" }));
      chart.append(svg("text", { x: left - 6, y: y(value) + 4, class: "axis", "text-anchor": "end" }, money.format(value)));
    }
    const slot = plotW / days.length;
    const labelEvery = Math.ceil(days.length / 10);
    days.forEach((day, i) => {
      const row = byDay.get(day) || { estimated_cost_usd: 0, calls: 0 };
      const x = left + i * slot;
      const bar = svg("rect", {
        x: x + slot * 0.15, width: Math.max(1, slot * 0.7), y: y(row.estimated_cost_usd),
        height: Math.max(0, plotH + top - y(row.estimated_cost_usd)), class: "bar", "data-day": day,
      });
      bar.append(svg("title", {}, `${day}: ${money.format(row.estimated_cost_usd)}, ${count.format(row.calls)} calls`));
      chart.append(bar);
      if (i % labelEvery === 0) {
        chart.append(svg("text", { x: x + slot / 2, y: height - 10, class: "axis", "text-anchor": "middle" }, day.slice(5)));
      }
    });
    chart.append(svg("line", { x1: left, x2: width - right, y1: top + plotH, y2: top + plotH, class: "baseline" }));
    $("chart").replaceChildren(chart);
    const listed = rows.map((row) => el("tr", { "data-day": row.day }, el("th", { scope: "row" }, row.day), ...sums(row)));
    fill($("days-body"), listed, "No usage in this range.");
  }

  function modelRows(rows) {
    return rows.map((row) => el("tr", { "data-model": `${row.provider}/${row.model}` },
      el("th", { scope: "row" }, row.provider || "—"), el("td", {}, row.model || "—"), ...sums(row)));
  }

  function drawCompanies(rows) {
    fill($("companies-body"), rows.map((row) => {
      const button = el("button", { type: "button", class: "link", "aria-expanded": "false" }, row.company_id);
      const tr = el("tr", { "data-company": row.company_id }, el("th", { scope: "row" }, button), ...sums(row));
      button.addEventListener("click", () => toggleBreakdown(tr, button, row.company_id));
      return tr;
    }), "No usage in this range.");
  }

  async function toggleBreakdown(tr, button, company) {
    const next = tr.nextElementSibling;
    if (next && next.classList.contains("breakdown")) {
      next.remove();
      button.setAttribute("aria-expanded", "false");
      return;
    }
    button.disabled = true;
    const mine = generation;
    try {
      const params = { ...shown.params, group_by: "model", company_id: company, limit: 1000 };
      const data = await api("/api/admin/usage", params);
      if (mine !== generation || !tr.isConnected) return;
      const head = ["Type", "Model", "Calls", "Text in", "Text out", "Audio in", "Audio out", "Est. cost"];
      const inner = el("table", { class: "inner" }, el("caption", {}, `${company}: by model`),
        el("thead", {}, el("tr", {}, ...head.map((name, i) => el("th", { scope: "col", class: i > 1 ? "num" : "" }, name)))),
        el("tbody"));
      fill(inner.tBodies[0], modelRows(data.rows), "No usage in this range.");
      tr.after(el("tr", { class: "breakdown", "data-breakdown": company }, el("td", { colSpan: 7 }, inner)));
      button.setAttribute("aria-expanded", "true");
    } catch (error) {
      fail(error);
    } finally {
      button.disabled = false;
    }
  }

  async function loadConversations(r, mine) {
    const base = session.role === "admin" ? "/api/admin/usage" : "/api/usage";
    const params = { ...r.params, group_by: "conversation", limit: PAGE, offset: conversationOffset };
    const data = await api(base, params);
    if (mine !== generation) return;
    fill($("conversations-body"), data.rows.map((row) => el("tr", { "data-call": row.call_id },
      el("td", {}, when(row.started_at)), el("th", { scope: "row" }, el("code", {}, row.call_id)),
      el("td", {}, row.company_id), ...sums(row, false))), "No calls in this range.");
    const total = data.pagination.total;
    const last = Math.min(conversationOffset + PAGE, total);
    $("conversations-page").textContent = total ? `${conversationOffset + 1}–${last} of ${count.format(total)}` : "";
    $("prev").disabled = conversationOffset === 0;
    $("next").disabled = last >= total;
  }

  async function load() {
    const r = range();
    if (!r) return say("Choose a valid date range (at most 1000 days).", true);
    const mine = ++generation;
    shown = r;
    const admin = session.role === "admin";
    const base = admin ? "/api/admin/usage" : "/api/usage";
    say("Loading…");
    try {
      conversationOffset = 0;
      const [days, groups] = await Promise.all([
        api(base, { ...r.params, group_by: "day", limit: MAX_DAYS }),
        api(base, { ...r.params, group_by: admin ? "company" : "model", limit: 1000 }),
        loadConversations(r, mine),
      ]);
      if (mine !== generation) return;
      drawTotals(days.totals);
      drawChart(days.rows, r);
      if (admin) drawCompanies(groups.rows);
      else fill($("models-body"), modelRows(groups.rows), "No usage in this range.");
      say("");
    } catch (error) {
      if (mine === generation) fail(error);
    }
  }

  async function page(step) {
    conversationOffset = Math.max(0, conversationOffset + step * PAGE);
    try {
      await loadConversations(shown, generation);
    } catch (error) {
      fail(error);
    }
  }

  // -- live calls --------------------------------------------------------------------------------

  async function liveCalls() {
    if (session.role === "admin") return (await api("/api/admin/calls/live")).calls;
    const pages = await Promise.all(LIVE_STATES.map((status) => api("/api/calls", { status, limit: 100 })));
    return pages.flatMap((p) => p.calls)
      .map((c) => ({ ...c, state: c.status, started_at: c.created_at }))
      .sort((a, b) => a.started_at.localeCompare(b.started_at));
  }

  function drawLive(calls) {
    fill($("live-body"), calls.map((call) => el("tr", { "data-call": call.call_id },
      el("th", { scope: "row" }, el("code", {}, call.call_id)), el("td", {}, call.company_id),
      el("td", {}, call.direction), el("td", {}, el("span", { class: "state state-" + call.state }, call.state)),
      el("td", {}, when(call.started_at)), el("td", { class: "num" }, duration(call.duration_seconds)),
      el("td", {}, call.agent_id || "default"))), "No live calls.");
    $("live-updated").textContent = "Updated " + new Date().toLocaleTimeString() + "; refreshed every 5 seconds.";
  }

  // One refresh at a time, then the next in 5 seconds (none while the tab is hidden: it resumes when
  // the tab shows again). A refresh still out for an earlier key draws nothing.
  async function refreshLive() {
    clearTimeout(liveTimer);
    if (!session || liveBusy || document.hidden) return;
    const key = session.key;
    liveBusy = true;
    try {
      const calls = await liveCalls();
      if (session && session.key === key) drawLive(calls);
    } catch (error) {
      if (error.status === 401 && session && session.key === key) return fail(error);
      $("live-updated").textContent = "Could not refresh: " + error.message;
    } finally {
      liveBusy = false;
    }
    if (session) liveTimer = setTimeout(refreshLive, session.key === key ? LIVE_EVERY_MS : 0);
  }

  // -- signing in and out ------------------------------------------------------------------------

  // Which key it is, from the API's answers: only an admin key opens /api/admin/usage, only a company
  // key /api/usage; a key neither accepts is no key.
  async function roleOf(key) {
    for (const [role, path] of [["admin", "/api/admin/usage"], ["company", "/api/usage"]]) {
      try {
        await api(path, { group_by: "day", limit: 1 }, key);
        return role;
      } catch (error) {
        if (error.status !== 401) throw error;
      }
    }
    return null;
  }

  function start(signedIn) {
    session = signedIn;
    const admin = signedIn.role === "admin";
    document.body.dataset.role = signedIn.role;
    $("who").textContent = admin ? "Admin: every company" : "Company view: your own usage";
    for (const id of ["who", "logout", "board"]) $(id).hidden = false;
    $("login").hidden = true;
    $("companies-section").hidden = !admin;
    $("models-section").hidden = admin;
    load();
    refreshLive();
  }

  function logout(message) {
    session = null;
    generation++;
    clearTimeout(liveTimer);
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(ROLE);
    for (const body of document.querySelectorAll("#board tbody")) body.replaceChildren();
    for (const id of ["chart", "totals"]) $(id).replaceChildren();
    for (const id of ["who", "logout", "board"]) $(id).hidden = true;
    delete document.body.dataset.role;
    $("login").hidden = false;
    $("login-error").textContent = message;
    $("key").focus();
  }

  async function login(event) {
    event.preventDefault();
    const key = $("key").value.trim();
    if (!key) return;
    $("login-error").textContent = "";
    $("login-button").disabled = true;
    try {
      const role = await roleOf(key);
      if (!role) {
        $("login-error").textContent = "This key is neither an admin key nor a company key.";
        return;
      }
      $("key").value = "";
      sessionStorage.setItem(KEY, key);
      sessionStorage.setItem(ROLE, role);
      start({ key, role });
    } catch (error) {
      const busy = error.status === 429;
      $("login-error").textContent = busy ? "Too many attempts: wait a minute." : "Could not check the key: " + error.message;
    } finally {
      $("login-button").disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const today = Date.parse(new Date().toISOString().slice(0, 10) + "T00:00:00Z");
    $("start").value = isoDay(today - 29 * DAY_MS);
    $("end").value = isoDay(today);
    $("login-form").addEventListener("submit", login);
    $("range").addEventListener("submit", (event) => { event.preventDefault(); load(); });
    $("logout").addEventListener("click", () => logout(""));
    $("prev").addEventListener("click", () => page(-1));
    $("next").addEventListener("click", () => page(1));
    document.addEventListener("visibilitychange", () => { if (!document.hidden) refreshLive(); });
    const key = sessionStorage.getItem(KEY);
    const role = sessionStorage.getItem(ROLE);
    if (key && (role === "admin" || role === "company")) start({ key, role });
  });
})();
