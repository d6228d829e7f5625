// SVG charts for the console: the fan-out latency percentile plot (as
// HdrHistogram's plotter draws an hgrm file: log-scale "1/(1-percentile)"
// x axis) and a small line chart of connections over time.

const SVG = "http://www.w3.org/2000/svg";

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function clear(svg) {
  while (svg.firstChild) svg.firstChild.remove();
}

// Draws in the element's own pixels, so text stays text-sized at any width.
function size(svg) {
  const w = Math.max(240, Math.round(svg.clientWidth || 600));
  const h = Math.max(100, Math.round(svg.clientHeight || 160));
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  return { w, h };
}

// A round axis step near `raw` (1, 2 or 5 times a power of ten).
function niceStep(raw) {
  const power = 10 ** Math.floor(Math.log10(raw));
  const f = raw / power;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * power;
}

// `/debug/latency` text → {points: [{value, percentile, inv}], mean, max, count}.
export function parseHgrm(text) {
  const points = [];
  let mean = NaN, max = NaN, count = 0;
  for (const line of text.split("\n")) {
    const cols = line.trim().split(/\s+/);
    if (cols.length === 4 && cols.every((c) => c !== "" && !Number.isNaN(Number(c)) || c === "inf")) {
      const [value, percentile, , inv] = cols;
      points.push({ value: Number(value), percentile: Number(percentile), inv: inv === "inf" ? Infinity : Number(inv) });
    }
    let m = line.match(/Mean\s*=\s*([\d.]+)/);
    if (m) mean = Number(m[1]);
    m = line.match(/Max\s*=\s*([\d.]+)/);
    if (m) max = Number(m[1]);
    m = line.match(/Total count\s*=\s*(\d+)/);
    if (m) count = Number(m[1]);
  }
  return { points, mean, max, count };
}

// Microseconds as a short label.
export function formatMicros(us) {
  if (us >= 1e6) return (us / 1e6).toFixed(us >= 1e7 ? 0 : 1) + " s";
  if (us >= 1e3) return (us / 1e3).toFixed(us >= 1e4 ? 0 : 1) + " ms";
  return Math.round(us) + " µs";
}

// Draws `hgrm` (parsed) into `svg`; returns how many points were drawn.
export function percentilePlot(svg, hgrm) {
  clear(svg);
  const { w, h } = size(svg);
  const pad = { l: 56, r: 12, t: 12, b: 34 };
  const finite = hgrm.points.filter((p) => Number.isFinite(p.inv) && p.inv >= 1);
  if (finite.length === 0) {
    svg.append(el("text", { x: w / 2, y: h / 2, "text-anchor": "middle" }, "no fan-out recorded yet"));
    return 0;
  }
  // x: log10(1/(1-p)), 0 (p=0) to at least 3 (99.9%).
  const decades = Math.max(3, Math.ceil(Math.log10(finite[finite.length - 1].inv)));
  const step = niceStep(Math.max(1, ...finite.map((p) => p.value)) / 4);
  const top = step * Math.ceil(Math.max(1, ...finite.map((p) => p.value)) / step);
  const x = (inv) => pad.l + (Math.log10(inv) / decades) * (w - pad.l - pad.r);
  const y = (v) => h - pad.b - (v / top) * (h - pad.t - pad.b);
  for (let d = 0; d <= decades; d++) {
    const gx = x(10 ** d);
    svg.append(el("line", { class: "grid", x1: gx, x2: gx, y1: pad.t, y2: h - pad.b }));
    const label = d === 0 ? "0%" : (100 - 100 / 10 ** d).toFixed(Math.max(0, d - 2)) + "%";
    svg.append(el("text", { x: gx, y: h - pad.b + 14, "text-anchor": "middle" }, label));
  }
  for (let v = 0; v <= top + step / 2; v += step) {
    svg.append(el("line", { class: "grid", x1: pad.l, x2: w - pad.r, y1: y(v), y2: y(v) }));
    svg.append(el("text", { x: pad.l - 6, y: y(v) + 4, "text-anchor": "end" }, formatMicros(v)));
  }
  svg.append(el("line", { class: "axis", x1: pad.l, x2: w - pad.r, y1: h - pad.b, y2: h - pad.b }));
  svg.append(el("line", { class: "axis", x1: pad.l, x2: pad.l, y1: pad.t, y2: h - pad.b }));
  svg.append(el("text", { x: (pad.l + w - pad.r) / 2, y: h - 4, "text-anchor": "middle" }, "percentile"));
  const path = finite.map((p) => `${x(p.inv).toFixed(1)},${y(p.value).toFixed(1)}`).join(" ");
  svg.append(el("polyline", { class: "line", points: path }));
  for (const p of finite) {
    const dot = el("circle", { class: "point", cx: x(p.inv).toFixed(1), cy: y(p.value).toFixed(1), r: 2.5 });
    dot.append(el("title", {}, `p${(p.percentile * 100).toFixed(4)}: ${formatMicros(p.value)}`));
    svg.append(dot);
  }
  return finite.length;
}

// Draws `samples` (numbers, oldest first) as a line in `svg`.
export function lineChart(svg, samples, capacity) {
  clear(svg);
  const { w, h } = size(svg);
  const pad = { l: 44, r: 8, t: 10, b: 14 };
  const top = Math.max(1, ...samples);
  const x = (i) => pad.l + (i / Math.max(1, capacity - 1)) * (w - pad.l - pad.r);
  const y = (v) => h - pad.b - (v / top) * (h - pad.t - pad.b);
  svg.append(el("line", { class: "axis", x1: pad.l, x2: w - pad.r, y1: h - pad.b, y2: h - pad.b }));
  svg.append(el("line", { class: "axis", x1: pad.l, x2: pad.l, y1: pad.t, y2: h - pad.b }));
  svg.append(el("text", { x: pad.l - 6, y: pad.t + 8, "text-anchor": "end" }, String(top)));
  svg.append(el("text", { x: pad.l - 6, y: h - pad.b, "text-anchor": "end" }, "0"));
  if (samples.length === 0) return;
  const offset = capacity - samples.length;
  const path = samples.map((v, i) => `${x(offset + i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
  svg.append(el("polyline", { class: "line", points: path }));
}
