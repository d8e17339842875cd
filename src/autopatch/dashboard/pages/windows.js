// Maintenance windows: when scheduled runs patch which servers. Everyone sees each window's schedule,
// whether it is open now, its next occurrences (in the window's own time zone, and UTC) and the runs
// its occurrences started or continued, with a paused run's "continues at"; admins create and delete
// windows. The server checks every value (422 names the field and the rule): this page only collects them.

import { api } from "../api.js";
import { chip, emptyState, formatTime, guarded, h, showBanner, table } from "../ui.js";

const RUNS_SHOWN = 5;

function field(id, label, control, hint) {
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hint ? h("p", { class: "hint" }, hint) : null);
}

function input(id, name, placeholder, value = "") {
  return h("input", { id, name, value, placeholder, autocomplete: "off", spellcheck: "false" });
}

/** The create form (admins); resolves through ``done`` with the new window, or null when cancelled. */
function windowForm(done) {
  const name = input("w-name", "name", "saturday-night");
  const cron = input("w-cron", "cron", "0 2 * * SAT");
  const timezone = input("w-timezone", "timezone", "Europe/Berlin", "UTC");
  const duration = input("w-duration", "duration", "4h");
  const cutoff = input("w-cutoff", "cutoff", "1h", "0m");
  const group = input("w-group", "group", "PatchGroup=web");
  const baseline = input("w-baseline", "baseline", "(none)");
  const save = h("button", { type: "submit" }, "Create window");
  const cancel = h("button", { type: "button", class: "secondary", onclick: () => done(null) }, "Cancel");
  const form = h("form", { class: "window-form", "aria-label": "New window", onsubmit: async (event) => {
    event.preventDefault();
    const body = {
      name: name.value.trim(), cron: cron.value.trim(), timezone: timezone.value.trim(), duration: duration.value.trim(),
      cutoff: cutoff.value.trim() || "0m", group: group.value.trim(), baseline: baseline.value.trim() || null,
    };
    save.disabled = true;
    const created = await guarded(() => api("/windows", { method: "POST", body }));
    save.disabled = false;
    if (created) done(created);
  } },
  h("h2", {}, "New window"),
  h("div", { class: "field-row" },
    field("w-name", "Name", name, "1-64 letters, digits, '.', '_' or '-'"),
    field("w-group", "Servers (tag)", group, "Tag=Value: the servers each run patches")),
  h("div", { class: "field-row" },
    field("w-cron", "Schedule (cron)", cron, "minute hour day-of-month month day-of-week"),
    field("w-timezone", "Time zone", timezone, "the zone the schedule is read in")),
  h("div", { class: "field-row" },
    field("w-duration", "Duration", duration, "4h, 90m, 1h30m"),
    field("w-cutoff", "Cutoff", cutoff, "no new KB starts this long before the end"),
    field("w-baseline", "Baseline", baseline, "optional: the baseline the runs plan with")),
  h("div", { class: "form-actions" }, save, cancel));
  return form;
}

function nowChip(window) {
  if (window.accepting_new_kbs) return chip("Open");
  if (window.open_now) return h("span", {}, chip("Cutoff"), h("div", { class: "small" }, "open, no new KB starts"));
  return chip("Closed");
}

/** "2026-01-09 08:15 UTC": an API time to the minute. */
function minute(iso) {
  return formatTime(iso).replace(/:\d\d UTC$/, " UTC");
}

/** The start in the window's zone (and in UTC when that zone is another), and the cutoff. */
function occurrenceItem(occurrence) {
  const utc = occurrence.starts_local.endsWith(" UTC") ? "" : `${minute(occurrence.starts_at)} · `;
  return h("li", {}, occurrence.starts_local,
    h("div", { class: "small muted" }, `${utc}no new KB from ${minute(occurrence.cutoff_at).slice(11)}`));
}

function runItem(occurrence, next) {
  if (!occurrence.run_id) {
    return h("li", {}, h("span", { class: "small" }, `${formatTime(occurrence.starts_at)}: no run`), occurrence.note ? h("div", { class: "small muted" }, occurrence.note) : null);
  }
  const paused = occurrence.run_status === "Paused";
  return h("li", { "data-run": occurrence.run_id },
    h("a", { href: `#/runs/${occurrence.run_id}`, class: "mono" }, occurrence.run_id), " ", chip(occurrence.run_status || "unknown"),
    paused ? h("div", { class: "small" }, `${occurrence.run_reason} — continues ${next ? next.starts_local : "when the window opens again"}`) : null);
}

function windowRow(window, admin, remove) {
  // The same run appears under each occurrence that continued it: listed once, newest first.
  const seen = new Set();
  const runs = window.occurrences.filter((o) => !o.run_id || (!seen.has(o.run_id) && seen.add(o.run_id))).slice(0, RUNS_SHOWN);
  const next = window.next.length ? window.next[0] : null;
  let controls = null;
  if (admin) {
    controls = h("button", { type: "button", class: "small secondary" }, "Delete");
    controls.addEventListener("click", () => {
      if (controls.dataset.armed) return remove(window);
      controls.dataset.armed = "yes";
      controls.textContent = `Confirm delete ${window.name}`;
      controls.className = "small danger";
      return null;
    });
  }
  return h("tr", { "data-window": window.name },
    h("th", { scope: "row" }, window.name),
    h("td", {}, h("span", { class: "mono" }, window.cron), h("div", { class: "small" }, window.timezone)),
    h("td", {}, `${window.duration}`, h("div", { class: "small" }, `cutoff ${window.cutoff}`)),
    h("td", { class: "mono" }, window.group),
    h("td", {}, window.baseline || h("span", { class: "muted" }, "none")),
    h("td", {}, nowChip(window)),
    h("td", {}, h("ol", { class: "occurrences" }, window.next.map(occurrenceItem))),
    h("td", {}, runs.length ? h("ul", { class: "window-runs" }, runs.map((o) => runItem(o, next))) : h("span", { class: "muted" }, "none yet")),
    admin ? h("td", {}, controls) : null);
}

export async function renderWindows(view, { can }) {
  const admin = can("admin");
  view.append(h("h1", {}, "Maintenance windows"));
  view.append(h("p", { class: "hint" },
    "Each occurrence starts a patch run of the window's servers (or continues a paused one). No new KB starts after the cutoff; "
    + "a KB being installed finishes; what is left waits for the next occurrence (the run shows \u201cPaused: window closed\u201d)."));
  const formHolder = h("div");
  const holder = h("div");
  const draw = async () => {
    const list = await guarded(() => api("/windows", { params: { limit: 1000 } }));
    if (!list) return;
    if (list.items.length === 0) {
      holder.replaceChildren(emptyState(admin ? "No windows yet: create one." : "No windows yet. An admin creates them."));
      return;
    }
    const details = await Promise.all(list.items.map((item) => guarded(() => api(`/windows/${encodeURIComponent(item.name)}`, { params: { count: 3 } }))));
    const remove = async (window) => {
      const deleted = await guarded(() => api(`/windows/${encodeURIComponent(window.name)}`, { method: "DELETE" }));
      if (deleted === undefined) return; // refused: the banner says why (a run of it is unfinished, say)
      showBanner(`Window ${window.name} deleted.`, "notice");
      await draw();
    };
    const headers = ["Window", "Schedule", "Duration", "Servers", "Baseline", "Now", "Next occurrences", "Runs", ...(admin ? [""] : [])];
    holder.replaceChildren(table(`${list.total} window(s); times in each window's zone, then UTC`, headers,
      details.filter(Boolean).map((window) => windowRow(window, admin, remove)), { class: "windows" }));
  };
  if (admin) {
    const open = h("button", { type: "button" }, "New window");
    open.addEventListener("click", () => {
      open.hidden = true;
      formHolder.replaceChildren(windowForm(async (created) => {
        formHolder.replaceChildren();
        open.hidden = false;
        if (created) {
          showBanner(`Window ${created.name} created.`, "notice");
          await draw();
        }
      }));
    });
    view.append(h("div", { class: "toolbar" }, open), formHolder);
  }
  view.append(holder);
  await draw();
}

/** On a run's page: when a run paused by its window continues (its window's next occurrence). */
export function pausedNote(run) {
  if (run.status !== "Paused" || !run.options || !run.options.window) return null;
  const name = run.options.window;
  const note = h("p", { class: "paused-note", role: "status" },
    `${run.reason || "Paused: window closed"} — continues when window `, h("a", { href: "#/windows" }, name), " opens again");
  guarded(() => api(`/windows/${encodeURIComponent(name)}/next`, { params: { count: 1 } })).then((next) => {
    if (!next || !next.items.length) return;
    const { starts_local: local, starts_at: utc } = next.items[0];
    note.append(`: ${local}${local.endsWith(" UTC") ? "" : ` (${minute(utc)})`}`);
  });
  return note;
}
