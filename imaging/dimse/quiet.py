"""Association threads that wait instead of polling.

pynetdicom runs two threads per association, and both poll every millisecond: the DUL
thread sleeps 1 ms between socket checks, the association thread 1 ms between message
checks. With a few associations that is thousands of wake-ups a second, each taking
the GIL from the event loop that does the archive work. Here, per accepted association
(before its threads start), the DUL thread instead blocks in `select()` on the socket
and on a wake-up socket that every outgoing primitive and every stop pokes, and the
association thread blocks on an event that every message and every indication for it
(release, abort) sets: both still look at their timers at least every `IDLE` seconds.

`IDLE` was 20 ms while only incoming messages woke the association thread (a release
was noticed by looking): 16 idle associations then cost the server 15 % of a core in
1,600 wake-ups a second, each taking the GIL from the event loop twice (issue 17,
M1-assoc). Everything that needs an answer now wakes the thread that gives it, so the
wait only bounds how late a timer (ARTIM, the network idle timeout) is seen.

The DUL thread also reads each PDU with as few `recv` calls as the socket allows
(`whole_reads`): pynetdicom's 4 KiB reads made a 200 MiB C-STORE 51,200 turns of
Python, each taking the GIL back from the event loop (issue 17, largest-dimse).
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import threading
import time
import types
from collections.abc import Callable
from typing import Any

from pynetdicom.association import Association
from pynetdicom.events import Event

IDLE = 0.25  # seconds a quiet thread waits before it looks at its timers again
# bytes asked of the socket at once: pynetdicom asks 4,096, so a 200 MiB C-STORE took
# 51,200 recv calls (each a turn of Python and a GIL hand-over); the kernel hands over
# what it has. A PDU is read into a buffer of its own size up to this, and a longer one
# grows by this much at a time as its bytes arrive
RECV_BYTES = 1024 * 1024


def quiet(event: Event) -> None:
    """EVT_CONN_OPEN: make this association's two threads wait, not poll."""
    assoc: Association = event.assoc
    dul = assoc.dul
    transport = dul.socket
    raw = getattr(transport, "socket", None)
    if (
        transport is None
        or type(raw) is not socket.socket  # TLS sockets buffer data select() does not see
        or not hasattr(dul, "_is_transport_event")
        or not hasattr(assoc, "_run_reactor")
    ):
        return
    wake_read, wake_write = socket.socketpair()
    wake_read.setblocking(False)
    wake_write.setblocking(False)
    outgoing: queue.Queue[Any] = dul.to_provider_queue
    put = outgoing.put

    def poke() -> None:
        with contextlib.suppress(OSError):
            wake_write.send(b"\0")

    def put_and_wake(item: Any, block: bool = True, timeout: float | None = None) -> None:
        put(item, block, timeout)
        poke()

    def kill_dul() -> None:
        dul._kill_thread = True
        poke()

    def stop_dul() -> bool:
        """pynetdicom's `stop_dul`, which waited for the thread by spinning on `sleep(0)`."""
        if dul.state_machine.current_state != "Sta1":
            return False
        kill_dul()
        if dul.is_alive() and threading.current_thread() is not dul:
            dul.join()
        return True

    checked = dul._is_transport_event

    def transport_event() -> bool:
        if checked():
            return True
        if not dul.event_queue.empty() or not outgoing.empty() or dul._kill_thread:
            return False
        try:
            ready, _, _ = select.select([raw, wake_read], [], [], IDLE)
        except (OSError, ValueError):  # closed under us: pynetdicom's pace again
            time.sleep(0.001)
            return False
        if wake_read in ready:
            with contextlib.suppress(OSError):
                wake_read.recv(4096)
        return checked() if raw in ready else False

    transport.recv = whole_reads(raw)  # type: ignore[method-assign, assignment]
    outgoing.put = put_and_wake  # type: ignore[method-assign]
    dul._is_transport_event = transport_event  # type: ignore[method-assign]
    dul.kill_dul = kill_dul  # type: ignore[method-assign]
    dul.stop_dul = stop_dul  # type: ignore[method-assign]
    dul._run_loop_delay = 0  # the wait is in transport_event now
    _wake_reactor_on_messages(assoc)
    assoc._run_reactor = types.MethodType(_waiting_reactor, assoc)  # type: ignore[method-assign]
    assoc._quiet_wake = (wake_read, wake_write)  # type: ignore[attr-defined]


def whole_reads(raw: socket.socket) -> Callable[[int], bytearray]:
    """pynetdicom's `AssociationSocket.recv` (read `nr_bytes`, less only when the peer
    closes), reading what the socket holds into one buffer instead of 4 KiB at a time.
    The buffer is the PDU's size up to RECV_BYTES and grows past that only with bytes
    that arrive, never with the length a PDU header claims."""

    def recv(nr_bytes: int) -> bytearray:
        received = bytearray(min(nr_bytes, RECV_BYTES))
        filled = 0
        while filled < nr_bytes:
            if filled == len(received):
                received += bytes(min(nr_bytes - filled, RECV_BYTES))
            with memoryview(received) as view:
                got = raw.recv_into(view[filled:])
            if not got:
                break  # closed: what was read, as pynetdicom answers
            filled += got
        del received[filled:]
        return received

    return recv


def _wake_reactor_on_messages(assoc: Association) -> None:
    """The association thread's event: set by every message for it (DIMSE messages,
    and the DUL's indications: release, abort) and by `kill`."""
    wake = threading.Event()

    def setting(put: Any) -> Any:
        def put_and_set(item: Any, block: bool = True, timeout: float | None = None) -> None:
            put(item, block, timeout)
            wake.set()

        return put_and_set

    assoc.dimse.msg_queue.put = setting(assoc.dimse.msg_queue.put)  # type: ignore[method-assign]
    assoc.dul.to_user_queue.put = setting(assoc.dul.to_user_queue.put)  # type: ignore[method-assign]
    kill = assoc.kill

    def kill_and_wake() -> None:
        wake.set()
        kill()

    assoc.kill = kill_and_wake  # type: ignore[method-assign]
    assoc._quiet_event = wake  # type: ignore[attr-defined]


def closed(event: Event) -> None:
    """EVT_CONN_CLOSE: let go of the wake-up sockets."""
    for end in getattr(event.assoc, "_quiet_wake", ()):
        with contextlib.suppress(OSError):
            end.close()


def _waiting_reactor(self: Association) -> None:
    """pynetdicom's acceptor loop (Association._run_reactor), waiting on the event of
    `_wake_reactor_on_messages` instead of sleeping 1 ms per turn."""
    self._is_paused = False
    messages = self.dimse.msg_queue
    wake: threading.Event = self._quiet_event  # type: ignore[attr-defined]
    while not self._kill:
        self._is_paused = True
        self._reactor_checkpoint.wait()
        self._is_paused = False
        try:
            context_id, msg = messages.get_nowait()
        except queue.Empty:
            context_id, msg = None, None
            # a message put after the look above sets the event: no wait is lost
            wake.wait(IDLE)
            wake.clear()
        if msg and context_id is not None:
            self._serve_request(msg, context_id)
        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            self.is_released = True
            self.is_established = False
            _trigger(self, "EVT_RELEASED")
            self.kill()
            return
        if self.acse.is_aborted():
            self.dul.receive_pdu(wait=False)
            self.is_aborted = True
            self.is_established = False
            _trigger(self, "EVT_ABORTED")
            self.kill()
            return
        if not self.dul.is_alive():
            self.kill()
            return
        if self.dul.idle_timer_expired():
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()
            self.kill()
            return


def _trigger(assoc: Association, name: str) -> None:
    from pynetdicom import evt

    evt.trigger(assoc, getattr(evt, name), {})
