// Passwordless sign-in: the sign-in page's "Sign in with a passkey" form (hidden until this script finds WebAuthn).
// On submit it asks the server for a ceremony bound to this browser (POST with the page's CSRF token), lets the
// browser ask for any passkey of this site with user verification, puts the answer in the form and sends it; the
// server checks it and signs the user in. Without WebAuthn or JavaScript the form stays hidden.
(function () {
  "use strict";
  var form = document.getElementById("passkey-sign-in");
  if (!form || !window.PublicKeyCredential || !navigator.credentials) { return; }
  var status = document.getElementById("passkey-status");
  function say(text) { if (status) { status.textContent = text; } }
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
  function encode(cred) {
    var r = cred.response, out = {id: cred.id, rawId: toB64url(cred.rawId), type: cred.type,
      clientExtensionResults: cred.getClientExtensionResults ? cred.getClientExtensionResults() : {},
      authenticatorAttachment: cred.authenticatorAttachment || undefined, response: {
        clientDataJSON: toB64url(r.clientDataJSON), authenticatorData: toB64url(r.authenticatorData),
        signature: toB64url(r.signature)}};
    if (r.userHandle) { out.response.userHandle = toB64url(r.userHandle); }
    return out;
  }
  form.hidden = false;
  var busy = false;
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (busy) { return; }
    busy = true;
    say("Follow your browser's prompt to use your passkey.");
    var body = new URLSearchParams();
    body.set("csrf_token", form.querySelector("input[name=csrf_token]").value);
    fetch(form.getAttribute("data-options"), {method: "POST", credentials: "same-origin", cache: "no-store",
                                              body: body})
      .then(function (r) { if (!r.ok) { throw new Error("expired"); } return r.json(); })
      .then(function (o) {
        o.challenge = toBytes(o.challenge);
        (o.allowCredentials || []).forEach(function (c) { c.id = toBytes(c.id); });
        return navigator.credentials.get({publicKey: o});
      })
      .then(function (cred) {
        if (!cred) { throw new Error("no passkey was used"); }
        form.querySelector("input[name=credential]").value = JSON.stringify(encode(cred));
        say("Checking\u2026");
        form.submit();
      })
      .catch(function (err) {
        busy = false;
        say(err && err.name === "NotAllowedError" ? "The passkey prompt was closed or timed out. Try again." :
            err && err.message === "expired" ? "This page has expired. Reload it and try again." :
            "That didn't work: " + (err && err.message ? err.message : "unknown error") + ". Try again.");
      });
  });
}());
