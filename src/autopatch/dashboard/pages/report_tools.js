// Shared by the Compliance and CVE lookup pages: report downloads (with the token in a header, never
// in a URL) and a line chart over days drawn as SVG, each series with its own dash pattern and its
// name and last value written at its end, so it reads without colour.

import { ApiError, session } from "../api.js";
import { h, showBanner } from "../ui.js";

function apiBase() {
  const meta = document.querySelector('meta[name="autopatch-api-base"]');
  return ((meta && meta.content.trim()) || "").replace(/\/+$/, "") + "/api/v1";
}

/** The file name the server gave (Content-Disposition), else ``fallback``. */
function fileName(response, fallback) {
  const match = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
  return match ? match[1] : fallback;
}

/** Fetch ``/reports/<path>?format=<fmt>`` with the session's token and hand the file to the browser. */
export async function downloadReport(path, fmt, params = {}) {
  const url = new URL(`${apiBase()}/reports/${path}`, window.location.href);
  url.searchParams.set("format", fmt);
  for (const [key, value] of Object.entries(params)) if (value) url.searchParams.set(key, value);
  let response;
  try {
    response = await fetch(url, { headers: { Authorization: `Bearer ${session.token}` } });
  } catch {
    showBanner(`The ${fmt.toUpperCase()} report could not be fetched: the server cannot be reached`);
    return;
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).error.message || message;
    } catch {
      // not JSON: keep the status line
    }
    showBanner(new ApiError(response.status, message).message);
    return;
  }
  const blob = await response.blob();
  const link = h("a", { href: URL.createObjectURL(blob), download: fileName(response, `${path}.${fmt}`), hidden: true });
  document.body.append(link);
  link.click();
  setTimeout(() => {
    URL.revokeObjectURL(link.href);
    link.remove();
  }, 1000);
}

/** "Download: CSV HTML PDF" buttons for one report. */
export function downloads(label, path, params = {}) {
  return h("div", { class: "downloads", role: "group", "aria-label": `Download ${label}` },
    h("span", { class: "small muted" }, `${label}:`),
    ["csv", "html", "pdf"].map((fmt) => h("button", {
      type: "button", class: "small secondary", "data-format": fmt,
      "aria-label": `Download ${label} as ${fmt.toUpperCase()}`,
      onclick: () => downloadReport(path, fmt, params),
    }, fmt.toUpperCase())));
}

const SVG = "http://www.w3.org/2000/svg";
const STYLES = {
  Critical: ["#7f0000", ""], Important: ["#d9480f", "7 3"], Moderate: ["#9c7a00", "2 3"], Low: ["#1f5fa8", "9 3 2 3"],
  Unrated: ["#666666", "1 3"],
};

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children.flat()) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function ticks(top) {
  if (top <= 0) return [0, 1];
  const raw = top / 4;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw);
  return Array.from({ length: Math.ceil(top / step) + 1 }, (_, i) => step * i);
}

/**
 * A line per series over ``labels`` (ISO days); ``null`` values are gaps (no data that day), never zeros.
 * ``series``: [{name, values}]. Each line's points carry data-* attributes (tests read them).
 */
export function lineChart(title, labels, series, testid) {
  const width = 760, height = 290, left = 56, right = 170, top = 14, bottom = 36;
  const plotW = width - left - right, plotH = height - top - bottom;
  const known = series.flatMap((s) => s.values.filter((v) => v !== null));
  const grid = ticks(Math.max(0, ...known));
  const high = grid[grid.length - 1] || 1;
  const x = (i) => left + (plotW * i) / Math.max(1, labels.length - 1);
  const y = (v) => top + plotH * (1 - v / high);
  const parts = [];
  for (const tick of grid) {
    parts.push(svg("line", { x1: left, y1: y(tick), x2: left + plotW, y2: y(tick), stroke: "#d0d0d0" }));
    parts.push(svg("text", { x: left - 6, y: y(tick) + 4, "text-anchor": "end", class: "chart-value" }, tick.toLocaleString("en")));
  }
  for (const i of [...new Set([0, Math.floor(labels.length / 2), labels.length - 1])]) {
    if (i < 0 || i >= labels.length) continue;
    const anchor = i === 0 ? "start" : i === labels.length - 1 ? "end" : "middle";
    parts.push(svg("text", { x: x(i), y: top + plotH + 18, "text-anchor": anchor, class: "chart-value" }, labels[i]));
  }
  const placed = [];
  series.forEach((s, index) => {
    const [colour, dash] = STYLES[s.name] || ["#2b7a3d", ""];
    let run = [];
    const flush = () => {
      if (run.length > 1) parts.push(svg("polyline", { points: run.join(" "), fill: "none", stroke: colour, "stroke-width": 2.2, "stroke-dasharray": dash }));
      run = [];
    };
    s.values.forEach((v, i) => (v === null ? flush() : run.push(`${x(i).toFixed(1)},${y(v).toFixed(1)}`)));
    flush();
    let lastIndex = s.values.length - 1;
    while (lastIndex >= 0 && s.values[lastIndex] === null) lastIndex -= 1;
    const last = lastIndex >= 0 ? s.values[lastIndex] : null;
    let labelY = last === null ? top + 14 * (index + 1) : y(last) + 4;
    while (placed.some((other) => Math.abs(other - labelY) < 13)) labelY += 13;
    placed.push(labelY);
    parts.push(svg("line", { x1: left + plotW + 6, y1: labelY - 4, x2: left + plotW + 24, y2: labelY - 4, stroke: colour, "stroke-width": 2.2, "stroke-dasharray": dash }));
    parts.push(svg("text", {
      x: left + plotW + 28, y: labelY, class: "chart-label", "data-series": s.name, "data-last": last ?? "",
    }, `${s.name} ${last === null ? "no data" : last.toLocaleString("en")}`));
  });
  parts.push(svg("line", { x1: left, y1: top + plotH, x2: left + plotW, y2: top + plotH, stroke: "#222" }));
  return h("figure", { class: "chart wide", "data-testid": testid },
    h("figcaption", {}, title),
    svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": title }, parts));
}
