// CVEs: the catalog of one product with filters (severity, month, text) and paging, all kept in the
// URL so a reload or a shared link shows the same list; and a KB page with its supersedence chain.

import { api, fetchAll } from "../api.js";
import { emptyState, guarded, h, severityCell, table } from "../ui.js";
import { dueCell, riskBadges, riskRank, severitySortKey, sortableTable } from "./deadlines.js";

const PAGE_SIZES = [25, 50, 100, 200];
const SEVERITIES = ["Critical", "Important", "Moderate", "Low"];

function go(params) {
  const query = new URLSearchParams(Object.entries(params).filter(([, value]) => value !== "" && value !== null && value !== undefined));
  window.location.hash = `#/cves?${query}`;
}

function kbLinks(kbs) {
  return kbs.length ? kbs.map((kb, index) => [index ? ", " : "", h("a", { href: `#/kb/${kb.kb}` }, kb.kb)]) : h("span", { class: "muted" }, "no KB");
}

export async function renderCves(view, { params }) {
  view.append(h("h1", {}, "CVEs"));
  const products = await guarded(() => fetchAll("/catalog/products"));
  if (!products) return;
  if (products.items.length === 0) {
    view.append(emptyState("The catalog is empty. Import MSRC data on the Catalog page (Update now), or with autopatch catalog update.", h("a", { href: "#/catalog" }, "Go to the catalog")));
    return;
  }
  const state = {
    // Without a choice, the product with the most CVEs: a start more useful than the alphabet's first.
    product: params.get("product") || products.items.reduce((best, p) => (p.cves > best.cves ? p : best)).product,
    severity: params.get("severity") || "",
    month: params.get("month") || "",
    q: params.get("q") || "",
    as_of: params.get("as_of") || "",
    limit: Number(params.get("limit")) || 50,
    offset: Number(params.get("offset")) || 0,
  };
  const product = h("select", { id: "f-product", name: "product" },
    products.items.map((p) => h("option", { value: p.product, selected: p.product === state.product }, `${p.product} (${p.cves})`)));
  const severity = h("select", { id: "f-severity", name: "severity" },
    h("option", { value: "" }, "Any"), SEVERITIES.map((s) => h("option", { value: s, selected: s === state.severity }, s)));
  const month = h("input", { id: "f-month", name: "month", placeholder: "YYYY-MM", value: state.month, pattern: "[0-9]{4}-[0-9]{2}", size: 8 });
  const text = h("input", { id: "f-q", name: "q", type: "search", placeholder: "CVE id, title or KB", value: state.q });
  const asOf = h("input", { id: "f-as-of", name: "as_of", type: "date", value: state.as_of, title: "deadlines and KEV on this day; later CVEs left out" });
  const size = h("select", { id: "f-limit", name: "limit" }, PAGE_SIZES.map((n) => h("option", { value: n, selected: n === state.limit }, String(n))));
  const form = h("form", {
    class: "filters",
    onsubmit: (event) => {
      event.preventDefault();
      go({ product: product.value, severity: severity.value, month: month.value.trim(), q: text.value.trim(), as_of: asOf.value, limit: size.value, offset: 0 });
    },
  },
  h("div", {}, h("label", { for: "f-product" }, "Product"), product),
  h("div", {}, h("label", { for: "f-severity" }, "Severity"), severity),
  h("div", {}, h("label", { for: "f-month" }, "Month"), month),
  h("div", {}, h("label", { for: "f-q" }, "Search CVE"), text),
  h("div", {}, h("label", { for: "f-as-of" }, "As of"), asOf),
  h("div", {}, h("label", { for: "f-limit" }, "Per page"), size),
  h("div", { class: "form-actions" }, h("button", { type: "submit" }, "Apply"),
    h("button", { type: "button", class: "secondary", onclick: () => go({ product: product.value }) }, "Clear filters")));
  view.append(form);
  const found = await guarded(() => api("/catalog/cves", { params: state }));
  if (!found) {
    view.append(emptyState("The CVEs could not be loaded (see the error above)."));
    return;
  }
  if (found.total === 0) {
    view.append(emptyState("No CVE matches these filters.", h("button", { type: "button", class: "secondary", onclick: () => go({ product: state.product }) }, "Clear filters")));
    return;
  }
  // Without a server, "overdue" only says the deadline has passed: the Due column shows it, no badge.
  const columns = [
    { label: "CVE", key: (c) => c.cve, cell: (c) => h("th", { scope: "row", class: "mono" }, c.cve) },
    { label: "Title", key: (c) => c.title, cell: (c) => h("td", {}, c.title) },
    { label: "Severity", key: (c) => severitySortKey(c.severity), cell: (c) => h("td", {}, severityCell(c.severity)) },
    { label: "Month", key: (c) => c.month, cell: (c) => h("td", { class: "nowrap" }, c.month), descending: true },
    { label: "CVSS", class: "num", key: (c) => c.cvss_base, cell: (c) => h("td", { class: "num" }, c.cvss_base ?? "—"), descending: true },
    { label: "Due", key: (c) => c.due, cell: (c) => dueCell(c, { overdue: false }) },
    { label: "Risk", key: (c) => riskRank(c, { overdue: false }), cell: (c) => h("td", {}, riskBadges(c, { overdue: false })), descending: true },
    { label: "Fixed by", cell: (c) => h("td", {}, kbLinks(c.kbs)) },
  ];
  const from = state.offset + 1;
  const to = state.offset + found.items.length;
  const pager = h("nav", { class: "pager", "aria-label": "Pages" },
    h("button", { type: "button", class: "secondary", disabled: state.offset === 0, onclick: () => go({ ...state, offset: Math.max(0, state.offset - state.limit) }) }, "Previous"),
    h("span", { role: "status" }, `${from}–${to} of ${found.total.toLocaleString("en")}`),
    h("button", { type: "button", class: "secondary", disabled: to >= found.total, onclick: () => go({ ...state, offset: state.offset + state.limit }) }, "Next"));
  const caption = `CVEs of ${state.product}${state.severity ? `, ${state.severity}` : ""}${state.month ? `, ${state.month}` : ""}${state.q ? `, matching “${state.q}”` : ""} (this page; click a column to sort)`;
  view.append(pager, sortableTable(caption, columns, found.items, { attrs: { class: "cves" }, rowAttrs: (c) => ({ "data-cve": c.cve }) }));
}

function chain(title, kbs) {
  return h("div", {}, h("h3", {}, title),
    kbs.length ? h("ol", { class: "chain" }, kbs.map((kb) => h("li", {}, h("a", { href: `#/kb/${kb}` }, kb)))) : h("p", { class: "muted" }, "none"));
}

export async function renderKb(view, { id }) {
  view.append(h("p", { class: "crumbs" }, h("a", { href: "#/cves" }, "CVEs"), " / ", id));
  const kb = await guarded(() => api(`/catalog/kbs/${encodeURIComponent(id)}`));
  view.append(h("h1", {}, kb ? kb.kb : id));
  if (!kb) return;
  view.append(
    h("dl", { class: "facts" },
      h("dt", {}, "Month"), h("dd", {}, kb.month),
      h("dt", {}, "Kind"), h("dd", {}, kb.subtype || "—"),
      h("dt", {}, "Restart"), h("dd", {}, kb.restart_required || "—"),
      h("dt", {}, "Links"), h("dd", {}, kb.url ? h("a", { href: kb.url, rel: "noreferrer" }, "article") : "—", " ", kb.download_url ? h("a", { href: kb.download_url, rel: "noreferrer" }, "download") : "")),
    h("section", { class: "chains", "aria-labelledby": "chain-title" },
      h("h2", { id: "chain-title" }, "Supersedence"),
      h("div", { class: "summary-lists" },
        chain("Supersedes (newest first, whole chain)", kb.supersedes_chain),
        chain("Superseded by (whole chain)", kb.superseded_by_chain))),
    table("Products and the build this KB brings", ["Product", "Fixed build"],
      kb.products.map((p) => h("tr", {}, h("th", { scope: "row" }, p.product), h("td", { class: "mono" }, p.fixed_build || "—")))),
    table(`${kb.cves.length} CVE(s) this KB fixes`, ["CVE", "Severity", "Title"],
      kb.cves.map((c) => h("tr", {}, h("th", { scope: "row", class: "mono" }, c.cve), h("td", {}, severityCell(c.severity)), h("td", {}, c.title)))));
}
