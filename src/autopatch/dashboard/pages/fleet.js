// Fleet: every server with its exposure from the latest scan, the fleet's open CVEs by severity,
// and (operators) select servers, see the plan (a dry run), start a patch run.

import { api } from "../api.js";
import { barChart, chip, emptyState, guarded, h, showBanner, table, timeCell } from "../ui.js";
import { heldList } from "./baselines.js";
import { overdueLine } from "./deadlines.js";

const PAGE = 1000; // the API's largest page: one request covers fleets up to this size

function countCell(value, className) {
  if (value === null || value === undefined) return h("td", { class: "num muted", title: "not assessed" }, "unknown");
  return h("td", { class: `num ${value > 0 ? className : ""}` }, String(value));
}

function exposureStatus(row) {
  if (!row) return "never scanned";
  if (row.status === "assessed") return null;
  if (!row.online) return "offline: not assessed"; // the Online column already says since when
  return row.status || "never scanned";
}

function fleetChart(totals, rows) {
  if (totals.servers_assessed === 0) {
    // Zeros here would read as "nothing open": say that nothing is known yet instead.
    return h("figure", { class: "chart", "data-testid": "fleet-severity-chart" },
      h("figcaption", {}, "Open CVEs by severity"),
      h("p", { class: "muted" }, `No server assessed yet (${totals.servers} never scanned, offline or unidentified). Select servers and Scan them to see their open CVEs.`));
  }
  const other = Math.max(0, totals.open_total - totals.open_critical - totals.open_important);
  const otherOverdue = Math.max(0, totals.overdue_total - totals.overdue_critical - totals.overdue_important);
  const unknown = rows.filter((row) => row.status !== "assessed").length;
  const figure = barChart(
    `Open and overdue CVEs by severity across ${totals.servers_assessed} assessed of ${totals.servers} servers`,
    [
      { label: "Critical", values: [totals.open_critical, totals.overdue_critical] },
      { label: "Important", values: [totals.open_important, totals.overdue_important] },
      { label: "Other", values: [other, otherOverdue] },
    ],
    [{ name: "open", class: "bar-now" }, { name: "overdue", class: "bar-overdue" }],
    "fleet-severity-chart",
  );
  figure.append(overdueLine(totals));
  if (unknown > 0) figure.append(h("p", { class: "hint" }, `${unknown} server(s) not assessed (never scanned, offline or unidentified): not counted.`));
  return figure;
}

function planView(plan) {
  const rows = plan.servers.map((server) =>
    h("tr", {},
      h("td", {}, server.name, h("div", { class: "mono small" }, server.instance_id)),
      h("td", {}, server.product || "—"),
      h("td", { class: "mono" }, server.build || "—"),
      h("td", {}, server.kbs_in_order.length
        ? h("ol", { class: "kb-list" }, server.kbs_in_order.map((kb) => h("li", {}, h("a", { href: `#/kb/${kb}` }, kb))))
        : h("span", { class: "muted" }, "nothing to install")),
      h("td", { class: "num" }, String(server.expected_reboots)),
      h("td", {}, server.open_exploited ? h("div", { class: "small" }, `${server.open_exploited} exploited/KEV CVE(s) open: starts first`) : null,
        server.note || "", server.baseline ? h("div", { class: "small" }, `baseline ${server.baseline}`) : null,
        heldList(server.held)),
    ));
  return h("section", { class: "plan", "aria-labelledby": "plan-title" },
    h("h2", { id: "plan-title" }, `Plan: ${plan.kbs_to_install} KB install(s) on ${plan.servers.length} server(s)`),
    h("p", { class: "hint" }, "From a fresh scan just now; nothing was installed or stored."),
    table("The plan, per server, KBs in install order", ["Server", "Product", "Build", "KBs in order", { label: "Reboots", class: "num" }, "Note"], rows));
}

export async function renderFleet(view, { can }) {
  const operator = can("operator");
  // In this order: the first /instances discovers the fleet that /exposure then reports on.
  const instances = await guarded(() => api("/instances", { params: { limit: PAGE } }));
  const exposure = instances && (await guarded(() => api("/exposure", { params: { limit: PAGE } })));
  view.append(h("h1", {}, "Fleet"));
  if (!instances || !exposure) {
    view.append(emptyState("The fleet could not be loaded (see the error above).", h("button", { type: "button", onclick: () => window.dispatchEvent(new HashChangeEvent("hashchange")) }, "Retry")));
    return;
  }
  const refresh = h("button", {
    type: "button", class: "secondary",
    onclick: async () => {
      refresh.disabled = true;
      const done = await guarded(() => api("/instances", { params: { limit: 1, refresh: true } }));
      refresh.disabled = false;
      if (done) window.dispatchEvent(new HashChangeEvent("hashchange"));
    },
  }, "Discover servers again");
  if (instances.items.length === 0) {
    view.append(emptyState("No servers yet. AutoPatch lists the servers SSM (or the simulator) knows; discover them again, then scan.", refresh));
    return;
  }
  let byId = {};
  const chartHolder = h("div", { class: "chart-holder" });
  const tableHolder = h("div", { class: "table-holder" });
  view.append(chartHolder);

  const selected = new Set();
  const boxes = [];
  const count = h("span", { class: "selection", role: "status" }, "No server selected");
  const scanButton = h("button", { type: "button", class: "secondary", disabled: true }, "Scan");
  const planButton = h("button", { type: "button", class: "secondary", disabled: true }, "Plan");
  const startButton = h("button", { type: "button", disabled: true }, "Start patch run");
  const output = h("div", { class: "plan-output" });
  const selectAll = h("input", { type: "checkbox", id: "select-all", "aria-label": "Select all servers" });

  function update() {
    const n = selected.size;
    count.textContent = n ? `${n} of ${instances.items.length} server(s) selected` : "No server selected";
    scanButton.disabled = planButton.disabled = startButton.disabled = n === 0;
    scanButton.textContent = n ? `Scan (${n})` : "Scan";
    planButton.textContent = n ? `Plan (${n})` : "Plan";
    startButton.textContent = n ? `Start patch run (${n})` : "Start patch run";
    selectAll.checked = n === instances.items.length;
    selectAll.indeterminate = n > 0 && n < instances.items.length;
  }
  selectAll.addEventListener("change", () => {
    for (const box of boxes) {
      box.checked = selectAll.checked;
      if (box.checked) selected.add(box.value);
      else selected.delete(box.value);
    }
    update();
  });

  const boxFor = {};
  for (const server of instances.items) {
    const box = h("input", { type: "checkbox", value: server.instance_id, "aria-label": `Select ${server.name}` });
    box.addEventListener("change", () => {
      if (box.checked) selected.add(server.instance_id);
      else selected.delete(server.instance_id);
      update();
    });
    boxes.push(box);
    boxFor[server.instance_id] = box;
  }
  const serverRow = (server) => {
    const row = byId[server.instance_id];
    const unknown = exposureStatus(row);
    return h("tr", {},
      operator ? h("td", {}, boxFor[server.instance_id]) : null,
      h("th", { scope: "row" }, h("a", { href: `#/exposure/${server.instance_id}`, title: "its open CVEs and deadlines" }, server.name)),
      h("td", { class: "mono" }, server.instance_id),
      h("td", {}, server.product),
      h("td", { class: "mono" }, (row && row.build) || server.build || "—"), // the scan's build has the revision
      h("td", {}, server.online ? chip("Online") : h("span", {}, chip("Offline"), server.offline_since ? h("div", { class: "small" }, "since ", timeCell(server.offline_since)) : null)),
      unknown ? h("td", { class: "muted", colspan: 4 }, unknown) : [countCell(row.open_critical, "sev-critical"), countCell(row.open_important, "sev-important"),
        countCell(row.overdue_total, "overdue"), countCell(row.open_exploited, "sev-critical")],
      h("td", {}, row && row.scanned_at ? timeCell(row.scanned_at) : h("span", { class: "muted" }, "never")),
    );
  };
  const headers = [
    ...(operator ? [{ label: selectAll }] : []),
    "Name", "Instance ID", "Product", "Build", "Online",
    { label: "Critical open", class: "num" }, { label: "Important open", class: "num" },
    { label: "Overdue", class: "num" }, { label: "Exploited/KEV", class: "num" }, "Last scan",
  ];
  // Rebuilt in place after a scan: the checkboxes (and so the selection) are kept.
  const show = (fleetExposure) => {
    byId = Object.fromEntries(fleetExposure.items.map((row) => [row.instance_id, row]));
    chartHolder.replaceChildren(fleetChart(fleetExposure.totals, fleetExposure.items));
    tableHolder.replaceChildren(table(`${instances.total} server(s); exposure from each one's latest scan`, headers, instances.items.map(serverRow), { class: "fleet" }));
  };
  show(exposure);
  if (operator) {
    planButton.addEventListener("click", async () => {
      planButton.disabled = true;
      output.replaceChildren(h("p", { class: "muted", role: "status" }, `Scanning and planning ${selected.size} server(s)…`));
      const plan = await guarded(() => api("/runs", { method: "POST", body: { instance_ids: [...selected], dry_run: true } }));
      output.replaceChildren(plan ? planView(plan) : "");
      update();
    });
    scanButton.addEventListener("click", async () => {
      scanButton.disabled = true;
      const ids = [...selected];
      output.replaceChildren(h("p", { class: "muted", role: "status" }, `Scanning ${ids.length} server(s)…`));
      const results = await Promise.all(ids.map((id) => api(`/instances/${id}/scan`, { method: "POST" }).catch((exc) => ({ instance_id: id, result: exc.message }))));
      const failed = results.filter((row) => row.result !== "scanned");
      if (failed.length) showBanner(`Not scanned: ${failed.map((row) => `${row.name || row.instance_id} (${row.result})`).join("; ")}`);
      const again = await guarded(() => api("/exposure", { params: { limit: PAGE } }));
      if (again) show(again);
      output.replaceChildren();
      update();
    });
    startButton.addEventListener("click", () => confirmStart(view, [...selected], instances.items));
    view.append(h("div", { class: "toolbar" }, count, scanButton, planButton, startButton, refresh));
  } else {
    view.append(h("div", { class: "toolbar" }, refresh));
  }
  view.append(tableHolder, output);
  update();
}

function confirmStart(view, ids, servers) {
  const names = servers.filter((s) => ids.includes(s.instance_id)).map((s) => s.name);
  const go = h("button", { type: "button" }, `Patch ${ids.length} server(s)`);
  const cancel = h("button", { type: "button", class: "secondary", autofocus: true }, "Cancel");
  const dialog = h("dialog", { "aria-labelledby": "start-title" },
    h("h2", { id: "start-title" }, "Start a patch run"),
    h("p", {}, `Install the missing KBs, one at a time, on these ${ids.length} server(s), rebooting when a KB requires it:`),
    h("ul", { class: "names" }, names.map((name) => h("li", {}, name))),
    h("div", { class: "toolbar" }, cancel, go));
  cancel.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => dialog.remove());
  go.addEventListener("click", async () => {
    go.disabled = true;
    const started = await guarded(() => api("/runs", { method: "POST", body: { instance_ids: ids } }));
    dialog.close();
    if (!started) return;
    window.location.hash = `#/runs/${started.run_id}`;
  });
  view.append(dialog);
  dialog.showModal();
}
