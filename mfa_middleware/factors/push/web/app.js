/* The web authenticator: a device of the push protocol (docs/push-protocol.md) that lives in this browser.
 *
 * Trust model and rules:
 * - The device key is an ECDSA P-256 key made with generateKey(..., extractable = false, ["sign"]) and kept as a
 *   CryptoKey in IndexedDB: script can sign with it but never read it out (not even this one).
 * - Every sign-in request is an envelope signed by the site's Ed25519 key (received at registration). It is
 *   verified over the payload bytes exactly as received BEFORE anything in it is read; an envelope that does not
 *   verify, is for another account or is malformed is never shown (an alert says one was ignored).
 * - The person picks the number; nothing here guesses it. Deny and "Report fraud" (after a confirmation) sit next
 *   to the numbers.
 * - A push notification only wakes this page; the requests are always fetched and verified here.
 * - Accounts are same-origin only: the page's CSP allows no other origin, and the device API sends no CORS.
 * - Everything from the network is put on the page as text (textContent), never as HTML.
 */
"use strict";

const DB_NAME = "mfa-authenticator";
const STORE = "accounts";
const LONG_POLL = 25;          // seconds the server may hold a request (its maximum)
const REPOLL_WHILE_SHOWN = 2000; // the long-poll answers at once while a request is pending: slow down meanwhile
const MAX_BACKOFF = 30000;

const $ = (id) => document.getElementById(id);
const encoder = new TextEncoder();

// -- base64url and bytes ----------------------------------------------------------------------------------------
function b64u(bytes) {
  let text = "";
  new Uint8Array(bytes).forEach((b) => { text += String.fromCharCode(b); });
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function unb64u(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text)) throw new Error("not base64url");
  const raw = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

async function sha256hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function nonce() {
  return b64u(crypto.getRandomValues(new Uint8Array(24)));
}

// -- storage ----------------------------------------------------------------------------------------------------
function openDb() {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open(DB_NAME, 1);
    open.onupgradeneeded = () => open.result.createObjectStore(STORE, { keyPath: "account_id" });
    open.onsuccess = () => resolve(open.result);
    open.onerror = () => reject(open.error);
  });
}

async function withStore(mode, work) {
  const db = await openDb();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const request = work(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(request ? request.result : undefined);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

const loadAccounts = () => withStore("readonly", (s) => s.getAll());
const saveAccount = (account) => withStore("readwrite", (s) => s.put(account));
const deleteAccount = (id) => withStore("readwrite", (s) => s.delete(id));

// -- the device protocol ----------------------------------------------------------------------------------------
function apiPath(account, endpoint) {
  return new URL(account.base_url).pathname.replace(/\/$/, "") + "/" + endpoint;
}

/** A request signed as in section 3: label, method, path with query, body hash, timestamp, nonce, account id. */
async function signedFetch(account, method, endpoint, body, options = {}) {
  const path = apiPath(account, endpoint);
  const bytes = body === undefined ? new Uint8Array(0) : encoder.encode(JSON.stringify(body));
  const timestamp = String(Math.floor(Date.now() / 1000));
  const once = nonce();
  const text = ["mfa-device-v1", method.toUpperCase(), path, await sha256hex(bytes), timestamp, once,
                account.account_id].join("\n");
  const signature = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, account.private_key,
                                             encoder.encode(text));
  const headers = {
    "X-MFA-Account": account.account_id, "X-MFA-Timestamp": timestamp, "X-MFA-Nonce": once,
    "X-MFA-Signature": b64u(signature),
  };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  return fetch(path, { method, headers, body: body === undefined ? undefined : bytes, cache: "no-store",
                       credentials: "omit", signal: options.signal });
}

async function serverKey(account) {
  return crypto.subtle.importKey("raw", unb64u(account.server_key), { name: "Ed25519" }, false, ["verify"]);
}

/** The payload of an envelope the site signed for this account, or null (never shown) for anything else. */
async function verifyEnvelope(account, key, envelope) {
  try {
    if (!envelope || typeof envelope !== "object") return null;
    const payload = unb64u(envelope.payload);
    const signature = unb64u(envelope.signature);
    if (!(await crypto.subtle.verify({ name: "Ed25519" }, key, signature, payload))) return null;
    const data = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(payload));
    const isInt = (n) => Number.isInteger(n);
    if (!data || data.v !== 1 || data.account_id !== account.account_id
        || typeof data.id !== "string" || !/^[A-Za-z0-9_-]{1,64}$/.test(data.id)
        || !["site", "host", "client_ip", "user_agent"].every((k) => typeof data[k] === "string")
        || !isInt(data.created_at) || !isInt(data.expires_at) || !Array.isArray(data.numbers)
        || data.numbers.length !== 3 || !data.numbers.every((n) => isInt(n) && n >= 10 && n <= 99)) {
      return null;
    }
    return data;
  } catch (error) {
    return null;
  }
}

async function answerString(requestId, answer, number, timestamp) {
  return encoder.encode(["mfa-answer-v1", requestId, answer, number === null ? "" : String(number),
                         String(timestamp)].join("\n"));
}

async function sendAnswer(account, requestId, answer, number) {
  const timestamp = Math.floor(Date.now() / 1000);
  const signature = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, account.private_key,
                                             await answerString(requestId, answer, number, timestamp));
  const response = await signedFetch(account, "POST", "answer", {
    request_id: requestId, answer, number, timestamp, signature: b64u(signature),
  });
  let data = {};
  try { data = await response.json(); } catch (error) { data = {}; }
  return { status: response.status, data };
}

// -- what the page shows ----------------------------------------------------------------------------------------
const state = {
  accounts: new Map(),   // account_id -> account
  loops: new Map(),      // account_id -> {controller, stopped}
  shown: new Map(),      // request id -> {element, expires_at}
  ignored: 0,
  swRegistration: null,
};

function say(text) { $("status").textContent = text; }

function alertText(text) {
  const box = $("alert");
  box.textContent = text;
  box.hidden = !text;
}

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value; else node.setAttribute(key, value);
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

function browserOf(userAgent) {
  const browser = [["Edg/", "Edge"], ["OPR/", "Opera"], ["Firefox/", "Firefox"], ["Chrome/", "Chrome"],
                   ["Safari/", "Safari"]].find(([mark]) => userAgent.includes(mark));
  const system = [["Windows", "Windows"], ["Android", "Android"], ["iPhone", "iPhone"], ["iPad", "iPad"],
                  ["Mac OS X", "macOS"], ["CrOS", "ChromeOS"], ["Linux", "Linux"]].find(([m]) => userAgent.includes(m));
  if (!browser && !system) return userAgent ? userAgent.slice(0, 120) : "unknown";
  return `${browser ? browser[1] : "A browser"}${system ? " on " + system[1] : ""}`;
}

function timeOf(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function refreshEmpty() {
  $("no-requests").hidden = state.shown.size > 0;
  $("no-accounts").hidden = state.accounts.size > 0;
}

function showRequest(account, request) {
  if (state.shown.has(request.id)) return false;
  const headingId = `request-${request.id}`;
  const card = el("article", { class: "request", "aria-labelledby": headingId, "data-request": request.id });
  card.append(el("h3", { id: headingId }, `Sign-in request for ${request.site}`));
  const facts = el("dl", { class: "facts" });
  const browser = browserOf(request.user_agent);
  for (const [name, value, title] of [["Account", account.username || account.name], ["Host", request.host],
    ["Place", request.client_ip || "unknown"], ["Browser", browser, request.user_agent],
    ["Time", timeOf(request.created_at)], ["Expires", timeOf(request.expires_at)]]) {
    facts.append(el("dt", {}, name));
    const dd = el("dd", { "data-fact": name.toLowerCase() }, value);
    if (title && title !== value) dd.title = title;
    facts.append(dd);
  }
  card.append(facts);

  const numbers = el("fieldset", { class: "numbers" });
  numbers.append(el("legend", {}, "To approve, pick the number your sign-in page shows"));
  const row = el("div", { class: "number-row" });
  for (const n of request.numbers) {
    const button = el("button", { type: "button", "data-number": String(n) });
    button.append(el("span", { class: "visually-hidden" }, "Approve with "), document.createTextNode(String(n)));
    button.addEventListener("click", () => answer(account, request, card, "approve", n));
    row.append(button);
  }
  numbers.append(row);
  card.append(numbers);

  const actions = el("div", { class: "row actions-row" });
  const deny = el("button", { type: "button" }, "Deny");
  deny.addEventListener("click", () => answer(account, request, card, "deny", null));
  const fraud = el("button", { type: "button", class: "danger", "aria-expanded": "false" }, "Report fraud");
  actions.append(deny, fraud);
  card.append(actions);

  const confirm = el("div", { class: "confirm", role: "group", "aria-label": "Confirm the fraud report" });
  confirm.hidden = true;
  confirm.append(el("p", {}, "Report this sign-in as fraud? Do this only if you did not try to sign in: the site "
                             + "may block your account until your helpdesk unblocks it."));
  const yes = el("button", { type: "button", class: "danger" }, "Yes, report fraud");
  const cancel = el("button", { type: "button" }, "Cancel");
  const confirmRow = el("div", { class: "row" });
  confirmRow.append(yes, cancel);
  confirm.append(confirmRow);
  card.append(confirm);
  fraud.addEventListener("click", () => {
    confirm.hidden = false;
    fraud.setAttribute("aria-expanded", "true");
    yes.focus();
  });
  cancel.addEventListener("click", () => {
    confirm.hidden = true;
    fraud.setAttribute("aria-expanded", "false");
    fraud.focus();
  });
  yes.addEventListener("click", () => answer(account, request, card, "fraud", null));

  card.append(el("p", { class: "outcome", role: "status", "aria-live": "polite" }));
  $("request-list").append(card);
  state.shown.set(request.id, { element: card, expires_at: request.expires_at, answered: false });
  refreshEmpty();
  return true;
}

const OUTCOMES = {
  approved: "Approved. Your sign-in continues.",
  failed: "That was not the number on your sign-in page: this sign-in was refused. Start it again.",
  denied: "Denied. Nobody was signed in.",
  fraud: "Reported as fraud.",
};

async function answer(account, request, card, kind, number) {
  const entry = state.shown.get(request.id);
  if (!entry || entry.answered) return;
  entry.answered = true;
  card.querySelectorAll("button").forEach((b) => { b.disabled = true; });
  const outcome = card.querySelector(".outcome");
  outcome.textContent = "Sending…";
  try {
    const { status, data } = await sendAnswer(account, request.id, kind, number);
    if (status === 200) {
      outcome.textContent = [OUTCOMES[data.status] || `Answered: ${data.status}`, data.message || ""]
        .filter(Boolean).join(" ");
      card.dataset.outcome = String(data.status);
    } else {
      outcome.textContent = `The site refused the answer: ${data.error || "error " + status}.`;
      card.dataset.outcome = "refused";
    }
  } catch (error) {
    outcome.textContent = "The site could not be reached; the answer was not sent.";
    card.dataset.outcome = "unreachable";
    entry.answered = false;
    card.querySelectorAll("button").forEach((b) => { b.disabled = false; });
  }
}

function expireShown() {
  const now = Date.now() / 1000;
  for (const [id, entry] of state.shown) {
    if (now > entry.expires_at + (entry.answered ? 30 : 0)) {
      entry.element.remove();
      state.shown.delete(id);
    }
  }
  refreshEmpty();
}

// -- polling ----------------------------------------------------------------------------------------------------
const pause = (ms, signal) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  if (signal) signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
});

async function pollOnce(account, key, signal, wait) {
  const response = await signedFetch(account, "GET", `requests?wait=${wait}`, undefined, { signal });
  if (response.status !== 200) {
    let error = "";
    try { error = (await response.json()).error || ""; } catch (e) { error = ""; }
    throw new Error(`the site answered ${response.status}${error ? ": " + error : ""}`);
  }
  const data = await response.json();
  const envelopes = Array.isArray(data.requests) ? data.requests : [];
  let fresh = 0;
  for (const envelope of envelopes) {
    const request = await verifyEnvelope(account, key, envelope);
    if (request === null) {
      state.ignored += 1;
      alertText(`Ignored ${state.ignored === 1 ? "a request" : state.ignored + " requests"} that ${account.site} `
                + "did not sign. If this repeats, tell your helpdesk.");
      continue;
    }
    if (request.expires_at > Date.now() / 1000 && showRequest(account, request)) fresh += 1;
  }
  return { total: envelopes.length, fresh };
}

function startLoop(account) {
  stopLoop(account.account_id);
  const loop = { stopped: false, controller: new AbortController(), failing: false };
  state.loops.set(account.account_id, loop);
  (async () => {
    let backoff = 2000;
    let key;
    try {
      key = await serverKey(account);
    } catch (error) {
      say(`The key of ${account.site} cannot be used in this browser (it needs Ed25519 in WebCrypto).`);
      return;
    }
    while (!loop.stopped) {
      loop.controller = new AbortController();
      try {
        const { total, fresh } = await pollOnce(account, key, loop.controller.signal, LONG_POLL);
        backoff = 2000;
        if (loop.failing) say(`${account.site} can be reached again. Waiting for sign-in requests.`);
        loop.failing = false;
        if (total > 0 && fresh === 0) await pause(REPOLL_WHILE_SHOWN, loop.controller.signal);
      } catch (error) {
        if (loop.stopped) break;
        if (error && error.name === "AbortError") continue;  // woken up: ask again at once
        loop.failing = true;
        say(`Cannot reach ${account.site} (${error.message || error}); trying again.`);
        await pause(backoff, loop.controller.signal);
        backoff = Math.min(backoff * 2, MAX_BACKOFF);
      }
    }
  })();
}

function stopLoop(accountId) {
  const loop = state.loops.get(accountId);
  if (loop) {
    loop.stopped = true;
    loop.controller.abort();
    state.loops.delete(accountId);
  }
}

/** Ask every account again now (after a push, or when the page comes back to the front). */
function wakeAll() {
  for (const loop of state.loops.values()) loop.controller.abort();
}

// -- accounts ---------------------------------------------------------------------------------------------------
function renderAccounts() {
  const list = $("account-list");
  list.replaceChildren();
  for (const account of state.accounts.values()) {
    const item = el("li", { "data-account": account.account_id });
    item.append(el("div", { class: "who" }, `${account.username || "(account)"} at ${account.site}`));
    item.append(el("div", { class: "hint" }, `${new URL(account.base_url).host} · this device: ${account.name}`
                                             + (account.channel ? " · notifications on" : "")));
    const row = el("div", { class: "row" });
    const remove = el("button", { type: "button", class: "danger" },
                      `Remove ${account.username || "this account"} from this authenticator`);
    remove.addEventListener("click", () => confirmRemove(account, item, remove));
    row.append(remove);
    item.append(row);
    list.append(item);
  }
  refreshEmpty();
  const pushable = [...state.accounts.values()].some((a) => a.vapid_public_key && !a.channel);
  $("notifications").hidden = !(pushable && "PushManager" in window && state.swRegistration);
}

function confirmRemove(account, item, trigger) {
  if (item.querySelector(".confirm")) return;
  const box = el("div", { class: "confirm", role: "group", "aria-label": "Confirm removal" });
  box.append(el("p", {}, "Remove this account from this authenticator? Its key is deleted here. The site still lists "
                         + "this device until you remove it on your security info page."));
  const yes = el("button", { type: "button", class: "danger" }, "Yes, remove it");
  const no = el("button", { type: "button" }, "Keep it");
  const row = el("div", { class: "row" });
  row.append(yes, no);
  box.append(row);
  item.append(box);
  yes.focus();
  no.addEventListener("click", () => { box.remove(); trigger.focus(); });
  yes.addEventListener("click", async () => {
    stopLoop(account.account_id);
    if (account.channel) {
      try { await signedFetch(account, "POST", "channel", { channel: null }); } catch (error) { /* best effort */ }
    }
    await deleteAccount(account.account_id);
    state.accounts.delete(account.account_id);
    renderAccounts();
    say(`Removed ${account.username || "the account"} at ${account.site} from this authenticator.`);
    $("accounts-heading").focus();
  });
}

/** The registration URL, checked: this site's own device API (other origins cannot be reached from here). */
function parseRegistration(text) {
  let url;
  try { url = new URL(text.trim()); } catch (error) { throw new Error("That is not an address. Paste the whole registration address."); }
  const token = url.searchParams.get("token");
  if (!/\/device\/v1\/register$/.test(url.pathname) || !token) {
    throw new Error("That is not a registration address: it ends in /device/v1/register?token=…");
  }
  if (url.origin !== location.origin) {
    throw new Error(`That address belongs to ${url.origin}; this authenticator serves ${location.origin}. `
                    + `Open ${url.origin}'s own authenticator instead.`);
  }
  return { endpoint: url.pathname, token };
}

async function enroll(text, name) {
  const { endpoint, token } = parseRegistration(text);
  const keys = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]);
  const spki = await crypto.subtle.exportKey("spki", keys.publicKey);
  const response = await fetch(endpoint, {
    method: "POST", headers: { "Content-Type": "application/json" }, cache: "no-store", credentials: "omit",
    body: JSON.stringify({ token, public_key: b64u(spki), name }),
  });
  let data = {};
  try { data = await response.json(); } catch (error) { data = {}; }
  if (response.status !== 200) throw new Error(data.error || `the site answered ${response.status}`);
  if (typeof data.account_id !== "string" || typeof data.server_key !== "string" || typeof data.base_url !== "string"
      || new URL(data.base_url).origin !== location.origin) {
    throw new Error("The site's answer is not a registration this authenticator understands.");
  }
  const account = {
    account_id: data.account_id, server_key: data.server_key, base_url: data.base_url,
    site: String(data.site || new URL(data.base_url).host), username: String(data.username || ""), name,
    algorithm: "es256", private_key: keys.privateKey, created_at: Math.floor(Date.now() / 1000),
    vapid_public_key: typeof data.vapid_public_key === "string" ? data.vapid_public_key : null, channel: null,
  };
  await serverKey(account);  // refuse now, not at the first request, if the site's key is unusable here
  await saveAccount(account);
  state.accounts.set(account.account_id, account);
  return account;
}

// -- Web Push ---------------------------------------------------------------------------------------------------
function sameKey(a, b) {
  if (!a || !b) return false;
  const x = new Uint8Array(a);
  const y = new Uint8Array(b);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

/** Subscribe (one subscription per browser, shared by the accounts of this site) and tell the site; the answer
 *  says what happened, in words. Without a VAPID key, PushManager or permission: long-poll only. */
async function enablePush(account) {
  if (!account.vapid_public_key || !("PushManager" in window) || !state.swRegistration) return "unavailable";
  if ((await Notification.requestPermission()) !== "granted") return "Notifications are blocked in this browser.";
  const applicationServerKey = unb64u(account.vapid_public_key);
  const manager = state.swRegistration.pushManager;
  let subscription = await manager.getSubscription();
  if (subscription && !sameKey(subscription.options.applicationServerKey, applicationServerKey)) {
    await subscription.unsubscribe();
    subscription = null;
  }
  if (!subscription) subscription = await manager.subscribe({ userVisibleOnly: true, applicationServerKey });
  const json = subscription.toJSON();
  const response = await signedFetch(account, "POST", "channel", {
    channel: { type: "webpush", endpoint: json.endpoint, keys: { p256dh: json.keys.p256dh, auth: json.keys.auth } },
  });
  if (response.status !== 200) {
    let error = "";
    try { error = (await response.json()).error || ""; } catch (e) { error = ""; }
    return `The site did not take the notification channel (${error || response.status}).`;
  }
  account.channel = "webpush";
  await saveAccount(account);
  return "on";
}

async function enablePushForAll() {
  const messages = [];
  for (const account of state.accounts.values()) {
    if (!account.vapid_public_key || account.channel) continue;
    try {
      const result = await enablePush(account);
      if (result !== "on" && result !== "unavailable") messages.push(result);
    } catch (error) {
      messages.push(`Notifications could not be turned on (${error.message || error}); keep this page open.`);
    }
  }
  renderAccounts();
  return messages;
}

// -- start ------------------------------------------------------------------------------------------------------
function guessName() {
  const ua = navigator.userAgent;
  const system = /Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iPhone" : /Mac OS X/.test(ua) ? "Mac"
    : /Windows/.test(ua) ? "Windows" : /Linux/.test(ua) ? "Linux" : "this device";
  return `Web authenticator on ${system}`;
}

function pickUpFragment() {
  const hash = location.hash;
  if (!hash.startsWith("#register=")) return;
  let url = "";
  try { url = decodeURIComponent(hash.slice("#register=".length)); } catch (error) { url = ""; }
  // The registration address leaves the address bar (and the history entry) at once.
  history.replaceState(null, "", location.pathname + location.search);
  if (!url) return;
  $("register-url").value = url;
  say("Check the address and the device name, then press “Add account”.");
  $("enroll").focus();
}

async function setUpScanner() {
  if (!("BarcodeDetector" in window) || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) return;
  try {
    if (!(await BarcodeDetector.getSupportedFormats()).includes("qr_code")) return;
  } catch (error) {
    return;
  }
  const button = $("scan");
  const video = $("camera");
  let stream = null;
  const stop = () => {
    if (stream) stream.getTracks().forEach((t) => t.stop());
    stream = null;
    video.srcObject = null;
    $("scanner").hidden = true;
    button.hidden = false;
  };
  button.hidden = false;
  button.addEventListener("click", async () => {
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
    } catch (error) {
      say("The camera is not available. Paste the registration address instead.");
      return;
    }
    video.srcObject = stream;
    await video.play();
    $("scanner").hidden = false;
    button.hidden = true;
    const detector = new BarcodeDetector({ formats: ["qr_code"] });
    const look = async () => {
      if (!stream) return;
      try {
        const found = await detector.detect(video);
        const hit = found.find((code) => /\/device\/v1\/register\?/.test(code.rawValue));
        if (hit) {
          $("register-url").value = hit.rawValue;
          stop();
          say("QR code read. Check the device name, then press “Add account”.");
          $("enroll").focus();
          return;
        }
      } catch (error) { /* a frame that could not be read */ }
      setTimeout(look, 250);
    };
    look();
  });
  $("scan-stop").addEventListener("click", stop);
}

async function registerWorker() {
  if (!("serviceWorker" in navigator)) return;
  try {
    await navigator.serviceWorker.register("sw.js", { scope: "./" });
    state.swRegistration = await navigator.serviceWorker.ready;
    navigator.serviceWorker.addEventListener("message", (event) => {
      if (event.data && event.data.type === "sign-in") wakeAll();
    });
  } catch (error) {
    state.swRegistration = null;  // no offline start and no notifications; long-poll still works
  }
}

async function start() {
  if (!window.isSecureContext || !crypto.subtle) {
    say("This authenticator needs a secure (https) page.");
    return false;
  }
  const ready = registerWorker();
  setUpScanner();
  try {
    for (const account of await loadAccounts()) state.accounts.set(account.account_id, account);
  } catch (error) {
    say("This browser does not let the authenticator keep its keys (private browsing?).");
    return false;
  }
  await ready;
  renderAccounts();
  if (!$("register-url").value) {
    say(state.accounts.size === 0 ? "Add an account to start." : "Waiting for sign-in requests.");
  }
  for (const account of state.accounts.values()) startLoop(account);
  setInterval(expireShown, 1000);
  return true;
}

function main() {
  // Handlers first, before anything is awaited: the form must never be submitted by the browser itself (that
  // would put the registration token in a URL). The button stays disabled until the app has started.
  $("device-name").value = guessName();
  pickUpFragment();
  const started = start();
  document.addEventListener("visibilitychange", () => { if (document.visibilityState === "visible") wakeAll(); });
  $("notifications").addEventListener("click", async () => {
    const messages = await enablePushForAll();
    say(messages.length ? messages.join(" ") : "Notifications are on.");
  });
  $("enroll-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = $("enroll");
    if (button.disabled || !(await started)) return;
    button.disabled = true;
    alertText("");
    try {
      const name = ($("device-name").value.trim() || guessName()).slice(0, 100);
      const account = await enroll($("register-url").value, name);
      $("register-url").value = "";
      renderAccounts();
      startLoop(account);
      const added = `Added ${account.username || "your account"} at ${account.site}. Now press “I added the `
                    + "device” on the page that showed the code.";
      say(added);
      if (account.vapid_public_key) {  // never holds up the enrollment: long-poll works meanwhile
        enablePushForAll().then((messages) => {
          say(added + (messages.length ? " " + messages.join(" ") : (account.channel ? " Notifications are on." : "")));
        });
      }
    } catch (error) {
      alertText(`The account was not added: ${error.message || error}`);
    } finally {
      button.disabled = false;
    }
  });
  started.then((ok) => { $("enroll").disabled = !ok; });
}

document.addEventListener("DOMContentLoaded", main);
