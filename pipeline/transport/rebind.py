"""An input edge bound anew while the node runs: its producer was placed on another machine.

On a cluster an edge's transport follows the placement (shared memory within a machine, tcp
between machines). When a producer's machine is lost and the producer is placed again, on
the machine of a consumer that kept running (or away from it), the consumer binds that input
anew, of the new kind (``pipeline.runtime.protocol.Rebind``). The old socket may still hold
what the dead producer sent last: ``RebindingInput`` reads it first, and the new edge's first
message (the producer's next incarnation; nothing more of the dead one can come after it)
retires the old socket. Then the object *becomes* the new edge (``__class__``/``__dict__``,
as ``EdgeSender.hand_over`` does on the producer's side), so the worker's loops, its joiner's
release tokens and its statistics go on with it, at no cost per message afterwards.

What the consumer counted of the dead producer (its incarnation, the last number heard, the
``ProducerDied`` it was told, ``lost_upstream``) and its place in the progress file go over
to the new edge, so "received + counted losses == sent" holds across the move.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.messages import Message
from pipeline.transport.channels import InputEdge

__all__ = ["RebindingInput"]


class RebindingInput(InputEdge):
    """``old`` (the dead producer's socket) read to its end, then ``new``.

    ``retire`` is called with the old edge just before it is closed (the worker takes its
    socket out of its poller).
    """

    def __init__(self, old: InputEdge, new: InputEdge, retire: Callable[[InputEdge], None]) -> None:
        # nothing of its own is bound: no InputEdge.__init__
        self.old = old
        self.new = new
        self._retire = retire
        self.plan = new.plan
        self.name = new.name
        self.port = new.port
        self.tcp = new.tcp
        self.sock = new.sock
        self.endpoint = new.endpoint
        self.key = new.key
        self.ended = False
        self.eos_pending = False

    def replace_new(self, new: InputEdge) -> InputEdge:
        """Bound anew once more before the first incarnation came (the producer moved
        again): ``new`` is the edge now; returns the one it replaces (to be closed)."""
        before, self.new = self.new, new
        self.plan, self.tcp, self.sock = new.plan, new.tcp, new.sock
        self.endpoint, self.key = new.endpoint, new.key
        return before

    # the counts live in the old edge until the switch ---------------------------------------
    @property
    def lost_upstream(self) -> int:
        return self.old.lost_upstream

    @lost_upstream.setter
    def lost_upstream(self, value: int) -> None:
        self.old.lost_upstream = value

    @property
    def malformed(self) -> int:
        return self.old.malformed

    @malformed.setter
    def malformed(self, value: int) -> None:
        self.old.malformed = value

    # reading -------------------------------------------------------------------------------
    def has_message(self) -> bool:
        if self.old.has_message():
            return True
        if not self.new.has_message():
            return False
        self._switch()  # from here on this object is the new edge
        return True

    def recv(self) -> tuple[Message | None, int, int, int]:
        # only after has_message() found one in the old socket (after the switch, the new
        # edge's own recv runs)
        return self.old.recv()

    def _switch(self) -> None:
        """The producer's next incarnation spoke: the old socket is done with."""
        old, new = self.old, self.new
        old.flush_releases()
        new._gen, new._last_n, new._unsent = old._gen, old._last_n, old._unsent
        new.lost_upstream, new.malformed = old.lost_upstream, old.malformed
        new.progress, new.progress_at = old.progress, old.progress_at
        new._release_upto = old._release_upto
        self._retire(old)
        old.close()
        state: dict[str, Any] = new.__dict__
        self.__class__ = new.__class__  # type: ignore[assignment]
        self.__dict__ = state

    # the rest goes to the edge whose messages it concerns -----------------------------------
    def producer_died(self, sent: int) -> None:
        self.old.producer_died(sent)

    def end_now(self) -> None:
        self.new.end_now()

    def release(self, n: int) -> None:
        self.old.release(n)

    def flush_releases(self) -> None:
        self.old.flush_releases()
        self.new.flush_releases()

    def may_sleep(self) -> bool:
        # both asked (a fast-path edge asks its producer for a doorbell there)
        old, new = self.old.may_sleep(), self.new.may_sleep()
        return old and new

    def close(self) -> None:
        self.old.close()
        self.new.close()
