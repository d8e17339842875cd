// CVE lookup: "are we exposed to the CVE in today's news?" Type a CVE id; every server exposed to it
// now, since when (from the exposure history), the KB that closes it and whether Windows Update
// offers it to that server; the servers whose exposure is unknown are listed apart, never counted
// as safe. The CVE lives in the URL (#/cve-lookup?cve=CVE-2024-21412): a link or a reload shows it.

import { api, ApiError } from "../api.js";
import { emptyState, formatTime, h, severityCell, showBanner, table } from "../ui.js";
import { downloads } from "./report_tools.js";

function offeredCell(row) {
  if (row.offered) return h("span", { class: "chip good" }, h("span", { "aria-hidden": "true" }, "✓ "), "Offered");
  const words = row.closing_kbs ? "Not offered: install by hand" : "No KB from Microsoft";
  return h("span", { class: "chip muted" }, h("span", { "aria-hidden": "true" }, "✗ "), words);
}

function results(report) {
  const counts = report.counts;
  const exposed = report.exposed.map((row) => h("tr", { "data-instance": row.instance_id },
    h("th", { scope: "row" }, row.name, h("div", { class: "small muted mono" }, row.instance_id)),
    h("td", { class: "small" }, row.product, h("div", { class: "mono" }, row.build)),
    h("td", {}, row.since ? formatTime(row.since) : h("span", { class: "muted" }, "not in the history")),
    h("td", {}, row.closing_kbs ? row.closing_kbs.split(";").map((kb) => h("a", { href: `#/kb/${kb}`, class: "kb" }, kb)) : "—"),
    h("td", {}, offeredCell(row)),
    h("td", {}, row.due || "no deadline", row.overdue ? h("div", { class: "small bad-text" }, "overdue") : null)));
  const unknown = report.unknown.map((row) => h("tr", { "data-instance": row.instance_id },
    h("th", { scope: "row" }, row.name, h("div", { class: "small muted mono" }, row.instance_id)),
    h("td", {}, row.reason)));
  const kev = report.kev ? `KEV: listed ${report.kev.dateAdded}, due ${report.kev.dueDate}` : "Not on CISA's KEV list";
  return h("div", { class: "cve-results", "aria-live": "polite" },
    h("h2", {}, report.cve, report.title ? `: ${report.title}` : ""),
    h("p", { class: "small" }, kev, ` · report made ${formatTime(report.generated_at)}`),
    h("div", { class: "tiles" },
      h("div", { class: `tile ${counts.exposed ? "bad" : "good"}` }, h("div", { class: "tile-value" }, counts.exposed), h("div", { class: "tile-label" }, "servers exposed")),
      h("div", { class: "tile good" }, h("div", { class: "tile-value" }, counts.fixed), h("div", { class: "tile-label" }, "fixed")),
      h("div", { class: "tile muted" }, h("div", { class: "tile-value" }, counts.not_affected), h("div", { class: "tile-label" }, "product not affected")),
      h("div", { class: "tile muted" }, h("div", { class: "tile-value" }, counts.unknown), h("div", { class: "tile-label" }, "exposure unknown"))),
    downloads(`${report.cve} report`, `cve/${encodeURIComponent(report.cve)}`),
    report.exposed.length === 0
      ? emptyState(`No assessed server is exposed to ${report.cve}.`)
      : table(`Servers exposed to ${report.cve}, longest exposed first`,
        [{ label: "Server" }, { label: "Product and build" }, { label: "Exposed since" }, { label: "Closing KB" },
          { label: "Windows Update" }, { label: "Due" }], exposed, { "data-testid": "exposed" }),
    report.unknown.length
      ? table("Servers whose exposure is unknown (not counted as safe)", [{ label: "Server" }, { label: "Why" }], unknown, { "data-testid": "unknown" })
      : null);
}

export async function renderCveLookup(view, { params }) {
  const wanted = (params.get("cve") || "").trim();
  const input = h("input", { id: "cve-id", name: "cve", value: wanted, placeholder: "CVE-2024-21412", autocomplete: "off", spellcheck: "false", required: true });
  const holder = h("div", { class: "cve-holder" });
  const form = h("form", { class: "toolbar", role: "search", "aria-label": "CVE lookup", onsubmit: (event) => {
    event.preventDefault();
    const id = input.value.trim().toUpperCase();
    if (id) window.location.hash = `#/cve-lookup?cve=${encodeURIComponent(id)}`;
  } },
  h("label", { for: "cve-id" }, "CVE id"), input, h("button", { type: "submit" }, "Look up"));
  view.append(h("h1", {}, "CVE lookup"), form, holder);
  if (!wanted) {
    holder.append(emptyState("Type a CVE id to see every server exposed to it, since when, and the KB that closes it."));
    return;
  }
  try {
    const report = await api(`/reports/cve/${encodeURIComponent(wanted)}`, { params: { format: "json" } });
    holder.append(results(report));
  } catch (exc) {
    const known = exc instanceof ApiError && (exc.status === 404 || exc.status === 422);
    showBanner(exc.message);
    holder.append(emptyState(known ? `Nothing to show for ${wanted}.` : "The lookup failed (see the error above)."));
  }
}
