/* sluice console: the pages, drawn from the broker's JSON API (/api/...).
 *
 * Everything from the broker (topic names, keys, values, headers, member ids, config values) is
 * put into the page as text nodes (h() below never parses markup), so a value holding <script>
 * shows as those characters. The page's Content Security Policy forbids inline scripts besides. */
"use strict";
(function () {
  const app = document.getElementById("app");
  const { LineChart } = window.SluiceCharts;
  let timers = [];
  let generation = 0;

  // -- helpers ---------------------------------------------------------------------------------

  /* An element: attrs are properties/attributes (on* are listeners); children are nodes or text. */
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (key === "class") node.className = value;
      else if (key === "value") node.value = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  class ApiError extends Error {
    constructor(status, error, message) {
      super(message);
      this.status = status;
      this.error = error;
    }
  }

  async function api(path, method, body) {
    const init = { method: method || "GET", headers: {} };
    if (method && method !== "GET") {
      init.headers["Content-Type"] = "application/json";
      init.headers["X-Sluice-Console"] = "1";
      init.body = JSON.stringify(body || {});
    }
    const response = await fetch(path, init);
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      throw new ApiError(response.status, data && data.error, (data && data.message) || response.statusText);
    }
    return data;
  }

  function enc(part) { return encodeURIComponent(part); }

  function fmtNum(n) { return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"); }

  function fmtBytes(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    let v = Number(n);
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
  }

  function fmtRate(n) {
    if (n === null || n === undefined) return "–";
    if (n >= 1e6) return (n / 1e6).toFixed(1) + "M/s";
    if (n >= 1e3) return (n / 1e3).toFixed(1) + "k/s";
    return (n >= 10 ? n.toFixed(0) : n.toFixed(1)) + "/s";
  }

  function fmtByteRate(n) { return n === null || n === undefined ? "–" : fmtBytes(n) + "/s"; }

  function fmtDuration(s) {
    s = Math.floor(s);
    const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600), mm = Math.floor((s % 3600) / 60);
    if (d) return `${d}d ${hh}h ${mm}m`;
    if (hh) return `${hh}h ${mm}m`;
    if (mm) return `${mm}m ${s % 60}s`;
    return `${s}s`;
  }

  function fmtTime(ms) {
    const d = new Date(ms);
    return isNaN(d.getTime()) ? String(ms) : d.toISOString().replace("T", " ").replace("Z", " UTC");
  }

  function bytesOf(b64) {
    const raw = atob(b64);
    const out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }

  /* A key, value or header value in the chosen format: text, pretty JSON, or hex. */
  function showData(data, format) {
    if (data === null) return h("span", { class: "muted" }, "null");
    const bytes = bytesOf(data.b64);
    let text;
    if (format === "hex") {
      text = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");
    } else {
      text = new TextDecoder("utf-8").decode(bytes);
      if (format === "json") {
        try { text = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { /* not JSON: as text */ }
      }
    }
    return [text, data.truncated ? h("div", { class: "truncated" }, `(first ${fmtBytes(bytes.length)} of ${fmtBytes(data.size)})`) : null];
  }

  /* The filled part of a bar; its width is set through the CSSOM (the page's CSP allows no
   * inline style attributes). */
  function fill(fraction) {
    const node = h("div", {});
    node.style.width = `${Math.max(0, Math.min(1, fraction)) * 100}%`;
    return node;
  }

  function card(label, value, extra) {
    return h("div", { class: "card" }, h("div", { class: "label" }, label), h("div", { class: "value" }, value), extra || null);
  }

  function table(id, headers, rows) {
    return h("table", { id },
      h("thead", {}, h("tr", {}, headers.map((c) => h("th", { class: c.endsWith("#") ? "num" : null }, c.replace(/#$/, ""))))),
      h("tbody", {}, rows));
  }

  /* A record's transaction as a read_committed consumer meets it (the browser reads up to the
   * high watermark, as a read_uncommitted consumer does). */
  function txnLabel(r) {
    if (r.read_committed === "aborted") {
      return h("div", { class: "txn aborted", title: "Its transaction was aborted: read_committed consumers skip it." }, "aborted");
    }
    if (r.read_committed === "pending") {
      return h("div", { class: "txn pending", title: "Past the last stable offset: read_committed consumers do not see it until the transactions before it are committed or aborted." }, "pending");
    }
    return r.transactional ? h("div", { class: "txn", title: "Written in a committed transaction." }, "txn") : null;
  }

  function message(kind, text) { return h("div", { class: "message " + kind, role: kind === "error" ? "alert" : "status" }, text); }

  /* Says, above the page, that what it shows is no longer live: a poll failed (the broker
   * stopped, restarts, or the network is gone). The page keeps what it last saw; the next poll
   * that succeeds takes the notice away. */
  const stale = h("div", { id: "stale", class: "message error", role: "alert", hidden: true });
  app.before(stale);
  let staleSince = null;

  function pollFailed(e) {
    if (staleSince === null) staleSince = new Date();
    const reason = e instanceof ApiError ? e.message : "the broker does not answer";
    stale.textContent = `Not updating since ${staleSince.toLocaleTimeString()}: ${reason}. ` +
      "This page shows what it last saw, and keeps trying.";
    stale.hidden = false;
  }

  function pollSucceeded() {
    staleSince = null;
    stale.hidden = true;
  }

  function every(seconds, fn) {
    const mine = generation;
    const run = async () => {
      if (mine !== generation) return;
      try {
        await fn();
        if (mine === generation) pollSucceeded();
      } catch (e) {
        if (mine === generation) pollFailed(e);
      }
    };
    timers.push(setInterval(run, seconds * 1000));
  }

  function setReadOnly(readOnly) { document.getElementById("mode").hidden = !readOnly; }

  /* rates from two samples of counters: {name: count} at time t */
  function rates(previous, current, dt) {
    const out = {};
    if (!previous || dt <= 0) return out;
    for (const [name, value] of Object.entries(current)) {
      if (name in previous && value >= previous[name]) out[name] = (value - previous[name]) / dt;
    }
    return out;
  }

  /* A delete button that asks for the name to be typed first. */
  function confirmDelete(what, name, readOnly, action) {
    const slot = h("div", {});
    const button = h("button", {
      class: "danger", id: "delete-button", disabled: readOnly,
      title: readOnly ? "read-only console" : null,
      onclick: () => {
        slot.replaceChildren(h("div", { class: "panel confirm", id: "delete-confirm" },
          h("p", {}, `Delete ${what} `, h("b", {}, name), "? This cannot be undone. Type its name to confirm:"),
          h("div", { class: "row" },
            h("input", { id: "delete-confirm-name", autocomplete: "off" }),
            h("button", {
              class: "danger", id: "delete-confirm-button",
              onclick: async () => {
                const typed = document.getElementById("delete-confirm-name").value;
                if (typed !== name) { slot.append(message("error", "The name does not match.")); return; }
                try { await action(); } catch (e) { slot.append(message("error", e.message)); }
              },
            }, "Delete"),
            h("button", { class: "secondary", onclick: () => slot.replaceChildren() }, "Cancel"))));
      },
    }, `Delete ${what}`);
    return h("div", {}, button, slot);
  }

  // -- routing -----------------------------------------------------------------------------------

  function navigate(path) {
    history.pushState(null, "", path);
    route();
  }

  document.addEventListener("click", (event) => {
    const link = event.target.closest("a[data-nav], a.nav");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey) return;
    event.preventDefault();
    navigate(link.getAttribute("href"));
  });
  window.addEventListener("popstate", route);

  function link(path, text) { return h("a", { href: path, class: "nav" }, text); }

  /* A group's page and API. Kafka allows a group named "." or "..", which a URL path cannot
   * carry (it resolves such segments, %2E%2E too): those go in the query. */
  function dotted(groupId) { return groupId === "." || groupId === ".."; }
  function groupHref(groupId) { return dotted(groupId) ? "/groups?id=" + enc(groupId) : "/groups/" + enc(groupId); }
  function groupApi(groupId, action) { return `/api/group${action || ""}?id=${enc(groupId)}`; }

  async function route() {
    timers.forEach(clearInterval);
    timers = [];
    generation++;
    pollSucceeded();
    const path = location.pathname;
    for (const nav of document.querySelectorAll("header nav a")) {
      const target = nav.getAttribute("href");
      nav.classList.toggle("active", target === "/" ? path === "/" : path.startsWith(target));
    }
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    try {
      if (parts.length === 0) await overview();
      else if (parts[0] === "topics" && parts.length === 1) await topicsPage();
      else if (parts[0] === "topics") await topicPage(parts.slice(1).join("/"));
      else if (parts[0] === "groups" && parts.length === 1) {
        const id = new URLSearchParams(location.search).get("id");
        await (id === null ? groupsPage() : groupPage(id));
      }
      else if (parts[0] === "groups") await groupPage(parts.slice(1).join("/"));
      else if (parts[0] === "settings") await settingsPage();
      else app.replaceChildren(h("h1", {}, "Not found"));
    } catch (e) {
      app.replaceChildren(h("h1", {}, "Error"), message("error", e.message));
      // The broker not answering (stopped, restarting: 503) is not the page's last word: it is
      // drawn again once the broker answers. A 404 or 400 stays.
      if (!(e instanceof ApiError) || e.status === 503) {
        pollFailed(e);
        const mine = generation;
        setTimeout(() => { if (mine === generation) route(); }, 2000);
      }
    }
  }

  // -- overview ----------------------------------------------------------------------------------

  async function overview() {
    const data = await api("/api/overview");
    setReadOnly(data.read_only);
    document.title = "sluice console: overview";
    const records = new LineChart("Records per second", ["produced", "consumed"], fmtRate, 10);
    const bytes = new LineChart("Bytes per second", ["in", "out"], fmtByteRate, 1024);
    const cards = h("div", { class: "cards", id: "overview-cards" });
    const topics = h("div", { id: "overview-topics" });
    app.replaceChildren(h("h1", {}, "Overview"), cards, h("div", { class: "charts" }, records.element, bytes.element),
      h("h2", {}, "Topics"), topics);
    let previous = null;
    const draw = (d) => {
      const disk = d.disk || {};
      const used = disk.total ? (disk.total - disk.free) / disk.total : 0;
      cards.replaceChildren(
        card("Broker", `node ${d.broker.node_id}`, h("div", { class: "muted" }, d.broker.advertised)),
        card("Version", d.version),
        card("Uptime", fmtDuration(d.uptime)),
        card("Data directory", h("span", { class: "value small" }, d.data_dir)),
        card("Disk", `${fmtBytes(disk.logs)} in logs`,
          [h("div", { class: "muted" }, `${fmtBytes(disk.free)} free of ${fmtBytes(disk.total)}`),
            h("div", { class: "bar" }, fill(used)),
            disk.full ? h("div", { class: "message error", id: "disk-full", role: "alert" },
              "Full: writes are refused (KAFKA_STORAGE_ERROR) until space is freed; reads go on.") : null]),
        card("Topics", fmtNum(d.topics.length)),
        card("Partitions", fmtNum(d.partitions)),
        card("Connections", fmtNum(d.connections)),
        card("Consumer groups", fmtNum(d.groups)));
      topics.replaceChildren(d.topics.length === 0 ? h("p", { class: "muted" }, "No topics yet.") :
        table("overview-topics-table", ["Topic", "Partitions#", "Size#", "Messages#"], d.topics.map((t) =>
          h("tr", {}, h("td", {}, link("/topics/" + enc(t.name), t.name)), h("td", { class: "num" }, fmtNum(t.partitions)),
            h("td", { class: "num" }, fmtBytes(t.size)), h("td", { class: "num" }, fmtNum(t.records))))));
      const t = { ...d.traffic, uptime: d.uptime };
      // The counters count from the broker's start: one restarted since the last sample
      // (uptime or a counter went back) starts a new sample, not a negative rate.
      const restarted = previous && (t.uptime < previous.uptime ||
        ["records_in", "records_out", "bytes_in", "bytes_out"].some((k) => t[k] < previous[k]));
      if (previous && !restarted) {
        const dt = t.time - previous.time;
        if (dt > 0) {
          records.push(t.time, [(t.records_in - previous.records_in) / dt, (t.records_out - previous.records_out) / dt]);
          bytes.push(t.time, [(t.bytes_in - previous.bytes_in) / dt, (t.bytes_out - previous.bytes_out) / dt]);
        }
      }
      previous = t;
    };
    draw(data);
    every(2, async () => draw(await api("/api/overview")));
  }

  // -- topics ------------------------------------------------------------------------------------

  function parseLines(text, sep) {
    const out = {};
    for (const line of text.split("\n")) {
      const trimmed = line.trim();
      if (!trimmed) continue;
      const at = trimmed.indexOf(sep);
      if (at < 0) throw new Error(`"${trimmed}" is not name${sep}value`);
      out[trimmed.slice(0, at).trim()] = trimmed.slice(at + 1).trim();
    }
    return out;
  }

  async function topicsPage() {
    const data = await api("/api/topics");
    setReadOnly(data.read_only);
    document.title = "sluice console: topics";
    const ro = data.read_only;
    const status = h("div", { id: "topics-status" });
    const form = h("div", { class: "panel", id: "create-topic" },
      h("div", { class: "row" },
        h("label", {}, "Name", h("input", { id: "create-topic-name", autocomplete: "off", disabled: ro })),
        h("label", {}, "Partitions", h("input", { id: "create-topic-partitions", type: "number", min: 1, value: "1", disabled: ro })),
        h("label", {}, "Configs (name=value per line)", h("textarea", { id: "create-topic-configs", disabled: ro, placeholder: "retention.ms=86400000" })),
        h("button", {
          id: "create-topic-button", disabled: ro, title: ro ? "read-only console" : null,
          onclick: async () => {
            try {
              const name = document.getElementById("create-topic-name").value.trim();
              const configs = parseLines(document.getElementById("create-topic-configs").value, "=");
              const partitions = document.getElementById("create-topic-partitions").value;
              await api("/api/topics", "POST", { name, partitions, configs });
              status.replaceChildren(message("ok", `Created topic ${name}.`));
              await refresh();
            } catch (e) {
              status.replaceChildren(message("error", e.message));
            }
          },
        }, "Create topic")));
    const list = h("div", {});
    app.replaceChildren(h("h1", {}, "Topics"), form, status, list);
    let previous = null;
    const draw = (d) => {
      const inRates = rates(previous && previous.in, Object.fromEntries(d.topics.map((t) => [t.name, t.records_in])), previous ? d.time - previous.time : 0);
      const outRates = rates(previous && previous.out, Object.fromEntries(d.topics.map((t) => [t.name, t.records_out])), previous ? d.time - previous.time : 0);
      previous = { time: d.time, in: Object.fromEntries(d.topics.map((t) => [t.name, t.records_in])), out: Object.fromEntries(d.topics.map((t) => [t.name, t.records_out])) };
      list.replaceChildren(d.topics.length === 0 ? h("p", { class: "muted" }, "No topics yet.") :
        table("topics-table", ["Topic", "Partitions#", "Size#", "Messages#", "Produced#", "Consumed#"], d.topics.map((t) =>
          h("tr", { "data-topic": t.name },
            h("td", {}, link("/topics/" + enc(t.name), t.name)),
            h("td", { class: "num" }, fmtNum(t.partitions)),
            h("td", { class: "num" }, fmtBytes(t.size)),
            h("td", { class: "num" }, fmtNum(t.records)),
            h("td", { class: "num" }, fmtRate(inRates[t.name] ?? null)),
            h("td", { class: "num" }, fmtRate(outRates[t.name] ?? null))))));
    };
    const refresh = async () => draw(await api("/api/topics"));
    draw(data);
    every(3, refresh);
  }

  async function topicPage(name) {
    const data = await api("/api/topics/" + enc(name));
    setReadOnly(data.read_only);
    document.title = "sluice console: " + name;
    const ro = data.read_only;
    const status = h("div", { id: "topic-status" });
    const partitions = h("div", {});
    const drawPartitions = (d) => partitions.replaceChildren(
      table("partitions-table", ["Partition#", "Start offset#", "End offset#", "Messages#", "Size#", "Segments#"], d.partitions.map((p) =>
        h("tr", {}, [p.partition, p.start, p.end, p.records].map((v) => h("td", { class: "num" }, fmtNum(v))),
          h("td", { class: "num" }, fmtBytes(p.size)), h("td", { class: "num" }, fmtNum(p.segments))))));
    drawPartitions(data);
    const cards = h("div", { class: "cards", id: "topic-cards" });
    const drawCards = (d) => cards.replaceChildren(card("Partitions", fmtNum(d.partitions.length)), card("Size", fmtBytes(d.size)),
      card("Messages", fmtNum(d.records)), card("Topic id", h("span", { class: "value small" }, d.topic_id)));
    drawCards(data);
    const configs = h("div", {});
    const drawConfigs = (d) => configs.replaceChildren(table("configs-table", ["Config", "Value", "Source", ""], d.configs.map((c) => {
      const input = h("input", { value: c.value ?? "", disabled: ro, "data-config": c.name, size: 24 });
      const save = h("button", {
        class: "secondary", disabled: ro,
        onclick: async () => {
          try {
            await api(`/api/topics/${enc(name)}/configs`, "POST", { set: { [c.name]: input.value } });
            status.replaceChildren(message("ok", `Set ${c.name}=${input.value}.`));
            drawConfigs(await api("/api/topics/" + enc(name)));
          } catch (e) { status.replaceChildren(message("error", e.message)); }
        },
      }, "Set");
      const reset = c.source === "DYNAMIC_TOPIC_CONFIG" ? h("button", {
        class: "secondary", disabled: ro,
        onclick: async () => {
          try {
            await api(`/api/topics/${enc(name)}/configs`, "POST", { delete: [c.name] });
            status.replaceChildren(message("ok", `${c.name} is back to its default.`));
            drawConfigs(await api("/api/topics/" + enc(name)));
          } catch (e) { status.replaceChildren(message("error", e.message)); }
        },
      }, "Reset") : null;
      return h("tr", { title: c.documentation || "" }, h("td", {}, c.name), h("td", {}, input), h("td", { class: "muted" }, c.source), h("td", {}, save, " ", reset));
    })));
    drawConfigs(data);
    const partitionOptions = () => [h("option", { value: "all" }, "all"), ...data.partitions.map((p) => h("option", { value: String(p.partition) }, String(p.partition)))];
    // message browser
    const results = h("div", { id: "records" });
    let page = null;
    let query = null;
    const controls = h("div", { class: "row" },
      h("label", {}, "Partition", h("select", { id: "browse-partition" }, partitionOptions())),
      h("label", {}, "Start", h("select", { id: "browse-mode" },
        h("option", { value: "newest" }, "newest first"), h("option", { value: "offset" }, "from offset"), h("option", { value: "timestamp" }, "from time"))),
      h("label", {}, "Offset", h("input", { id: "browse-offset", type: "number", min: 0, value: "0" })),
      h("label", {}, "Time", h("input", { id: "browse-time", type: "datetime-local", step: 1 })),
      h("label", {}, "Per page", h("select", { id: "browse-limit" }, [20, 50, 100, 500].map((n) => h("option", { value: String(n) }, String(n))))),
      h("label", {}, "Show values as", h("select", { id: "browse-format", onchange: () => drawRecords() },
        h("option", { value: "text" }, "text"), h("option", { value: "json" }, "JSON"), h("option", { value: "hex" }, "hex"))),
      h("button", { id: "browse-button", onclick: () => load(null) }, "Load"),
      h("button", { class: "secondary", id: "browse-next", disabled: true, onclick: () => load(page && page.cursor) }, "Next page"));
    const load = async (cursor) => {
      const v = (id) => document.getElementById(id).value;
      if (!cursor) {
        query = { partition: v("browse-partition"), mode: v("browse-mode"), limit: v("browse-limit") };
        if (query.mode === "offset") query.offset = v("browse-offset");
        if (query.mode === "timestamp") {
          const when = Date.parse(v("browse-time"));
          if (isNaN(when)) { results.replaceChildren(message("error", "Choose a time.")); return; }
          query.timestamp = String(when);
        }
      }
      const params = new URLSearchParams(query);
      if (cursor) params.set("cursor", cursor);
      try {
        page = await api(`/api/topics/${enc(name)}/records?${params}`);
        drawRecords();
      } catch (e) { results.replaceChildren(message("error", e.message)); }
    };
    const drawRecords = () => {
      if (!page) return;
      const format = document.getElementById("browse-format").value;
      document.getElementById("browse-next").disabled = !page.more;
      results.replaceChildren(page.records.length === 0 ? h("p", { class: "muted", id: "no-records" }, "No records here.") :
        table("records-table", ["Partition#", "Offset#", "Timestamp", "Key", "Value", "Headers"], page.records.map((r) =>
          h("tr", { class: r.read_committed === "visible" ? null : r.read_committed },
            h("td", { class: "num" }, String(r.partition)),
            h("td", { class: "num" }, String(r.offset), r.unreadable && r.last_offset !== r.offset ? `–${r.last_offset}` : null, txnLabel(r)),
            h("td", {}, fmtTime(r.timestamp)),
            h("td", { class: "data key" }, r.unreadable ? null : showData(r.key, format)),
            /* a batch it cannot decode: one row saying why, not a failed page */
            h("td", { class: "data value" }, r.unreadable ? h("span", { class: "muted unreadable" }, r.unreadable) : showData(r.value, format)),
            h("td", { class: "data headers" }, r.headers.map(([k, hv]) => h("div", {}, k, ": ", showData(hv, format))))))));
    };
    // produce form
    const produced = h("div", { id: "produce-status" });
    const produceForm = h("div", { class: "panel", id: "produce" },
      h("div", { class: "row" },
        h("label", {}, "Partition", h("select", { id: "produce-partition", disabled: ro },
          h("option", { value: "auto" }, "auto (key hash)"), data.partitions.map((p) => h("option", { value: String(p.partition) }, String(p.partition))))),
        h("label", {}, "Key (empty: none)", h("input", { id: "produce-key", autocomplete: "off", disabled: ro })),
        h("label", {}, "Value", h("textarea", { id: "produce-value", disabled: ro })),
        h("label", {}, "Headers (name: value per line)", h("textarea", { id: "produce-headers", disabled: ro })),
        h("button", {
          id: "produce-button", disabled: ro, title: ro ? "read-only console" : null,
          onclick: async () => {
            try {
              const key = document.getElementById("produce-key").value;
              const headers = Object.entries(parseLines(document.getElementById("produce-headers").value, ":"));
              const result = await api(`/api/topics/${enc(name)}/records`, "POST", {
                partition: document.getElementById("produce-partition").value,
                key: key === "" ? null : key,
                value: document.getElementById("produce-value").value,
                headers,
              });
              produced.replaceChildren(message("ok", `Produced to partition ${result.partition} at offset ${result.offset}.`));
              drawPartitions(await api("/api/topics/" + enc(name)));
              await load(null);
            } catch (e) { produced.replaceChildren(message("error", e.message)); }
          },
        }, "Produce")));
    const remove = confirmDelete("topic", name, ro, async () => {
      await api("/api/topics/" + enc(name), "DELETE");
      navigate("/topics");
    });
    app.replaceChildren(
      h("h1", { id: "topic-name" }, name),
      cards,
      status,
      h("h2", {}, "Partitions"), partitions,
      h("h2", {}, "Messages"), h("div", { class: "panel" }, controls), results,
      h("h2", {}, "Produce a message"), produceForm, produced,
      h("h2", {}, "Configs"), configs,
      h("h2", {}, "Delete"), remove);
    // Offsets and sizes move with traffic; the configs, the browser and the forms stay as the
    // user left them.
    every(3, async () => {
      const d = await api("/api/topics/" + enc(name));
      drawCards(d);
      drawPartitions(d);
    });
    await load(null);
  }

  // -- consumer groups -----------------------------------------------------------------------------

  function stateBadge(state) { return h("span", { class: "state " + state }, state); }

  async function groupsPage() {
    document.title = "sluice console: consumer groups";
    const list = h("div", {});
    app.replaceChildren(h("h1", {}, "Consumer groups"), list);
    const draw = (d) => {
      setReadOnly(d.read_only);
      list.replaceChildren(d.groups.length === 0 ? h("p", { class: "muted" }, "No consumer groups yet.") :
        table("groups-table", ["Group", "State", "Protocol type", "Protocol", "Members#", "Topics", "Lag#", "Rebalances#"], d.groups.map((g) =>
          h("tr", { "data-group": g.group_id },
            h("td", {}, link(groupHref(g.group_id), g.group_id)),
            h("td", {}, stateBadge(g.state)),
            h("td", {}, g.protocol_type), h("td", {}, g.protocol),
            h("td", { class: "num" }, fmtNum(g.member_count)),
            h("td", {}, g.topics.join(", ")),
            h("td", { class: "num" }, fmtNum(g.lag)),
            h("td", { class: "num" }, fmtNum(g.rebalances))))));
    };
    draw(await api("/api/groups"));
    every(3, async () => draw(await api("/api/groups")));
  }

  async function groupPage(groupId) {
    const url = groupApi(groupId);
    const data = await api(url);
    setReadOnly(data.read_only);
    document.title = "sluice console: group " + groupId;
    const ro = data.read_only;
    const summary = h("div", { class: "cards" });
    const members = h("div", {});
    const offsets = h("div", {});
    const lagChart = new LineChart("Lag (records)", ["total lag"], fmtNum, 10);
    const draw = (d) => {
      summary.replaceChildren(card("State", stateBadge(d.state)), card("Protocol type", d.protocol_type || "–"),
        card("Protocol", d.protocol || "–"), card("Generation", fmtNum(d.generation)), card("Members", fmtNum(d.members.length)),
        card("Rebalances", fmtNum(d.rebalances)), card("Total lag", fmtNum(d.lag)));
      members.replaceChildren(d.members.length === 0 ? h("p", { class: "muted" }, "No members.") :
        table("members-table", ["Member", "Client id", "Host", "Instance id", "Assignment"], d.members.map((m) =>
          h("tr", {}, h("td", { class: "data" }, m.member_id + (m.member_id === d.leader ? " (leader)" : "")), h("td", {}, m.client_id), h("td", {}, m.client_host),
            h("td", {}, m.group_instance_id || "–"),
            h("td", {}, Object.entries(m.assignment).map(([t, ps]) => h("div", {}, `${t}: ${ps.join(", ")}`)))))));
      offsets.replaceChildren(d.offsets.length === 0 ? h("p", { class: "muted" }, "No committed offsets.") :
        table("offsets-table", ["Topic", "Partition#", "Committed#", "End offset#", "Lag#"], d.offsets.map((o) =>
          h("tr", {}, h("td", {}, link("/topics/" + enc(o.topic), o.topic)),
            [o.partition, o.committed, o.end, o.lag].map((v) => h("td", { class: "num" }, fmtNum(v)))))));
      lagChart.push(d.time, [d.lag]);
    };
    // reset offsets: a dry run first; apply commits exactly what the dry run showed
    const resetStatus = h("div", { id: "reset-status" });
    const plan = h("div", { id: "reset-plan" });
    let planned = null;
    const topicNames = [...new Set(data.offsets.map((o) => o.topic))];
    const resetForm = h("div", { class: "panel", id: "reset" },
      h("div", { class: "row" },
        h("label", {}, "Topic", h("select", { id: "reset-topic", disabled: ro },
          h("option", { value: "" }, "every committed partition"), topicNames.map((t) => h("option", { value: t }, t)))),
        h("label", {}, "To", h("select", { id: "reset-target", disabled: ro },
          [["earliest", "earliest"], ["latest", "latest"], ["offset", "offset"], ["shift", "shift by"], ["timestamp", "time (ms since epoch)"]].map(([v, t]) => h("option", { value: v }, t)))),
        h("label", {}, "Value", h("input", { id: "reset-value", type: "number", disabled: ro })),
        h("button", {
          class: "secondary", id: "reset-dry-run", disabled: ro,
          onclick: async () => {
            const body = { topic: document.getElementById("reset-topic").value || null, target: document.getElementById("reset-target").value, value: document.getElementById("reset-value").value };
            try {
              const result = await api(groupApi(groupId, "/reset"), "POST", body);
              planned = body;
              plan.replaceChildren(table("reset-plan-table", ["Topic", "Partition#", "Current#", "New#"], result.plan.map((p) =>
                h("tr", {}, h("td", {}, p.topic), [p.partition, p.current, p.new].map((v) => h("td", { class: "num" }, fmtNum(v)))))));
              document.getElementById("reset-apply").disabled = false;
              resetStatus.replaceChildren(message("ok", "Dry run: nothing changed. Apply commits these offsets."));
            } catch (e) { resetStatus.replaceChildren(message("error", e.message)); }
          },
        }, "Dry run"),
        h("button", {
          id: "reset-apply", disabled: true,
          onclick: async () => {
            try {
              const result = await api(groupApi(groupId, "/reset"), "POST", { ...planned, execute: true });
              resetStatus.replaceChildren(message("ok", `Committed new offsets of ${result.plan.length} partition${result.plan.length === 1 ? "" : "s"}.`));
              document.getElementById("reset-apply").disabled = true;
              draw(await api(url));
            } catch (e) { resetStatus.replaceChildren(message("error", e.message)); }
          },
        }, "Apply")));
    for (const id of ["reset-topic", "reset-target", "reset-value"]) {
      resetForm.querySelector("#" + id).addEventListener("change", () => { resetForm.querySelector("#reset-apply").disabled = true; });
    }
    const remove = confirmDelete("group", groupId, ro, async () => {
      await api(url, "DELETE");
      navigate("/groups");
    });
    app.replaceChildren(h("h1", { id: "group-id" }, groupId), summary,
      h("h2", {}, "Members"), members,
      h("h2", {}, "Committed offsets and lag"), offsets,
      h("div", { class: "charts" }, lagChart.element),
      h("h2", {}, "Reset offsets"), h("p", { class: "muted" }, "Only while the group has no members (stop its consumers first), as in Kafka."),
      resetForm, resetStatus, plan,
      h("h2", {}, "Delete"), h("p", { class: "muted" }, "Only an empty group can be deleted; its committed offsets go with it."), remove);
    draw(data);
    every(2, async () => draw(await api(url)));
  }

  // -- broker settings -----------------------------------------------------------------------------

  async function settingsPage() {
    document.title = "sluice console: broker settings";
    const data = await api("/api/settings");
    setReadOnly(data.read_only);
    app.replaceChildren(h("h1", {}, "Broker settings"),
      h("p", { class: "muted" }, "As DescribeConfigs reports them. Settings are read at start (sluice serve --config / --set)."),
      table("settings-table", ["Setting", "Value", "Source", "Documentation"], data.configs.map((c) =>
        h("tr", {}, h("td", {}, c.name), h("td", { class: "data" }, c.sensitive ? "(sensitive)" : (c.value ?? "null")),
          h("td", { class: "muted" }, c.source), h("td", { class: "muted" }, c.documentation || "")))));
  }

  route();
})();
