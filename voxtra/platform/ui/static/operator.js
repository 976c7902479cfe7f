// The operator page's script: follows /ui/stream and swaps in the sections the server
// rendered (and escaped); posts the page's actions with the session's CSRF token.
// Parsing through a <template> runs no script, and the page's CSP allows none inline.
(() => {
  "use strict";
  const RECENT_LIMIT = 20;
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
  const conn = document.getElementById("conn");
  const error = document.getElementById("error");
  if (!conn) return; // the sign-in page

  const fragment = (html) => {
    const template = document.createElement("template");
    template.innerHTML = html;
    return template.content;
  };
  const showError = (text) => {
    error.textContent = text;
    error.hidden = !text;
  };

  const source = new EventSource("/ui/stream");
  source.addEventListener("open", () => {
    conn.textContent = "live";
    conn.className = "conn up";
  });
  source.addEventListener("error", () => {
    const closed = source.readyState === EventSource.CLOSED;
    conn.textContent = closed ? "disconnected: reload to sign in again" : "reconnecting…";
    conn.className = "conn down";
  });
  // A reconnected stream sends every section again: an unchanged one is left alone
  // (a transcript keeps its scroll position).
  const shown = {};
  const section = (id) => (event) => {
    const html = JSON.parse(event.data).html;
    if (shown[id] === html) return;
    shown[id] = html;
    document.getElementById(id).replaceChildren(fragment(html));
  };
  source.addEventListener("live", section("live"));
  source.addEventListener("campaigns", section("campaigns"));
  source.addEventListener("recent", (event) => {
    const data = JSON.parse(event.data);
    const body = document.getElementById("recent-rows");
    const old = [...body.rows].find((row) => row.dataset.callId === data.id);
    if (old && old.dataset.v === data.v) return; // unchanged: keep a playing <audio>
    const row = fragment(data.html).firstElementChild;
    if (old) {
      old.replaceWith(row);
    } else {
      body.querySelector("tr.empty")?.remove();
      body.prepend(row);
    }
    while (body.rows.length > RECENT_LIMIT) body.lastElementChild.remove();
  });

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    button.disabled = true;
    try {
      const response = await fetch(button.dataset.url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf },
      });
      if (!response.ok) {
        let detail = response.statusText;
        try {
          detail = (await response.json()).detail ?? detail;
        } catch {}
        showError(`${button.textContent}: ${detail}`);
        button.disabled = false;
      } else {
        showError("");
      }
    } catch (exc) {
      showError(`${button.textContent}: ${exc}`);
      button.disabled = false;
    }
  });
})();
