// The dashboard's shell: sign-in, who is signed in and their role, and hash routing to the pages.
// Each page renders into <main> and may return a cleanup (close an EventSource, stop polling) that
// runs when the user navigates away.

import { api, ApiError, session } from "./api.js";
import { clearBanner, h, showBanner } from "./ui.js";
import { renderFleet } from "./pages/fleet.js";
import { renderCves, renderKb } from "./pages/cves.js";
import { renderRun, renderRuns } from "./pages/runs.js";
import { renderCatalog } from "./pages/catalog.js";
import { renderSettings } from "./pages/settings.js";
import { renderWindows } from "./pages/windows.js";
import { renderBaselines } from "./pages/baselines.js";
import { renderCompliance } from "./pages/compliance.js";
import { renderCveLookup } from "./pages/cve_lookup.js";
import { renderExposure } from "./pages/deadlines.js";

const RANK = { viewer: 0, operator: 1, admin: 2 };
const context = { name: null, role: null };

/** May the signed-in token do what ``role`` may? (The server checks again; this only hides buttons.) */
export function can(role) {
  return context.role !== null && RANK[context.role] >= RANK[role];
}

const ROUTES = [
  [/^#\/fleet$/, "fleet", renderFleet],
  [/^#\/cves$/, "cves", renderCves],
  [/^#\/kb\/([A-Za-z0-9]+)$/, "cves", renderKb],
  [/^#\/runs$/, "runs", renderRuns],
  [/^#\/runs\/([A-Za-z0-9-]+)$/, "runs", renderRun],
  [/^#\/catalog$/, "catalog", renderCatalog],
  [/^#\/settings$/, "settings", renderSettings],
  [/^#\/windows$/, "windows", renderWindows],
  [/^#\/baselines$/, "baselines", renderBaselines],
  [/^#\/compliance$/, "compliance", renderCompliance],
  [/^#\/cve-lookup$/, "cve-lookup", renderCveLookup],
  [/^#\/exposure\/([A-Za-z0-9-]+)$/, "fleet", renderExposure],
];

let cleanup = null;
let navigation = 0;

function parseHash() {
  const [path, query = ""] = (window.location.hash || "#/fleet").split("?");
  return { path, params: new URLSearchParams(query) };
}

async function identify(token) {
  const me = await api("/me", { token });
  context.name = me.name;
  context.role = me.role;
  document.getElementById("who").textContent = `${me.name} (${me.role})`;
  for (const link of document.querySelectorAll("#nav a[data-role]")) link.hidden = !can(link.dataset.role);
  document.getElementById("nav").hidden = false;
  document.getElementById("signout").hidden = false;
}

function signOut() {
  session.token = null;
  context.name = context.role = null;
  document.getElementById("who").textContent = "";
  document.getElementById("nav").hidden = true;
  document.getElementById("signout").hidden = true;
  window.location.hash = "#/signin";
}

function renderSignIn(main) {
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "off", required: true, spellcheck: "false" });
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  const form = h(
    "form",
    {
      class: "signin",
      onsubmit: async (event) => {
        event.preventDefault();
        error.hidden = true;
        const token = input.value.trim();
        try {
          await identify(token);
        } catch (exc) {
          error.textContent = exc instanceof ApiError && exc.status === 401
            ? "That token is not valid (unknown or revoked). Check it and try again."
            : `Sign-in failed: ${exc.message}`;
          error.hidden = false;
          return;
        }
        session.token = token;
        window.location.hash = "#/fleet";
      },
    },
    h("h1", {}, "Sign in to AutoPatch"),
    h("label", { for: "token" }, "API token"),
    input,
    h("p", { class: "hint" }, "Make one with: autopatch token create --name NAME --role viewer|operator|admin"),
    error,
    h("button", { type: "submit" }, "Sign in"),
  );
  main.replaceChildren(form);
  input.focus();
}

async function route() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  clearBanner();
  const main = document.getElementById("main");
  const { path, params } = parseHash();
  if (!session.token || path === "#/signin") {
    if (path !== "#/signin") window.location.replace("#/signin");
    else renderSignIn(main);
    return;
  }
  if (context.role === null) {
    try {
      await identify(session.token);
    } catch (exc) {
      if (exc instanceof ApiError && exc.status === 401) {
        signOut();
        return;
      }
      showBanner(exc.message);
      return;
    }
  }
  for (const [pattern, page, render] of ROUTES) {
    const match = pattern.exec(path);
    if (!match) continue;
    for (const link of document.querySelectorAll("#nav a")) {
      if (link.dataset.page === page) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    // A page renders into its own view, shown once its first data is in: no blank flash, and a
    // slow page the user already left never overwrites the one they went to.
    const current = ++navigation;
    const view = h("div", { class: "view" });
    const result = await render(view, { params, id: match[1], can });
    if (current !== navigation) {
      if (typeof result === "function") result();
      return;
    }
    main.replaceChildren(view);
    if (typeof result === "function") cleanup = result;
    return;
  }
  window.location.replace("#/fleet");
}

document.getElementById("signout").addEventListener("click", signOut);
window.addEventListener("hashchange", route);
route();
