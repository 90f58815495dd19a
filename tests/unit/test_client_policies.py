"""The client's policies and the pieces they drive, without a network: circuit breakers,
retry backoff, the node order of a call, latency percentiles, and one call's tries (hedges,
retries, what is never retried) over fake streams."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from kvstore._pb import kvstore_pb2 as pb
from kvstore.client._calls import ClientStats, HedgeBudget, Tries
from kvstore.client.aio import AsyncClient
from kvstore.client.breaker import BreakerState, CircuitBreaker
from kvstore.client.latency import LatencyWindow
from kvstore.client.policy import BreakerPolicy, HedgePolicy, RetryPolicy
from kvstore.client.routing import NodeSelector, table_from
from kvstore.core.ring import Ring
from kvstore.errors import (
    ERRORS_BY_NAME,
    InvalidArgument,
    InvalidOption,
    Timeout,
    Unauthenticated,
    Unavailable,
)
from kvstore.rpc.streams import NeverSent, OutcomeUnknown

NO_JITTER = BreakerPolicy(open_s=1.0, max_open_s=8.0, slow_limit=3, jitter=0.0)


def test_breaker_opens_on_failure_and_grows_its_backoff_while_the_node_stays_bad() -> None:
    breaker = CircuitBreaker(NO_JITTER, random.Random(1))
    assert breaker.state(0.0) is BreakerState.CLOSED
    breaker.failure(10.0)
    # Tries that were out together fail together: one bad moment, one opening.
    breaker.failure(10.1)
    breaker.failure(10.2)
    assert breaker.opened == 1
    assert breaker.state(10.5) is BreakerState.OPEN
    assert not breaker.available(10.5)
    # Backoff over: half-open, and only one call probes.
    assert breaker.state(11.0) is BreakerState.HALF_OPEN
    assert breaker.available(11.0)
    breaker.take(11.0)
    assert not breaker.available(11.0)
    breaker.failure(11.0)  # the probe failed: open for twice as long
    assert breaker.state(12.9) is BreakerState.OPEN
    assert breaker.state(13.0) is BreakerState.HALF_OPEN
    now = 13.0
    for _ in range(10):  # probes failing in a row: capped at max_open_s
        breaker.take(now)
        breaker.failure(now)
        now += 8.0
    assert breaker.state(now - 0.1) is BreakerState.OPEN
    assert breaker.state(now) is BreakerState.HALF_OPEN
    breaker.take(now)
    breaker.success()
    assert breaker.state(now) is BreakerState.CLOSED
    assert breaker.available(now)
    assert breaker.opened == 12


def test_a_probe_that_ends_without_an_answer_is_released() -> None:
    breaker = CircuitBreaker(NO_JITTER, random.Random(1))
    breaker.failure(0.0)
    breaker.take(1.0)
    assert not breaker.available(1.0)
    breaker.release()  # the caller gave up on it
    assert breaker.available(1.0)


def test_breaker_opens_after_a_run_of_slow_tries_not_one() -> None:
    breaker = CircuitBreaker(NO_JITTER, random.Random(1))
    breaker.slow(0.0)
    breaker.late()  # the slow try answered after its hedge: still a run of slow ones
    breaker.slow(0.0)
    assert breaker.state(0.0) is BreakerState.CLOSED
    breaker.success()  # an answer in time between slow tries: the run starts again
    breaker.slow(0.0)
    breaker.slow(0.0)
    assert breaker.state(0.0) is BreakerState.CLOSED
    breaker.slow(0.0)
    assert breaker.state(0.0) is BreakerState.OPEN


def test_retry_backoff_is_exponential_capped_and_jittered() -> None:
    policy = RetryPolicy(attempts=5, backoff_s=0.1, max_backoff_s=0.35, jitter=0.0)
    rng = random.Random(3)
    assert [policy.backoff(k, rng) for k in (1, 2, 3, 4)] == [0.1, 0.2, 0.35, 0.35]
    jittered = RetryPolicy(backoff_s=0.1, jitter=1.0)
    draws = [jittered.backoff(1, rng) for _ in range(200)]
    assert all(0 < d <= 0.1 for d in draws)
    assert len(set(draws)) > 100


@pytest.mark.parametrize(
    "make",
    [
        lambda: RetryPolicy(attempts=0),
        lambda: RetryPolicy(attempts=True),
        lambda: RetryPolicy(jitter=2),
        lambda: HedgePolicy(read_percentile=0.1),
        lambda: HedgePolicy(min_delay_s=2, max_delay_s=1),
        lambda: BreakerPolicy(open_s=0),
        lambda: BreakerPolicy(open_s=5, max_open_s=1),
    ],
)
def test_policies_refuse_values_out_of_range(make: Callable[[], object]) -> None:
    with pytest.raises(InvalidOption):
        make()


def _topology(members: list[str], partitions: int = 16, n: int = 2) -> pb.TopologyResponse:
    ring = Ring(members, partitions, n)
    return pb.TopologyResponse(
        ring_epoch=1,
        partitions=partitions,
        n=n,
        members=[
            pb.TopologyMember(address=m, client_address=_client(m), status="active", up=True)
            for m in members
        ],
        ring=pb.RingLayoutState(members=ring.layout.members, owners=ring.layout.owners),
        has_ring=True,
    )


def _client(member: str) -> str:
    host, _, port = member.rpartition(":")
    return f"{host}:{int(port) + 1000}"


MEMBERS = ["10.0.0.1:7101", "10.0.0.2:7101", "10.0.0.3:7101", "10.0.0.4:7101"]


def test_calls_go_to_their_keys_primaries_first_and_suspect_nodes_last() -> None:
    selector = NodeSelector(["10.0.0.1:8101"], NO_JITTER, random.Random(1))
    selector.table = table_from(_topology(MEMBERS))
    ring = Ring(MEMBERS, 16, 2)
    for i in range(50):
        key = f"key-{i}".encode()
        nodes, primaries = selector.order(key, 0.0)
        assert primaries == 2
        assert nodes[:2] == [_client(m) for m in ring.primaries(key)]
        assert sorted(nodes) == sorted(_client(m) for m in MEMBERS)
    key = b"key-0"
    first = selector.order(key, 0.0)[0][0]
    selector.breaker(first).failure(0.0)
    nodes, primaries = selector.order(key, 0.1)
    assert nodes[-1] == first  # skipped while open, still tried when all else failed
    assert primaries == 1
    # Without a key: every node, starting at a different trusted one from call to call.
    starts = {selector.order(None, 0.1)[0][0] for _ in range(8)}
    assert starts == {_client(m) for m in MEMBERS} - {first}


def test_a_topology_no_node_gives_is_refused() -> None:
    bad = _topology(MEMBERS)
    bad.members[0].client_address = "not an address"
    with pytest.raises(InvalidArgument):
        table_from(bad)
    bad = _topology(MEMBERS)
    del bad.ring.owners[3:]
    bad.ring.owners.extend([9] * 13)  # indexes no member
    with pytest.raises(InvalidArgument):
        table_from(bad)
    gone = _topology(MEMBERS)
    for member in gone.members:
        member.status = "left"
    with pytest.raises(InvalidArgument):
        table_from(gone)


def test_latency_percentiles_follow_the_recent_window() -> None:
    window = LatencyWindow()
    assert window.percentile(0.95) == 0.0
    for i in range(1, 101):
        window.record(i / 1000)
    assert window.percentile(0.95) == pytest.approx(0.096)
    assert window.percentile(0.5) == pytest.approx(0.051)


# ---- one call's tries over fake streams ----


class FakeNodes:
    """Each node answers as told: 'ok', 'never' (NeverSent), 'lost' (OutcomeUnknown),
    'hang' (never answers), 'unauth', or a CallError code."""

    def __init__(self, behaviour: dict[str, str]) -> None:
        self.behaviour = behaviour
        self.sent: list[str] = []
        self.hanging: list[asyncio.Future[pb.ClientResult]] = []

    def submit(self, address: str, remaining: float) -> asyncio.Future[pb.ClientResult]:
        self.sent.append(address)
        future: asyncio.Future[pb.ClientResult] = asyncio.get_running_loop().create_future()
        what = self.behaviour[address]
        if what == "ok":
            future.set_result(pb.ClientResult(id=1, get=pb.GetResponse(found=True)))
        elif what == "never":
            future.set_exception(NeverSent("down"))
        elif what == "unauth":
            future.set_exception(NeverSent("refused", code="UNAUTHENTICATED"))
        elif what == "lost":
            future.set_exception(OutcomeUnknown("cut", deadline=False))
        elif what == "hang":
            self.hanging.append(future)
        elif what == "slow":  # answers after 30 ms
            answer = pb.ClientResult(id=1, get=pb.GetResponse(found=True))
            asyncio.get_running_loop().call_later(
                0.03, lambda: future.done() or future.set_result(answer)
            )
        elif what in ERRORS_BY_NAME:  # a kvstore error, by its class name
            code = ERRORS_BY_NAME[what].code
            error = pb.CallError(code=code, error=what, message="told to fail")
            future.set_result(pb.ClientResult(id=1, error=error))
        else:
            error = pb.CallError(code=what, error="", message="told to fail")
            future.set_result(pb.ClientResult(id=1, error=error))
        return future


FAST_RETRIES = RetryPolicy(attempts=3, backoff_s=0.001, jitter=0.0)


async def _run(
    behaviour: dict[str, str],
    hedge_delay: float | None = None,
    policy: RetryPolicy = FAST_RETRIES,
    timeout: float = 2.0,
    kind: str = "get",
    selector: NodeSelector | None = None,
    budget: HedgeBudget | None = None,
    stats: ClientStats | None = None,
    alive: Callable[[str, float, float], asyncio.Future[bool]] | None = None,
) -> tuple[object, FakeNodes, ClientStats, NodeSelector]:
    fake = FakeNodes(behaviour)
    selector = selector or NodeSelector(list(behaviour), NO_JITTER, random.Random(1))
    stats = stats or ClientStats()
    loop = asyncio.get_running_loop()
    tries = Tries(
        fake.submit,
        kind,
        list(behaviour),
        selector,
        loop.time() + timeout,
        hedge_delay,
        policy,
        LatencyWindow(),
        stats,
        random.Random(1),
        budget,
        alive,
    )
    tries.start()
    try:
        outcome: object = await tries.result
    except Exception as exc:
        outcome = exc
    for future in fake.hanging:
        future.cancel()
    return outcome, fake, stats, selector


def test_a_slow_call_is_hedged_on_the_next_node_and_the_hedge_answers() -> None:
    outcome, fake, stats, _ = asyncio.run(_run({"a:1": "hang", "b:1": "ok"}, 0.01))
    assert isinstance(outcome, pb.ClientResult)
    assert fake.sent == ["a:1", "b:1"]
    assert (stats.hedges, stats.hedges_won, stats.retries) == (1, 1, 0)


def test_only_a_try_its_hedge_beats_counts_as_slow() -> None:
    # A node its hedges beat three times in a row is held suspect (slow_limit=3) ...
    behaviour = {"a:1": "hang", "b:1": "ok"}
    selector = NodeSelector(list(behaviour), NO_JITTER, random.Random(1))
    for _ in range(3):
        asyncio.run(_run(behaviour, 0.005, selector=selector))
    assert selector.breaker("a:1").failures == 1
    # ... but not one whose first tries answer before their hedges: every call was slow (a
    # busy cluster, a client that fell behind), not that node.
    behaviour = {"a:1": "slow", "b:1": "slow"}
    selector = NodeSelector(list(behaviour), NO_JITTER, random.Random(1))
    stats = ClientStats()
    for _ in range(5):
        outcome, _, _, _ = asyncio.run(_run(behaviour, 0.005, selector=selector, stats=stats))
        assert isinstance(outcome, pb.ClientResult)
    assert (stats.hedges, stats.hedges_won) == (5, 0)
    assert selector.breaker("a:1").failures == 0


def test_a_write_whose_hedge_failed_waits_for_its_first_try() -> None:
    # The hedge's failure leaves the write's outcome unknown there (not retried), but the
    # first try, slow, is still out and answers: the call succeeds.
    behaviour = {"a:1": "slow", "b:1": "UNAVAILABLE", "c:1": "ok"}
    outcome, fake, stats, _ = asyncio.run(_run(behaviour, 0.005, kind="put"))
    assert isinstance(outcome, pb.ClientResult), outcome
    assert fake.sent == ["a:1", "b:1"]
    assert (stats.hedges, stats.retries) == (1, 0)
    # With no try left out, the failure ends the call (the write is not retried on c:1).
    behaviour = {"a:1": "hang", "b:1": "UNAVAILABLE", "c:1": "ok"}
    outcome, fake, _, _ = asyncio.run(_run(behaviour, 0.005, kind="put", timeout=0.2))
    assert isinstance(outcome, Unavailable), outcome
    assert fake.sent == ["a:1", "b:1"]


def _answering(
    answers: bool, asked: list[str]
) -> Callable[[str, float, float], asyncio.Future[bool]]:
    def alive(address: str, within: float, since: float) -> asyncio.Future[bool]:
        assert since <= asyncio.get_running_loop().time() - 0.005  # when the write left
        assert within == 0.05  # twice the hedge delay of 5 ms, at least 50 ms
        asked.append(address)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        future.set_result(answers)
        return future

    return alive


def test_a_slow_write_is_hedged_only_when_its_node_stopped_answering() -> None:
    # Its node does not answer its health check (stopped): the write goes to the next.
    asked: list[str] = []
    behaviour = {"a:1": "hang", "b:1": "ok"}
    outcome, fake, stats, selector = asyncio.run(
        _run(behaviour, 0.005, kind="put", alive=_answering(False, asked))
    )
    assert isinstance(outcome, pb.ClientResult)
    assert (fake.sent, asked) == (["a:1", "b:1"], ["a:1"])
    assert (stats.hedges, stats.hedges_won) == (1, 1)
    assert selector.breaker("a:1").failures == 1  # held suspect at once
    # It answers (a partition behind it, a slow disk): left to finish the write, no twin.
    asked = []
    behaviour = {"a:1": "slow", "b:1": "ok"}
    outcome, fake, stats, selector = asyncio.run(
        _run(behaviour, 0.005, kind="put", alive=_answering(True, asked))
    )
    assert isinstance(outcome, pb.ClientResult)
    assert (fake.sent, asked) == (["a:1"], ["a:1"])
    assert (stats.hedges, stats.write_hedges_declined) == (0, 1)
    assert selector.breaker("a:1").failures == 0
    # Reads are hedged without asking.
    asked = []
    outcome, fake, stats, _ = asyncio.run(_run(behaviour, 0.005, alive=_answering(True, asked)))
    assert (fake.sent, asked, stats.hedges) == (["a:1", "b:1"], [], 1)


def test_hedges_stay_within_their_budget() -> None:
    behaviour = {"a:1": "slow", "b:1": "ok"}
    budget = HedgeBudget(share=0.5, burst=1)
    stats = ClientStats()
    for _ in range(4):
        outcome, _, _, _ = asyncio.run(_run(behaviour, 0.005, budget=budget, stats=stats))
        assert isinstance(outcome, pb.ClientResult)
        budget.earn()  # half a hedge per call: every other call may hedge
    assert (stats.hedges, stats.hedges_over_budget) == (2, 2)
    stats = ClientStats()
    none = HedgeBudget(share=0.0, burst=10)  # share 0: no hedge at all
    asyncio.run(_run(behaviour, 0.005, budget=none, stats=stats))
    assert (stats.hedges, stats.hedges_over_budget) == (0, 1)
    with pytest.raises(InvalidOption):
        HedgePolicy(max_share=1.5)


def test_a_failed_try_is_retried_on_the_next_node() -> None:
    outcome, fake, stats, selector = asyncio.run(_run({"a:1": "lost", "b:1": "ok"}))
    assert isinstance(outcome, pb.ClientResult)
    assert fake.sent == ["a:1", "b:1"]
    assert stats.retries == 1
    assert selector.breaker("a:1").failures == 1


def test_nodes_that_cannot_be_reached_are_skipped_without_using_the_retry_budget() -> None:
    behaviour = {"a:1": "never", "b:1": "never", "c:1": "ok"}
    outcome, fake, _, _ = asyncio.run(_run(behaviour, policy=RetryPolicy.never()))
    assert isinstance(outcome, pb.ClientResult)
    assert fake.sent == ["a:1", "b:1", "c:1"]


def test_retries_stop_at_the_policys_attempts() -> None:
    behaviour = {"a:1": "UNAVAILABLE", "b:1": "UNAVAILABLE", "c:1": "UNAVAILABLE", "d:1": "ok"}
    outcome, fake, stats, _ = asyncio.run(_run(behaviour))
    assert isinstance(outcome, Unavailable)
    assert fake.sent == ["a:1", "b:1", "c:1"]  # 3 attempts, the 4th node never asked
    assert stats.retries == 2


def test_errors_of_the_request_itself_are_not_retried() -> None:
    outcome, fake, _, _ = asyncio.run(_run({"a:1": "INVALID_ARGUMENT", "b:1": "ok"}))
    assert isinstance(outcome, InvalidArgument)
    assert fake.sent == ["a:1"]
    outcome, fake, _, _ = asyncio.run(_run({"a:1": "unauth", "b:1": "ok"}))
    assert isinstance(outcome, Unauthenticated)
    assert fake.sent == ["a:1"]


def test_a_call_no_node_answers_times_out_within_its_deadline() -> None:
    outcome, fake, _, selector = asyncio.run(
        _run({"a:1": "hang", "b:1": "hang"}, 0.01, timeout=0.1)
    )
    assert isinstance(outcome, Timeout)
    assert fake.sent == ["a:1", "b:1"]
    # Neither answered in time: both breakers heard of it.
    assert selector.breaker("a:1").failures == 1
    assert selector.breaker("b:1").failures == 1


def test_a_topology_that_does_not_name_every_member_yet_keeps_the_seeds_in_play() -> None:
    answer = _topology(MEMBERS)
    del answer.members[1:]  # asked before gossip spread the other members' records
    selector = NodeSelector(["10.0.0.9:8101", "10.0.0.2:8101"], NO_JITTER, random.Random(1))
    selector.table = table_from(answer)
    assert not selector.table.complete
    nodes, _ = selector.order(b"any", 0.0)
    assert sorted(nodes) == ["10.0.0.1:8101", "10.0.0.2:8101", "10.0.0.9:8101"]
    assert table_from(_topology(MEMBERS)).complete


def test_a_slow_first_try_and_a_failed_hedge_move_on_to_the_next_node() -> None:
    behaviour = {"a:1": "hang", "b:1": "never", "c:1": "ok"}
    outcome, fake, _, _ = asyncio.run(_run(behaviour, 0.01))
    assert isinstance(outcome, pb.ClientResult)
    assert fake.sent == ["a:1", "b:1", "c:1"]


def test_a_written_call_calls_off_its_other_tries_once_one_answered() -> None:
    async def run() -> tuple[object, FakeNodes]:
        fake = FakeNodes({"a:1": "hang", "b:1": "ok"})
        selector = NodeSelector(["a:1", "b:1"], NO_JITTER, random.Random(1))
        loop = asyncio.get_running_loop()
        tries = Tries(
            fake.submit, "put", ["a:1", "b:1"], selector, loop.time() + 2, 0.01,
            FAST_RETRIES, LatencyWindow(), ClientStats(), random.Random(1),
        )  # fmt: skip
        tries.start()
        outcome = await tries.result
        await asyncio.sleep(0)
        return outcome, fake

    outcome, fake = asyncio.run(run())
    assert isinstance(outcome, pb.ClientResult)
    assert [f.cancelled() for f in fake.hanging] == [True]


def test_a_server_timeout_is_not_retried_it_spent_the_budget() -> None:
    outcome, fake, _, _ = asyncio.run(_run({"a:1": "DEADLINE_EXCEEDED", "b:1": "ok"}))
    assert isinstance(outcome, Timeout)
    assert fake.sent == ["a:1"]


def test_a_write_is_retried_only_after_a_failure_that_left_it_nowhere() -> None:
    # Refused untouched (overloaded, draining, stalled): the next node takes it.
    for refusal in ("Overloaded", "Draining", "Stalled", "StorageUnavailable"):
        outcome, fake, _, _ = asyncio.run(_run({"a:1": refusal, "b:1": "ok"}, kind="put"))
        assert isinstance(outcome, pb.ClientResult), refusal
        assert fake.sent == ["a:1", "b:1"]
    # Unavailable (the coordinator stored it, fewer than w replicas answered) or a lost
    # connection: it may be stored, so it is not made again elsewhere...
    for ambiguous in ("UNAVAILABLE", "lost"):
        outcome, fake, _, _ = asyncio.run(_run({"a:1": ambiguous, "b:1": "ok"}, kind="put"))
        assert isinstance(outcome, Unavailable), ambiguous
        assert fake.sent == ["a:1"]
    # ... unless the policy says so.
    ambiguous_ok = RetryPolicy(attempts=3, backoff_s=0.001, jitter=0.0, ambiguous_writes=True)
    outcome, fake, _, _ = asyncio.run(
        _run({"a:1": "lost", "b:1": "ok"}, policy=ambiguous_ok, kind="put")
    )
    assert isinstance(outcome, pb.ClientResult)
    assert fake.sent == ["a:1", "b:1"]


def test_members_the_topology_holds_down_are_tried_last() -> None:
    answer = _topology(MEMBERS)
    answer.members[0].up = False
    selector = NodeSelector(["10.0.0.2:8101"], NO_JITTER, random.Random(1))
    selector.table = table_from(answer)
    ring = Ring(MEMBERS, 16, 2)
    key = next(
        f"k{i}".encode() for i in range(100) if ring.primaries(f"k{i}".encode())[0] == MEMBERS[0]
    )
    nodes, primaries = selector.order(key, 0.0)
    assert nodes[-1] == _client(MEMBERS[0])
    assert primaries == 1


def test_a_node_that_answered_since_the_write_left_needs_no_health_check() -> None:
    async def run() -> tuple[bool, bool]:
        client = AsyncClient("127.0.0.1:1", tls=False, route_by_ring=False)
        try:
            client.stream("127.0.0.1:1").last_answer_at = 10.0
            answered = await client._still_answers("127.0.0.1:1", 0.05, 5.0)
            # Nothing since: its health is asked (nothing listens on port 1: no answer).
            silent = await client._still_answers("127.0.0.1:1", 0.05, 20.0)
            return answered, silent
        finally:
            await client.close()

    assert asyncio.run(run()) == (True, False)
