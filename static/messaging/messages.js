/*
 * The /messages/ page: the conversation list with live unread badges, and one open conversation with live
 * messages, "X is typing…", "Seen" and the participants' presence dots, all on the page's one stream.
 *
 * Each part subscribes first and loads after the stream says its subscriptions are in place (rt.onReady), so
 * nothing falls between a load and the first event; after a reconnect the stream replays what was missed and
 * nothing is refetched, except a topic that reports a `gap` (typing always does: it is never stored).
 */
(function () {
  "use strict";

  const root = document.getElementById("inbox");
  const me = Number(root.dataset.me);
  const openId = root.dataset.conversation ? Number(root.dataset.conversation) : null;
  const isDirect = root.dataset.kind === "direct";
  const csrf = decodeURIComponent((document.cookie.match(/(?:^|; )csrftoken=([^;]*)/) || [])[1] || "");
  const conn = document.getElementById("conn");
  const list = document.getElementById("conversations");
  // Pages must keep refreshing a typing mark well inside the server's throttle + timeout (2 s and 6 s).
  const TYPING_REFRESH_MS = 2500;
  const TYPING_IDLE_MS = 4000;
  const LISTED = 60;

  function api(path, options) {
    const opts = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
    opts.headers = Object.assign({ "X-CSRFToken": csrf, "Content-Type": "application/json" }, opts.headers);
    return fetch(path, opts).then(async (response) => {
      const body = response.status === 204 ? null : await response.json().catch(() => null);
      if (!response.ok) throw Object.assign(new Error((body && body.detail) || response.statusText), { body, status: response.status });
      return body;
    });
  }

  function conversationName(summary) {
    if (summary.title) return summary.title;
    const names = summary.participants.filter((p) => p.id !== me).map((p) => p.name);
    return names.join(", ") || "(only you)";
  }

  const rt = Realtime.connect();

  // -- the conversation list ----------------------------------------------------------------------
  const conversations = new Map(); // id -> {lastReadSeq, unread, off}

  function itemOf(id) {
    return list.querySelector(`li[data-conversation="${id}"]`);
  }

  function ensureItem(id, name) {
    let li = itemOf(id);
    if (!li) {
      li = document.createElement("li");
      li.dataset.conversation = String(id);
      const link = document.createElement("a");
      link.href = `/messages/${id}/`;
      const label = document.createElement("span");
      label.className = "name";
      const badge = document.createElement("span");
      badge.className = "unread";
      badge.hidden = true;
      link.append(label, badge);
      li.append(link);
      list.append(li);
      const empty = document.getElementById("no-conversations");
      if (empty) empty.remove();
    }
    if (name) li.querySelector(".name").textContent = name;
    return li;
  }

  function showUnread(id) {
    const state = conversations.get(id);
    const li = itemOf(id);
    if (!state || !li) return;
    const badge = li.querySelector(".unread");
    const n = Math.max(0, state.unread);
    badge.textContent = String(n);
    badge.setAttribute("aria-label", `${n} unread`);
    badge.hidden = n === 0;
  }

  function follow(id) {
    if (conversations.has(id)) return conversations.get(id);
    const state = { lastReadSeq: 0, unread: 0, off: null };
    conversations.set(id, state);
    state.off = rt.subscribe(`conversation.${id}.messages`, {
      "message.created": (event) => onCreated(id, event.data),
      "message.edited": (event) => id === openId && renderMessage(event.data),
      "message.deleted": (event) => onDeleted(id, event.data),
      "participant.added": () => id === openId && refreshConversation(),
      "participant.removed": (event) => {
        if (event.data.member === me) forget(id);
        else if (id === openId) refreshConversation();
      },
      gap: () => {
        refreshList();
        if (id === openId) refreshOpen();
      },
      // A client that reports refusals and topics the server took away (she was removed): drop it here too.
      error: (error) => {
        if (error && (error.code === "unsubscribed" || error.code === "forbidden_topic")) forget(id);
      },
    });
    return state;
  }

  function forget(id) {
    const state = conversations.get(id);
    if (state) {
      conversations.delete(id);
      state.off();
    }
    const li = itemOf(id);
    if (li) li.remove();
    if (id === openId) closeOpen("You are no longer in this conversation.");
  }

  function moveToTop(id) {
    const li = itemOf(id);
    if (li && list.firstElementChild !== li) list.prepend(li);
  }

  function onCreated(id, message) {
    const state = conversations.get(id);
    if (!state) return;
    moveToTop(id);
    if (message.author && message.author.id === me) {
      state.lastReadSeq = Math.max(state.lastReadSeq, message.seq);
      state.unread = 0; // sending reads everything before (the server moved her mark too)
    } else if (message.seq > state.lastReadSeq) {
      state.unread += 1;
    }
    showUnread(id);
    if (id === openId) {
      renderMessage(message);
      if (message.author) stopShowingTyping(message.author.id);
      readSoon();
    }
  }

  function onDeleted(id, deleted) {
    const state = conversations.get(id);
    if (state && deleted.author !== me && deleted.seq > state.lastReadSeq && state.unread > 0) {
      state.unread -= 1;
      showUnread(id);
    }
    if (id === openId) renderDeleted(deleted);
  }

  function refreshList() {
    return api(`/api/conversations?page_size=${LISTED}`)
      .then((page) => {
        const seen = new Set();
        for (const summary of page.results) {
          seen.add(summary.id);
          const li = ensureItem(summary.id, conversationName(summary));
          list.append(li); // most recent first, as the API orders them
          const state = follow(summary.id);
          state.lastReadSeq = summary.last_read_seq;
          state.unread = summary.unread;
          showUnread(summary.id);
        }
        // Past the listed page is not gone: the open one stays until the server says she left it.
        for (const id of [...conversations.keys()]) if (!seen.has(id) && id !== openId) forget(id);
      })
      .catch((error) => console.warn("conversation list refresh failed", error));
  }

  // A member's own topic: conversations she joins or leaves, and her read marks moved from any device.
  rt.subscribe(`member.${me}.conversations`, {
    "conversation.added": () => refreshList(),
    "conversation.removed": (event) => forget(event.data.conversation),
    "conversation.read": (event) => {
      const state = conversations.get(event.data.conversation);
      if (!state || event.data.last_read_seq < state.lastReadSeq) return; // never backwards
      state.lastReadSeq = event.data.last_read_seq;
      state.unread = event.data.unread;
      showUnread(event.data.conversation);
    },
    gap: () => refreshList(),
  });
  for (const li of list.querySelectorAll("li[data-conversation]")) follow(Number(li.dataset.conversation));
  if (openId) follow(openId); // also when it is older than the listed ones

  // -- the open conversation ----------------------------------------------------------------------
  const messagesList = document.getElementById("messages");
  const typingLine = document.getElementById("typing");
  const form = document.getElementById("composer");
  const input = document.getElementById("message-text");
  const chatError = document.getElementById("chat-error");
  const shown = new Map(); // seq -> {li, message}
  const readMarks = new Map(); // member id -> last_read_seq (never lowered)
  const names = new Map(); // member id -> name
  const typing = new Map(); // member id -> {name, timer}
  const offs = [];
  let seenLine = null;

  function showError(text) {
    if (!chatError) return;
    chatError.textContent = text;
    chatError.hidden = !text;
  }

  function messageItem(message) {
    const li = document.createElement("li");
    li.className = "message";
    li.dataset.message = String(message.id);
    li.dataset.seq = String(message.seq);
    const author = document.createElement("span");
    author.className = "author";
    const text = document.createElement("span");
    text.className = "text";
    const meta = document.createElement("span");
    meta.className = "meta";
    li.append(author, text, meta);
    return li;
  }

  function fill(li, message) {
    const mine = message.author && message.author.id === me;
    li.classList.toggle("mine", Boolean(mine));
    li.classList.toggle("deleted", Boolean(message.deleted));
    li.querySelector(".author").textContent = message.author ? message.author.name : "(gone)";
    li.querySelector(".text").textContent = message.deleted ? "message deleted" : message.text;
    li.querySelector(".meta").textContent = message.edited && !message.deleted ? "(edited)" : "";
    let tools = li.querySelector(".tools");
    if (mine && !message.deleted && !tools) {
      tools = document.createElement("span");
      tools.className = "tools";
      const edit = document.createElement("button");
      edit.type = "button";
      edit.textContent = "Edit";
      edit.setAttribute("aria-label", "Edit message");
      edit.addEventListener("click", () => editMessage(li));
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "Delete";
      remove.setAttribute("aria-label", "Delete message");
      remove.addEventListener("click", () => deleteMessage(li));
      tools.append(edit, remove);
      li.append(tools);
    } else if (tools && (!mine || message.deleted)) {
      tools.remove();
    }
  }

  function renderMessage(message) {
    // Concurrent sends may publish out of seq order: each message goes to its seq's place.
    let entry = shown.get(message.seq);
    if (!entry) {
      const li = messageItem(message);
      let before = null;
      for (const other of messagesList.querySelectorAll("li.message")) {
        if (Number(other.dataset.seq) > message.seq) {
          before = other;
          break;
        }
      }
      messagesList.insertBefore(li, before);
      entry = { li, message };
      shown.set(message.seq, entry);
    }
    entry.message = message;
    fill(entry.li, message);
    if (message.author) names.set(message.author.id, message.author.name);
    renderSeen();
    messagesList.scrollTop = messagesList.scrollHeight;
  }

  function renderDeleted(deleted) {
    const entry = shown.get(deleted.seq);
    if (!entry) return;
    renderMessage(Object.assign({}, entry.message, { text: "", deleted: deleted.deleted }));
  }

  function editMessage(li) {
    const entry = shown.get(Number(li.dataset.seq));
    const text = window.prompt("Edit your message", entry ? entry.message.text : "");
    if (text === null || !text.trim()) return;
    api(`/api/conversations/${openId}/messages/${li.dataset.message}`, { method: "PATCH", body: JSON.stringify({ text }) })
      .then(renderMessage)
      .catch((failure) => showError(failure.message));
  }

  function deleteMessage(li) {
    api(`/api/conversations/${openId}/messages/${li.dataset.message}`, { method: "DELETE" }).catch((failure) =>
      showError(failure.message),
    );
  }

  // "Seen" goes under the last message of mine that someone else has read up to (or past).
  function renderSeen() {
    if (!messagesList) return;
    let target = null;
    let readers = [];
    const mine = [...shown.values()].filter((e) => e.message.author && e.message.author.id === me && !e.message.deleted);
    mine.sort((a, b) => b.message.seq - a.message.seq);
    for (const entry of mine) {
      readers = [...readMarks.entries()].filter(([member, seq]) => member !== me && seq >= entry.message.seq);
      if (readers.length) {
        target = entry;
        break;
      }
    }
    if (!target) {
      if (seenLine) seenLine.remove();
      seenLine = null;
      return;
    }
    if (!seenLine) {
      seenLine = document.createElement("li");
      seenLine.className = "seen";
      seenLine.id = "seen";
    }
    const who = readers.map(([member]) => names.get(member) || `member ${member}`);
    seenLine.textContent = isDirect ? "Seen" : `Seen by ${who.join(", ")}`;
    seenLine.setAttribute("aria-label", seenLine.textContent);
    target.li.after(seenLine);
  }

  function setReadMark(member, seq) {
    if (seq > (readMarks.get(member) || 0)) readMarks.set(member, seq);
  }

  // -- typing, as a viewer --------------------------------------------------------------------------
  function renderTyping() {
    const who = [...typing.values()].map((t) => t.name);
    let text = "";
    if (who.length === 1) text = `${who[0]} is typing…`;
    else if (who.length === 2) text = `${who[0]} and ${who[1]} are typing…`;
    else if (who.length > 2) text = "Several people are typing…";
    typingLine.textContent = text;
  }

  function stopShowingTyping(member) {
    const entry = typing.get(member);
    if (!entry) return;
    clearTimeout(entry.timer);
    typing.delete(member);
    renderTyping();
  }

  function onTyping(data) {
    if (data.member === me) return;
    if (!data.typing) {
      stopShowingTyping(data.member);
      return;
    }
    const previous = typing.get(data.member);
    if (previous) clearTimeout(previous.timer);
    // The server announces a stop when the mark expires; if that event is lost, hide it a second later anyway.
    const timer = setTimeout(() => stopShowingTyping(data.member), (data.expires_in + 1) * 1000);
    typing.set(data.member, { name: data.name, timer });
    renderTyping();
  }

  function clearTyping() {
    for (const member of [...typing.keys()]) stopShowingTyping(member);
  }

  // -- typing, as the typist --------------------------------------------------------------------------
  let typingSentAt = 0;
  let typingActive = false;
  let idleTimer = null;

  let retryTimer = null;

  function sayTyping(on) {
    if (!openId) return;
    typingActive = on;
    typingSentAt = on ? Date.now() : 0;
    clearTimeout(retryTimer);
    api(`/api/conversations/${openId}/typing`, { method: "POST", body: JSON.stringify({ typing: on }) })
      .then((result) => {
        // Typing again right after a stop is not shown before the server's throttle window ends: ask again then.
        if (on && !result.shown && result.retry_in > 0) {
          retryTimer = setTimeout(() => {
            if (typingActive && input.value.trim()) sayTyping(true);
          }, result.retry_in * 1000 + 50);
        }
      })
      .catch((error) => console.warn("typing failed", error));
  }

  function onInput() {
    clearTimeout(idleTimer);
    if (!input.value.trim()) {
      if (typingActive) sayTyping(false);
      return;
    }
    if (!typingActive || Date.now() - typingSentAt >= TYPING_REFRESH_MS) sayTyping(true);
    idleTimer = setTimeout(() => typingActive && sayTyping(false), TYPING_IDLE_MS);
  }

  // -- reading ------------------------------------------------------------------------------------------
  let readTimer = null;
  let readSent = 0;

  function readSoon() {
    if (!openId || document.visibilityState !== "visible") return;
    clearTimeout(readTimer);
    readTimer = setTimeout(markRead, 150);
  }

  function markRead() {
    const last = [...shown.values()].reduce((a, b) => (!a || b.message.seq > a.message.seq ? b : a), null);
    if (!last || last.message.seq <= readSent) return;
    const state = conversations.get(openId);
    if (state && last.message.seq <= state.lastReadSeq && state.unread === 0) return;
    readSent = last.message.seq;
    api(`/api/conversations/${openId}/read`, { method: "POST", body: JSON.stringify({ message: last.message.id }) })
      .then((result) => {
        const current = conversations.get(openId);
        if (current && result.last_read_seq >= current.lastReadSeq) {
          current.lastReadSeq = result.last_read_seq;
          current.unread = result.unread;
          showUnread(openId);
        }
      })
      .catch((error) => {
        readSent = 0;
        console.warn("read failed", error);
      });
  }

  // -- presence -----------------------------------------------------------------------------------------
  const presenceChangedAt = new Map();
  const people = [...document.querySelectorAll("#people [data-member]")].map((li) => Number(li.dataset.member));

  function showPresence(member, status, changedAt) {
    const known = presenceChangedAt.get(member);
    if (known !== undefined && changedAt !== undefined && changedAt < known) return;
    presenceChangedAt.set(member, changedAt);
    const li = document.querySelector(`#people [data-member="${member}"]`);
    if (!li) return;
    const name = li.querySelector(".name").textContent;
    li.className = status === "online" ? "online" : "offline";
    li.setAttribute("aria-label", `${name}, ${status === "online" ? "online" : "offline"}`);
  }

  function refreshPresence() {
    const others = people.filter((member) => member !== me);
    if (!others.length) return;
    api(`/api/presence?members=${others.join(",")}`)
      .then((body) => {
        for (const state of body.members) showPresence(state.member, state.status, state.changed_at);
      })
      .catch((error) => console.warn("presence refresh failed", error));
  }

  // -- loading ------------------------------------------------------------------------------------------
  function refreshConversation() {
    return api(`/api/conversations/${openId}`)
      .then((summary) => {
        for (const person of summary.participants) {
          names.set(person.id, person.name);
          setReadMark(person.id, person.last_read_seq);
        }
        renderSeen();
      })
      .catch((error) => {
        if (error.status === 404) forget(openId);
        else console.warn("conversation refresh failed", error);
      });
  }

  function refreshMessages() {
    return api(`/api/conversations/${openId}/messages`)
      .then((page) => {
        for (const message of page.results) renderMessage(message);
        readSoon();
      })
      .catch((error) => console.warn("messages refresh failed", error));
  }

  function refreshOpen() {
    refreshConversation();
    refreshMessages();
  }

  function closeOpen(reason) {
    while (offs.length) offs.pop()();
    clearTyping();
    if (form) {
      input.disabled = true;
      form.querySelector("button").disabled = true;
    }
    showError(reason);
  }

  if (openId) {
    offs.push(
      rt.subscribe(`conversation.${openId}.typing`, {
        typing: (event) => onTyping(event.data),
        gap: clearTyping, // after a reconnect: whoever still types refreshes within 2.5 s
      }),
    );
    offs.push(
      rt.subscribe(`conversation.${openId}.receipts`, {
        "receipt.seen": (event) => {
          setReadMark(event.data.member, event.data.seq);
          renderSeen();
        },
        gap: refreshConversation,
      }),
    );
    for (const member of people) {
      if (member === me) continue;
      offs.push(
        rt.subscribe(`presence.member.${member}`, {
          "presence.changed": (event) => showPresence(event.data.member, event.data.status, event.data.changed_at),
          gap: refreshPresence,
        }),
      );
    }
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = input.value.trim();
      if (!text) return;
      clearTimeout(idleTimer);
      clearTimeout(retryTimer);
      api(`/api/conversations/${openId}/messages`, { method: "POST", body: JSON.stringify({ text }) })
        .then((message) => {
          input.value = "";
          typingActive = false; // the server stopped her mark with the message
          typingSentAt = 0;
          showError("");
          onCreated(openId, message);
        })
        .catch((failure) => showError(failure.message));
    });
    input.addEventListener("input", onInput);
    input.addEventListener("blur", () => typingActive && sayTyping(false));
    document.addEventListener("visibilitychange", readSoon);
  }

  rt.onState((state) => {
    conn.textContent = state === "connected" ? "live" : state === "connecting" ? "connecting…" : "reconnecting…";
    conn.classList.toggle("ok", state === "connected");
  });
  let loaded = false;
  rt.onReady(() => {
    if (loaded) return;
    loaded = true;
    refreshList();
    if (openId) {
      refreshOpen();
      refreshPresence();
    }
  });
})();
