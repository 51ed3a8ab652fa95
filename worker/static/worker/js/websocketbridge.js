/*
 * websocketbridge.js: the browser side of worker.generic.websockets (no dependencies).
 *
 *   var bridge = new WorkerWebSocketBridge();
 *   bridge.connect("/chat/lobby/");            // ws(s)://this host + path; reconnects by itself
 *   bridge.listen(function (data, stream) {}); // every JSON frame (stream set if multiplexed)
 *   bridge.send({text: "hi"});                 // JSON-encodes; queued while (re)connecting
 *   bridge.demultiplex("rooms", function (payload) {});  // frames {"stream": "rooms", ...}
 *   bridge.stream("rooms").send({join: 3});   // sends {"stream": "rooms", "payload": {...}}
 *
 * Reconnection: after a close that the page did not ask for, it waits 0.5 s, then twice as
 * long after each failed try (with jitter), up to 30 s, and resets after a connection that
 * stayed open 5 s. bridge.close() stops for good. Frames sent while disconnected wait in a
 * bounded queue (1000, oldest dropped) and go out on reconnect.
 */
(function (root) {
  "use strict";

  function WorkerWebSocketBridge(options) {
    options = options || {};
    this.minDelay = options.minDelay || 500;
    this.maxDelay = options.maxDelay || 30000;
    this.maxQueue = options.maxQueue || 1000;
    this.socket = null;
    this.url = null;
    this.closed = false;
    this.attempts = 0;
    this.queue = [];
    this.listeners = [];
    this.streams = {};
    this.onopen = null;
    this.onclose = null;
  }

  WorkerWebSocketBridge.prototype._absolute = function (url) {
    if (/^wss?:\/\//.test(url)) { return url; }
    var loc = root.location;
    var scheme = loc.protocol === "https:" ? "wss://" : "ws://";
    return scheme + loc.host + (url.charAt(0) === "/" ? url : loc.pathname.replace(/[^/]*$/, "") + url);
  };

  WorkerWebSocketBridge.prototype.connect = function (url) {
    this.url = this._absolute(url);
    this.closed = false;
    this._open();
    return this;
  };

  WorkerWebSocketBridge.prototype._open = function () {
    var self = this;
    var opened = 0;
    var socket = new root.WebSocket(this.url);
    this.socket = socket;
    socket.onopen = function () {
      opened = Date.now();
      while (self.queue.length && socket.readyState === 1) { socket.send(self.queue.shift()); }
      if (self.onopen) { self.onopen(); }
    };
    socket.onmessage = function (event) {
      var data;
      try { data = JSON.parse(event.data); } catch (e) { data = event.data; }
      if (data && typeof data === "object" && typeof data.stream === "string" && "payload" in data) {
        var handlers = self.streams[data.stream] || [];
        for (var i = 0; i < handlers.length; i++) { handlers[i](data.payload, data.stream); }
        if (handlers.length) { return; }
        for (var j = 0; j < self.listeners.length; j++) { self.listeners[j](data.payload, data.stream); }
        return;
      }
      for (var k = 0; k < self.listeners.length; k++) { self.listeners[k](data, null); }
    };
    socket.onclose = function (event) {
      if (self.onclose) { self.onclose(event); }
      if (self.closed) { return; }
      if (opened && Date.now() - opened > 5000) { self.attempts = 0; }
      var delay = Math.min(self.maxDelay, self.minDelay * Math.pow(2, self.attempts));
      self.attempts += 1;
      setTimeout(function () { if (!self.closed) { self._open(); } }, delay * (0.75 + Math.random() / 2));
    };
  };

  WorkerWebSocketBridge.prototype.listen = function (callback) {
    this.listeners.push(callback);
    return this;
  };

  WorkerWebSocketBridge.prototype.demultiplex = function (stream, callback) {
    (this.streams[stream] = this.streams[stream] || []).push(callback);
    return this;
  };

  WorkerWebSocketBridge.prototype.send = function (data) {
    var text = JSON.stringify(data);
    if (this.socket && this.socket.readyState === 1) {
      this.socket.send(text);
    } else {
      this.queue.push(text);
      if (this.queue.length > this.maxQueue) { this.queue.shift(); }
    }
    return this;
  };

  WorkerWebSocketBridge.prototype.stream = function (name) {
    var self = this;
    return { send: function (payload) { return self.send({stream: name, payload: payload}); } };
  };

  WorkerWebSocketBridge.prototype.close = function () {
    this.closed = true;
    if (this.socket) { this.socket.close(1000); }
  };

  root.WorkerWebSocketBridge = WorkerWebSocketBridge;
  if (typeof module !== "undefined" && module.exports) { module.exports = WorkerWebSocketBridge; }
}(typeof window !== "undefined" ? window : globalThis));
