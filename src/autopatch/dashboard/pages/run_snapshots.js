// A run server's EBS snapshots (patch --snapshot) on the run page: which volume each snapshot is of,
// whether they started (patching goes on only then), why they failed, and how to roll back to them.

import { chip, h, timeCell } from "../ui.js";

const PHASE_STATUS = { started: "Done", failed: "Failed" };
const PHASE_TEXT = {
  started: "Started: the volumes' point in time was taken before the first KB.",
  failed: "Failed: the server was skipped, nothing was installed on it.",
};
const WAITING = "Waiting for EC2 to start them: no KB is installed before.";

function volumeItem(volume) {
  const kind = volume.root ? "boot volume" : "data volume";
  return h("li", {},
    h("span", { class: "mono" }, volume.snapshot_id), ` of the ${kind} `,
    h("span", { class: "mono" }, volume.volume_id), volume.device ? ` (${volume.device})` : "");
}

/** The snapshot section of a server, or null when the run took none of it. */
export function snapshotPanel(server) {
  const snapshot = server.snapshot;
  if (!snapshot) return null;
  const status = PHASE_STATUS[snapshot.phase] || "Pending";
  return h("div", { class: "snapshots", "data-testid": `snapshots-${server.instance_id}` },
    h("h3", {}, "EBS snapshots before patching"),
    h("p", { class: "small" }, chip(status), " ", PHASE_TEXT[snapshot.phase] || WAITING),
    snapshot.volumes.length ? h("ul", {}, snapshot.volumes.map(volumeItem)) : null,
    snapshot.started_at ? h("p", { class: "small" }, "Started ", timeCell(snapshot.started_at)) : null,
    snapshot.reason ? h("p", { class: "small" }, snapshot.reason) : null,
    snapshot.pruned_at
      ? h("p", { class: "hint" }, "Deleted by snapshots prune at ", timeCell(snapshot.pruned_at), ": nothing left to roll back to.")
      : null,
    snapshot.rollback.length
      ? h("div", { class: "rollback" },
        h("p", { class: "small" }, "To roll back (AWS CLI):"),
        h("ul", {}, snapshot.rollback.map((hint) => h("li", {}, h("code", { class: "mono" }, hint)))))
      : null);
}
