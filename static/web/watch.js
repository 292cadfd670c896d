/* The watch page: likes with floating hearts, a live chat, members' presence dots, on one shared stream. */
(function () {
  "use strict";

  const root = document.getElementById("watch");
  const videoId = root.dataset.videoId;
  const signedIn = root.dataset.signedIn === "1";
  const me = Number(root.dataset.me) || null;
  const censusSecs = Number(root.dataset.censusSecs) || 5;
  let live = root.dataset.live === "1";
  const likeCount = document.getElementById("like-count");
  const likeWord = document.getElementById("like-word");
  const viewerCount = document.getElementById("viewer-count");
  const commentsList = document.getElementById("comments");
  const hearts = document.getElementById("hearts");
  const conn = document.getElementById("conn");
  const actionHint = document.getElementById("action-hint");
  const likeError = document.getElementById("like-error");
  const likeButton = document.getElementById("like"); // null: signed out, or the video has ended
  const form = document.getElementById("comment-form"); // null: signed out
  const sendButton = document.getElementById("send");
  const MAX_HEARTS_PER_EVENT = 12;
  const MAX_HEARTS_ON_SCREEN = 40;
  const MAX_COMMENTS_SHOWN = 200;
  const motion = window.matchMedia("(prefers-reduced-motion: reduce)");

  let likes = Number(likeCount.textContent) || 0; // the server's count when it rendered the page
  let likesKnown = true; // the server's count has been shown once (the page, a load or a like's answer)
  const presenceChangedAt = new Map(); // member id -> changed_at of the state shown

  // -- what the page applies --------------------------------------------------------------------
  // The publish API cannot send to this page's topics (realtime.policies: the apps that own them publish
  // there, nobody else) nor send the stream's control frames, so what arrives here was published by the
  // site's own code. The page still checks every event and every API answer before showing it: a bug in a
  // service, a peer data centre gone wrong or a future publisher must not show 10^15 likes, render a comment
  // with no author, or pin a dot to a stamp so far in the future that no real change can replace it. What
  // fails a check is dropped (and logged) and the page carries on; each check returns the values to apply,
  // or null.
  const MAX_CLOCK_SKEW_SECS = 300; // how far a presence stamp may be ahead of the event that carries it
  // A count above twice the one shown plus this is checked with the server, not shown: a real burst is far
  // smaller, and `covered` cannot vouch for a jump (whoever wrote the count wrote it too).
  const LIKE_JUMP_TO_VERIFY = 1000;
  const VERIFY_EVERY_MS = 5000; // at most one such check per interval, whatever arrives
  const isCount = (value) => Number.isSafeInteger(value) && value >= 0;
  const isId = (value) => Number.isSafeInteger(value) && value > 0;
  const isObject = (value) => typeof value === "object" && value !== null && !Array.isArray(value);

  function checkLike(data) {
    if (!isObject(data) || !isCount(data.count)) return null;
    const covered = data.covered === undefined ? 1 : data.covered;
    return isId(covered) ? { count: data.count, covered } : null;
  }

  function checkComment(data) {
    if (!isObject(data) || !isId(data.id) || typeof data.text !== "string" || !isObject(data.member)) return null;
    const name = data.member.name;
    return typeof name === "string" && name.trim() ? data : null;
  }

  // `notAfter`: the latest believable stamp, from the server's clock (an event's published_at) rather than
  // the browser's, which may be minutes off; Infinity for the server's own answers (GET /api/presence).
  function checkPresence(data, memberId, notAfter) {
    if (!isObject(data) || data.member !== memberId) return null;
    if (data.status !== "online" && data.status !== "offline") return null;
    const changedAt = data.changed_at;
    if (changedAt === null && notAfter === Infinity) return { status: data.status, changedAt }; // never seen
    if (typeof changedAt !== "number" || !Number.isFinite(changedAt) || changedAt < 0) return null;
    return changedAt <= notAfter ? { status: data.status, changedAt } : null;
  }

  function dropped(what, data) {
    console.warn(`watch: ignored a malformed ${what}`, data);
  }

  // -- talking to the API, and saying what went wrong ---------------------------------------------
  const csrfToken = () => decodeURIComponent((document.cookie.match(/(?:^|; )csrftoken=([^;]*)/) || [])[1] || "");

  // Rejects with an Error carrying `status` (0: no answer at all) and the server's JSON error as `body`.
  function api(path, options) {
    const opts = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
    opts.headers = Object.assign({ "X-CSRFToken": csrfToken(), "Content-Type": "application/json" }, opts.headers);
    return fetch(path, opts).then(
      async (response) => {
        const body = response.status === 204 ? null : await response.json().catch(() => null);
        if (!response.ok) {
          const detail = (isObject(body) && body.detail) || response.statusText;
          throw Object.assign(new Error(detail), { body, status: response.status, statusText: response.statusText });
        }
        return body;
      },
      (failure) => {
        throw Object.assign(new Error(String(failure)), { body: null, status: 0 });
      },
    );
  }

  const sentence = (text) => {
    const trimmed = text.trim();
    const capital = trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
    return /[.!?]$/.test(capital) ? capital : `${capital}.`;
  };

  // The server's own words: the messages of a validation error, else its `detail`; a failure with no
  // answer says so instead of the browser's "Failed to fetch".
  function describeFailure(failure) {
    const body = isObject(failure.body) ? failure.body : {};
    if (isObject(body.errors)) {
      const messages = Object.values(body.errors)
        .flat()
        .filter((message) => typeof message === "string" && message.trim());
      if (messages.length) return messages.map(sentence).join(" ");
    }
    if (typeof body.detail === "string" && body.detail.trim()) return sentence(body.detail);
    if (!failure.status) return "Could not reach livesite: check your connection, then try again.";
    return `The server answered ${failure.status} ${failure.statusText || ""}`.trim() + ": try again in a moment.";
  }

  const codeOf = (failure) => (isObject(failure.body) ? failure.body.code : undefined);

  function say(element, text) {
    element.textContent = text;
    element.hidden = !text;
  }

  // -- likes ------------------------------------------------------------------------------------
  function showLikes(count) {
    // Events and POST answers can cross: the count only ever grows.
    if (!isCount(count)) return dropped("like count", count);
    if (count > likes) {
      likes = count;
      likeCount.textContent = String(likes);
      likeWord.textContent = likes === 1 ? "like" : "likes";
    }
  }

  function floatHearts(n) {
    if (motion.matches) return; // prefers-reduced-motion: the count alone says it
    const room = MAX_HEARTS_ON_SCREEN - hearts.childElementCount;
    for (let i = 0; i < Math.min(n, MAX_HEARTS_PER_EVENT, room); i++) {
      const heart = document.createElement("span");
      heart.className = "heart";
      heart.textContent = "❤";
      heart.style.left = Math.floor(Math.random() * 50) + "px";
      heart.style.animationDelay = i * 90 + "ms";
      heart.addEventListener("animationend", () => heart.remove());
      hearts.appendChild(heart);
    }
  }

  if (likeButton) {
    likeButton.addEventListener("click", () => {
      if (!canAct()) return;
      say(likeError, "");
      api(`/api/videos/${videoId}/likes`, { method: "POST", body: "{}" })
        .then((body) => {
          showLikes(isObject(body) ? body.count : undefined);
          likesKnown = true;
        })
        .catch((failure) => {
          say(likeError, describeFailure(failure));
          if (codeOf(failure) === "video_ended") endVideo();
        });
    });
  }

  // -- viewers ----------------------------------------------------------------------------------
  // The census counts the streams subscribed to video.N.likes, on every worker, every census_secs: this
  // viewer is in its count only some time after the page's subscription is confirmed (up to one interval,
  // and a second for the report to travel). Until the census gives a count higher than the last one from
  // before, or that time is up, the page shows that last count plus its own viewer (the page is rendered
  // so); then the census's count, never less than 1: someone is watching. A stream is shared by the tabs
  // of a browser and counted once, so a second tab on this video adds nobody.
  const parseCount = (text) => (text !== "" && isCount(Number(text)) ? Number(text) : null);
  let census = parseCount(root.dataset.viewers); // null: not known (the census does not count, or failed)
  let censusBeforeMe = census; // the latest count that cannot include this viewer
  let subscribedAt = null; // performance.now() when this page's likes subscription was confirmed
  let countedByCensus = false; // the census has counted this viewer, as far as the page can tell
  let anotherTabWatches = false;

  if ("BroadcastChannel" in window) {
    const tabs = new BroadcastChannel(`livesite-watch-${videoId}`);
    tabs.onmessage = (message) => {
      if (message.data === "watching?") tabs.postMessage("watching");
      else if (message.data === "watching" && !anotherTabWatches) {
        anotherTabWatches = true;
        renderViewers();
      }
    };
    tabs.postMessage("watching?");
  }

  function shownViewers() {
    const late = subscribedAt !== null && performance.now() - subscribedAt > (censusSecs + 1) * 1000;
    if (!countedByCensus && !anotherTabWatches && !late && censusBeforeMe !== null) return censusBeforeMe + 1;
    return census === null ? null : Math.max(census, 1);
  }

  function renderViewers() {
    const count = shownViewers();
    viewerCount.textContent = count === null ? "–" : String(count);
  }

  // Until the census has counted this viewer, a count made before the subscription, or no higher than the
  // last one from before (someone left meanwhile), cannot include them. A higher one is taken to.
  function showViewers(count) {
    if (!isCount(count)) return dropped("viewer count", count);
    census = count;
    const cannotInclude = subscribedAt === null || (censusBeforeMe !== null && count <= censusBeforeMe);
    if (!countedByCensus && cannotInclude) censusBeforeMe = count;
    else countedByCensus = true;
    renderViewers();
  }

  function subscribed() {
    if (subscribedAt !== null) return;
    subscribedAt = performance.now();
    setTimeout(renderViewers, (censusSecs + 1) * 1000 + 50);
  }

  // -- comments: a live chat, oldest at the top, newest at the bottom -----------------------------
  const newComments = document.getElementById("new-comments");
  const noComments = document.getElementById("no-comments");
  let unseen = 0;

  const nearBottom = () => commentsList.scrollHeight - commentsList.scrollTop - commentsList.clientHeight < 40;

  function toBottom() {
    commentsList.scrollTo({ top: commentsList.scrollHeight, behavior: motion.matches ? "auto" : "smooth" });
    unseen = 0;
    newComments.hidden = true;
  }

  function timeOf(created) {
    const when = typeof created === "string" ? new Date(created) : null;
    if (!when || Number.isNaN(when.getTime())) return null;
    const time = document.createElement("time");
    time.dateTime = created;
    time.title = when.toLocaleString();
    time.textContent = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return time;
  }

  // The byline's times in the viewer's own clock and format, as the chat's are.
  for (const time of document.querySelectorAll(".byline time[datetime]")) {
    const when = new Date(time.dateTime);
    if (Number.isNaN(when.getTime())) continue;
    time.title = when.toLocaleString();
    time.textContent = live
      ? when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
      : when.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  }

  function hidden(text) {
    const span = document.createElement("span");
    span.className = "visually-hidden";
    span.textContent = text;
    return span;
  }

  // Words a screen reader reads apart: "Alice, 14:02: hello", never "Alice14:02hello".
  function commentItem(comment) {
    const li = document.createElement("li");
    li.dataset.comment = comment.id;
    if (me !== null && comment.member.id === me) li.classList.add("mine");
    const meta = document.createElement("span");
    meta.className = "meta";
    const author = document.createElement("span");
    author.className = "author";
    author.textContent = comment.member.name;
    meta.append(author);
    const time = timeOf(comment.created);
    if (time) meta.append(hidden(","), " ", time);
    meta.append(hidden(":"));
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = comment.text;
    li.append(meta, " ", text);
    return li;
  }

  // `mine`: this viewer just posted it, so the list follows it even if scrolled up.
  function addComment(data, mine) {
    const comment = checkComment(data);
    if (!comment) return dropped("comment", data);
    if (commentsList.querySelector(`[data-comment="${comment.id}"]`)) {
      if (mine) toBottom(); // its event came before the POST's answer
      return;
    }
    const follow = mine || nearBottom();
    // In id order, which is the order they were written in: a live one goes last, an unhidden one back
    // to its place.
    let next = null;
    for (let item = commentsList.lastElementChild; item; item = item.previousElementSibling) {
      if (Number(item.dataset.comment) < comment.id) break;
      next = item;
    }
    commentsList.insertBefore(commentItem(comment), next);
    while (commentsList.childElementCount > MAX_COMMENTS_SHOWN) commentsList.firstElementChild.remove();
    noComments.hidden = true;
    if (follow) toBottom();
    else if (next === null) {
      unseen += 1;
      newComments.textContent = `${unseen} new comment${unseen === 1 ? "" : "s"} ↓`;
      newComments.hidden = false;
    }
  }

  function removeComment(id) {
    if (!isId(id)) return dropped("comment id", id);
    const li = commentsList.querySelector(`[data-comment="${id}"]`);
    if (li) li.remove();
    noComments.hidden = commentsList.childElementCount > 0;
  }

  newComments.addEventListener("click", toBottom);
  commentsList.addEventListener("scroll", () => {
    if (nearBottom()) {
      unseen = 0;
      newComments.hidden = true;
    }
  });

  let posting = false;
  if (form) {
    const input = document.getElementById("comment-text");
    const error = document.getElementById("comment-error");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!canAct() || posting) return;
      const text = input.value.trim();
      if (!text) {
        say(error, "Write something first.");
        return;
      }
      posting = true;
      updateActions();
      api(`/api/videos/${videoId}/comments`, { method: "POST", body: JSON.stringify({ text }) })
        .then((comment) => {
          if (input.value.trim() === text) input.value = ""; // not what was typed since

          say(error, "");
          addComment(comment, true);
        })
        .catch((failure) => {
          say(error, describeFailure(failure));
          if (codeOf(failure) === "video_ended") endVideo();
        })
        .finally(() => {
          posting = false;
          updateActions();
        });
    });
  }

  // -- the viewers panel: signed-in members watching this video now, with their presence dots ------
  // The census announces the ids of the members watching (`census.changed` members, at most data-max of
  // them, across all workers); names come from GET /api/members for ids the page has not named yet. This
  // viewer is listed from the first paint: they are watching, whatever the census has counted so far.
  const viewersList = document.getElementById("viewers"); // null: no panel (presence is not for this visitor)
  const noWatchers = document.getElementById("no-watchers");
  const maxWatchers = viewersList ? Number(viewersList.dataset.max) || 100 : 0;
  const presenceSubscriptions = new Map(); // member id -> its presence subscription
  const names = new Map(); // member id -> name, from the page or GET /api/members
  let wantedWatchers = null; // the latest list the census announced (ids), or null before the first

  function applyPresence(data, memberId, notAfter) {
    const state = checkPresence(data, memberId, notAfter);
    if (!state) return dropped("presence change", data);
    showPresence(memberId, state.status, state.changedAt);
  }

  function labelOf(li, status) {
    const name = li.querySelector(".name").textContent;
    const words = status === "online" ? "online" : status === "offline" ? "offline" : "presence not known yet";
    return `${name}, ${words}${li.dataset.me ? " (you)" : ""}`;
  }

  function showPresence(memberId, status, changedAt) {
    const known = presenceChangedAt.get(memberId);
    // The page subscribes before it loads states: an older state never overwrites a newer one.
    if (known !== undefined && changedAt !== undefined && changedAt < known) return;
    presenceChangedAt.set(memberId, changedAt);
    const li = viewersList && viewersList.querySelector(`[data-member="${memberId}"]`);
    if (!li) return;
    li.className = status === "online" ? "online" : "offline";
    li.setAttribute("aria-label", labelOf(li, status));
    sortMembers();
  }

  // Online members first, each group by name.
  function sortMembers() {
    const items = [...viewersList.children];
    const rank = (li) => (li.classList.contains("online") ? 0 : 1);
    const nameOf = (li) => li.querySelector(".name").textContent;
    const sorted = [...items].sort((a, b) => rank(a) - rank(b) || nameOf(a).localeCompare(nameOf(b)));
    if (sorted.some((li, i) => li !== items[i])) viewersList.append(...sorted);
    if (noWatchers) noWatchers.hidden = !live || items.length > 0;
  }

  // The presence topics the page follows are those of the members listed: one subscription each.
  function followPresence(memberId) {
    if (presenceSubscriptions.has(memberId)) return;
    presenceSubscriptions.set(
      memberId,
      rt.subscribe(`presence.member.${memberId}`, {
        "presence.changed": (event) => applyPresence(event.data, memberId, notAfter(event)),
        gap: () => refreshPresence([memberId]),
      }),
    );
  }

  function addWatcher(memberId, name) {
    if (viewersList.querySelector(`[data-member="${memberId}"]`)) return;
    const li = document.createElement("li");
    li.dataset.member = String(memberId);
    li.className = "unknown";
    const dot = document.createElement("span");
    dot.className = "dot";
    dot.setAttribute("aria-hidden", "true");
    const label = document.createElement("span");
    label.className = "name";
    label.textContent = name;
    li.append(dot, label);
    li.setAttribute("aria-label", labelOf(li, "unknown"));
    viewersList.append(li);
    presenceChangedAt.delete(memberId);
    followPresence(memberId);
    if (loaded) refreshPresence([memberId]);
    sortMembers();
  }

  function removeWatcher(memberId) {
    const li = viewersList.querySelector(`[data-member="${memberId}"]`);
    if (!li || li.dataset.me) return; // this viewer watches as long as this page is open
    li.remove();
    const subscription = presenceSubscriptions.get(memberId);
    presenceSubscriptions.delete(memberId);
    presenceChangedAt.delete(memberId);
    if (subscription) subscription();
    sortMembers();
  }

  function showWatchers(ids) {
    if (!viewersList || !live) return;
    if (!Array.isArray(ids) || ids.length > maxWatchers || !ids.every(isId)) return dropped("viewers list", ids);
    wantedWatchers = new Set(ids);
    for (const li of [...viewersList.children]) {
      if (!wantedWatchers.has(Number(li.dataset.member))) removeWatcher(Number(li.dataset.member));
    }
    const unnamed = ids.filter((id) => !names.has(id));
    for (const id of ids) if (names.has(id)) addWatcher(id, names.get(id));
    if (!unnamed.length) return;
    api(`/api/members?ids=${unnamed.join(",")}`)
      .then((body) => {
        for (const member of (isObject(body) && Array.isArray(body.members) ? body.members : [])) {
          if (!isObject(member) || !isId(member.id) || typeof member.name !== "string" || !member.name.trim()) {
            dropped("member", member);
            continue;
          }
          names.set(member.id, member.name);
          // Only if still watching: a later announcement may have come while the names were on their way.
          if (wantedWatchers.has(member.id)) addWatcher(member.id, member.name);
        }
      })
      .catch((error) => console.warn("viewer names failed", error));
  }

  for (const li of viewersList ? viewersList.querySelectorAll("[data-member]") : []) {
    names.set(Number(li.dataset.member), li.querySelector(".name").textContent);
  }

  // -- loading and refreshing -------------------------------------------------------------------
  // Each part of the page loads once, after its subscription is in place (so no change falls between the load
  // and the first event), and again only if its topic reports a gap: after a reconnect the stream replays
  // what was missed, so nothing is refetched.
  function refreshVideo() {
    api(`/api/videos/${videoId}`)
      .then((video) => {
        likes = 0;
        showLikes(video.like_count);
        likesKnown = true;
        // null: the census has not counted yet.
        if (video.viewer_count !== null) showViewers(video.viewer_count);
        if (video.status === "ended") endVideo();
      })
      .catch((error) => console.warn("video refresh failed", error));
  }

  function refreshComments() {
    api(`/api/videos/${videoId}/comments`)
      .then((page) => {
        commentsList.replaceChildren();
        // The API answers newest first; the chat reads oldest first.
        const results = Array.isArray(page.results) ? page.results : [];
        for (const comment of [...results].reverse()) addComment(comment, false);
        noComments.hidden = commentsList.childElementCount > 0;
        toBottom();
      })
      .catch((error) => console.warn("comments refresh failed", error));
  }

  function refreshPresence(ids) {
    const memberIds = ids || [...presenceSubscriptions.keys()];
    if (!memberIds.length) return;
    api(`/api/presence?members=${memberIds.join(",")}`)
      .then((body) => {
        // The server's own answer: its stamps are checked for shape only (no clock to compare them with).
        for (const state of body.members || []) {
          if (isObject(state) && presenceSubscriptions.has(state.member)) applyPresence(state, state.member, Infinity);
        }
      })
      .catch((error) => console.warn("presence refresh failed", error));
  }

  // A like count far above the one shown is either likes this page missed or a lie: either way the server
  // says which, and the page shows its answer (refreshVideo), never the event's number.
  let lastVerifiedAt = -Infinity;
  function verifyLikes() {
    if (performance.now() - lastVerifiedAt < VERIFY_EVERY_MS) return;
    lastVerifiedAt = performance.now();
    refreshVideo();
  }

  // -- what the viewer may do now ---------------------------------------------------------------
  let state = "connecting";
  let reasonDetail = "";

  const canAct = () => live && signedIn && state === "connected";

  // Liking and commenting need the stream: a like made while reconnecting would show nothing until the
  // page is live again, so the buttons wait for it and say why.
  function updateActions() {
    const usable = canAct();
    if (likeButton) likeButton.disabled = !usable;
    if (sendButton) sendButton.disabled = !usable || posting;
    let hint = "";
    if (!live) hint = "This live video has ended: it takes no more likes or comments.";
    else if (!signedIn) hint = "";
    else if (state === "connecting") hint = "Connecting…";
    else if (state === "reconnecting") hint = "Reconnecting: liking and commenting are back as soon as the page is live.";
    else if (state === "failed") hint = `Offline: ${reasonDetail || "the server refused this page's updates"} Reload to try again.`;
    else if (state === "closed") hint = "Updates stopped: reload the page.";
    actionHint.textContent = hint;
  }

  const CONNECTION_TEXT = {
    connecting: "connecting…",
    connected: "live",
    reconnecting: "reconnecting…",
    failed: "offline",
    closed: "closed",
  };

  let loaded = false; // the page's first load is done (later members load their presence as they come)

  // -- the stream -------------------------------------------------------------------------------
  const rt = Realtime.connect();
  const likesSubscription = rt.subscribe(`video.${videoId}.likes`, {
    "like.created": (event) => {
      const like = checkLike(event.data);
      if (!like) return dropped("like.created", event.data);
      if (likesKnown && like.count > 2 * likes + LIKE_JUMP_TO_VERIFY) return verifyLikes();
      showLikes(like.count);
      floatHearts(like.covered);
    },
    // likes.services.end_videos, after commit. A missed one is learnt by the refetch after a gap.
    "video.ended": endVideo,
    gap: refreshVideo,
  });
  // The census counts this viewer from here on (see "viewers" above).
  likesSubscription.then(subscribed, () => {});
  // The census counts the streams subscribed to this video's likes, across all workers.
  // Signed in: the same count with who is watching (a topic only signed-in members may read); else the count.
  rt.subscribe(`census.${signedIn ? "members." : ""}video.${videoId}.likes`, {
    "census.changed": (event) => {
      showViewers(isObject(event.data) ? event.data.count : undefined);
      // Absent from a worker of the previous release: the list stays as it is.
      if (isObject(event.data) && event.data.members !== undefined) showWatchers(event.data.members);
    },
    gap: refreshVideo,
  });
  rt.subscribe(`video.${videoId}.comments`, {
    "comment.created": (event) => addComment(event.data, false),
    "comment.hidden": (event) => removeComment(isObject(event.data) ? event.data.id : undefined),
    "comment.unhidden": (event) => addComment(event.data, false),
    gap: refreshComments,
  });
  // The latest stamp a presence event may carry: the server's clock when it published the event.
  const notAfter = (event) =>
    (Number.isFinite(event.published_at) ? event.published_at : Date.now() / 1000) + MAX_CLOCK_SKEW_SECS;
  for (const li of viewersList ? viewersList.querySelectorAll("[data-member]") : []) {
    followPresence(Number(li.dataset.member));
  }
  rt.onState((next, reason) => {
    state = next;
    reasonDetail = reason && typeof reason.detail === "string" ? sentence(reason.detail) : "";
    conn.textContent = CONNECTION_TEXT[next] || next;
    conn.title = reasonDetail;
    conn.classList.toggle("ok", next === "connected");
    updateActions();
  });
  rt.onReady(() => {
    if (loaded) return;
    loaded = true;
    refreshVideo();
    refreshComments();
    refreshPresence();
  });

  // -- the end of a live video ------------------------------------------------------------------
  // Learnt from `video.ended` on the video's likes topic, or from the server's answers (a like or comment
  // refused with video_ended, a refetch), whichever comes first.
  function endVideo() {
    if (!live) return;
    live = false;
    root.dataset.live = "0";
    root.classList.add("ended");
    const badge = document.getElementById("badge");
    badge.textContent = "ENDED";
    badge.classList.remove("live");
    document.getElementById("viewers-chip").hidden = true;
    conn.hidden = true;
    document.getElementById("ended-note").hidden = false;
    document.getElementById("comments-closed").hidden = false;
    if (form) form.hidden = true;
    canvas.setAttribute("aria-label", "Stand-in for the video, which has ended");
    if (viewersList) {
      for (const subscription of presenceSubscriptions.values()) subscription();
      presenceSubscriptions.clear();
      viewersList.replaceChildren();
      noWatchers.hidden = true;
      document.getElementById("watchers-ended").hidden = false;
    }
    animate();
    updateActions();
  }

  // -- an honest stand-in for the video ---------------------------------------------------------
  // It moves only while the video is live and the viewer has not asked for reduced motion.
  const canvas = document.getElementById("standin");
  const ctx = canvas.getContext("2d");
  let frame = null;

  function draw(t) {
    const w = canvas.width;
    const h = canvas.height;
    const g = ctx.createLinearGradient(0, 0, w, h);
    const saturation = live ? 55 : 0;
    g.addColorStop(0, `hsl(${(t / 60) % 360}, ${saturation}%, 22%)`);
    g.addColorStop(1, `hsl(${(t / 60 + 120) % 360}, ${saturation}%, 12%)`);
    ctx.fillStyle = g;
    ctx.fillRect(0, 0, w, h);
    for (let i = 0; i < 6; i++) {
      const x = w / 2 + Math.cos(t / 900 + i) * (120 + i * 30);
      const y = h / 2 + Math.sin(t / 700 + i * 1.3) * (60 + i * 18);
      ctx.beginPath();
      ctx.arc(x, y, 18 + i * 4, 0, Math.PI * 2);
      ctx.fillStyle = `hsla(${(t / 20 + i * 50) % 360}, ${live ? 70 : 0}%, 60%, .35)`;
      ctx.fill();
    }
    ctx.fillStyle = "rgba(255,255,255,.75)";
    ctx.font = "20px system-ui, sans-serif";
    const caption = !live ? "ended" : motion.matches ? "animation paused: reduced motion" : "no camera here";
    ctx.fillText(`live video stand-in · ${caption}`, 24, h - 24);
  }

  function tick(t) {
    draw(t);
    frame = requestAnimationFrame(tick);
  }

  function animate() {
    const moving = live && !motion.matches;
    if (moving && frame === null) frame = requestAnimationFrame(tick);
    if (!moving) {
      if (frame !== null) cancelAnimationFrame(frame);
      frame = null;
      draw(20_000); // one still frame
    }
  }

  motion.addEventListener("change", () => {
    if (motion.matches) hearts.replaceChildren();
    animate();
  });
  animate();
  updateActions();
})();
