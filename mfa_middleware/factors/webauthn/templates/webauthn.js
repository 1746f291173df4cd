// Passkeys: runs the WebAuthn ceremony for the form that carries data-webauthn="get" (sign-in) or "create"
// (enrollment). Options come from the server (a route, or the enrollment page's data attribute); the browser's
// response is posted to the server, which keeps it with its own challenge; then the form is submitted and the
// server checks it. Without WebAuthn the form says so and cannot be submitted.
(function () {
  "use strict";
  var box = document.querySelector("[data-webauthn]");
  if (!box) { return; }
  var form = box.closest("form");
  var mode = box.getAttribute("data-webauthn");
  var status = document.getElementById("webauthn-status");
  var button = form.querySelector("button[type=submit]");
  function say(text) { if (status) { status.textContent = text; } }
  if (!window.PublicKeyCredential || !navigator.credentials) {
    var missing = document.getElementById("webauthn-missing");
    if (missing) { missing.hidden = false; }
    if (button) { button.disabled = true; }
    return;
  }
  function toBytes(b64url) {
    var b64 = b64url.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) { b64 += "="; }
    var raw = atob(b64), out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) { out[i] = raw.charCodeAt(i); }
    return out.buffer;
  }
  function toB64url(buffer) {
    var bytes = new Uint8Array(buffer), raw = "";
    for (var i = 0; i < bytes.length; i++) { raw += String.fromCharCode(bytes[i]); }
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function creationOptions(o) {
    o.challenge = toBytes(o.challenge);
    o.user.id = toBytes(o.user.id);
    (o.excludeCredentials || []).forEach(function (c) { c.id = toBytes(c.id); });
    return {publicKey: o};
  }
  function requestOptions(o) {
    o.challenge = toBytes(o.challenge);
    (o.allowCredentials || []).forEach(function (c) { c.id = toBytes(c.id); });
    return {publicKey: o};
  }
  function encode(cred) {
    var r = cred.response, out = {id: cred.id, rawId: toB64url(cred.rawId), type: cred.type,
      clientExtensionResults: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
      authenticatorAttachment: cred.authenticatorAttachment || undefined, response: {
        clientDataJSON: toB64url(r.clientDataJSON)}};
    if (r.attestationObject) {
      out.response.attestationObject = toB64url(r.attestationObject);
      out.response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      out.response.authenticatorData = toB64url(r.authenticatorData);
      out.response.signature = toB64url(r.signature);
      if (r.userHandle) { out.response.userHandle = toB64url(r.userHandle); }
    }
    return out;
  }
  function options() {
    if (mode === "create") { return Promise.resolve(JSON.parse(box.getAttribute("data-options"))); }
    return fetch(box.getAttribute("data-options"), {credentials: "same-origin", cache: "no-store"})
      .then(function (r) { if (!r.ok) { throw new Error("expired"); } return r.json(); });
  }
  function post(cred) {
    var body = new URLSearchParams();
    body.set("csrf_token", form.querySelector("input[name=csrf_token]").value);
    body.set("credential", JSON.stringify(encode(cred)));
    return fetch(box.getAttribute("data-answer"), {method: "POST", credentials: "same-origin", body: body})
      .then(function (r) { return r.json().then(function (d) { if (!r.ok) { throw new Error(d.error); } }); });
  }
  var busy = false;
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (busy) { return; }
    busy = true;
    say(mode === "create" ? "Follow your browser's prompt to create the passkey." :
        "Follow your browser's prompt to use your passkey.");
    options().then(function (o) {
      return mode === "create" ? navigator.credentials.create(creationOptions(o)) :
        navigator.credentials.get(requestOptions(o));
    }).then(function (cred) {
      if (!cred) { throw new Error("no passkey was used"); }
      return post(cred);
    }).then(function () {
      say("Checking\u2026");
      form.submit();
    }).catch(function (err) {
      busy = false;
      say(err && err.name === "NotAllowedError" ? "The passkey prompt was closed or timed out. Try again." :
          err && err.message === "expired" ? "This request has expired. Reload the page." :
          "That didn't work: " + (err && err.message ? err.message : "unknown error") + ". Try again.");
    });
  });
}());
