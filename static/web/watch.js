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
  const presenceChangedAt = new Map(); // member id -> changed_at of the state shown

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
      .then((body) => showLikes(body.count))
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

  function addComment(comment, atTop) {
    if (commentsList.querySelector(`[data-comment="${comment.id}"]`)) return;
    const li = commentItem(comment);
    if (atTop) commentsList.prepend(li);
    else commentsList.append(li);
    while (commentsList.childElementCount > MAX_COMMENTS_SHOWN) commentsList.lastElementChild.remove();
  }

  function removeComment(id) {
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
        viewerCount.textContent = video.viewer_count == null ? "–" : String(video.viewer_count);
      })
      .catch((error) => console.warn("video refresh failed", error));
  }

  function refreshComments() {
    api(`/api/videos/${videoId}/comments`)
      .then((page) => {
        commentsList.replaceChildren();
        for (const comment of page.results) addComment(comment, false);
      })
      .catch((error) => console.warn("comments refresh failed", error));
  }

  function refreshPresence() {
    if (!memberIds.length) return;
    api(`/api/presence?members=${memberIds.join(",")}`)
      .then((body) => {
        for (const state of body.members) showPresence(state.member, state.status, state.changed_at);
      })
      .catch((error) => console.warn("presence refresh failed", error));
  }

  // -- the stream -------------------------------------------------------------------------------
  const rt = Realtime.connect();
  rt.subscribe(`video.${videoId}.likes`, {
    "like.created": (event) => {
      showLikes(event.data.count);
      floatHearts(event.data.covered || 1);
    },
    gap: refreshVideo,
  });
  // The census counts the streams subscribed to this video's likes, across all workers.
  rt.subscribe(`census.video.${videoId}.likes`, {
    "census.changed": (event) => {
      viewerCount.textContent = String(event.data.count);
    },
    gap: refreshVideo,
  });
  rt.subscribe(`video.${videoId}.comments`, {
    "comment.created": (event) => addComment(event.data, true),
    "comment.hidden": (event) => removeComment(event.data.id),
    "comment.unhidden": (event) => addComment(event.data, true),
    gap: refreshComments,
  });
  for (const memberId of memberIds) {
    rt.subscribe(`presence.member.${memberId}`, {
      "presence.changed": (event) => showPresence(event.data.member, event.data.status, event.data.changed_at),
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
