// Deadlines and exploited-first: risk badges (Overdue, KEV, Exploited, Disclosed), due dates, tables
// sortable by any column, one server's exposure (#/exposure/<instance>?as_of=YYYY-MM-DD), the SLA
// policy (Settings: admins change it) and CISA's KEV catalog (Catalog: admins update it).

import { api } from "../api.js";
import { emptyState, guarded, h, severityCell, showBanner, table, timeCell } from "../ui.js";

const SEVERITIES = ["Critical", "Important", "Moderate", "Low"];
const DATE = /^[0-9]{4}-[0-9]{2}-[0-9]{2}$/;
const KEV_POLL_MS = 1000;

function badge(text, kind, title) {
  return h("span", { class: `badge ${kind}`, title }, text);
}

/** A CVE row's risk as words, each a badge: colour only repeats what the word says. */
export function riskBadges(row, { overdue = true } = {}) {
  const badges = [];
  if (overdue && row.overdue) badges.push(badge("Overdue", "bad", `past its deadline, ${row.due}`));
  if (row.kev) badges.push(badge("KEV", "bad", "on CISA's Known Exploited Vulnerabilities catalog"));
  if (row.exploited) badges.push(badge("Exploited", "wait", "Microsoft: Exploited: Yes"));
  if (row.publicly_disclosed) badges.push(badge("Disclosed", "muted", "publicly disclosed"));
  return badges.length ? h("span", { class: "badges" }, badges) : h("span", { class: "muted" }, "—");
}

/** For sorting by risk: overdue, then KEV, then exploited, then disclosed. */
export function riskRank(row, { overdue = true } = {}) {
  return (overdue && row.overdue ? 8 : 0) + (row.kev ? 4 : 0) + (row.exploited ? 2 : 0) + (row.publicly_disclosed ? 1 : 0);
}

export function dueCell(row, { overdue = true } = {}) {
  if (!row.due) return h("td", { class: "muted", title: "no severity deadline and not on KEV" }, "none");
  return h("td", { class: `mono ${overdue && row.overdue ? "overdue" : ""}` }, row.due);
}

export const severitySortKey = (severity) => (SEVERITIES.includes(severity) ? SEVERITIES.indexOf(severity) : SEVERITIES.length);

function compare(a, b) {
  const empty = (value) => value === null || value === undefined || value === "";
  if (empty(a) || empty(b)) return empty(a) - empty(b); // empty last, whichever the direction
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(a).localeCompare(String(b), "en", { numeric: true });
}

/**
 * A table whose column headers sort it (click again: the other way), with ``aria-sort`` saying how.
 * ``columns``: [{label, cell: (item) => <td>|<th>, key?: (item) => value, class?, descending?}]; a column
 * without ``key`` does not sort. ``initial``: the index of the column sorted at first (null: as given).
 */
export function sortableTable(caption, columns, items, { initial = null, attrs = {}, rowAttrs = () => ({}) } = {}) {
  const state = { index: initial, descending: initial !== null && Boolean(columns[initial].descending) };
  const body = h("tbody");
  const headers = columns.map((column, index) => {
    if (!column.key) return h("th", { scope: "col", class: column.class }, column.label);
    const button = h("button", { type: "button", class: "sort", onclick: () => {
      state.descending = state.index === index ? !state.descending : Boolean(column.descending);
      state.index = index;
      draw();
    } }, column.label);
    return h("th", { scope: "col", class: column.class }, button);
  });
  function draw() {
    const key = state.index === null ? null : columns[state.index].key;
    const sorted = key === null ? items : [...items].sort((a, b) => {
      const x = key(a);
      const y = key(b);
      const empty = (value) => value === null || value === undefined || value === "";
      if (empty(x) || empty(y)) return compare(x, y);
      return state.descending ? compare(y, x) : compare(x, y);
    });
    headers.forEach((th, index) => {
      if (columns[index].key) th.setAttribute("aria-sort", index === state.index ? (state.descending ? "descending" : "ascending") : "none");
    });
    body.replaceChildren(...sorted.map((item) => h("tr", rowAttrs(item), columns.map((column) => column.cell(item)))));
  }
  draw();
  return h("table", { ...attrs, class: `${attrs.class || ""} sortable`.trim() }, h("caption", {}, caption), h("thead", {}, h("tr", {}, headers)), body);
}

function asOfForm(asOf, go) {
  const input = h("input", { id: "f-as-of", name: "as_of", type: "date", value: asOf });
  return h("form", {
    class: "filters",
    "aria-label": "Evaluate on a date",
    onsubmit: (event) => {
      event.preventDefault();
      go(input.value);
    },
  },
  h("div", {}, h("label", { for: "f-as-of" }, "As of"), input),
  h("div", { class: "form-actions" }, h("button", { type: "submit" }, "Apply"),
    h("button", { type: "button", class: "secondary", onclick: () => go("") }, "Today")));
}

/** The fleet summary's overdue counts per severity, as words (a chart repeats them). */
export function overdueLine(totals) {
  const parts = SEVERITIES.map((s) => `${totals[`overdue_${s.toLowerCase()}`] ?? 0} ${s}`);
  return h("p", { class: "overdue-line", "data-testid": "fleet-overdue" },
    h("strong", {}, `${totals.overdue_total ?? 0} open CVE(s) past their deadline`), ` (${parts.join(", ")}); `,
    `${totals.open_exploited ?? 0} open exploited or KEV-listed. `,
    "Deadlines follow the SLA policy (days per severity from release); a KEV due date wins when it is earlier.");
}

export async function renderExposure(view, { id, params }) {
  const asOf = DATE.test(params.get("as_of") || "") ? params.get("as_of") : "";
  const go = (day) => { window.location.hash = `#/exposure/${encodeURIComponent(id)}${day ? `?as_of=${day}` : ""}`; };
  view.append(h("p", { class: "crumbs" }, h("a", { href: "#/fleet" }, "Fleet"), " / ", id));
  const row = await guarded(() => api(`/exposure/${encodeURIComponent(id)}`, { params: asOf ? { as_of: asOf } : {} }));
  view.append(h("h1", {}, row ? `Exposure of ${row.name}` : id));
  if (!row) return;
  view.append(asOfForm(asOf, go));
  if (row.status !== "assessed") {
    view.append(emptyState(`Exposure unknown: ${row.status || "never scanned"}. Scan the server from the Fleet page.`));
    return;
  }
  const onLabel = asOf ? `on ${asOf}` : "today";
  view.append(h("dl", { class: "facts" },
    h("dt", {}, "Product"), h("dd", {}, row.product),
    h("dt", {}, "Build"), h("dd", { class: "mono" }, row.build || "—"),
    h("dt", {}, "Scanned"), h("dd", {}, row.scanned_at ? timeCell(row.scanned_at) : "never"),
    h("dt", {}, "Open"), h("dd", {}, `${row.open_total} CVE(s), ${row.open_exploited} exploited or KEV-listed`),
    h("dt", {}, `Overdue ${onLabel}`), h("dd", { "data-testid": "server-overdue" },
      `${row.overdue_total}: ${SEVERITIES.map((s) => `${row[`overdue_${s.toLowerCase()}`]} ${s}`).join(", ")}`)));
  const open = (row.cves || []).filter((cve) => cve.status === "open");
  if (open.length === 0) {
    view.append(emptyState(`No open CVE ${onLabel}.`));
    return;
  }
  const columns = [
    { label: "CVE", key: (c) => c.cve, cell: (c) => h("th", { scope: "row", class: "mono" }, c.cve) },
    { label: "Severity", key: (c) => severitySortKey(c.severity), cell: (c) => h("td", {}, severityCell(c.severity)) },
    { label: "Month", key: (c) => c.month, cell: (c) => h("td", { class: "nowrap" }, c.month), descending: true },
    { label: "Due", key: (c) => c.due, cell: (c) => dueCell(c) },
    { label: "Risk", key: (c) => riskRank(c), cell: (c) => h("td", {}, riskBadges(c)), descending: true },
    { label: "Fix", key: (c) => c.fix, cell: (c) => h("td", {}, c.fix || "—") },
    { label: "Closing KBs", cell: (c) => h("td", {}, c.fixing_kbs.length ? c.fixing_kbs.map((kb, i) => [i ? ", " : "", h("a", { href: `#/kb/${kb}` }, kb)]) : h("span", { class: "muted" }, "none")) },
    { label: "Why open", cell: (c) => h("td", { class: "small" }, c.reason) },
  ];
  view.append(sortableTable(`${open.length} open CVE(s) ${onLabel}, earliest deadline first (click a column to sort)`, columns, open,
    { initial: 3, attrs: { class: "exposure" }, rowAttrs: (c) => ({ "data-cve": c.cve }) }));
}

// --- Settings: the SLA policy ------------------------------------------------------------------

export function slaSection(canChange) {
  const holder = h("section", { class: "sla", "aria-labelledby": "sla-title" }, h("h2", { id: "sla-title" }, "Deadlines (SLA)"));
  const draw = async () => {
    const policy = await guarded(() => api("/sla"));
    if (!policy) return;
    const inputs = Object.fromEntries(SEVERITIES.map((s) => [s, h("input", {
      id: `sla-${s.toLowerCase()}`, name: s.toLowerCase(), type: "number", min: 1, max: 3650, value: policy[s.toLowerCase()], disabled: !canChange,
    })]));
    // The server's rule (1 to 3650 days, named per severity) is what a refusal shows, as the CLI's.
    const form = h("form", { class: "filters", "aria-label": "SLA policy", novalidate: true, onsubmit: async (event) => {
      event.preventDefault();
      const body = Object.fromEntries(SEVERITIES.map((s) => [s.toLowerCase(), Number(inputs[s].value)]));
      const saved = await guarded(() => api("/sla", { method: "PUT", body }));
      if (saved) {
        showBanner(`SLA saved: ${SEVERITIES.map((s) => `${s} ${saved[s.toLowerCase()]} days`).join(", ")}`, "notice");
        draw();
      }
    } },
    SEVERITIES.map((s) => h("div", {}, h("label", { for: `sla-${s.toLowerCase()}` }, `${s} (days)`), inputs[s])),
    canChange ? h("div", { class: "form-actions" }, h("button", { type: "submit" }, "Save deadlines")) : null);
    holder.replaceChildren(holder.firstChild,
      h("p", { class: "hint" }, `Days from a CVE's release to its deadline (${policy.source}); a CVE on CISA's KEV catalog is due at CISA's date when that is earlier. Every change is audited.`),
      form);
  };
  draw();
  return holder;
}

// --- Catalog: CISA's KEV catalog ---------------------------------------------------------------

export function kevSection(canUpdate) {
  const holder = h("section", { class: "kev", "aria-labelledby": "kev-title" }, h("h2", { id: "kev-title" }, "Known Exploited Vulnerabilities (CISA)"));
  const status = h("div", { "data-testid": "kev-status" });
  const button = h("button", { type: "button" }, "Update KEV now");
  const draw = async () => {
    const kev = await guarded(() => api("/kev", { params: { vendor: "Microsoft", limit: 5 } }));
    if (!kev) return;
    if (!kev.catalog) {
      status.replaceChildren(emptyState("No KEV catalog yet: exploited-first uses Microsoft's flags only. Update it here or with autopatch kev update (online) or autopatch kev import FILE."));
      return;
    }
    const c = kev.catalog;
    status.replaceChildren(
      h("p", {}, `Version ${c.catalog_version}, ${c.count.toLocaleString("en")} entries (${kev.total} Microsoft), imported `, timeCell(c.imported_at), "."),
      table("The latest Microsoft entries", ["CVE", "Added", "Due", "Product", "Ransomware"], kev.items.map((e) =>
        h("tr", {}, h("th", { scope: "row", class: "mono" }, e.cveID), h("td", {}, e.dateAdded), h("td", {}, e.dueDate), h("td", {}, e.product), h("td", {}, e.knownRansomwareCampaignUse)))));
  };
  button.addEventListener("click", async () => {
    button.disabled = true;
    const accepted = await guarded(() => api("/kev/update", { method: "POST" }));
    let job = accepted && { status: "running" };
    while (job && job.status === "running") {
      await new Promise((resolve) => setTimeout(resolve, KEV_POLL_MS));
      job = await guarded(() => api(`/jobs/${accepted.job_id}`));
    }
    button.disabled = false;
    if (job && job.status === "succeeded") showBanner(`KEV catalog ${job.summary.catalog_version}: ${job.summary.added} added, ${job.summary.updated} updated, ${job.summary.removed} removed`, "notice");
    else if (job) showBanner(`KEV update failed: ${job.error}`);
    draw();
  });
  holder.append(status, canUpdate ? h("div", { class: "toolbar" }, button) : null);
  draw();
  return holder;
}
