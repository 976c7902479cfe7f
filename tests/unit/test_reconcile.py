"""Reconcile after an events (re)connect, and stop(), against FakeAsterisk.

What a reconnect's listing may and may not be taken for: a call of this process whose
StasisStart was lost (an originate answered during the outage) or is still in flight
(events lag behind REST) is not a stray; what is registered while the listing is under
way is not gone; a listing that failed is asked again and is no reconcile. And stop()
with Asterisk unreachable waits about one REST timeout, not one per call.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from fake_apps import fake_app

from voxtra import CallSession
from voxtra.app import INSTANCE_VARIABLE, VoxtraApp
from voxtra.ari.errors import AriConnectionError
from voxtra.ari.models import Channel
from voxtra.ari.transport import AriRequest, AriResponse, EventConnection
from voxtra.calls.amd import AmdVerdict
from voxtra.calls.state import CallDirection, CallEndReason
from voxtra.testing import FakeAsterisk

APP = "reconcile-tests"
INSTANCE = "unit"  # fake_app's


class _Delivered(EventConnection):
    """A fake events connection whose StasisStarts come ``lag`` seconds late, or never
    (channel ids in ``lose``)."""

    def __init__(self, inner: EventConnection, fake: Fake) -> None:
        self._inner = inner
        self._fake = fake

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        async for text in self._inner:
            if '"type":"StasisStart"' in str(text):
                if json.loads(text)["channel"]["id"] in self._fake.lose:
                    continue
                if self._fake.lag:
                    await asyncio.sleep(self._fake.lag)
            yield text

    @property
    def closed(self) -> bool:
        return self._inner.closed

    async def close(self) -> None:
        await self._inner.close()


class Fake(FakeAsterisk):
    """FakeAsterisk whose GET /channels can fail, or run a step just before Asterisk
    lists (``before_list``) or just after, while the answer is on its way
    (``while_listing``); and whose StasisStarts can lag or be lost."""

    def __init__(self, *, channelvars: Sequence[str] = ()) -> None:
        super().__init__(channelvars=channelvars)
        self.lag = 0.0
        self.lose: set[str] = set()
        self.failed_lists = 0
        self.before_list: Callable[[], Awaitable[None]] | None = None
        self.while_listing: Callable[[], Awaitable[None]] | None = None

    async def connect_events(
        self, apps: Sequence[str], *, subscribe_all: bool = False, heartbeat: float = 10.0
    ) -> EventConnection:
        inner = await super().connect_events(apps, subscribe_all=subscribe_all, heartbeat=heartbeat)
        return _Delivered(inner, self)

    async def handle_request(self, request: AriRequest) -> AriResponse:
        if request.method != "GET" or request.path != "/channels":
            return await super().handle_request(request)
        if self.failed_lists:
            self.failed_lists -= 1
            raise AriConnectionError(0, "GET", "/channels", "no answer in 10.0 s")
        before, self.before_list = self.before_list, None
        if before is not None:
            await before()
        answer = await super().handle_request(request)
        during, self.while_listing = self.while_listing, None
        if during is not None:
            await during()
        return answer


def make(tmp_path: Path, **options: object) -> VoxtraApp:
    app = fake_app(tmp_path, APP, handler_deadline=0.5, **options)
    app.reconcile_grace = 0.3  # 2 s by default: the tests' margins scaled down
    return app


async def reconnected(fake: FakeAsterisk, app: VoxtraApp) -> None:
    """Drop the events; until the app has reconnected and reconciled."""
    generation = app.events_generation()
    fake.disconnect_events()
    await fake.wait_until(lambda: app._reconciled_generation > generation)


# -- calls of this process whose StasisStart was lost or is still in flight -----------


@pytest.mark.parametrize("policy", ["hangup", "adopt"])
async def test_an_originate_answered_during_an_outage_gets_its_call(
    tmp_path: Path, policy: str
) -> None:
    # Reproduced: reconcile took it for a stray: hung up (originate() raised CallFailed)
    # or, with "adopt", routed as an inbound call (originate() then gave up on it with
    # CallNoAnswer and hung it up).
    fake = Fake()
    fake.dial_outcome = "ring"
    app = make(tmp_path, reconcile_policy=policy)
    inbound: list[str] = []

    @app.default
    async def handler(call: CallSession) -> None:
        inbound.append(call.id)

    async with fake.serve(app):
        placing = asyncio.create_task(app.originate("PJSIP/bob", timeout=5))
        await fake.wait_until(lambda: bool(fake.originated) and fake.originated[0].ringing)
        far_end = fake.originated[0]
        fake.disconnect_events()
        await far_end.answer()  # its StasisStart goes to no connection
        session = await asyncio.wait_for(placing, 3)
        assert session.id == far_end.id and session.direction is CallDirection.OUTBOUND
        await asyncio.sleep(app.reconcile_grace + 0.2)
        assert far_end.id in fake.channels and not session.ended
        assert ("DELETE", f"/channels/{far_end.id}") not in fake.requests
        assert inbound == []


async def test_a_call_back_from_the_amd_step_during_an_outage_gets_its_verdict(
    tmp_path: Path,
) -> None:
    class LostOnTheWay(Fake):
        async def handle_request(self, request: AriRequest) -> AriResponse:
            if request.path.endswith("/continue"):
                self.disconnect_events()  # the call's StasisStart back is lost
            return await super().handle_request(request)

    fake = LostOnTheWay()
    fake.amd_outcome = ("MACHINE", "LONGGREETING-1600-1500")
    app = make(tmp_path)
    async with fake.serve(app):
        call = await asyncio.wait_for(app.originate("PJSIP/bob", amd=True), 5)
        assert call.amd is not None and call.amd.verdict is AmdVerdict.MACHINE
        assert fake.connects == 2
        await asyncio.sleep(app.reconcile_grace + 0.2)
        assert call.id in fake.channels and not call.ended


async def test_a_call_whose_stasis_start_lags_the_listing_is_not_hung_up(tmp_path: Path) -> None:
    # Reproduced: tagged by the dialplan, in the app just before the listing, its
    # StasisStart 50 ms behind it: reconcile hung the brand-new call up.
    fake = Fake(channelvars=(INSTANCE_VARIABLE,))
    app = make(tmp_path)
    app.instance_tag_in_dialplan = True
    handled: list[str] = []

    @app.default
    async def handler(call: CallSession) -> None:
        handled.append(call.id)
        await call.answer()
        await call.wait_ended()

    made = []

    async def arrives() -> None:
        made.append(await fake.incoming(extension="1", variables={INSTANCE_VARIABLE: INSTANCE}))

    async with fake.serve(app):
        fake.lag = 0.05
        fake.before_list = arrives
        await reconnected(fake, app)
        await asyncio.sleep(app.reconcile_grace + 0.3)
        assert made[0].id in fake.channels and made[0].hangup_cause is None
        assert handled == [made[0].id]


async def test_a_stray_of_this_instance_is_hung_up_once_the_grace_is_over(
    tmp_path: Path,
) -> None:
    # What the grace must not cost: a call of this instance no session has is still
    # hung up (its StasisStart lost for good here), a grace after it was listed.
    fake = Fake()
    app = make(tmp_path)
    async with fake.serve(app):
        fake.lose.update({"stray-1", "stray-2"})
        stray = await fake.incoming(channel_id="stray-1", variables={INSTANCE_VARIABLE: INSTANCE})
        other = await fake.incoming(channel_id="stray-2", variables={INSTANCE_VARIABLE: "b"})
        await reconnected(fake, app)
        assert stray.id in fake.channels  # not before the grace
        await fake.wait_until(lambda: stray.id not in fake.channels, timeout=3)
        assert stray.hangup_cause is not None
        assert other.id in fake.channels  # another instance's


# -- what is registered while the channels are listed ----------------------------------


@pytest.mark.parametrize("at", ["reconnect", "start"])
async def test_a_call_that_arrives_while_the_channels_are_listed_is_not_ended(
    tmp_path: Path, at: str
) -> None:
    # Reproduced: its session was ended as gone (it is not in the answer), its handler
    # woken with CallEndReason.GONE and its channel left in the app.
    fake = Fake()
    app = make(tmp_path)
    ends: list[CallEndReason | None] = []

    @app.default
    async def handler(call: CallSession) -> None:
        await call.answer()
        try:
            await call.wait_ended(timeout=1.0)
        except TimeoutError:
            return
        ends.append(call.end_reason)

    made = []

    async def arrives() -> None:
        made.append(await fake.incoming(extension="1"))
        await asyncio.sleep(0.05)  # routed before the app has the answer

    fake.while_listing = arrives
    app.use_transport(fake)
    await app.start()
    try:
        if at == "reconnect":
            fake.while_listing = arrives
            await reconnected(fake, app)
        call = made[-1]
        await asyncio.sleep(0.3)
        session = app.get_session(call.id)
        assert session is not None and not session.ended
        assert call.id in fake.channels and ends == []
    finally:
        await app.stop(deadline=0.5)


async def test_an_internal_channel_expected_while_the_channels_are_listed_keeps_its_waiter(
    tmp_path: Path,
) -> None:
    # Reproduced: forgotten as gone, its StasisStart waiter dropped: the media attach or
    # dial leg waiting for it timed out, and its channel was never hung up.
    fake = Fake()
    app = make(tmp_path)
    media = app.internal_id("media")
    started: list[asyncio.Future[Channel]] = []

    async def expected() -> None:
        started.append(app.registry.expect_channel(media, None))

    async with fake.serve(app):
        fake.while_listing = expected
        await reconnected(fake, app)
        assert media in app.registry.internal
        app.registry.channel_started(Channel(id=media, state="Up"))  # its StasisStart
        assert started[0].done()
        app.registry.forget_channel(media)


# -- a listing that failed -------------------------------------------------------------


async def test_a_failed_listing_is_asked_again_and_the_vanished_call_ends(tmp_path: Path) -> None:
    # Reproduced: Asterisk restarted, the reconnect's GET /channels failed once, and the
    # session of its vanished call stayed live for ever (the generation counted as
    # reconciled all the same).
    fake = Fake()
    app = make(tmp_path)

    @app.default
    async def handler(call: CallSession) -> None:
        await call.answer()
        await call.wait_ended()

    async with fake.serve(app):
        call = await fake.incoming(extension="1")
        await fake.wait_until(lambda: app.get_session(call.id) is not None)
        session = app.get_session(call.id)
        assert session is not None
        fake.disconnect_events()
        del fake.channels[call.id]  # gone with the restart, no event sent
        fake.failed_lists = 2
        await asyncio.wait_for(session.wait_ended(), 3)
        assert session.end_reason is CallEndReason.GONE
        assert fake.failed_lists == 0
        assert app._reconciled_generation == app.events_generation() == 2


async def test_a_reconcile_that_could_not_list_does_not_count(tmp_path: Path) -> None:
    fake = Fake()
    app = make(tmp_path)
    async with fake.serve(app):
        fake.failed_lists = 1_000
        fake.disconnect_events()
        await fake.wait_until(lambda: fake.connects == 2 and app.events_generation() == 2)
        await asyncio.sleep(0.5)
        assert app._reconciled_generation == 1
        app.outage_wait = 0.2
        assert not await app.wait_reconciled(1)
        fake.failed_lists = 0
        await fake.wait_until(lambda: app._reconciled_generation == 2, timeout=7)


async def test_a_restarted_app_does_not_count_the_last_runs_reconciles(tmp_path: Path) -> None:
    # Reproduced: generation 3 reconciled in the first run, wait_reconciled(1) answered
    # True at once during an outage in the second (whose connections count from 1).
    app = make(tmp_path)
    app.outage_wait = 0.3
    fake = FakeAsterisk()
    async with fake.serve(app):
        for _ in range(2):
            await reconnected(fake, app)
        assert app._reconciled_generation == 3
    again = FakeAsterisk()
    async with again.serve(app):
        await again.wait_until(lambda: app._reconciled_generation >= 1)
        again.reachable = False
        again.disconnect_events()
        assert not await app.wait_reconciled(1)
        again.reachable = True


# -- stop() with Asterisk unreachable --------------------------------------------------


class Unanswering(FakeAsterisk):
    """Once ``down``, every request waits 0.2 s (for a REST timeout) and fails. Counts
    how many first requests for a resource were under way at once at most (a call
    cancelled at stop() sends its hang-up once more, later: not counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.in_flight = 0
        self.most_in_flight = 0
        self.unanswered: set[str] = set()

    async def handle_request(self, request: AriRequest) -> AriResponse:
        if not self.down:
            return await super().handle_request(request)
        first = request.path not in self.unanswered
        self.unanswered.add(request.path)
        self.in_flight += first
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.2)
        finally:
            self.in_flight -= first
        raise AriConnectionError(0, request.method, request.path, "no answer in 0.2 s")


async def test_stop_hangs_the_calls_up_at_once_when_asterisk_does_not_answer(
    tmp_path: Path,
) -> None:
    # Reproduced: one hang-up after the other, each waiting out the timeout (8 calls at
    # 1 s: stop() took 9.2 s).
    fake = Unanswering()
    app = make(tmp_path)
    app.teardown_timeout = app.delivery_timeout = 0.2

    @app.default
    async def handler(call: CallSession) -> None:
        await call.answer()
        await asyncio.sleep(3600)

    app.use_transport(fake)
    await app.start()
    for n in range(8):
        await fake.incoming(extension=str(n))
    await fake.wait_until(lambda: len(app.active_sessions) == 8)
    fake.down = True
    await app.stop(deadline=0)
    assert fake.most_in_flight == 8


async def test_stop_destroys_what_is_left_at_once_20_at_a_time(tmp_path: Path) -> None:
    fake = Unanswering()
    app = make(tmp_path)
    app.use_transport(fake)
    await app.start()
    channels = [app.internal_id("media") for _ in range(25)]
    for channel_id in channels:
        app.registry.internal[channel_id] = None
    for _ in range(5):
        app.registry.bridges[app.internal_id("bridge")] = set()
    fake.down = True
    await app.stop(deadline=0)
    assert len(fake.unanswered) == 30 and fake.most_in_flight == 20
    assert app.registry.internal == {} and app.registry.bridges == {}
