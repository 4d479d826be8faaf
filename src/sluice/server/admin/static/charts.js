/* sluice console charts: a small SVG line chart (time on x, values from 0 on y) that new
 * points are pushed into. Written for the console; no library, no network. */
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const HEIGHT = 160;
  const LEFT = 56;
  const BOTTOM = 18;
  const TOP = 8;

  function el(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const exp = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (value <= step * exp) return step * exp;
    }
    return 10 * exp;
  }

  function clock(t) {
    const d = new Date(t * 1000);
    return d.toTimeString().slice(0, 8);
  }

  class LineChart {
    /* title: shown above; names: one per series; format: value -> label; minTop: the least
     * top of the y axis (so an idle chart does not label fractions of a byte). */
    constructor(title, names, format, minTop) {
      this.names = names;
      this.minTop = minTop || 1;
      this.format = format || String;
      this.capacity = 150;
      this.points = [];
      this.element = document.createElement("div");
      this.element.className = "chart";
      const head = document.createElement("div");
      head.className = "title";
      head.textContent = title;
      const legend = document.createElement("div");
      legend.className = "legend";
      this.latest = names.map((name, i) => {
        const item = document.createElement("span");
        const swatch = document.createElement("span");
        swatch.className = "swatch s" + i;
        const label = document.createElement("span");
        label.textContent = name;
        const value = document.createElement("span");
        value.className = "muted";
        item.append(swatch, label, " ", value);
        legend.append(item);
        return value;
      });
      this.svg = el("svg", { height: HEIGHT, role: "img", "aria-label": title });
      this.element.append(head, legend, this.svg);
    }

    push(t, values) {
      this.points.push([t, values]);
      if (this.points.length > this.capacity) this.points.shift();
      this.element.dataset.points = String(this.points.length);
      values.forEach((v, i) => { this.latest[i].textContent = v === null ? "" : this.format(v); });
      this.draw();
    }

    draw() {
      const svg = this.svg;
      const width = Math.max(300, svg.clientWidth || 600);
      svg.setAttribute("viewBox", `0 0 ${width} ${HEIGHT}`);
      while (svg.firstChild) svg.removeChild(svg.firstChild);
      const pts = this.points;
      let top = 0;
      for (const [, values] of pts) for (const v of values) if (v !== null && v > top) top = v;
      top = niceMax(Math.max(top, this.minTop));
      const plotW = width - LEFT - 6;
      const plotH = HEIGHT - TOP - BOTTOM;
      const y = (v) => TOP + plotH - (v / top) * plotH;
      for (const frac of [0, 0.5, 1]) {
        const yy = y(top * frac);
        svg.append(el("line", { class: "grid", x1: LEFT, x2: width - 6, y1: yy, y2: yy }));
        svg.append(el("text", { class: "axis", x: LEFT - 4, y: yy + 3, "text-anchor": "end" }, this.format(top * frac)));
      }
      if (pts.length === 0) return;
      const t0 = pts[0][0];
      const t1 = pts[pts.length - 1][0];
      const span = Math.max(t1 - t0, 1);
      const x = (t) => LEFT + ((t - t0) / span) * plotW;
      svg.append(el("text", { class: "axis", x: LEFT, y: HEIGHT - 4 }, clock(t0)));
      svg.append(el("text", { class: "axis", x: width - 6, y: HEIGHT - 4, "text-anchor": "end" }, clock(t1)));
      this.names.forEach((_, i) => {
        const coords = pts
          .filter(([, values]) => values[i] !== null)
          .map(([t, values]) => `${x(t).toFixed(1)},${y(values[i]).toFixed(1)}`);
        if (coords.length) svg.append(el("polyline", { class: "line s" + i, points: coords.join(" ") }));
      });
    }
  }

  window.SluiceCharts = { LineChart };
})();
