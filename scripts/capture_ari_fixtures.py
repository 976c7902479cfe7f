"""Capture real ARI JSON (events and REST bodies) from a running Asterisk as test fixtures.

Run against the sandbox (``python -m voxtra.testing.asterisk up``):

    .venv/bin/python scripts/capture_ari_fixtures.py [--out tests/fixtures/ari]

It uses its own Stasis app name ("fixtures") so it does not disturb other apps, drives
one scripted scenario through ARI, writes the first event of each type to
``events/<Type>.json``, the whole run to ``sequence.jsonl`` and each REST body to
``rest/<name>.json``, and hangs up
everything it created. The fixtures are checked in; tests never need Asterisk for them.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import aiohttp

logger = logging.getLogger("capture_ari_fixtures")

APP = "fixtures"


class Capture:
    """Holds the REST session, the events seen so far and the ids this run created."""

    def __init__(self, base: str, user: str, password: str, out: Path) -> None:
        self.base = base.rstrip("/")
        self.user = user
        self.password = password
        self.out = out
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}"}
        self.events: list[dict[str, Any]] = []
        self.new_event = asyncio.Condition()
        self.channels: set[str] = set()
        self.bridges: set[str] = set()
        self.session: aiohttp.ClientSession | None = None
        # Events index when the latest request was sent: waits look from there, so an
        # event that arrives before the HTTP response is not missed.
        self.last_mark = 0

    # REST ---------------------------------------------------------------------------

    async def rest(
        self,
        method: str,
        path: str,
        *,
        save: str | None = None,
        params: dict[str, str] | None = None,
        body: Any = None,
        expect: tuple[int, ...] = (200, 201, 204),
    ) -> Any:
        assert self.session is not None
        url = f"{self.base}/ari{path}"
        self.last_mark = len(self.events)
        async with self.session.request(
            method, url, params=params, json=body, headers=self.headers
        ) as resp:
            text = await resp.text()
            logger.info("%s %s -> %s", method, path, resp.status)
            if resp.status not in expect:
                raise RuntimeError(f"{method} {path}: {resp.status} {text}")
            data = json.loads(text) if text.strip() else None
        if save is not None and data is not None:
            self._write(self.out / "rest" / f"{save}.json", data)
        return data

    # events -------------------------------------------------------------------------

    async def read_events(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            event = json.loads(msg.data)
            chan = event.get("channel") or {}
            logger.info(
                "event %s %s %s", event.get("type"), chan.get("name", ""), chan.get("state", "")
            )
            async with self.new_event:
                self.events.append(event)
                self.new_event.notify_all()

    def _mine(self, event: dict[str, Any]) -> bool:
        for key in ("channel", "peer", "caller", "replace_channel"):
            chan = event.get(key)
            if isinstance(chan, dict) and chan.get("id") in self.channels:
                return True
        bridge = event.get("bridge")
        return isinstance(bridge, dict) and bridge.get("id") in self.bridges

    def mark(self) -> int:
        """Index to pass as ``since`` so a wait also sees events that arrive meanwhile."""
        return len(self.events)

    @staticmethod
    def _about_objects(event: dict[str, Any]) -> bool:
        keys = ("channel", "peer", "caller", "replace_channel", "bridge")
        return any(isinstance(event.get(key), dict) for key in keys)

    async def wait_for(
        self,
        type_: str,
        timeout: float = 10.0,
        channel_id: str | None = None,
        since: int | None = None,
    ) -> dict[str, Any]:
        """Wait for an event of this type (optionally on one channel) seen after ``since``.

        ``since`` defaults to the moment the latest REST request was sent.
        """
        start = self.last_mark if since is None else since

        def found() -> dict[str, Any] | None:
            for ev in self.events[start:]:
                if ev.get("type") != type_:
                    continue
                if channel_id is None or (ev.get("channel") or {}).get("id") == channel_id:
                    return ev
            return None

        async with asyncio.timeout(timeout), self.new_event:
            await self.new_event.wait_for(lambda: found() is not None)
            ev = found()
            assert ev is not None
            return ev

    async def settle(self, seconds: float = 0.5) -> None:
        await asyncio.sleep(seconds)

    def write_events(self) -> list[str]:
        """Write one file per event type: one involving our own objects if there is one."""
        chosen: dict[str, dict[str, Any]] = {}
        for ev in self.events:
            kind = str(ev.get("type"))
            if kind not in chosen or (self._mine(ev) and not self._mine(chosen[kind])):
                chosen[kind] = ev
        for kind, ev in chosen.items():
            self._write(self.out / "events" / f"{kind}.json", ev)
        # The whole run in arrival order, one event per line, for replay tests.
        # Events about other apps' channels (seen while subscribed to all) are left out.
        with (self.out / "sequence.jsonl").open("w") as seq:
            for ev in self.events:
                if not self._mine(ev) and self._about_objects(ev):
                    continue
                seq.write(json.dumps(ev, sort_keys=True) + "\n")
        return sorted(chosen)

    @staticmethod
    def _write(path: Path, data: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


async def scenario(cap: Capture) -> None:
    """Provoke as many event kinds as a Local-channel-only sandbox allows."""
    await cap.rest("GET", "/asterisk/info", save="asterisk_info")
    await cap.rest("GET", "/asterisk/ping", save="asterisk_ping")
    await cap.rest(
        "GET", "/asterisk/variable", params={"variable": "VOXTRA_APP"}, save="variable_global"
    )
    await cap.rest("GET", "/endpoints", save="endpoints")
    await cap.rest("GET", "/applications/" + APP, save="application")
    await cap.rest("GET", "/sounds/hello-world", save="sound")
    await cap.rest("GET", "/channels/no-such-channel", save="error_404", expect=(404,))

    # Both halves of a Local channel land in our app: ;1 through originate, ;2 through
    # the dialplan's Stasis(${VOXTRA_APP}) with the variable overridden on the channel.
    since = cap.mark()
    chan = await cap.rest(
        "POST",
        "/channels",
        params={"endpoint": "Local/app-42@voxtra-test", "app": APP, "appArgs": "a,b"},
        body={"variables": {"VOXTRA_APP": APP}},
        save="channel_originate",
    )
    one = chan["id"]
    cap.channels.add(one)
    async with asyncio.timeout(10):
        while True:
            starts = [
                ev["channel"]
                for ev in cap.events[since:]
                if ev.get("type") == "StasisStart" and ev["channel"]["id"] != one
            ]
            if starts:
                break
            await cap.settle(0.05)
    two = starts[0]["id"]
    cap.channels.add(two)
    if starts[0]["state"] != "Up":
        await cap.rest("POST", f"/channels/{two}/answer")
    await cap.wait_for("StasisStart", channel_id=one, since=since)
    await cap.rest("POST", f"/channels/{one}/answer")
    await cap.rest("GET", f"/channels/{one}", save="channel")
    await cap.rest("GET", "/channels", save="channels")

    playback = await cap.rest(
        "POST", f"/channels/{one}/play", params={"media": "sound:hello-world"}, save="playback"
    )
    await cap.rest("GET", f"/playbacks/{playback['id']}", save="playback_get")
    await cap.wait_for("PlaybackFinished")
    await cap.rest("POST", f"/channels/{one}/play", params={"media": "sound:beep,sound:beep"})
    await cap.wait_for("PlaybackFinished")

    # The sandbox may lack /var/spool/asterisk/recording; Asterisk then answers 500 and
    # the recording events cannot be captured (their fixtures are the documented ones).
    started = await cap.rest(
        "POST",
        f"/channels/{one}/record",
        params={"name": "fx", "format": "wav", "ifExists": "overwrite"},
        save="live_recording",
        expect=(201, 500),
    )
    if started.get("name") == "fx":
        await cap.wait_for("RecordingStarted")
        await asyncio.sleep(1.0)
        await cap.rest("GET", "/recordings/live/fx", save="live_recording_get")
        await cap.rest("POST", "/recordings/live/fx/stop")
        await cap.wait_for("RecordingFinished")
        await cap.rest("GET", "/recordings/stored", save="stored_recordings")
        await cap.rest("GET", "/recordings/stored/fx", save="stored_recording")
    else:
        logger.warning("recording refused: %s (is the recording spool missing?)", started)
        (cap.out / "rest" / "live_recording.json").rename(cap.out / "rest" / "error_500.json")
        await cap.rest(
            "GET", "/recordings/stored", save="error_500_stored_recordings", expect=(500,)
        )
    # A recording that cannot start: an unknown format is refused up front (422).
    await cap.rest(
        "POST",
        f"/channels/{one}/record",
        params={"name": "fx-bad", "format": "nosuchformat"},
        save="error_422",
        expect=(422,),
    )

    await cap.rest("POST", f"/channels/{one}/variable", params={"variable": "FX", "value": "1"})
    await cap.wait_for("ChannelVarset")
    await cap.rest("GET", f"/channels/{one}/variable", params={"variable": "FX"}, save="variable")
    await cap.rest(
        "POST", f"/channels/{one}/variable", params={"variable": "CALLERID(name)", "value": "Fx"}
    )
    await cap.rest(
        "POST",
        f"/channels/{one}/variable",
        params={"variable": "CONNECTEDLINE(name)", "value": "Fx Peer"},
    )

    await cap.rest("POST", f"/channels/{one}/dtmf", params={"dtmf": "1"})
    with contextlib.suppress(TimeoutError):
        await cap.wait_for("ChannelDtmfReceived", timeout=3.0)

    await cap.rest("POST", f"/channels/{one}/hold")
    await cap.settle()
    await cap.rest("DELETE", f"/channels/{one}/hold")
    await cap.settle()

    await cap.rest(
        "POST",
        "/events/user/fx-event",
        params={"application": APP, "source": f"channel:{one}"},
        body={"variables": {"key": "value"}},
    )
    await cap.settle()

    # TALK_DETECT on ;1 hears the prompt played to ;2 (Local halves pass audio across).
    await cap.rest(
        "POST", f"/channels/{one}/variable", params={"variable": "TALK_DETECT(set)", "value": ""}
    )
    # Silence after the prompt: a Local channel carries no frames when nothing plays,
    # and the detector needs frames to notice the talking stopped.
    await cap.rest(
        "POST",
        f"/channels/{two}/play",
        params={"media": "sound:hello-world,sound:silence/3"},
    )
    with contextlib.suppress(TimeoutError):
        await cap.wait_for("ChannelTalkingFinished", timeout=6.0)

    # An empty id subscribes to every bridge / channel, which is how creation events
    # reach an app. ARI cannot unsubscribe that form (501); the app and its
    # subscriptions vanish when this run's WebSocket closes (measured on Asterisk 22).
    subscription = "/applications/" + APP + "/subscription"
    await cap.rest("POST", subscription, params={"eventSource": "bridge:,channel:"})
    bridge = await cap.rest(
        "POST", "/bridges", params={"type": "mixing", "name": "fx-bridge"}, save="bridge"
    )
    created = await cap.rest(
        "POST",
        "/channels/create",
        params={"endpoint": "Local/answer@voxtra-test", "app": APP},
        save="channel_create",
    )
    cap.channels.add(created["id"])
    await cap.settle()
    cap.bridges.add(bridge["id"])
    await cap.rest("POST", f"/bridges/{bridge['id']}/addChannel", params={"channel": one})
    await cap.wait_for("ChannelEnteredBridge")
    await cap.rest("POST", f"/bridges/{bridge['id']}/addChannel", params={"channel": two})
    await cap.settle()
    await cap.rest("GET", f"/bridges/{bridge['id']}", save="bridge_get")
    await cap.rest("GET", "/bridges", save="bridges")
    await cap.rest("POST", f"/bridges/{bridge['id']}/removeChannel", params={"channel": one})
    await cap.wait_for("ChannelLeftBridge")
    await cap.rest(
        "POST",
        f"/bridges/{bridge['id']}/removeChannel",
        params={"channel": two},
        expect=(204, 422),
    )
    await cap.settle()
    await cap.rest("DELETE", f"/bridges/{bridge['id']}")
    with contextlib.suppress(TimeoutError):
        await cap.wait_for("BridgeDestroyed", timeout=3.0)

    # Device state: created by the app, so a subscription to it yields DeviceStateChanged.
    await cap.rest(
        "POST",
        "/applications/" + APP + "/subscription",
        params={"eventSource": "deviceState:Stasis:fx"},
    )
    await cap.rest("PUT", "/deviceStates/Stasis:fx", params={"deviceState": "BUSY"})
    await cap.settle()
    await cap.rest("GET", "/deviceStates/Stasis:fx", save="device_state")
    await cap.rest("DELETE", "/deviceStates/Stasis:fx")

    # Dial events: a channel created in the app and then dialed from it.
    await cap.rest("POST", f"/channels/{created['id']}/dial", params={"timeout": "5"})
    with contextlib.suppress(TimeoutError):
        await cap.wait_for("Dial", timeout=5.0)
    await cap.settle()

    # ChannelDialplan: keep following ;2 after it leaves the app for the dialplan.
    await cap.rest(
        "POST", "/applications/" + APP + "/subscription", params={"eventSource": f"channel:{two}"}
    )
    await cap.rest(
        "POST",
        f"/channels/{two}/continue",
        params={"context": "voxtra-test", "extension": "answer", "priority": "1"},
    )
    with contextlib.suppress(TimeoutError):
        await cap.wait_for("ChannelDialplan", timeout=3.0)

    for cid in (created["id"], one, two):
        await cap.rest("DELETE", f"/channels/{cid}", expect=(204, 404))
    with contextlib.suppress(TimeoutError):
        await cap.wait_for("ChannelDestroyed", timeout=3.0)
    await cap.settle(1.0)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8088")
    parser.add_argument("--user", default="voxtra")
    parser.add_argument("--password", default="voxtra")
    parser.add_argument("--out", type=Path, default=Path("tests/fixtures/ari"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    cap = Capture(args.url, args.user, args.password, args.out)
    ws_base = args.url.replace("http", "ws", 1)
    ws_url = (
        f"{ws_base}/ari/events?app={APP}&api_key={args.user}:{args.password}&subscribeAll=false"
    )
    async with aiohttp.ClientSession() as session:
        cap.session = session
        ws = await session.ws_connect(ws_url)
        reader = asyncio.create_task(cap.read_events(ws))
        try:
            await scenario(cap)
            # A second socket for the same app takes it over: the first gets
            # ApplicationReplaced.
            second = await session.ws_connect(ws_url)
            with contextlib.suppress(TimeoutError):
                await cap.wait_for("ApplicationReplaced", timeout=3.0)
            await second.close()
        finally:
            for cid in list(cap.channels):
                with contextlib.suppress(Exception):
                    await cap.rest("DELETE", f"/channels/{cid}", expect=(204, 404))
            for bid in list(cap.bridges):
                with contextlib.suppress(Exception):
                    await cap.rest("DELETE", f"/bridges/{bid}", expect=(204, 404))
            await ws.close()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    kinds = cap.write_events()
    print(f"{len(cap.events)} events, {len(kinds)} kinds: {', '.join(kinds)}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
