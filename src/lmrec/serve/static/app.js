// lmrec's page: explore a CF run (a user or a new user's history, an intention with α) or chat with a CRS run.
"use strict";
const $ = (id) => document.getElementById(id);
let models = [], current = null, history = [], session = null, timer = null;

async function api(path, options = {}) {
  const response = await fetch(path, {headers: {"Content-Type": "application/json"}, ...options});
  if (response.status === 204) return null;
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}
function showError(error) { $("error").textContent = error ? String(error.message || error) : ""; }
function text(tag, content, className) {
  const node = document.createElement(tag);
  node.textContent = content;
  if (className) node.className = className;
  return node;
}
function listRecommendations(list, items, onClick) {
  list.replaceChildren(...items.map((r) => {
    const li = text("li", r.title);
    li.dataset.itemId = r.item_id;
    if (r.item_id.startsWith("added:")) li.classList.add("added");
    li.append(text("span", r.score.toFixed(3), "score"));
    if (onClick) li.addEventListener("click", () => onClick(r));
    return li;
  }));
}

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

async function selectModel() {
  current = models.find((m) => m.name === $("model").value);
  showError(null);
  const shown = ["recall@20", "ndcg@20", "hr@10", "ndcg@10"].filter((k) => k in current.metrics).slice(0, 2);
  const metrics = shown.map((k) => `${k} ${current.metrics[k].toFixed(4)}`).join(", ");
  $("model-info").textContent = `${current.task}, ${current.items} items${metrics ? "; test " + metrics : ""}`;
  $("explore").hidden = current.task !== "cf";
  $("chat").hidden = current.task !== "crs";
  if (current.task === "cf") {
    $("intent-box").hidden = !current.features.includes("intent");
    $("add-item").hidden = !current.features.includes("add_item");
    const newUser = document.querySelector("input[name=who][value=new]");
    newUser.disabled = !current.features.includes("new_user");
    const users = await api(`/models/${encodeURIComponent(current.name)}/users?limit=200`);
    $("user").replaceChildren(...users.users.map((u) => { const o = text("option", u); o.value = u; return o; }));
    history = [];
    renderHistory();
    await refresh();
  } else {
    await newSession();
  }
}

function who() { return document.querySelector("input[name=who]:checked").value; }

async function refresh() {
  if (!current || current.task !== "cf") return;
  const body = {k: Number($("k").value) || 10};
  if (who() === "user") body.user = $("user").value;
  else if (history.length) body.items = history.map((h) => h.item_id);
  else { $("recommendations").replaceChildren(text("li", "pick a few titles first")); return; }
  const intent = $("intent").value.trim();
  if (intent && current.features.includes("intent")) { body.intent = intent; body.alpha = Number($("alpha").value); }
  try {
    const result = await api(`/models/${encodeURIComponent(current.name)}/recommend`, {method: "POST", body: JSON.stringify(body)});
    $("retrieval").textContent = `(${result.retrieval})`;
    listRecommendations($("recommendations"), result.recommendations, showSimilar);
    showError(null);
  } catch (error) { showError(error); }
}
function later() { clearTimeout(timer); timer = setTimeout(refresh, 300); }

async function showSimilar(item) {
  if (!current.features.includes("similar")) return;
  try {
    const result = await api(`/models/${encodeURIComponent(current.name)}/items/${encodeURIComponent(item.item_id)}/similar?k=5`);
    $("similar-title").textContent = result.item.title;
    listRecommendations($("similar"), result.similar);
    $("similar-box").hidden = false;
  } catch (error) { showError(error); }
}

function renderHistory() {
  $("history").replaceChildren(...history.map((h, i) => {
    const li = text("li", `${h.title} ×`);
    li.title = "remove";
    li.addEventListener("click", () => { history.splice(i, 1); renderHistory(); later(); });
    return li;
  }));
}
async function search() {
  const q = $("search").value.trim();
  if (!q) { $("search-results").replaceChildren(); return; }
  const result = await api(`/models/${encodeURIComponent(current.name)}/items?q=${encodeURIComponent(q)}&limit=8`);
  $("search-results").replaceChildren(...result.items.map((item) => {
    const li = text("li", item.title);
    li.addEventListener("click", () => {
      if (!history.some((h) => h.item_id === item.item_id)) history.push(item);
      renderHistory(); later();
    });
    return li;
  }));
}

async function newSession() {
  $("send").disabled = true;  // no message before the session exists
  const created = await api(`/models/${encodeURIComponent(current.name)}/sessions`, {method: "POST"});
  session = created.session_id;
  $("send").disabled = false;
  $("transcript").replaceChildren();
  $("mentioned").replaceChildren();
  $("chat-recommendations").replaceChildren();
}
async function send(event) {
  event.preventDefault();
  const message = $("message").value.trim();
  if (!message) return;
  $("message").value = "";
  const line = document.createElement("p");
  line.className = "user";
  line.append(text("span", message));
  $("transcript").append(line);
  try {
    const result = await api(`/models/${encodeURIComponent(current.name)}/sessions/${session}/messages`,
                             {method: "POST", body: JSON.stringify({text: message, k: 10})});
    $("mentioned").replaceChildren(...result.mentioned.map((m) => text("li", m.title, "mentioned-title")));
    listRecommendations($("chat-recommendations"), result.recommendations);
    const reply = document.createElement("p");
    reply.append(text("span", "How about " + result.recommendations.slice(0, 3).map((r) => r.title).join(", ") + "?"));
    $("transcript").append(reply);
    await api(`/models/${encodeURIComponent(current.name)}/sessions/${session}/messages`,
              {method: "POST", body: JSON.stringify({text: reply.textContent, role: "system", k: 1})});
    showError(null);
  } catch (error) { showError(error); }
}

async function addItem(event) {
  event.preventDefault();
  try {
    const result = await api(`/models/${encodeURIComponent(current.name)}/items`,
                             {method: "POST", body: JSON.stringify({title: $("new-title").value})});
    $("add-status").textContent = `added ${result.item.title} (${result.items} items)`;
    $("new-title").value = "";
    current.items = result.items;
    await refresh();
  } catch (error) { showError(error); }
}

$("model").addEventListener("change", () => selectModel().catch(showError));
document.querySelectorAll("input[name=who]").forEach((radio) => radio.addEventListener("change", () => {
  $("history-builder").hidden = who() !== "new"; later();
}));
$("user").addEventListener("change", later);
$("k").addEventListener("input", later);
$("intent").addEventListener("input", later);
$("alpha").addEventListener("input", () => { $("alpha-value").textContent = Number($("alpha").value).toFixed(2); later(); });
$("search").addEventListener("input", () => search().catch(showError));
$("message-form").addEventListener("submit", send);
$("reset").addEventListener("click", () => newSession().catch(showError));
$("add-item").addEventListener("submit", addItem);
loadModels().catch(showError);
