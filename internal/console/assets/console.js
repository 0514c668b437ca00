// sandkeep console: confirmations and drag-and-drop upload. Every page and
// form works without this file.
"use strict";
document.addEventListener("submit", (ev) => {
  const f = ev.target;
  const msg = f.getAttribute && f.getAttribute("data-confirm");
  if (msg && !window.confirm(msg)) ev.preventDefault();
});

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("upload-form");
  const drop = document.getElementById("drop");
  if (!form || !drop) return;
  const status = document.getElementById("upload-status");
  const send = (files) => {
    if (!files || files.length === 0) return;
    const body = new FormData();
    for (const f of files) body.append("file", f, f.name);
    status.textContent = "Uploading " + files.length + " file(s)…";
    fetch(form.action, { method: "POST", body, headers: { "Accept": "application/json" }, credentials: "same-origin" })
      .then(async (r) => {
        const text = await r.text();
        if (!r.ok) throw new Error(text.replace(/<[^>]*>/g, " ").replace(/\s+/g, " ").trim());
        const res = JSON.parse(text);
        status.textContent = res.message;
        const u = new URL(window.location.href);
        u.searchParams.set("ok", res.message);
        window.location.assign(u.toString());
      })
      .catch((e) => { status.textContent = "Upload failed: " + e.message; });
  };
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (e) => { e.preventDefault(); send(e.dataTransfer.files); });
});
