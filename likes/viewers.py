"""Live viewer counts of videos and who watches them, read from the real-time census (None where it does not count)."""

import asyncio
import logging
import re
from typing import TYPE_CHECKING

from asgiref.sync import async_to_sync

from realtime import conf as realtime_conf
from realtime import topics

if TYPE_CHECKING:
    from realtime.census import Tally

logger = logging.getLogger(__name__)


def viewer_counts(video_ids: list[int]) -> dict[int, int | None]:
    """Sync: each video's viewers (subscribers of video.{id}.likes on every worker); None if unknown."""
    pattern = realtime_conf.get("CENSUS_TOPICS")
    counted = [vid for vid in video_ids if pattern and re.fullmatch(pattern, topics.video_likes(vid))]
    counts: dict[int, int | None] = dict.fromkeys(video_ids)
    if not counted:
        return counts
    try:
        totals = async_to_sync(_acount_all)(counted)
    except Exception:
        # A viewer count is a nicety: the API answers without it (null) rather than failing.
        logger.warning("viewer counts unavailable", exc_info=True)
        return counts
    counts.update(zip(counted, totals, strict=True))
    return counts


async def _acount_all(video_ids: list[int]) -> list[int]:
    from realtime.census import acount  # Imported here: only when the census counts videos.

    return await asyncio.gather(*(acount(topics.video_likes(vid)) for vid in video_ids))


def viewer_tally(video_id: int) -> "Tally | None":
    """Sync: the video's viewer count and the signed-in members watching it (ids, sorted, at most the census's
    MAX_LISTED_MEMBERS), from the census across all workers; None if the census does not count it or failed."""
    pattern = realtime_conf.get("CENSUS_TOPICS")
    topic = topics.video_likes(video_id)
    if not pattern or not re.fullmatch(pattern, topic):
        return None
    from realtime.census import atally  # Imported here: only when the census counts videos.

    try:
        return async_to_sync(atally)(topic)
    except Exception:
        # Like a count: the page renders without it (the census's next announcement fills it in).
        logger.warning("viewers of video %s unavailable", video_id, exc_info=True)
        return None
