// Runs: the history, and one run live — progress per server and per KB pushed by Server-Sent
// Events read with fetch; each event only triggers a read of the run, the one source of truth.
// Where the events cannot stream (API Gateway in front of a Lambda answers the whole body at the
// end, or an error), the page polls that same read instead, backing off while nothing changes. It
// retries a failed KB, reboots a server, cancels; the summary and the exposure once the run is done.

import { api, serves, streamEvents, StreamUnavailable } from "../api.js";
import { barChart, chip, emptyState, guarded, h, showBanner, table, timeCell } from "../ui.js";
import { pausedNote } from "./windows.js";
import { snapshotPanel } from "./run_snapshots.js";
import { ringsSection } from "./run_rings.js";

const TERMINAL = new Set(["Succeeded", "Failed", "Cancelled", "Halted"]);
const NO_WORK = new Set(["Already Installed", "Superseded", "Not Available", "Held"]);
const FINISHED_KB = new Set(["Success", "Failed", "Cancelled"]);
// Polling: the first read soon, then further apart while nothing changes, fast again when it does.
const POLL_FIRST_MS = 1000;
const POLL_FACTOR = 1.6;
const POLL_MAX_MS = 12000;
const NO_STREAM = "streaming is not available through this API";
// Set once the events route proved it cannot stream here (before any event came through), so the
// next run page polls at once instead of waiting for the same verdict again. Cleared by a reload.
let streamingUnavailable = false;

export async function renderRuns(view) {
  const runs = await guarded(() => api("/runs", { params: { limit: 200 } }));
  view.append(h("h1", {}, "Runs"));
  if (!runs) return;
  if (runs.items.length === 0) {
    view.append(emptyState("No runs yet. Select servers on the Fleet page and start one.", h("a", { href: "#/fleet" }, "Go to the fleet")));
    return;
  }
  const rows = runs.items.map((run) =>
    h("tr", {},
      h("th", { scope: "row" }, h("a", { href: `#/runs/${run.run_id}`, class: "mono" }, run.run_id)),
      h("td", {}, run.kind),
      h("td", {}, chip(run.status)),
      h("td", {}, timeCell(run.created_at)),
      h("td", {}, run.finished_at ? timeCell(run.finished_at) : h("span", { class: "muted" }, "not finished")),
      h("td", {}, run.reason || ""),
    ));
  view.append(table(`${runs.total} run(s), newest first${runs.total > runs.items.length ? ` (the ${runs.items.length} newest shown)` : ""}`,
    ["Run", "Kind", "Status", "Created", "Finished", "Reason"], rows));
}

/** KBs that needed work and how many of them are finished (Success, Failed or Cancelled). */
function progressOf(kbs) {
  const work = kbs.filter((kb) => !NO_WORK.has(kb.state));
  const done = work.filter((kb) => FINISHED_KB.has(kb.state)).length;
  return { done, total: work.length };
}

function percent({ done, total }, terminal) {
  if (total === 0) return terminal ? 100 : 0;
  return Math.round((100 * done) / total);
}

function progressBar(label, progress, terminal, id) {
  const value = percent(progress, terminal);
  return h("div", { class: "progress" },
    h("label", { for: id }, label),
    h("progress", { id, max: 100, value }),
    h("span", { class: "progress-text", role: "status" }, `${value}% (${progress.done} of ${progress.total} KBs)`));
}

function summary(run) {
  const byServer = {};
  const byKb = {};
  for (const server of run.servers) {
    byServer[server.status] = (byServer[server.status] || 0) + 1;
    for (const kb of server.kbs) byKb[kb.state] = (byKb[kb.state] || 0) + 1;
  }
  const list = (counts) => Object.entries(counts).map(([state, n]) => h("li", {}, chip(state), ` ${n}`));
  return h("section", { class: "summary", "aria-labelledby": "summary-title" },
    h("h2", { id: "summary-title" }, "Summary"),
    h("p", {}, `${run.status} ${run.finished_at ? "at " : ""}`, run.finished_at ? timeCell(run.finished_at) : "", run.reason ? ` — ${run.reason}` : ""),
    h("div", { class: "summary-lists" },
      h("div", {}, h("h3", {}, "Servers"), h("ul", { class: "counts" }, list(byServer))),
      h("div", {}, h("h3", {}, "KBs"), h("ul", { class: "counts" }, list(byKb)))));
}

function exposureChart(run) {
  // Stored by the run itself: "before" from the scans it was planned on, "after" from its final scan.
  const { before, after } = run.exposure || {};
  const phases = [[before, { name: "before", class: "bar-before" }], [after, { name: "after", class: "bar-now" }]]
    .filter(([totals]) => totals);
  if (!phases.length) return null;
  const keys = [["Critical", "open_critical"], ["Important", "open_important"], ["All open", "open_total"]];
  const figure = barChart("Open CVEs on this run's servers: before and after the run",
    keys.map(([label, key]) => ({ label, values: phases.map(([totals]) => totals[key]) })),
    phases.map(([, series]) => series), "exposure-chart");
  const unassessed = phases.map(([totals]) => totals.servers - totals.servers_assessed);
  if (Math.max(...unassessed) > 0) {
    figure.append(h("p", { class: "hint" }, "Servers offline or not scanned are not counted (their exposure is unknown, not zero)."));
  }
  if (!after) figure.append(h("p", { class: "hint" }, "After: measured by a final scan when the run ends."));
  return figure;
}

export async function renderRun(view, { id, can }) {
  const operator = can("operator");
  const [first, hasEvents, hasRetry] = await Promise.all([
    guarded(() => api(`/runs/${id}`)),
    serves("GET", "/runs/{}/events"),
    serves("POST", "/runs/{}/retry"),
  ]);
  view.append(h("p", { class: "crumbs" }, h("a", { href: "#/runs" }, "Runs"), " / ", h("span", { class: "mono" }, id)));
  view.append(h("h1", {}, "Run ", h("span", { class: "mono" }, id)));
  if (!first) return undefined;
  const live = h("span", { class: "live", role: "status" });
  const note = h("p", { class: "hint live-note", hidden: true });
  const header = h("div", { class: "run-header" });
  const body = h("div", { class: "run-body" });
  const after = h("div", { class: "run-after" });
  view.append(header, body, after);

  let run = first;
  let seen = JSON.stringify(first);
  let mode = "stream"; // "stream", "poll" or "stopped" (finished, or the page was left)
  let source = null; // the stream's AbortController
  let timer = null; // the next poll
  let delay = POLL_FIRST_MS;
  let pollReason = "";
  let pending = null;
  let finishedShown = false;

  async function act(promise, notice) {
    const result = await guarded(() => promise());
    if (result && notice) showBanner(notice(result), "notice");
    await refresh();
    if (mode === "poll") schedulePoll(POLL_FIRST_MS); // an action starts changes: look again soon
    return result;
  }

  function kbRow(server, kb) {
    const retry = operator && hasRetry && kb.state === "Failed"
      ? h("button", {
        type: "button", class: "small",
        onclick: async () => {
          const retried = await act(() => api(`/runs/${run.run_id}/retry`, { method: "POST", body: { instance_id: server.instance_id, kb: kb.kb } }));
          if (!retried || !retried.run_id) return;
          window.location.hash = `#/runs/${retried.run_id}`;
        },
      }, `Retry ${kb.kb}`)
      : null;
    const last = kb.attempts.length ? kb.attempts[kb.attempts.length - 1] : null;
    return h("tr", {},
      h("th", { scope: "row" }, h("a", { href: `#/kb/${kb.kb}` }, kb.kb)),
      h("td", {}, chip(kb.state)),
      h("td", {}, kb.reason || (last && last.output_tail) || ""),
      h("td", { class: "num" }, String(kb.attempts.length)),
      h("td", {}, timeCell(kb.updated_at)),
      operator ? h("td", {}, retry) : null);
  }

  function serverSection(server, terminal) {
    const progress = progressOf(server.kbs);
    const work = server.kbs.filter((kb) => !NO_WORK.has(kb.state));
    const rest = server.kbs.filter((kb) => NO_WORK.has(kb.state));
    const reboot = operator
      ? h("button", {
        type: "button", class: "secondary small",
        onclick: () => act(() => api(`/instances/${server.instance_id}/reboot`, { method: "POST" }), () => `Reboot requested for ${server.name}.`),
      }, `Reboot ${server.name}`)
      : null;
    const headers = ["KB", "State", "Detail", { label: "Attempts", class: "num" }, "Updated", ...(operator ? [""] : [])];
    return h("section", { class: "server", "data-instance": server.instance_id },
      h("div", { class: "server-head" },
        h("h2", {}, server.name, " ", h("span", { class: "mono small" }, server.instance_id)),
        chip(server.status), reboot),
      h("p", { class: "small" }, `${server.product || "unknown product"} · build ${server.build_before || "?"} → ${server.build_after || "…"} · ${server.reboots} reboot(s)`, server.reason ? ` · ${server.reason}` : ""),
      snapshotPanel(server),
      // No bar without work: a skipped (offline) server at "100%" would read as patched.
      work.length ? progressBar(`Progress of ${server.name}`, progress, terminal, `progress-${server.instance_id}`) : null,
      work.length
        ? table(`KBs to install on ${server.name}, in install order`, headers, work.map((kb) => kbRow(server, kb)))
        : h("p", { class: "muted" }, server.kbs.length || !server.reason ? "Nothing to install on this server." : `Not patched: ${server.reason}.`),
      // KBs that needed no work (installed before, superseded, not offered) would bury the few that did.
      rest.length
        ? h("details", { class: "no-work" },
          h("summary", {}, `${rest.length} KB(s) needing no work (${[...new Set(rest.map((kb) => kb.state))].join(", ")})`),
          table(`KBs on ${server.name} that needed no work`, headers, rest.map((kb) => kbRow(server, kb))))
        : null);
  }

  function render() {
    const terminal = TERMINAL.has(run.status);
    const all = progressOf(run.servers.flatMap((server) => server.kbs));
    const cancel = operator && !terminal && run.status !== "Cancelling"
      ? h("button", { type: "button", class: "danger", onclick: () => act(() => api(`/runs/${run.run_id}/cancel`, { method: "POST" }), (r) => `Run ${r.run_id}: ${r.status}.`) }, "Cancel run")
      : null;
    // replaceChildren would print a null as the text "null": sections a run does not have are left out.
    header.replaceChildren(...[
      h("div", { class: "run-facts" },
        chip(run.status), " ", live,
        h("span", { class: "small" }, ` ${run.kind} run · created `, timeCell(run.created_at), run.started_at ? [" · started ", timeCell(run.started_at)] : ""),
        cancel),
      note,
      pausedNote(run),
      progressBar("Overall progress", all, terminal, "progress-overall"),
      ringsSection(run),
    ].filter(Boolean));
    body.replaceChildren(
      ...(run.servers.length ? run.servers.map((server) => serverSection(server, terminal)) : [h("p", { class: "muted", role: "status" }, "Scanning and planning the servers…")]));
    if (terminal && !finishedShown) {
      finishedShown = true;
      after.replaceChildren(summary(run));
      const chart = exposureChart(run);
      if (chart) after.append(chart);
    } else if (terminal) {
      after.firstChild.replaceWith(summary(run));
    }
  }

  /** Read the run and render it if it changed; whether it changed. Stops following once it is terminal. */
  async function refresh() {
    const next = await guarded(() => api(`/runs/${id}`));
    let changed = false;
    if (next) {
      const text = JSON.stringify(next);
      changed = text !== seen;
      seen = text;
      run = next;
      // Unchanged: no new DOM, so an opened "no work" list and the focus stay as they are.
      if (changed) render();
    }
    if (TERMINAL.has(run.status)) stop("Finished");
    return changed;
  }

  function stop(text) {
    mode = "stopped";
    if (source) source.abort();
    clearTimeout(timer);
    source = timer = null;
    live.textContent = text;
    note.hidden = true;
  }

  function follow() {
    source = new AbortController();
    live.textContent = "Live";
    let events = 0;
    const own = source;
    streamEvents(`/runs/${id}/events`, (name) => {
      events += 1;
      if (name === "end") {
        stop("Finished");
        refresh();
      } else {
        scheduleRefresh();
      }
    }, source.signal)
      .then(() => {
        // Closed without "end" (a restart, a proxy's timeout, a gateway's buffered body cut short).
        if (source === own && !TERMINAL.has(run.status)) poll(events ? "the live stream closed" : NO_STREAM);
      })
      .catch((exc) => {
        if (source !== own || TERMINAL.has(run.status)) return; // left, or finished meanwhile
        const unavailable = exc instanceof StreamUnavailable;
        if (unavailable && events === 0) streamingUnavailable = true;
        poll(unavailable ? NO_STREAM : "the live stream broke");
      });
  }

  function poll(reason) {
    if (source) source.abort();
    source = null;
    mode = "poll";
    pollReason = reason;
    live.textContent = "Polling";
    schedulePoll(POLL_FIRST_MS);
  }

  function schedulePoll(ms) {
    clearTimeout(timer);
    delay = ms;
    const seconds = Math.max(1, Math.round(delay / 1000));
    note.textContent = `Live updates every ${seconds} s (${pollReason}).`;
    note.hidden = false;
    timer = setTimeout(async () => {
      timer = null;
      const changed = await refresh();
      // Left, finished, or an action already scheduled the next read while this one was under way.
      if (mode !== "poll" || timer) return;
      schedulePoll(changed ? POLL_FIRST_MS : Math.min(POLL_MAX_MS, delay * POLL_FACTOR));
    }, delay);
  }

  function scheduleRefresh() {
    // Transitions come in bursts (a KB and its server move together): one read per burst.
    if (pending) return;
    pending = setTimeout(async () => {
      pending = null;
      await refresh();
    }, 250);
  }

  render();
  if (TERMINAL.has(run.status)) {
    stop("Finished");
  } else if (!hasEvents) {
    poll("this server sends no live events");
  } else if (streamingUnavailable) {
    poll(NO_STREAM);
  } else {
    follow();
  }
  return () => {
    stop("");
    if (pending) clearTimeout(pending);
  };
}
