/* The watch page: likes with floating hearts, live comments, presence dots, on one shared stream. */
(function () {
  "use strict";

  const root = document.getElementById("watch");
  const videoId = root.dataset.videoId;
  const csrf = (document.cookie.match(/(?:^|; )csrftoken=([^;]*)/) || [])[1] || "";
  const likeCount = document.getElementById("like-count");
  const viewerCount = document.getElementById("viewer-count");
  const commentsList = document.getElementById("comments");
  const hearts = document.getElementById("hearts");
  const conn = document.getElementById("conn");
  const MAX_HEARTS_PER_EVENT = 12;
  const MAX_HEARTS_ON_SCREEN = 40;
  const MAX_COMMENTS_SHOWN = 200;

  let likes = 0;
  let likesKnown = false; // the server's count has been shown once (a load or a like's answer)
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

  function api(path, options) {
    const opts = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
    opts.headers = Object.assign({ "X-CSRFToken": decodeURIComponent(csrf), "Content-Type": "application/json" }, opts.headers);
    return fetch(path, opts).then(async (response) => {
      const body = response.status === 204 ? null : await response.json().catch(() => null);
      if (!response.ok) throw Object.assign(new Error((body && body.detail) || response.statusText), { body });
      return body;
    });
  }

  // -- likes ------------------------------------------------------------------------------------
  function showLikes(count) {
    // Events and POST answers can cross: the count only ever grows.
    if (!isCount(count)) return dropped("like count", count);
    if (count > likes) {
      likes = count;
      likeCount.textContent = String(likes);
    }
  }

  function floatHearts(n) {
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

  const likeButton = document.getElementById("like");
  likeButton.addEventListener("click", () => {
    api(`/api/videos/${videoId}/likes`, { method: "POST", body: "{}" })
      .then((body) => {
        showLikes(body.count);
        likesKnown = true;
      })
      .catch((error) => console.warn("like failed", error));
  });

  // -- comments ---------------------------------------------------------------------------------
  function commentItem(comment) {
    const li = document.createElement("li");
    li.dataset.comment = comment.id;
    const author = document.createElement("span");
    author.className = "author";
    author.textContent = comment.member.name;
    const text = document.createElement("span");
    text.className = "text";
    text.textContent = comment.text;
    li.append(author, text);
    return li;
  }

  function addComment(data, atTop) {
    const comment = checkComment(data);
    if (!comment) return dropped("comment", data);
    if (commentsList.querySelector(`[data-comment="${comment.id}"]`)) return;
    const li = commentItem(comment);
    if (atTop) commentsList.prepend(li);
    else commentsList.append(li);
    while (commentsList.childElementCount > MAX_COMMENTS_SHOWN) commentsList.lastElementChild.remove();
  }

  function removeComment(id) {
    if (!isId(id)) return dropped("comment id", id);
    const li = commentsList.querySelector(`[data-comment="${id}"]`);
    if (li) li.remove();
  }

  const form = document.getElementById("comment-form");
  if (form) {
    const input = document.getElementById("comment-text");
    const error = document.getElementById("comment-error");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = input.value.trim();
      if (!text) return;
      api(`/api/videos/${videoId}/comments`, { method: "POST", body: JSON.stringify({ text }) })
        .then((comment) => {
          input.value = "";
          error.hidden = true;
          addComment(comment, true);
        })
        .catch((failure) => {
          error.textContent = failure.message;
          error.hidden = false;
        });
    });
  }

  // -- presence ---------------------------------------------------------------------------------
  function applyPresence(data, memberId, notAfter) {
    const state = checkPresence(data, memberId, notAfter);
    if (!state) return dropped("presence change", data);
    showPresence(memberId, state.status, state.changedAt);
  }

  function showPresence(memberId, status, changedAt) {
    const known = presenceChangedAt.get(memberId);
    // The page subscribes before it loads states: an older state never overwrites a newer one.
    if (known !== undefined && changedAt !== undefined && changedAt < known) return;
    presenceChangedAt.set(memberId, changedAt);
    const li = document.querySelector(`#viewers [data-member="${memberId}"]`);
    if (!li) return;
    const name = li.querySelector(".name").textContent;
    li.className = status === "online" ? "online" : "offline";
    li.setAttribute("aria-label", `${name}, ${status === "online" ? "online" : "offline"}`);
  }

  const memberIds = [...document.querySelectorAll("#viewers [data-member]")].map((li) => Number(li.dataset.member));

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
        if (video.viewer_count === null) viewerCount.textContent = "–";
        else showViewers(video.viewer_count);
      })
      .catch((error) => console.warn("video refresh failed", error));
  }

  function refreshComments() {
    api(`/api/videos/${videoId}/comments`)
      .then((page) => {
        commentsList.replaceChildren();
        for (const comment of page.results || []) addComment(comment, false);
      })
      .catch((error) => console.warn("comments refresh failed", error));
  }

  function refreshPresence() {
    if (!memberIds.length) return;
    api(`/api/presence?members=${memberIds.join(",")}`)
      .then((body) => {
        // The server's own answer: its stamps are checked for shape only (no clock to compare them with).
        for (const state of body.members || []) {
          if (isObject(state) && memberIds.includes(state.member)) applyPresence(state, state.member, Infinity);
        }
      })
      .catch((error) => console.warn("presence refresh failed", error));
  }

  function showViewers(count) {
    if (isCount(count)) viewerCount.textContent = String(count);
    else dropped("viewer count", count);
  }

  // A like count far above the one shown is either likes this page missed or a lie: either way the server
  // says which, and the page shows its answer (refreshVideo), never the event's number.
  let lastVerifiedAt = -Infinity;
  function verifyLikes() {
    if (performance.now() - lastVerifiedAt < VERIFY_EVERY_MS) return;
    lastVerifiedAt = performance.now();
    refreshVideo();
  }

  // -- the stream -------------------------------------------------------------------------------
  const rt = Realtime.connect();
  rt.subscribe(`video.${videoId}.likes`, {
    "like.created": (event) => {
      const like = checkLike(event.data);
      if (!like) return dropped("like.created", event.data);
      if (likesKnown && like.count > 2 * likes + LIKE_JUMP_TO_VERIFY) return verifyLikes();
      showLikes(like.count);
      floatHearts(like.covered);
    },
    gap: refreshVideo,
  });
  // The census counts the streams subscribed to this video's likes, across all workers.
  rt.subscribe(`census.video.${videoId}.likes`, {
    "census.changed": (event) => showViewers(isObject(event.data) ? event.data.count : undefined),
    gap: refreshVideo,
  });
  rt.subscribe(`video.${videoId}.comments`, {
    "comment.created": (event) => addComment(event.data, true),
    "comment.hidden": (event) => removeComment(isObject(event.data) ? event.data.id : undefined),
    "comment.unhidden": (event) => addComment(event.data, true),
    gap: refreshComments,
  });
  // The latest stamp a presence event may carry: the server's clock when it published the event.
  const notAfter = (event) =>
    (Number.isFinite(event.published_at) ? event.published_at : Date.now() / 1000) + MAX_CLOCK_SKEW_SECS;
  for (const memberId of memberIds) {
    rt.subscribe(`presence.member.${memberId}`, {
      "presence.changed": (event) => applyPresence(event.data, memberId, notAfter(event)),
      gap: refreshPresence,
    });
  }
  rt.onState((state) => {
    conn.textContent = state === "connected" ? "live" : state === "connecting" ? "connecting…" : "reconnecting…";
    conn.classList.toggle("ok", state === "connected");
  });
  let loaded = false;
  rt.onReady(() => {
    if (loaded) return;
    loaded = true;
    refreshVideo();
    refreshComments();
    refreshPresence();
  });

  // -- an honest stand-in for the video ---------------------------------------------------------
  const canvas = document.getElementById("standin");
  const ctx = canvas.getContext("2d");
  function draw(t) {
    const w = canvas.width;
    const h = canvas.height;
    const g = ctx.createLinearGradient(0, 0, w, h);
    g.addColorStop(0, `hsl(${(t / 60) % 360}, 55%, 22%)`);
    g.addColorStop(1, `hsl(${(t / 60 + 120) % 360}, 55%, 12%)`);
    ctx.fillStyle = g;
    ctx.fillRect(0, 0, w, h);
    for (let i = 0; i < 6; i++) {
      const x = w / 2 + Math.cos(t / 900 + i) * (120 + i * 30);
      const y = h / 2 + Math.sin(t / 700 + i * 1.3) * (60 + i * 18);
      ctx.beginPath();
      ctx.arc(x, y, 18 + i * 4, 0, Math.PI * 2);
      ctx.fillStyle = `hsla(${(t / 20 + i * 50) % 360}, 70%, 60%, .35)`;
      ctx.fill();
    }
    ctx.fillStyle = "rgba(255,255,255,.75)";
    ctx.font = "20px system-ui, sans-serif";
    ctx.fillText("live video stand-in · no camera here", 24, h - 24);
    requestAnimationFrame(draw);
  }
  requestAnimationFrame(draw);
})();
