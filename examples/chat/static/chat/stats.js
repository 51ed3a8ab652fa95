// The statistics page: the same tables, refreshed from /stats.json every second.
"use strict";
(() => {
  function rows(id, cells) {
    const body = document.querySelector(`#${id} tbody`);
    body.replaceChildren(...cells.map((values) => {
      const tr = document.createElement("tr");
      values.forEach((v, i) => {
        const td = document.createElement("td");
        td.textContent = String(v);
        if (i) td.className = "num";
        tr.append(td);
      });
      return tr;
    }));
  }

  async function refresh() {
    try {
      const response = await fetch("/stats.json", {cache: "no-store"});
      const s = await response.json();
      document.getElementById("pid").textContent = s.worker_pid;
      if (s.global) rows("global", Object.entries(s.global));
      if (s.channels) {
        rows("channels", Object.entries(s.channels).map(([name, c]) =>
          [name, c.messages_count, c.messages_pending, c.messages_max_age, c.channel_full_count]));
      }
      rows("groups", Object.entries(s.groups));
      document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      document.getElementById("updated").textContent = `update failed: ${error.message}`;
    }
  }
  setInterval(refresh, 1000);
})();
