/* The web authenticator's service worker (scope: the authenticator's folder).
 *
 * Trust model: a push only wakes the person up. Its payload is never believed: the notification names a site only
 * when that site is one of the accounts stored here, and says nothing else. The page then fetches the requests
 * over the signed device protocol and verifies each one with the site's key before it shows anything.
 * The app's own files are kept for offline start (network first, so an update applies at once); nothing else is
 * cached, and the device API is never touched here.
 */
"use strict";

const CACHE = "mfa-authenticator-v1";
const SHELL = ["./", "app.js", "app.css", "manifest.webmanifest", "icon.svg", "icon-192.png", "icon-512.png",
               "../static/mfa.css"];
const DB_NAME = "mfa-authenticator";

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE)
    .then((cache) => cache.addAll(SHELL))
    .catch(() => undefined)  // offline start is a convenience; never block the install on it
    .then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

function isShell(url) {
  return SHELL.some((path) => new URL(path, self.registration.scope).href === url.origin + url.pathname);
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin || !isShell(url)) {
    return;  // the device API and everything else go to the network untouched
  }
  event.respondWith(fetch(request).then((response) => {
    if (response.ok) {
      const copy = response.clone();
      caches.open(CACHE).then((cache) => cache.put(url.origin + url.pathname, copy)).catch(() => undefined);
    }
    return response;
  }).catch(() => caches.match(url.origin + url.pathname).then((hit) => hit || Response.error())));
});

function storedSites() {
  return new Promise((resolve) => {
    const open = indexedDB.open(DB_NAME, 1);
    open.onupgradeneeded = () => open.result.createObjectStore("accounts", { keyPath: "account_id" });
    open.onerror = () => resolve([]);
    open.onsuccess = () => {
      const db = open.result;
      const all = db.transaction("accounts", "readonly").objectStore("accounts").getAll();
      all.onsuccess = () => { db.close(); resolve(all.result.map((a) => String(a.site))); };
      all.onerror = () => { db.close(); resolve([]); };
    };
  });
}

async function showSignIn(data) {
  let claimed = null;
  try {
    const body = data ? data.json() : null;
    if (body && typeof body.site === "string") claimed = body.site;
  } catch (error) {
    claimed = null;  // not JSON: a bare wake-up
  }
  const sites = [...new Set(await storedSites())];
  const site = sites.includes(claimed) ? claimed : (sites.length === 1 ? sites[0] : null);
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  windows.forEach((client) => client.postMessage({ type: "sign-in" }));
  await self.registration.showNotification(site ? `Sign-in request for ${site}` : "Sign-in request", {
    body: "Open the authenticator to approve or deny it.",
    tag: "mfa-sign-in",
    renotify: true,
    icon: "icon-192.png",
    badge: "icon-192.png",
    data: { url: self.registration.scope },
  });
}

self.addEventListener("push", (event) => {
  event.waitUntil(showSignIn(event.data));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(self.clients.matchAll({ type: "window", includeUncontrolled: true }).then((windows) => {
    for (const client of windows) {
      if (client.url.startsWith(self.registration.scope) && "focus" in client) {
        client.postMessage({ type: "sign-in" });
        return client.focus();
      }
    }
    return self.clients.openWindow(self.registration.scope);
  }));
});
