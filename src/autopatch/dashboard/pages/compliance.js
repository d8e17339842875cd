// Compliance: are we getting better, what is late, and which servers miss approved KBs. Everyone
// (viewers included) reads it; it is made of the reports of `autopatch report` (/api/v1/reports):
// the trend of open and overdue CVEs from the exposure history, the overdue CVEs by server, and
// Patch Manager's compliant / non-compliant / unknown per server and per baseline. The baseline
// judged by lives in the URL (#/compliance?baseline=prod), so a link or a reload shows the same.

import { api } from "../api.js";
import { chip, emptyState, formatTime, guarded, h, severityCell, table } from "../ui.js";
import { downloads, lineChart } from "./report_tools.js";

const SHOWN = 50;
const SEVERITIES = ["Critical", "Important", "Moderate", "Low"];
const STATE_CHIP = { compliant: "Compliant", "non-compliant": "Non-compliant", unknown: "Unknown" };

function stateChip(state) {
  const word = STATE_CHIP[state] || state;
  const kind = state === "compliant" ? "good" : state === "non-compliant" ? "bad" : "muted";
  const mark = { good: "✓", bad: "✗", muted: "?" }[kind];
  return h("span", { class: `chip ${kind}` }, h("span", { "aria-hidden": "true" }, `${mark} `), word);
}

function tile(label, value, kind, hint) {
  return h("div", { class: `tile ${kind}`, role: "group", "aria-label": label },
    h("div", { class: "tile-value" }, value.toLocaleString("en")), h("div", { class: "tile-label" }, label),
    hint ? h("div", { class: "small muted" }, hint) : null);
}

function more(total, shown, what) {
  return total > shown ? h("p", { class: "hint" }, `${shown} of ${total.toLocaleString("en")} ${what} shown; the downloads hold them all.`) : null;
}

/** The trend's window: how many days, ending on which day (today by default). */
function windowForm(baseline, days, until) {
  const daysInput = h("input", { id: "c-days", name: "days", type: "number", min: "1", max: "3650", value: days });
  const untilInput = h("input", { id: "c-until", name: "until", type: "date", value: until });
  return h("form", { class: "toolbar", "aria-label": "Trend window", onsubmit: (event) => {
    event.preventDefault();
    go({ baseline, days: daysInput.value, until: untilInput.value });
  } },
  h("label", { for: "c-days" }, "Trend over days"), daysInput,
  h("label", { for: "c-until" }, "ending on (UTC)"), untilInput,
  h("button", { type: "submit", class: "secondary" }, "Show"));
}

function trendSection(trend) {
  const days = trend.days;
  const labels = days.map((d) => d.day);
  const series = (prefix) => SEVERITIES.map((name) => ({ name, values: days.map((d) => d[`${prefix}_${name.toLowerCase()}`]) }));
  const recorded = days.some((d) => d.servers_assessed + d.servers_unknown > 0);
  const mttr = trend.time_to_remediate.filter((row) => SEVERITIES.includes(row.severity));
  return h("section", { "aria-labelledby": "trend-h" },
    h("h2", { id: "trend-h" }, `Trend: ${trend.window.days} days, ${trend.window.first} to ${trend.window.last}`),
    recorded ? null : emptyState("No exposure has been recorded in this window yet: history starts with the next fleet scan."),
    h("div", { class: "charts" },
      lineChart("Open CVEs per day (server, CVE pairs)", labels, series("open"), "trend-open"),
      lineChart("Overdue CVEs per day", labels, series("overdue"), "trend-overdue")),
    table("Mean time to remediate, remediations closed in the window",
      [{ label: "Severity" }, { label: "Remediated", class: "num" }, { label: "Mean days", class: "num" }, { label: "Median days", class: "num" }],
      mttr.map((row) => h("tr", { "data-severity": row.severity },
        h("th", { scope: "row" }, severityCell(row.severity)),
        h("td", { class: "num" }, row.remediated.toLocaleString("en")),
        h("td", { class: "num" }, row.mean_days === null ? "none closed" : row.mean_days.toFixed(1)),
        h("td", { class: "num" }, row.median_days === null ? "—" : row.median_days.toFixed(1)))),
      { "data-testid": "mttr" }));
}

function overdueSection(sla) {
  const rows = sla.servers;
  const body = rows.slice(0, SHOWN).map((row) => h("tr", { "data-instance": row.instance_id, "data-severity": row.severity },
    h("th", { scope: "row" }, row.name, h("div", { class: "small muted mono" }, row.instance_id)),
    h("td", {}, severityCell(row.severity)),
    h("td", { class: "num" }, row.overdue.toLocaleString("en")),
    h("td", { class: "num" }, row.kev ? row.kev.toLocaleString("en") : "—"),
    h("td", {}, row.oldest_due, h("div", { class: "small muted" }, row.oldest_cve)),
    h("td", { class: "num" }, row.days_overdue.toLocaleString("en"))));
  const policy = Object.entries(sla.policy).map(([key, days]) => `${key} ${days} days`).join(", ");
  return h("section", { "aria-labelledby": "overdue-h" },
    h("h2", { id: "overdue-h" }, "Overdue CVEs"),
    h("p", { class: "hint" }, `Deadlines from release: ${policy}; a KEV-listed CVE is due by CISA's date when that is earlier.`),
    rows.length === 0
      ? emptyState(`No open CVE is past its deadline on ${sla.on}.`)
      : table("Overdue CVEs by server and severity, oldest deadline first",
        [{ label: "Server" }, { label: "Severity" }, { label: "Overdue", class: "num" }, { label: "Of them KEV", class: "num" },
          { label: "Oldest due" }, { label: "Days overdue", class: "num" }], body, { "data-testid": "overdue" }),
    more(rows.length, Math.min(rows.length, SHOWN), "server and severity rows"),
    sla.unknown.length ? h("p", { class: "hint" }, `${sla.unknown.length} server(s) not counted: exposure unknown (offline, never scanned or unidentified).`) : null);
}

function baselineSection(compliance, baseline) {
  const rows = compliance.baselines.map((row) => h("tr", { "data-baseline": row.baseline },
    h("th", { scope: "row" }, row.baseline),
    h("td", { class: "num" }, row.servers),
    h("td", { class: "num" }, row.compliant),
    h("td", { class: "num" }, row["non-compliant"]),
    h("td", { class: "num" }, row.unknown),
    h("td", { class: "num" }, row.compliant_percent === null ? "—" : `${row.compliant_percent.toFixed(1)}%`)));
  const servers = compliance.servers.slice(0, SHOWN).map((row) => h("tr", { "data-instance": row.instance_id, "data-state": row.state },
    h("th", { scope: "row" }, row.name, h("div", { class: "small muted mono" }, row.instance_id)),
    h("td", {}, row.baseline),
    h("td", {}, stateChip(row.state)),
    h("td", {}, row.missing_kbs ? row.missing_kbs.split(";").map((kb) => h("a", { href: `#/kb/${kb}`, class: "kb" }, kb)) : "—"),
    h("td", { class: "small" }, row.held_kbs || "—"),
    h("td", { class: "small" }, row.reason || "")));
  return h("section", { "aria-labelledby": "baselines-h" },
    h("h2", { id: "baselines-h" }, baseline ? `Compliance against baseline ${baseline}` : "Compliance per baseline"),
    h("p", { class: "hint" }, "Compliant: no KB the baseline approves is missing (Patch Manager's definition). Non-compliant: one is, or a reboot is pending. Unknown: offline, never scanned or unidentified — never counted as compliant."),
    table("Servers per baseline and state", [{ label: "Baseline" }, { label: "Servers", class: "num" }, { label: "Compliant", class: "num" },
      { label: "Non-compliant", class: "num" }, { label: "Unknown", class: "num" }, { label: "% compliant (of those assessed)", class: "num" }],
    rows, { "data-testid": "per-baseline" }),
    compliance.servers.length === 0
      ? emptyState("No servers yet: discover and scan the fleet first.")
      : table("Servers, non-compliant first", [{ label: "Server" }, { label: "Baseline" }, { label: "State" },
        { label: "Missing approved KBs" }, { label: "Held back (rule)" }, { label: "Why" }], servers, { "data-testid": "compliance-servers" }),
    more(compliance.servers.length, Math.min(compliance.servers.length, SHOWN), "servers"));
}

/** The page's state in the URL: #/compliance?baseline=prod&days=90&until=2024-03-31 (empty values dropped). */
function go(state) {
  const query = new URLSearchParams(Object.entries(state).filter(([, value]) => value));
  window.location.hash = `#/compliance${query.toString() ? `?${query}` : ""}`;
}

export async function renderCompliance(view, { params }) {
  const baseline = params.get("baseline") || "";
  const days = params.get("days") || "90";
  const until = params.get("until") || "";
  const query = baseline ? { baseline } : {};
  const window_ = { days, until };
  const [compliance, sla, trend, baselines] = await Promise.all([
    guarded(() => api("/reports/compliance", { params: { format: "json", ...query } })),
    guarded(() => api("/reports/sla", { params: { format: "json" } })),
    guarded(() => api("/reports/trend", { params: { format: "json", ...window_ } })),
    guarded(() => api("/baselines")),
  ]);
  view.append(h("h1", {}, "Compliance"));
  if (!compliance || !sla || !trend) {
    view.append(emptyState("The reports could not be loaded (see the error above).",
      h("button", { type: "button", onclick: () => window.dispatchEvent(new HashChangeEvent("hashchange")) }, "Retry")));
    return;
  }
  const choice = h("select", { id: "c-baseline", name: "baseline", onchange: () => go({ baseline: choice.value, days, until }) },
  h("option", { value: "" }, "each server's own baselines"),
  ((baselines && baselines.items) || []).map((b) => h("option", { value: b.name, selected: b.name === baseline }, b.name)));
  const totals = compliance.totals;
  view.append(
    h("p", { class: "muted small" }, `Reports made ${formatTime(compliance.generated_at)}.`),
    h("div", { class: "toolbar" }, h("label", { for: "c-baseline" }, "Judge servers by"), choice),
    windowForm(baseline, days, until),
    h("div", { class: "tiles" },
      tile("Compliant", totals.compliant, "good", "no approved KB missing"),
      tile("Non-compliant", totals["non-compliant"], "bad", "approved KB missing or reboot pending"),
      tile("Unknown", totals.unknown, "muted", "offline, never scanned or unidentified"),
      tile("Overdue (server, CVE)", sla.totals.overdue, sla.totals.overdue ? "bad" : "good", `on ${sla.totals.servers} server(s)`)),
    h("div", { class: "downloads-bar" },
      downloads("Compliance report", "compliance", query),
      downloads("SLA report", "sla"),
      downloads("Trend report", "trend", window_)),
    trendSection(trend),
    overdueSection(sla),
    baselineSection(compliance, baseline));
}
