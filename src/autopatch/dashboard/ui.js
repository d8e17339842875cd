// Small DOM helpers: elements built with textContent (never innerHTML from data), the error banner,
// times with their zone, status chips (a word, never colour alone) and inline SVG bar charts.

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const banner = () => document.getElementById("banner");

/** Show an error (or a notice) above the page; it stays until dismissed or the next navigation. */
export function showBanner(message, kind = "error") {
  const node = banner();
  node.replaceChildren(
    h("span", { class: "banner-text" }, kind === "error" ? "Error: " : "", message),
    h("button", { type: "button", class: "link", onclick: clearBanner }, "Dismiss"),
  );
  node.className = `banner ${kind}`;
  node.hidden = false;
}

export function clearBanner() {
  banner().hidden = true;
  banner().replaceChildren();
}

/** Run ``action``; an API error becomes the banner with the server's own message. */
export async function guarded(action) {
  try {
    return await action();
  } catch (exc) {
    showBanner(exc.message || String(exc));
    return undefined;
  }
}

const utc = new Intl.DateTimeFormat("en-GB", {
  timeZone: "UTC",
  year: "numeric",
  month: "2-digit",
  day: "2-digit",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  hour12: false,
});

/** An ISO time as "2026-01-09 08:15:00 UTC" (the API speaks UTC; so does the page, and says so). */
export function formatTime(iso) {
  if (!iso) return "—";
  const at = new Date(/[zZ]|[+-][0-9]{2}:[0-9]{2}$/.test(iso) ? iso : iso + "Z");
  if (Number.isNaN(at.getTime())) return iso;
  const parts = Object.fromEntries(utc.formatToParts(at).map((p) => [p.type, p.value]));
  return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}:${parts.second} UTC`;
}

export function timeCell(iso) {
  return h("time", { datetime: iso || "" }, formatTime(iso));
}

const CHIP_KIND = {
  Succeeded: "good", Success: "good", Done: "good", "Already Installed": "good", Online: "good", ok: "good",
  Failed: "bad", Offline: "bad",
  Running: "busy", InProgress: "busy", Pending: "wait", Cancelling: "busy",
  Paused: "wait", Open: "good", Cutoff: "wait", Closed: "muted", // a run waiting for its window; a window now
  Cancelled: "muted", Superseded: "muted", "Not Available": "muted", Held: "muted",
};
// A run halted by a ring's health gate; the gate's states; a server's check at the gate.
Object.assign(CHIP_KIND, {
  Halted: "bad", Passed: "good", Waiting: "wait", Patching: "busy", Checking: "busy", Soaking: "busy",
  Rechecking: "busy", "Not Started": "muted", "Not Checked": "wait", Skipped: "muted",
});
const CHIP_MARK = { good: "✓", bad: "✗", busy: "◔", wait: "…", muted: "–" };

/** A status as a word with a mark; colour only repeats what the word says. */
export function chip(status) {
  const kind = CHIP_KIND[status] || "muted";
  return h("span", { class: `chip ${kind}` }, h("span", { "aria-hidden": "true" }, CHIP_MARK[kind] + " "), status);
}

const SEVERITY_CLASS = { Critical: "sev-critical", Important: "sev-important", Moderate: "sev-moderate", Low: "sev-low" };

export function severityCell(severity) {
  if (!severity) return h("span", { class: "muted" }, "unrated");
  return h("span", { class: `sev ${SEVERITY_CLASS[severity] || ""}` }, severity);
}

export function emptyState(message, ...actions) {
  return h("div", { class: "empty", role: "status" }, h("p", {}, message), actions);
}

export function table(caption, headers, rows, attrs = {}) {
  return h(
    "table",
    attrs,
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, headers.map((name) => h("th", { scope: "col", class: name.class }, name.label ?? name)))),
    h("tbody", {}, rows),
  );
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children.flat()) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

/**
 * Horizontal bars, one group per category, one bar per series (e.g. before/after), each labelled
 * with its number: the chart reads without colour and without hovering.
 * ``groups``: [{label, values: [number|null, ...]}]; ``series``: [{name, class}].
 */
export function barChart(title, groups, series, testid) {
  const rowHeight = 22;
  const labelWidth = 110;
  const width = 520;
  const barArea = width - labelWidth - 110; // room for the number and series name after the longest bar
  const max = Math.max(1, ...groups.flatMap((g) => g.values.filter((v) => v !== null)));
  const height = groups.length * (series.length * rowHeight + 10) + 10;
  const bars = [];
  let y = 8;
  for (const group of groups) {
    bars.push(svg("text", { x: 0, y: y + 15, class: "chart-label" }, group.label));
    group.values.forEach((value, index) => {
      const barWidth = value ? Math.max(2, (value / max) * barArea) : 0;
      const top = y + index * rowHeight;
      bars.push(
        svg("rect", {
          x: labelWidth, y: top + 3, width: barWidth, height: rowHeight - 6, class: series[index].class,
          "data-group": group.label, "data-series": series[index].name, "data-value": value ?? "",
        },
          svg("title", {}, `${group.label}, ${series[index].name}: ${value ?? "unknown"}`)),
        svg("text", { x: labelWidth + barWidth + 6, y: top + 16, class: "chart-value" },
          `${value ?? "unknown"}${series.length > 1 ? " " + series[index].name : ""}`),
      );
    });
    y += series.length * rowHeight + 10;
  }
  const legend = series.length > 1
    ? h("ul", { class: "legend" }, series.map((s) => h("li", {}, h("span", { class: `swatch ${s.class}` }), s.name)))
    : null;
  return h(
    "figure",
    { class: "chart", "data-testid": testid },
    h("figcaption", {}, title),
    svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": title }, bars),
    legend,
  );
}
