// A run's rings (patch --rings) on the run page: each ring in order with its health gate — passed,
// failed and why, waiting, being checked, or soaking until when — and each server's check.

import { chip, h, table, timeCell } from "../ui.js";

const BUSY = new Set(["Patching", "Checking", "Rechecking"]);

function minutes(seconds) {
  if (seconds < 60) return `${seconds} s`;
  const m = Math.ceil(seconds / 60);
  return m < 120 ? `${m} min` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** What the gate waits for, or why it ended as it did. */
function gateDetail(ring) {
  if (ring.status === "Soaking" && ring.soak_until) {
    const left = Math.max(0, Math.round((Date.parse(ring.soak_until) - Date.now()) / 1000));
    return h("span", {}, `Soaking: checked again at `, timeCell(ring.soak_until), ` (about ${minutes(left)} left)`);
  }
  if (ring.status === "Waiting") return "Starts once the ring before it passes its gate.";
  if (BUSY.has(ring.status)) return ring.status === "Patching" ? "Its servers are being patched." : "Its servers are being checked.";
  if (ring.status === "Passed") return h("span", {}, "Passed at ", timeCell(ring.finished_at));
  return ring.reason || "";
}

function counts(ring) {
  return Object.entries(ring.counts).filter(([key]) => key !== "servers")
    .map(([key, value]) => `${value} ${key}`).join(", ");
}

function ringServers(ring) {
  const rows = ring.servers.map((server) => h("tr", {},
    h("th", { scope: "row" }, server.name, " ", h("span", { class: "mono small" }, server.instance_id)),
    h("td", {}, chip(server.check)),
    h("td", {}, server.detail || "")));
  return h("details", { class: "ring-servers", open: ring.status === "Failed" },
    h("summary", {}, `${ring.servers.length} server(s)${counts(ring) ? `: ${counts(ring)}` : ""}`),
    table(`Servers of ring ${ring.name} and their gate checks`, ["Server", "Check", "Detail"], rows));
}

/** The rings section of a run, or null for a run without rings. */
export function ringsSection(run) {
  if (!run.rings || !run.rings.length) return null;
  const items = run.rings.map((ring, index) => h("li", { class: `ring ring-${ring.status.toLowerCase().replace(" ", "-")}`, "data-ring": ring.name },
    h("div", { class: "ring-head" },
      h("strong", {}, `${index + 1}. ${ring.name}`), " ",
      h("span", { class: "mono small" }, ring.selector), " ",
      chip(ring.status)),
    h("p", { class: "small ring-detail" }, gateDetail(ring)),
    ringServers(ring)));
  return h("section", { class: "rings", "aria-labelledby": "rings-title", "data-testid": "rings" },
    h("h2", { id: "rings-title" }, "Rings and health gates"),
    h("ol", { class: "ring-list" }, items));
}
