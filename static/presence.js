// Who is in the room and who is typing, from the presence socket. A custom element, so Turbo's
// page swaps connect and disconnect it like any other part of the page.
class PresenceList extends HTMLElement {
  connectedCallback() {
    this.closed = false;
    this.people = new Map();
    this.typing = new Map();
    this.retries = 0;
    this.onInput = () => this.typed();
    document.addEventListener("input", this.onInput);
    this.connect();
  }

  disconnectedCallback() {
    this.closed = true;
    clearTimeout(this.retry);
    clearTimeout(this.idle);
    document.removeEventListener("input", this.onInput);
    this.socket?.close();
  }

  connect() {
    const url = new URL(this.dataset.url, location.href);
    url.protocol = url.protocol.replace("http", "ws");
    this.socket = new WebSocket(url);
    this.socket.onopen = () => (this.retries = 0);
    this.socket.onmessage = (event) => this.receive(JSON.parse(event.data));
    this.socket.onclose = (event) => {
      if (this.closed || event.code === 1008) return; // 1008: signed out, retrying cannot help
      const backoff = Math.min(10_000, 500 * 2 ** this.retries++);
      this.retry = setTimeout(() => this.connect(), backoff * (0.5 + Math.random() / 2));
    };
  }

  receive(frame) {
    if (frame.type === "presence_state") {
      this.people = new Map(frame.users.map((u) => [u.id, u.name]));
      this.typing.clear();
    } else if (frame.type === "presence_diff") {
      frame.leaves.forEach((u) => { this.people.delete(u.id); this.typing.delete(u.id); });
      frame.joins.forEach((u) => this.people.set(u.id, u.name));
    } else if (frame.type === "typing") {
      frame.typing ? this.typing.set(frame.user.id, frame.user.name) : this.typing.delete(frame.user.id);
    }
    const li = (name) => Object.assign(document.createElement("li"), { textContent: name });
    this.querySelector("ul").replaceChildren(...[...this.people.values()].sort().map(li));
    const typists = [...this.typing.values()];
    this.querySelector("[aria-live]").textContent =
      typists.length === 0 ? "" : `${typists.join(", ")} ${typists.length > 1 ? "are" : "is"} typing…`;
  }

  // Says "typing" at most every 2 s while keys are pressed, and "stopped" after 3 s of quiet.
  typed() {
    if (!(Date.now() - this.saidAt < 2000)) this.say(true);
    clearTimeout(this.idle);
    this.idle = setTimeout(() => this.say(false), 3000);
  }

  say(typing) {
    this.saidAt = typing ? Date.now() : 0;
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify({ type: "typing", typing }));
  }
}

customElements.define("presence-list", PresenceList);
