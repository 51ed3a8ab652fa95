// A chat room: one WebSocket (reconnecting), the history from the page, the background-task form.
"use strict";
(() => {
  const chat = document.getElementById("chat");
  const room = chat.dataset.room;
  const log = document.getElementById("log");
  const status = document.getElementById("status");
  const input = document.getElementById("text");
  const seen = new Set();
  const tasks = new Map();  // task id -> its <li>
  let socket = null;
  let delay = 500;
  let leaving = false;

  function line(cls, who, text, when) {
    const li = document.createElement("li");
    li.className = cls;
    if (when) {
      const time = document.createElement("time");
      time.textContent = new Date(when).toLocaleTimeString();
      li.append(time, " ");
    }
    if (who) {
      const name = document.createElement("strong");
      name.textContent = who;
      li.append(name, " ");
    }
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    li.append(body);
    log.append(li);
    log.scrollTop = log.scrollHeight;
    return li;
  }

  function taskText(t) {
    const what = `task #${t.id} (${t.user}): primes below ${Number(t.n).toLocaleString()}`;
    if (t.status === "done") return `${what} = ${Number(t.result).toLocaleString()}, in ${t.seconds} s by worker pid ${t.worker_pid}`;
    if (t.status === "failed") return `${what} failed: ${t.error}`;
    if (t.status === "running") return `${what}: running on worker pid ${t.worker_pid}...`;
    return `${what}: queued on the tasks channel`;
  }

  function handle(event) {
    if (event.type === "message") {
      if (seen.has(event.id)) return;
      seen.add(event.id);
      line("message", event.user, event.text, event.at);
    } else if (event.type === "presence") {
      line("presence", "", `${event.user} ${event.joined ? "joined" : "left"}`);
    } else if (event.type === "task") {
      let li = tasks.get(event.id);
      if (!li) { li = line("task", "", ""); tasks.set(event.id, li); }
      li.querySelector(".text").textContent = taskText(event);
      li.dataset.status = event.status;
    } else if (event.type === "error") {
      line("error", "", event.error);
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}/ws/room/${room}/`);
    socket.addEventListener("open", () => {
      delay = 500;
      status.textContent = "connected";
      status.className = "status ok";
    });
    socket.addEventListener("message", (e) => handle(JSON.parse(e.data)));
    socket.addEventListener("close", (e) => {
      if (leaving) return;
      status.textContent = `disconnected (${e.code}); reconnecting`;
      status.className = "status bad";
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 10000);
    });
  }

  JSON.parse(document.getElementById("history").textContent).forEach(handle);
  connect();

  // Leaving the page: close the socket ourselves. Chromium keeps a page it may come back
  // to (the back/forward cache) with its socket open, so the room would keep a member
  // that nobody reads; coming back reconnects.
  window.addEventListener("pagehide", () => {
    leaving = true;
    if (socket) socket.close(1000, "page hidden");
  });
  window.addEventListener("pageshow", (e) => {
    if (e.persisted) { leaving = false; connect(); }
  });

  document.getElementById("send").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text || !socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify({text}));
    input.value = "";
  });

  document.getElementById("task").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await site.post("/tasks/", {n: document.getElementById("n").value, room});
    } catch (error) {
      line("error", "", `task refused: ${error.message}`);
    }
  });
})();
