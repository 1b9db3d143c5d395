"""Pure delivery decisions for one socket: per-room ordering and dedupe, and the bounded send queue.

No I/O here; ``realtime`` feeds these objects with live events (from pub/sub) and history (from
MongoDB) and writes what they return to the socket.

Resume without gap or duplicate (docs/architecture.md, "Delivery guarantees"): the socket
subscribes to the room first, puts the room's :class:`RoomCursor` in *replay* mode (live events
are buffered), replays the history after the client's last seq from MongoDB, then ends the
replay: buffered live events are admitted in arrival order and anything already replayed is
dropped by seq.

Live ordering: publishes from different processes can overtake each other, so a ``message`` whose
seq is ahead of the next expected one is held back; the caller fills the gap from MongoDB after a
short delay (a lost publish, e.g. a process killed between storing and publishing, is recovered
the same way).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final, Literal

# How many skipped seqs a cursor remembers (to deliver them late if they show up after all).
MAX_HOLES: Final = 256


@dataclass(slots=True)
class Outgoing:
    """A frame ready to write: serialised once per process, shared by every local socket.

    Treated as immutable except ``frame``: the WebSocket frame's bytes, built by the first
    socket that writes it directly (chatserver/realtime.py, ``DirectWrite``) and reused by the
    others, since a server's frames are unmasked and so the same for every socket.
    """

    type: str
    text: str
    room_id: str | None = None
    # Only for ``message`` frames: the new message's seq, which ordering and dedupe work on.
    seq: int | None = None
    # Publish time (unix seconds) for delivery-latency metrics; None for replayed history.
    published_at: float | None = None
    ephemeral: bool = False
    # Who the frame is about (typing, presence, read), so sockets can filter without parsing.
    user_id: str | None = None
    online: bool | None = None
    frame: bytes | None = field(default=None, repr=False, compare=False)


@dataclass(slots=True)
class Step:
    """What the caller must do after feeding a cursor: write ``deliver``, maybe fill a gap."""

    deliver: list[Outgoing] = field(default_factory=list)
    gap: bool = False


class RoomCursor:
    """Ordering and dedupe state of one room on one socket.

    ``last_seq`` is the highest message seq delivered (None: not known yet, the first live
    message sets it; the hub gives every room a baseline before it goes live, as the first
    message to arrive may be ahead of one published later). Non-message frames (edits,
    reactions, read receipts, typing) carry no new seq and pass straight through, except that a
    replay buffers them too so order is kept.
    """

    def __init__(self, last_seq: int | None = None) -> None:
        self.last_seq = last_seq
        self.replaying = False
        self._buffer: list[Outgoing] = []
        self._held: dict[int, Outgoing] = {}
        self._holes: set[int] = set()

    @property
    def buffered(self) -> int:
        return len(self._buffer) + len(self._held)

    @property
    def has_gap(self) -> bool:
        """Messages are held back waiting for a missing seq."""
        return bool(self._held)

    @property
    def next_fill_from(self) -> int:
        """The seq after which history must be read to fill the current gap."""
        return self.last_seq or 0

    def live(self, item: Outgoing) -> Step:
        """An event from pub/sub."""
        if self.replaying:
            self._buffer.append(item)
            return Step()
        return self._admit(item)

    def set_baseline(self, seq: int) -> None:
        """A cursor that has seen no message yet treats ``seq`` as already delivered (a room the
        client goes live in without resuming starts there)."""
        if self.last_seq is None:
            self.last_seq = seq

    def begin_replay(self, after_seq: int | None = None) -> None:
        """Start a replay; ``after_seq`` (a client's resume point) resets the cursor."""
        self.replaying = True
        if after_seq is not None:
            self.last_seq = after_seq
            self._holes.clear()
            self._held = {s: item for s, item in self._held.items() if s > after_seq}

    def replayed(self, seq: int, item: Outgoing) -> list[Outgoing]:
        """A message read from MongoDB during a replay (history comes in ascending seq)."""
        last = self.last_seq
        if last is not None and seq <= last:
            if seq in self._holes:
                self._holes.discard(seq)
                return [item]
            return []
        if last is not None and seq > last + 1:
            self._remember_holes(range(last + 1, seq))
        self.last_seq = seq
        self._held.pop(seq, None)
        return [item]

    def end_replay(self) -> Step:
        """History is exhausted: admit the live events buffered meanwhile, in arrival order."""
        self.replaying = False
        step = Step()
        if self.last_seq is not None:
            # Held messages the replay already covered are duplicates now.
            self._held = {s: i for s, i in self._held.items() if s > self.last_seq}
        step.deliver.extend(self._release_held())
        buffered, self._buffer = self._buffer, []
        for item in buffered:
            sub = self._admit(item)
            step.deliver.extend(sub.deliver)
        step.gap = self.has_gap
        return step

    def _admit(self, item: Outgoing) -> Step:
        seq = item.seq
        if seq is None:
            return Step([item])
        last = self.last_seq
        if last is None:
            self.last_seq = seq
            return Step([item])
        if seq <= last:
            if seq in self._holes:  # late arrival of a seq the history did not have yet
                self._holes.discard(seq)
                return Step([item])
            return Step()  # duplicate
        if seq == last + 1:
            self.last_seq = seq
            return Step([item, *self._release_held()])
        self._held.setdefault(seq, item)
        return Step(gap=True)

    def _release_held(self) -> list[Outgoing]:
        out: list[Outgoing] = []
        while self.last_seq is not None and self.last_seq + 1 in self._held:
            self.last_seq += 1
            out.append(self._held.pop(self.last_seq))
        return out

    def _remember_holes(self, seqs: range) -> None:
        self._holes.update(seqs[-MAX_HOLES:])
        while len(self._holes) > MAX_HOLES:
            self._holes.discard(min(self._holes))


Offer = Literal["queued", "dropped", "overflow"]


class SendQueue:
    """A socket's bounded outgoing queue.

    When full, an ephemeral frame (typing, presence) is dropped; a durable frame first evicts the
    oldest queued ephemeral frame, and if there is none the socket is a slow consumer
    (``overflow``): the caller disconnects it and the client resumes from history.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self._items: deque[Outgoing] = deque()
        self.dropped = 0
        # A popped frame the writer has not written yet: later frames must wait behind it.
        self._in_hand = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def space(self) -> int:
        return self.maxsize - len(self._items)

    def offer(self, item: Outgoing) -> Offer:
        if len(self._items) < self.maxsize:
            self._items.append(item)
            return "queued"
        if item.ephemeral:
            self.dropped += 1
            return "dropped"
        for index, queued in enumerate(self._items):
            if queued.ephemeral:
                del self._items[index]
                self.dropped += 1
                self._items.append(item)
                return "queued"
        return "overflow"

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being written: a new frame may be written at once."""
        return not self._items and not self._in_hand

    def pop(self) -> Outgoing | None:
        """The next frame to write; the queue is not idle until the writer calls ``written``."""
        if not self._items:
            return None
        self._in_hand = True
        return self._items.popleft()

    def written(self) -> None:
        """The frame last popped is written (or will never be)."""
        self._in_hand = False
