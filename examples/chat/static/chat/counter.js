// The live clap counter: one long-poll at a time, answered by the server when the value changes.
"use strict";
(() => {
  const shown = document.getElementById("claps");
  const state = document.getElementById("poll-state");
  let value = Number(shown.dataset.value);
  let current = null;   // the AbortController of the poll in flight
  let running = false;

  function show(v) {
    if (v === value) return;
    value = v;
    shown.textContent = String(v);
    shown.dataset.value = String(v);
    shown.classList.remove("bump");
    void shown.offsetWidth;  // restart the animation
    shown.classList.add("bump");
  }

  async function pollForever() {
    if (running) return;
    running = true;
    while (running) {
      const abort = new AbortController();
      current = abort;
      // Give up after 45 s and ask again (well inside ipc-server's --http-timeout).
      const timer = setTimeout(() => abort.abort(), 45000);
      try {
        state.textContent = "waiting for a change";
        const response = await fetch(`/counter/poll/?since=${value}`, {signal: abort.signal, cache: "no-store"});
        if (!response.ok) throw new Error(`${response.status}`);
        show((await response.json()).value);
      } catch (error) {
        if (error.name !== "AbortError" && running) {
          state.textContent = `poll failed (${error.message}); retrying`;
          await site.sleep(2000);
        }
      } finally {
        clearTimeout(timer);
      }
    }
  }

  document.getElementById("clap").addEventListener("click", async () => {
    try {
      show((await site.post("/counter/", {})).value);
    } catch (error) {
      state.textContent = `clap failed: ${error.message}`;
    }
  });
  // Leaving the page: end the poll (the server then takes it out of the group); a page
  // kept in the back/forward cache would otherwise hold it open. Coming back polls again.
  window.addEventListener("pagehide", () => {
    running = false;
    if (current) current.abort();
  });
  window.addEventListener("pageshow", (e) => { if (e.persisted) pollForever(); });
  pollForever();
})();
