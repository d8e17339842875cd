// Baselines: which KBs a plan installs on the servers each one applies to. Everyone reads the rules
// (in words, as `autopatch baseline show` prints them) and the servers a baseline reaches now;
// admins create, edit and delete them. The server checks every value (422 names the field and the
// rule): this page only collects them.

import { api } from "../api.js";
import { emptyState, guarded, h, showBanner, table, timeCell } from "../ui.js";

// The classifications of domain/baselines.py, with the MSRC SubTypes each one stands for.
const CLASSIFICATIONS = [
  ["security", "Security Update: the monthly cumulative update on Windows Server 2016 and later"],
  ["cumulative", "Monthly Rollup and older cumulative kinds"],
  ["security-only", "Security Only (Windows Server 2012 R2 and older)"],
  ["standalone", "Standalone Security Update (out-of-band fixes, Recovery Environment updates)"],
  ["servicing-stack", "Servicing Stack Update"],
  ["hotpatch", "Hotpatch (Azure Edition and Arc-enrolled servers)"],
  ["dynamic-update", "Setup Dynamic Updates (never offered to servers)"],
  ["other", "anything else"],
];
const SEVERITIES = ["Critical", "Important", "Moderate", "Low"];

/** The KBs a plan held back on one server, each with the rule that held it (used by the fleet's plan too). */
export function heldList(held) {
  if (!held || !held.length) return null;
  return h("details", { class: "held" },
    h("summary", {}, `${held.length} KB(s) held back`),
    h("ul", { class: "kb-list" }, held.map((entry) =>
      h("li", {}, h("a", { href: `#/kb/${entry.kb}` }, entry.kb), " — ", entry.rule))));
}

function words(text) {
  return text.split(/[\s,;]+/).map((part) => part.trim()).filter(Boolean);
}

function lines(text) {
  return text.split("\n").map((line) => line.trim()).filter(Boolean);
}

function field(id, label, control, hint) {
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hint ? h("p", { class: "hint" }, hint) : null);
}

/** The create/edit form; ``baseline`` is the one edited (null: a new one). Resolves through ``done``. */
function baselineForm(baseline, done) {
  const editing = baseline !== null;
  const value = baseline || { name: "", min_severity: null, classifications: [], approve_after_days: 0, approved: [],
    rejected: [], exploited_first: false, groups: [], rings: null, snapshot: false };
  const name = h("input", { id: "b-name", name: "name", value: value.name, required: true, disabled: editing,
    autocomplete: "off", spellcheck: "false", placeholder: "prod-servers" });
  const severity = h("select", { id: "b-severity", name: "min_severity" },
    h("option", { value: "" }, "any severity"),
    SEVERITIES.map((s) => h("option", { value: s, selected: value.min_severity === s }, `${s} and above`)));
  const days = h("input", { id: "b-days", name: "approve_after_days", type: "number", min: "0", max: "365",
    value: String(value.approve_after_days) });
  const classes = CLASSIFICATIONS.map(([key, text]) => h("div", { class: "check" },
    h("label", {},
      h("input", { type: "checkbox", name: "classification", value: key, checked: value.classifications.includes(key) }),
      ` ${key}`),
    h("span", { class: "hint" }, ` — ${text}`)));
  const approved = h("textarea", { id: "b-approved", name: "approved", rows: 2, spellcheck: "false",
    placeholder: "KB5034439" }, value.approved.join("\n"));
  const rejected = h("textarea", { id: "b-rejected", name: "rejected", rows: 2, spellcheck: "false",
    placeholder: "KB5034770: breaks the SQL cluster" }, value.rejected.map((r) => `${r.kb}: ${r.reason}`).join("\n"));
  const exploited = h("input", { id: "b-exploited", type: "checkbox", name: "exploited_first", checked: value.exploited_first });
  const groups = h("textarea", { id: "b-groups", name: "groups", rows: 2, spellcheck: "false",
    placeholder: "Environment=prod" }, value.groups.join("\n"));
  const save = h("button", { type: "submit" }, editing ? "Save changes" : "Create baseline");
  const cancel = h("button", { type: "button", class: "secondary", onclick: () => done(null) }, "Cancel");
  const form = h("form", { class: "baseline-form", "aria-label": editing ? `Edit baseline ${value.name}` : "New baseline",
    onsubmit: async (event) => {
      event.preventDefault();
      const body = {
        min_severity: severity.value || null,
        classifications: [...form.querySelectorAll("input[name=classification]:checked")].map((box) => box.value),
        approve_after_days: Number(days.value || 0),
        approved: words(approved.value),
        rejected: lines(rejected.value).map((line) => {
          const [kb, ...reason] = line.split(":");
          return { kb: kb.trim(), reason: reason.join(":").trim() };
        }),
        exploited_first: exploited.checked,
        groups: lines(groups.value),
        rings: value.rings,
        snapshot: value.snapshot,
      };
      save.disabled = true;
      const saved = await guarded(() => editing
        ? api(`/baselines/${encodeURIComponent(value.name)}`, { method: "PUT", body })
        : api("/baselines", { method: "POST", body: { name: name.value.trim(), ...body } }));
      save.disabled = false;
      if (saved) done(saved);
    } },
    h("h2", {}, editing ? `Edit baseline ${value.name}` : "New baseline"),
    field("b-name", "Name", name, editing ? null : "1-64 letters, digits, '.', '_' or '-'"),
    h("div", { class: "field-row" },
      field("b-severity", "Minimum severity", severity),
      field("b-days", "Approve after (days)", days, "days after Microsoft's release before a KB is approved")),
    h("fieldset", {}, h("legend", {}, "Classifications (none ticked: all)"), classes),
    field("b-approved", "Approved by name", approved, "installed whatever the rules and advisories say"),
    field("b-rejected", "Rejected (KB: reason, one per line)", rejected, "never installed; the plan shows the reason"),
    h("label", { class: "check", for: "b-exploited" }, exploited,
      " Exploited first: KBs fixing an exploited CVE skip the wait and install right after the servicing stack"),
    field("b-groups", "Servers with these tags (Tag=Value, one per line)", groups,
      "a server with one of them uses this baseline unless a run names another"),
    h("div", { class: "form-actions" }, save, cancel));
  return form;
}

function baselineRow(baseline, can, actions) {
  const servers = baseline.servers.length
    ? `${baseline.servers.length}: ${baseline.servers.map((s) => s.name).join(", ")}`
    : "none now";
  let controls = null;
  if (can("admin")) {
    const remove = h("button", { type: "button", class: "small secondary" }, "Delete");
    remove.addEventListener("click", () => {
      if (remove.dataset.armed) return actions.remove(baseline);
      remove.dataset.armed = "yes";
      remove.textContent = `Confirm delete ${baseline.name}`;
      remove.className = "small danger";
      return null;
    });
    controls = h("td", {}, h("div", { class: "form-actions" },
      h("button", { type: "button", class: "small", onclick: () => actions.edit(baseline) }, "Edit"), remove));
  }
  return h("tr", { "data-baseline": baseline.name },
    h("th", { scope: "row", class: "mono" }, baseline.name),
    h("td", {}, h("ul", { class: "rules" }, baseline.rules.map((rule) => h("li", {}, rule)))),
    h("td", {}, servers),
    h("td", {}, timeCell(baseline.updated_at)),
    controls);
}

export async function renderBaselines(view, { can }) {
  view.append(h("h1", {}, "Baselines"),
    h("p", { class: "hint" }, "A baseline decides which KBs a plan installs: a server uses the baselines its tags " +
      "match, or the one a run names. KBs it holds back are shown in plans, each with the rule that held it; " +
      "KBs with a known installation problem (KB5034439) are held until approved by name."));
  const formHolder = h("div");
  const listHolder = h("div");
  const draw = async () => {
    const baselines = await guarded(() => api("/baselines"));
    if (!baselines) return;
    const headers = ["Name", "Rules", "Servers now", "Updated"].concat(can("admin") ? ["Change"] : []);
    listHolder.replaceChildren(baselines.items.length
      ? table("Baselines, by name", headers, baselines.items.map((b) => baselineRow(b, can, actions)), { class: "baselines" })
      : emptyState("No baseline yet: plans install every KB a server needs, except KBs with a known installation problem."));
  };
  const closeForm = async (saved) => {
    formHolder.replaceChildren();
    if (saved) {
      showBanner(`Baseline ${saved.name} saved`, "notice");
      await draw();
    }
  };
  const actions = {
    edit: (baseline) => {
      formHolder.replaceChildren(baselineForm(baseline, closeForm));
      formHolder.scrollIntoView();
    },
    remove: async (baseline) => {
      const gone = await guarded(() => api(`/baselines/${encodeURIComponent(baseline.name)}`, { method: "DELETE" }));
      if (gone) {
        showBanner(`Baseline ${baseline.name} deleted`, "notice");
        await draw();
      }
    },
  };
  if (can("admin")) {
    view.append(h("div", { class: "toolbar" },
      h("button", { type: "button", onclick: () => formHolder.replaceChildren(baselineForm(null, closeForm)) }, "New baseline")));
  }
  view.append(formHolder, listHolder);
  await draw();
}
