// Settings (admins): what may change while AutoPatch runs: where run summaries go, how patient
// MSRC downloads are. Each value is checked by the server (422 names the rule); secrets come back
// masked, so a notifier setting is typed anew rather than edited.

import { api } from "../api.js";
import { emptyState, guarded, h, showBanner, table } from "../ui.js";
import { slaSection } from "./deadlines.js";

function settingRow(setting, redraw) {
  const id = `setting-${setting.key}`;
  const input = h("input", { id, name: setting.key, value: setting.secret ? "" : setting.value, autocomplete: "off", spellcheck: "false",
    placeholder: setting.value });
  const save = h("button", { type: "submit", class: "small" }, "Save");
  const reset = h("button", { type: "button", class: "small secondary", disabled: setting.source !== "stored",
    title: "forget the stored value (back to the environment or the default)" }, "Reset");
  const form = h("form", { class: "inline", onsubmit: async (event) => {
    event.preventDefault();
    save.disabled = true;
    const saved = await guarded(() => api(`/settings/${encodeURIComponent(setting.key)}`, { method: "PUT", body: { value: input.value } }));
    save.disabled = false;
    if (saved) {
      showBanner(`${setting.key} saved: ${saved.value}`, "notice");
      redraw();
    }
  } }, h("label", { for: id, class: "visually-hidden" }, `New value of ${setting.key}`), input, save, reset);
  reset.addEventListener("click", async () => {
    if (await guarded(() => api(`/settings/${encodeURIComponent(setting.key)}`, { method: "DELETE" }))) redraw();
  });
  const fromEnvironment = setting.source === "environment";
  return h("tr", { "data-key": setting.key },
    h("th", { scope: "row", class: "mono" }, setting.key),
    h("td", { class: "mono" }, setting.value || "— (none)"),
    h("td", {}, setting.source),
    h("td", {}, setting.description),
    h("td", {}, fromEnvironment ? h("span", { class: "hint" }, `set by AUTOPATCH_${setting.key.toUpperCase()}`) : form));
}

export async function renderSettings(view, { can }) {
  view.append(h("h1", {}, "Settings"));
  if (!can("admin")) {
    view.append(emptyState("Only admins see and change settings."));
    return;
  }
  const holder = h("div");
  const draw = async () => {
    const settings = await guarded(() => api("/settings"));
    if (!settings) return;
    const rows = settings.items.map((item) => settingRow({ ...item, secret: item.key === "notify" }, draw));
    holder.replaceChildren(table("Environment variables win over stored values, stored values over defaults.",
      ["Setting", "Value now", "Source", "What it does", "Change"], rows, { class: "settings" }));
  };
  view.append(h("p", { class: "hint" }, "Changes apply to the next run, import or catalog update, in this server and the CLI alike."), holder);
  await draw();
  view.append(slaSection(true));
}
