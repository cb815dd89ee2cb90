// lmrec's page: explore a CF run (a user of the data or a new user's picks, an intention with α; why each item is
// recommended, the user's history, item details) or chat with a CRS run (mentions highlighted, reasons).
"use strict";
const $ = (id) => document.getElementById(id);
const PAGE = 50;  // users per page of the user list
let models = [], current = null, picked = [], session = null, timer = null, searchTimer = null;
let usersOffset = 0, usersTotal = 0, request = 0, searchRequest = 0;

// -- helpers ---------------------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(message, field) { super(message); this.field = field; }
}
async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, {...options, headers: {"Content-Type": "application/json", ...(options.headers || {})}});
  } catch (error) { throw new ApiError(`the server cannot be reached (${error.message})`); }
  if (response.status === 204) return null;
  const body = await response.json().catch(() => ({error: response.statusText}));
  if (!response.ok) throw new ApiError(body.error || response.statusText, body.field);
  return body;
}
const base = () => `/models/${encodeURIComponent(current.name)}`;
function text(tag, content, className) {
  const node = document.createElement(tag);
  if (content !== undefined) node.textContent = content;
  if (className) node.className = className;
  return node;
}
function button(label, onClick, className) {
  const node = text("button", label, className);
  node.type = "button";
  node.addEventListener("click", onClick);
  return node;
}
// an error goes next to the field it is about: the API's "field" where it names one, else `where`
const FIELDS = {user: "who", items: "who", titles: "who", intent: "intent", alpha: "intent", k: "k", title: "add",
                item_id: "add", text: "message"};
function showError(where, error) {
  const slot = $(`${(error && FIELDS[error.field]) || where}-error`);
  if (slot) slot.textContent = error ? String(error.message || error) : "";
}
function clearErrors(...wheres) { wheres.forEach((w) => { $(`${w}-error`).textContent = ""; }); }
function busy(statusId, region, on) {
  $(statusId).textContent = on ? "loading…" : "";
  region.setAttribute("aria-busy", on ? "true" : "false");
}

// one recommendation: the title (a button that opens its details), why, and the score
function recommendationItem(r, onOpen) {
  const li = document.createElement("li");
  li.dataset.itemId = r.item_id;
  const title = onOpen ? button(r.title, () => onOpen(r), "title") : text("span", r.title, "title");
  li.append(title);
  if (r.item_id.startsWith("added:")) li.append(text("span", "added", "tag"));
  li.append(text("span", `score ${r.score.toFixed(3)}`, "score"));
  if (r.reason) li.append(text("span", r.reason, r.intent ? "reason intent" : "reason"));
  return li;
}

// -- models ----------------------------------------------------------------------------------------------------
async function loadModels() {
  models = await api("/models");
  $("model").replaceChildren(...models.map((m) => {
    const option = text("option", `${m.name} (${m.model} on ${m.dataset})`);
    option.value = m.name;
    return option;
  }));
  const wanted = new URLSearchParams(location.search).get("model");
  if (wanted && models.some((m) => m.name === wanted)) $("model").value = wanted;
  await selectModel();
}

function showModelInfo() {
  const shown = ["recall@20", "ndcg@20", "hr@10", "ndcg@10"].filter((k) => k in current.metrics).slice(0, 2);
  const metrics = shown.map((k) => `${k} ${current.metrics[k].toFixed(4)}`).join(", ");
  const kind = current.task === "cf" ? "recommends for users" : "recommends in conversation";
  $("model-info").textContent = `${kind}; ${current.items.toLocaleString("en")} items` +
    (current.users ? `, ${current.users.toLocaleString("en")} users` : "") + (metrics ? `; test ${metrics}` : "");
}

async function selectModel() {
  current = models.find((m) => m.name === $("model").value);
  history.replaceState(null, "", `?model=${encodeURIComponent(current.name)}`);
  clearErrors("model");
  showModelInfo();
  $("explore").hidden = current.task !== "cf";
  $("chat").hidden = current.task !== "crs";
  if (current.task === "cf") {
    $("intent-box").hidden = !current.features.includes("intent");
    $("add-item").hidden = !(current.features.includes("add_item") && current.writes);
    const newUser = document.querySelector("input[name=who][value=new]");
    newUser.disabled = !current.features.includes("new_user");
    const knownUser = document.querySelector("input[name=who][value=user]");
    knownUser.disabled = !current.features.includes("user");
    if (knownUser.disabled) newUser.checked = true;
    picked = [];
    $("search").value = "";
    $("search-results").replaceChildren();
    $("user-search").value = "";
    renderPicked();
    showWho();
    usersOffset = 0;
    await loadUsers();
    await changed();
  } else {
    await newSession();
  }
}

// -- explore: who ----------------------------------------------------------------------------------------------
function who() { return document.querySelector("input[name=who]:checked").value; }
function showWho() {
  $("user-picker").hidden = who() !== "user";
  $("history-builder").hidden = who() !== "new";
}

async function loadUsers() {
  const q = $("user-search").value.trim();
  const wanted = $("user").value;
  try {
    const found = await api(`${base()}/users?limit=${PAGE}&offset=${usersOffset}&q=${encodeURIComponent(q)}`);
    usersTotal = found.total;
    $("user").replaceChildren(...found.users.map((u) => { const o = text("option", u); o.value = u; return o; }));
    if (found.users.includes(q)) $("user").value = q;  // the id typed in full
    else if (found.users.includes(wanted)) $("user").value = wanted;
    $("users-range").textContent = found.total
      ? `${usersOffset + 1}–${usersOffset + found.users.length} of ${found.total.toLocaleString("en")}${q ? " found" : ""}`
      : `no user id contains “${q}”`;
    $("users-prev").disabled = usersOffset === 0;
    $("users-next").disabled = usersOffset + PAGE >= found.total;
    clearErrors("who");
  } catch (error) { showError("who", error); }
}
function pageUsers(step) {
  usersOffset = Math.max(0, usersOffset + step * PAGE);
  loadUsers().then(changed);
}

// the person changed: everything shown about the last one goes
async function changed() {
  $("details").hidden = true;
  $("user-history").hidden = true;
  clearErrors("who", "intent", "k", "results");
  await Promise.all([refresh(), loadUserHistory()]);
}

async function loadUserHistory() {
  if (who() !== "user" || !$("user").value) return;
  const user = $("user").value;
  try {
    const found = await api(`${base()}/users/${encodeURIComponent(user)}?limit=30`);
    if (user !== $("user").value) return;  // another user was picked meanwhile
    $("user-history-title").textContent = `history of user ${user}`;
    const more = found.total > found.history.length ? ` (the first ${found.history.length} shown)` : "";
    $("user-history-note").textContent = `${found.total} items the model learned them from${more}; ` +
      `${found.held_out} more held back for evaluation.`;
    $("user-history-items").replaceChildren(...found.history.map((item) => {
      const li = document.createElement("li");
      li.append(button(item.title, () => showDetails(item)));
      return li;
    }));
    $("user-history").hidden = false;
  } catch (error) { showError("who", error); }
}

// -- explore: a new user's picks -------------------------------------------------------------------------------
function renderPicked() {
  $("picked").replaceChildren(...picked.map((h, i) => {
    const li = document.createElement("li");
    const remove = button(`${h.title} ×`, () => {
      picked.splice(i, 1); renderPicked(); later();
      const next = $("picked").querySelectorAll("button")[Math.min(i, picked.length - 1)];
      (next || $("search")).focus();
    });
    remove.setAttribute("aria-label", `remove ${h.title}`);
    li.append(remove);
    return li;
  }));
}
function pick(item) {
  if (!picked.some((h) => h.item_id === item.item_id)) picked.push(item);
  $("search").value = "";
  $("search-results").replaceChildren();
  renderPicked();
  $("search").focus();
  later();
}
async function search() {
  const q = $("search").value.trim();
  const mine = ++searchRequest;
  if (!q) { $("search-results").replaceChildren(); return; }
  try {
    const result = await api(`${base()}/items?q=${encodeURIComponent(q)}&limit=8`);
    if (mine !== searchRequest) return;
    $("search-results").replaceChildren(...result.items.map((item) => {
      const li = document.createElement("li");
      li.append(button(item.title, () => pick(item)));
      return li;
    }));
    if (!result.items.length) $("search-results").replaceChildren(text("li", `no title matches “${q}”`, "info"));
    clearErrors("who");
  } catch (error) { showError("who", error); }
}

// -- explore: recommendations ----------------------------------------------------------------------------------
async function refresh() {
  if (!current || current.task !== "cf") return;
  const mine = ++request;
  const body = {k: $("k").value.trim() === "" ? 10 : Number($("k").value)};  // a wrong k: the API says what is wrong
  if (who() === "user") {
    if (!$("user").value) { $("recommendations").replaceChildren(); return; }
    body.user = $("user").value;
  } else if (picked.length) body.items = picked.map((h) => h.item_id);
  else { $("recommendations").replaceChildren(text("li", "pick a few titles first", "info")); return; }
  const intent = $("intent").value.trim();
  if (intent && current.features.includes("intent")) { body.intent = intent; body.alpha = Number($("alpha").value); }
  busy("status", $("recommendations"), true);
  try {
    const result = await api(`${base()}/recommend`, {method: "POST", body: JSON.stringify(body)});
    if (mine !== request) return;  // a later request is on its way
    $("recommendations").replaceChildren(...result.recommendations.map((r) => recommendationItem(r, showDetails)));
    $("retrieval-note").textContent = result.retrieval === "exact"
      ? "Retrieval was exact: every item of the catalog was scored."
      : "Retrieval used a FAISS index: approximate, it may miss a few of the exact top items.";
    clearErrors("who", "intent", "k", "results");
  } catch (error) {
    if (mine !== request) return;
    $("recommendations").replaceChildren();  // no old results beside an error
    showError("results", error);
  } finally {
    if (mine === request) busy("status", $("recommendations"), false);
  }
}
function later() { clearTimeout(timer); timer = setTimeout(refresh, 300); }

// -- explore: item details -------------------------------------------------------------------------------------
async function showDetails(item) {
  try {
    const id = encodeURIComponent(item.item_id);
    const similar = current.features.includes("similar") ? api(`${base()}/items/${id}/similar?k=5`) : null;
    const details = await api(`${base()}/items/${id}`);
    $("details-title").textContent = details.title;
    const facts = [["id", details.item_id],
                   ["popularity", details.popularity === null ? details.popularity_of
                     : `${details.popularity.toLocaleString("en")} (${details.popularity_of})`],
                   ...Object.entries(details.fields)];
    if (details.added) facts.push(["added", "through this service, placed from its title"]);
    $("details-facts").replaceChildren(...facts.flatMap(([k, v]) => [text("dt", k), text("dd", v)]));
    $("similar-title").hidden = !similar;
    $("similar").replaceChildren();
    if (similar) {
      const found = await similar;
      $("similar").replaceChildren(...found.similar.map((r) => {
        const li = document.createElement("li");
        li.append(button(r.title, () => showDetails(r), "title"),
                  text("span", `cosine ${r.score.toFixed(3)}`, "score"));
        return li;
      }));
    }
    $("details").hidden = false;
    $("details").focus();
    clearErrors("results");
  } catch (error) { showError("results", error); }
}

// -- explore: adding an item -----------------------------------------------------------------------------------
async function addItem(event) {
  event.preventDefault();
  clearErrors("add");
  $("add-status").textContent = "";
  try {
    const result = await api(`${base()}/items`, {method: "POST", body: JSON.stringify({title: $("new-title").value}),
                                                 headers: {Authorization: `Bearer ${$("token").value}`}});
    $("add-status").textContent = `added ${result.item.title} (${result.items.toLocaleString("en")} items now)`;
    $("new-title").value = "";
    current.items = result.items;
    showModelInfo();
    await refresh();
  } catch (error) { showError("add", error); }
}

// -- chat ------------------------------------------------------------------------------------------------------
async function newSession() {
  $("send").disabled = true;  // no message before the session exists
  $("transcript").replaceChildren();
  $("mentioned").replaceChildren();
  $("chat-recommendations").replaceChildren();
  clearErrors("message");
  try {
    const created = await api(`${base()}/sessions`, {method: "POST"});
    session = created.session_id;
    $("send").disabled = false;
  } catch (error) { showError("message", error); }
}

// the message with each mention marked: what was written, and the catalog item it was matched to
function highlighted(message, mentions) {
  const line = text("p", undefined, "user");
  const bubble = document.createElement("span");
  let at = 0;
  for (const m of mentions) {
    bubble.append(message.slice(at, m.start));
    const mark = text("mark", message.slice(m.start, m.end));
    mark.title = `matched ${m.title} (id ${m.item_id})`;
    bubble.append(mark);
    if (message.slice(m.start, m.end) !== m.title) bubble.append(text("span", ` → ${m.title}`, "matched"));
    at = m.end;
  }
  bubble.append(message.slice(at));
  line.append(bubble);
  return line;
}

async function send(event) {
  event.preventDefault();
  const message = $("message").value.trim();
  if (!message) { showError("message", "write a message first"); return; }
  clearErrors("message");
  $("send").disabled = true;
  busy("chat-status", $("chat-recommendations"), true);
  try {
    const result = await api(`${base()}/sessions/${session}/messages`,
                             {method: "POST", body: JSON.stringify({text: message, k: 10})});
    $("message").value = "";
    $("transcript").append(highlighted(message, result.mentions));
    $("mentioned").replaceChildren(...result.mentioned.map((m) => text("li", m.title, "mentioned-title")));
    $("chat-recommendations").replaceChildren(...result.recommendations.map((r) => recommendationItem(r)));
    const reply = text("p", undefined, "system");
    reply.append(text("span", "How about " + result.recommendations.slice(0, 3).map((r) => r.title).join(", ") + "?"));
    $("transcript").append(reply);
    $("transcript").scrollTop = $("transcript").scrollHeight;
    await api(`${base()}/sessions/${session}/messages`,
              {method: "POST", body: JSON.stringify({text: reply.textContent, role: "system", k: 1})});
  } catch (error) {
    $("chat-recommendations").replaceChildren();
    showError("message", error);
  } finally {
    $("send").disabled = false;
    busy("chat-status", $("chat-recommendations"), false);
  }
}

// -- wiring ----------------------------------------------------------------------------------------------------
$("model").addEventListener("change", () => selectModel().catch((e) => showError("model", e)));
document.querySelectorAll("input[name=who]").forEach((radio) => radio.addEventListener("change", () => {
  showWho(); changed();
}));
$("user").addEventListener("change", changed);
$("user-search").addEventListener("input", () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(() => { usersOffset = 0; loadUsers().then(changed); }, 250);
});
$("users-prev").addEventListener("click", () => pageUsers(-1));
$("users-next").addEventListener("click", () => pageUsers(1));
$("k").addEventListener("input", later);
$("intent").addEventListener("input", later);
$("alpha").addEventListener("input", () => { $("alpha-value").textContent = Number($("alpha").value).toFixed(2); later(); });
$("search").addEventListener("input", search);
$("search").addEventListener("keydown", (event) => {
  if (event.key !== "Enter") return;
  event.preventDefault();
  const first = $("search-results").querySelector("button");
  if (first) first.click();
});
$("details-close").addEventListener("click", () => { $("details").hidden = true; });
$("message-form").addEventListener("submit", send);
$("reset").addEventListener("click", newSession);
$("add-item").addEventListener("submit", addItem);
loadModels().catch((e) => showError("model", e));
