/* The home page: each live card's viewer and like counts, and its end, on the stream. */
(function () {
  "use strict";

  // Viewer counts come from the census topics (census.video.N.likes), which count nobody. Like counts and ends
  // come from videos.likes, one topic for every video (video.N.likes would count this visitor as a viewer of
  // each video: the census counts that topic's subscribers). GET /api/videos is reread every data-refresh-secs
  // while the page is visible, after a gap, and when the page becomes visible again: for videos that started
  // since the page loaded, and as a safety net.
  const root = document.getElementById("home");
  const refreshMs = (Number(root.dataset.refreshSecs) || 15) * 1000;
  const liveList = document.getElementById("live-cards");
  const endedList = document.getElementById("ended-cards");
  const conn = document.getElementById("conn");
  const moreLive = document.getElementById("more-live");
  const MAX_API_PAGE = 100;

  const isCount = (value) => Number.isSafeInteger(value) && value >= 0;
  const isId = (value) => Number.isSafeInteger(value) && value > 0;
  const isObject = (value) => typeof value === "object" && value !== null && !Array.isArray(value);
  const dropped = (what, data) => console.warn(`home: ignored a malformed ${what}`, data);

  const cards = new Map(); // video id -> the live card
  const likeCounts = new Map(); // video id -> the highest like total shown (coalesced totals only rise)
  for (const li of liveList.querySelectorAll("[data-video]")) cards.set(Number(li.dataset.video), li);

  function showViewers(li, count) {
    if (!isCount(count)) return dropped("viewer count", count);
    li.querySelector("[data-viewers]").textContent = String(count);
  }

  function showLikes(li, count) {
    if (!isCount(count)) return dropped("like count", count);
    const id = Number(li.dataset.video);
    if (count < (likeCounts.get(id) || 0)) return; // an older total arriving late
    likeCounts.set(id, count);
    li.querySelector("[data-likes]").textContent = String(count);
    li.querySelector("[data-likes-word]").textContent = count === 1 ? "like" : "likes";
  }

  const rt = Realtime.connect();
  const subscriptions = new Map(); // video id -> its census subscription (a function that unsubscribes)
  for (const [id, li] of cards) {
    const subscription = rt.subscribe(`census.video.${id}.likes`, {
      "census.changed": (event) => showViewers(li, isObject(event.data) ? event.data.count : undefined),
      gap: refresh,
    });
    subscription.catch(() => {}); // a refusal shows in the connection state
    subscriptions.set(id, subscription);
  }
  rt.subscribe("videos.likes", {
    "like.total": (event) => {
      const data = isObject(event.data) ? event.data : {};
      const li = cards.get(data.video);
      if (li) showLikes(li, data.count);
    },
    "video.ended": (event) => {
      const id = isObject(event.data) ? event.data.video : undefined;
      const li = cards.get(id);
      if (li) ended(id, li);
    },
    gap: refresh,
  }).catch(() => {}); // a refusal shows in the connection state
  rt.onState((state) => {
    conn.textContent = { connected: "counts live", connecting: "connecting…", reconnecting: "reconnecting…" }[state] || state;
    conn.classList.toggle("ok", state === "connected");
  });

  // A video no longer live: its card moves to the top of "Ended", without its viewer count.
  function ended(id, li) {
    cards.delete(id);
    const subscription = subscriptions.get(id);
    if (subscription) subscription();
    li.dataset.status = "ended";
    li.classList.add("ended");
    const badge = li.querySelector(".badge");
    badge.textContent = "ENDED";
    badge.classList.remove("live");
    li.querySelector("[data-watching]").remove();
    li.querySelector("[data-when]").textContent = "ended";
    endedList.prepend(li);
    document.getElementById("no-ended").hidden = true;
    document.getElementById("no-live").hidden = cards.size > 0;
  }

  async function get(path) {
    const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${path}: ${response.status}`);
    return response.json();
  }

  let refreshing = false;
  async function refresh() {
    if (refreshing || document.hidden) return;
    refreshing = true;
    try {
      const page = await get(`/api/videos?status=live&page_size=${MAX_API_PAGE}`);
      const results = isObject(page) && Array.isArray(page.results) ? page.results : [];
      const listed = new Set();
      let unseen = 0;
      for (const video of results) {
        if (!isObject(video) || !isId(video.id)) {
          dropped("video", video);
          continue;
        }
        listed.add(video.id);
        const li = cards.get(video.id);
        if (!li) {
          unseen += 1;
          continue;
        }
        showLikes(li, video.like_count);
        if (video.viewer_count !== null) showViewers(li, video.viewer_count);
      }
      // Not among the newest live ones any more: ended, unless it only fell past the API's page.
      for (const [id, li] of [...cards]) {
        if (listed.has(id)) continue;
        const video = results.length < MAX_API_PAGE ? null : await get(`/api/videos/${id}`).catch(() => null);
        if (video === null || video.status !== "live") ended(id, li);
      }
      moreLive.hidden = unseen === 0;
      if (unseen) {
        moreLive.replaceChildren(
          `${unseen} more live video${unseen === 1 ? "" : "s"} started since this page loaded. `,
          Object.assign(document.createElement("a"), { href: "/", textContent: "Show them" }),
        );
      }
    } catch (error) {
      console.warn("home: refresh failed", error);
    } finally {
      refreshing = false;
    }
  }

  setInterval(refresh, refreshMs);
  document.addEventListener("visibilitychange", refresh);
})();
