"""bench/topics.py's pure parts: who watches which topic, and which step meets the mark."""

from collections import Counter

from bench.topics import TopicsClient, meets, viewer_topics


def test_every_topic_gets_the_same_number_of_viewers_in_a_fixed_random_order() -> None:
    dealt = viewer_topics(1000, 100, seed=17)
    assert set(Counter(dealt).values()) == {10}
    assert dealt == viewer_topics(1000, 100, seed=17)
    assert dealt != sorted(dealt)


def test_a_topics_viewers_spread_over_workers_like_a_random_balancer() -> None:
    dealt = viewer_topics(60_000, 6_000, seed=17)
    hosts: list[set[int]] = [set() for _ in range(6_000)]
    for index, topic in enumerate(dealt):
        hosts[topic].add(index % 6)  # stream i on worker i mod 6
    mean = sum(map(len, hosts)) / len(hosts)
    assert 4.8 < mean < 5.3  # 6 x (1 - (5/6)^10) = 5.03 for independent picks


def test_viewers_count_held_streams_by_the_topic_they_asked_for() -> None:
    client = TopicsClient({"targets": []})

    class Held:
        def __init__(self, topic: str) -> None:
            self.request = f"GET /realtime/connect?topics={topic} HTTP/1.1\r\nHost: x\r\n\r\n".encode()

    client.streams = [Held("bench.topic.3"), Held("bench.topic.3"), Held("bench.topic.12")]  # type: ignore[list-item]
    assert client.on_viewers() == {"bench.topic.3": 2, "bench.topic.12": 1}


def step(p99: float, lost: int = 0, accepted: int = 100, per_s: float = 100.0) -> dict:
    latency = {"p50": 0.01, "p90": 0.02, "p99": p99, "max": p99}
    return {"rate": 100.0, "count": 100, "accepted_events": accepted, "lost": lost} | {
        "publish": {"accepted_per_s": per_s},
        "latency_published_s": latency,
    }


def test_a_step_meets_the_mark_only_with_everything_accepted_nothing_lost_and_p99_under_a_second() -> None:
    assert meets(step(0.5))
    assert not meets(step(1.0))
    assert not meets(step(0.5, lost=1))
    assert not meets(step(0.5, accepted=99))
    assert not meets(step(0.5, per_s=90.0))
