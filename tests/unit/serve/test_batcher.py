import asyncio
import time

import pytest

from recsys_ray.serve.batcher import WriteBatcher


class Lander:
    """Records every batch; each lands after `delay` seconds and answers item * 10."""

    def __init__(self, delay: float = 0.0, fail_key=None) -> None:
        self.delay = delay
        self.fail_key = fail_key
        self.batches: list[tuple[object, list[int]]] = []
        self.running = 0
        self.most_running = 0

    async def __call__(self, key, items):
        self.batches.append((key, list(items)))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await asyncio.sleep(self.delay)
            if key == self.fail_key:
                raise OSError("storage down")
            return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]
        finally:
            self.running -= 1


def test_each_request_gets_its_own_result_and_batches_respect_the_limits():
    lander = Lander(delay=0.01)
    batcher = WriteBatcher(lander, max_size=4, wait_s=0.005, max_concurrent=2)

    async def main():
        return await asyncio.gather(*(batcher.submit("k", i) for i in range(30)))

    assert asyncio.run(main()) == [i * 10 for i in range(30)]
    assert sorted(i for _, items in lander.batches for i in items) == list(range(30))
    assert max(len(items) for _, items in lander.batches) <= 4
    assert lander.most_running <= 2


def test_batches_grow_while_the_slots_are_busy():
    lander = Lander(delay=0.05)
    batcher = WriteBatcher(lander, max_size=16, wait_s=0.0, max_concurrent=1)

    async def main():
        first = asyncio.ensure_future(batcher.submit("k", 0))
        await asyncio.sleep(0.01)  # the first batch is landing now
        rest = [batcher.submit("k", i) for i in range(1, 11)]
        return await asyncio.gather(first, *rest)

    asyncio.run(main())
    assert [items for _, items in lander.batches] == [[0], list(range(1, 11))]


def test_keys_never_share_a_batch():
    lander = Lander()
    batcher = WriteBatcher(lander, max_size=16, wait_s=0.01, max_concurrent=2)

    async def main():
        return await asyncio.gather(*(batcher.submit(("t", i % 3), i) for i in range(12)))

    assert asyncio.run(main()) == [i * 10 for i in range(12)]
    for key, items in lander.batches:
        assert {i % 3 for i in items} == {key[1]}


def test_a_lone_request_waits_at_most_about_wait_s():
    lander = Lander()
    batcher = WriteBatcher(lander, max_size=16, wait_s=0.05, max_concurrent=2)

    async def main():
        started = time.perf_counter()
        await batcher.submit("k", 1)
        return time.perf_counter() - started

    waited = asyncio.run(main())
    assert 0.04 <= waited < 1.0


def test_a_full_batch_does_not_wait():
    lander = Lander()
    batcher = WriteBatcher(lander, max_size=4, wait_s=5.0, max_concurrent=1)

    async def main():
        started = time.perf_counter()
        await asyncio.gather(*(batcher.submit("k", i) for i in range(4)))
        return time.perf_counter() - started

    assert asyncio.run(main()) < 2.0


def test_failures_reach_only_the_requests_they_concern():
    lander = Lander(fail_key="down")
    batcher = WriteBatcher(lander, max_size=16, wait_s=0.005, max_concurrent=2)

    async def main():
        return await asyncio.gather(batcher.submit("down", 1), batcher.submit("up", 2), batcher.submit("up", -3),
                                    return_exceptions=True)

    down, up, bad = asyncio.run(main())
    assert isinstance(down, OSError)
    assert up == 20
    assert isinstance(bad, ValueError) and str(bad) == "bad -3"


def test_a_cancelled_request_is_not_landed():
    lander = Lander(delay=0.05)
    batcher = WriteBatcher(lander, max_size=16, wait_s=0.0, max_concurrent=1)

    async def main():
        first = asyncio.ensure_future(batcher.submit("k", 0))
        await asyncio.sleep(0.01)
        gone = asyncio.ensure_future(batcher.submit("k", 1))
        kept = asyncio.ensure_future(batcher.submit("k", 2))
        await asyncio.sleep(0)
        gone.cancel()
        return await asyncio.gather(first, kept)

    assert asyncio.run(main()) == [0, 20]
    assert [items for _, items in lander.batches] == [[0], [2]]


def test_limits_are_checked():
    with pytest.raises(ValueError):
        WriteBatcher(Lander(), max_size=0, wait_s=0.0, max_concurrent=1)


def test_a_full_batch_of_one_key_does_not_wait_behind_another_keys_lone_request():
    lander = Lander()
    batcher = WriteBatcher(lander, max_size=4, wait_s=5.0, max_concurrent=1)

    async def main():
        lone = asyncio.ensure_future(batcher.submit("a", 0))
        await asyncio.sleep(0.01)  # "a" is waiting for company
        started = time.monotonic()
        full = await asyncio.gather(*(batcher.submit("b", i) for i in range(4)))
        elapsed = time.monotonic() - started
        lone.cancel()
        return full, elapsed

    full, elapsed = asyncio.run(main())
    assert full == [0, 10, 20, 30]
    assert elapsed < 2.0
    assert lander.batches[0] == ("b", [0, 1, 2, 3])
