// Shared by every page: the CSRF token for fetch(), and a small JSON POST helper.
"use strict";
window.site = {
  csrf() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  },
  async post(url, data) {
    const response = await fetch(url, {
      method: "POST",
      headers: {"Content-Type": "application/json", "X-CSRFToken": this.csrf()},
      body: JSON.stringify(data || {}),
      credentials: "same-origin",
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
    return body;
  },
  sleep(ms) { return new Promise((resolve) => setTimeout(resolve, ms)); },
};
