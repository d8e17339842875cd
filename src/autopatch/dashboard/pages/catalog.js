// Catalog: the products the MSRC catalog holds, and (admins) "Update now": a background import
// job polled every second, its progress, then its import summary.

import { api, fetchAll, serves } from "../api.js";
import { emptyState, guarded, h, showBanner, table } from "../ui.js";
import { kevSection } from "./deadlines.js";

const POLL_MS = 1000;
const DONE = new Set(["succeeded", "failed"]);

function describe(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

const label = (key) => key.replaceAll("_", " ");
const shortSource = (value) => (typeof value === "string" && value.includes("/") ? value.split("/").pop() : value);

/**
 * The import summary as `catalog update --format json` gives it: its numbers as a list, the catalog's
 * totals likewise, and one table row per document (the file name, not its whole path).
 */
function summaryView(summary) {
  const scalars = Object.entries(summary).filter(([, value]) => value === null || typeof value !== "object");
  const objects = Object.entries(summary).filter(([, value]) => value && typeof value === "object" && !Array.isArray(value));
  const lists = Object.entries(summary).filter(([, value]) => Array.isArray(value));
  const facts = (entries) => h("dl", { class: "facts" }, entries.flatMap(([key, value]) => [h("dt", {}, label(key)), h("dd", {}, describe(value))]));
  return h("div", { class: "import-summary" },
    h("h3", {}, "Import summary"),
    facts(scalars),
    objects.map(([key, value]) => [h("h3", {}, label(key)), facts(Object.entries(value))]),
    lists.map(([key, rows]) => {
      const keys = [...new Set(rows.flatMap((row) => Object.keys(row)))];
      return table(`Import summary: ${label(key)}`, keys.map(label),
        rows.map((row) => h("tr", {}, keys.map((k) => h("td", {}, describe(shortSource(row[k])))))));
    }));
}

function jobView(job) {
  const { progress } = job;
  const parts = [h("p", {}, "Job ", h("span", { class: "mono" }, job.job_id), ": ", h("strong", { class: "job-status" }, job.status))];
  if (progress && progress.total) {
    parts.push(h("div", { class: "progress" },
      h("label", { for: "job-progress" }, "Import progress"),
      h("progress", { id: "job-progress", max: progress.total, value: progress.done ?? 0 }),
      h("span", { role: "status" }, `${progress.done ?? 0} of ${progress.total} document(s)`)));
  } else if (job.status === "running") {
    parts.push(h("p", { class: "muted", role: "status" }, "Starting…"));
  }
  if (job.error) parts.push(h("p", { class: "form-error" }, job.error));
  if (job.summary) parts.push(summaryView(job.summary));
  return h("section", { class: "job", "aria-labelledby": "job-title" }, h("h2", { id: "job-title" }, "Catalog update"), parts);
}

export async function renderCatalog(view, { can }) {
  view.append(h("h1", {}, "Catalog"));
  const [products, updatable] = await Promise.all([
    guarded(() => fetchAll("/catalog/products")),
    serves("POST", "/catalog/update"),
  ]);
  const jobArea = h("div", { class: "job-area" });
  let timer = null;
  if (can("admin") && updatable) {
    const button = h("button", { type: "button" }, "Update now");
    button.addEventListener("click", async () => {
      button.disabled = true;
      const job = await guarded(() => api("/catalog/update", { method: "POST", body: {} }));
      if (!job) {
        button.disabled = false;
        return;
      }
      const jobId = job.job_id || job.id;
      jobArea.replaceChildren(jobView({ job_id: jobId, status: "running", progress: null }));
      timer = setInterval(async () => {
        const now = await guarded(() => api(`/jobs/${encodeURIComponent(jobId)}`));
        if (!now) {
          clearInterval(timer);
          button.disabled = false;
          return;
        }
        jobArea.replaceChildren(jobView(now));
        if (DONE.has(now.status)) {
          clearInterval(timer);
          button.disabled = false;
          if (now.status === "failed") showBanner(now.error || "the catalog update failed");
        }
      }, POLL_MS);
    });
    view.append(h("div", { class: "toolbar" }, button, h("span", { class: "hint" }, "Downloads the MSRC months not imported yet and imports them.")));
  }
  view.append(jobArea, kevSection(can("admin")));
  if (!products) return () => timer && clearInterval(timer);
  if (products.items.length === 0) {
    view.append(emptyState(can("admin") && updatable ? "The catalog is empty: Update now imports it." : "The catalog is empty: an admin imports it (Update now, or autopatch catalog update)."));
  } else {
    // 1,800 products make a page nobody scrolls: the first SHOWN that match what is typed.
    const SHOWN = 100;
    const filter = h("input", { id: "product-filter", type: "search", placeholder: "e.g. Windows Server 2022" });
    const holder = h("div");
    const draw = () => {
      const text = filter.value.trim().toLowerCase();
      const matching = products.items.filter((p) => !text || p.product.toLowerCase().includes(text));
      const rows = matching.slice(0, SHOWN).map((p) => h("tr", {},
        h("th", { scope: "row" }, h("a", { href: `#/cves?product=${encodeURIComponent(p.product)}` }, p.product)),
        h("td", { class: "mono" }, p.product_id),
        h("td", {}, p.product_family || "—"),
        h("td", { class: "num" }, p.cves.toLocaleString("en")),
        h("td", { class: "num" }, p.kbs.toLocaleString("en"))));
      const caption = `${matching.length} of ${products.total} product(s)${matching.length > SHOWN ? `, the first ${SHOWN} shown: type to narrow` : ""}`;
      holder.replaceChildren(matching.length
        ? table(caption, ["Product", "MSRC id", "Family", { label: "CVEs", class: "num" }, { label: "KBs", class: "num" }], rows)
        : emptyState("No product matches.", h("button", { type: "button", class: "secondary", onclick: () => { filter.value = ""; draw(); } }, "Clear filter")));
    };
    filter.addEventListener("input", draw);
    view.append(h("div", { class: "filters" }, h("div", {}, h("label", { for: "product-filter" }, "Filter products"), filter)), holder);
    draw();
  }
  return () => timer && clearInterval(timer);
}
