"""What the market has made and not yet returned: events in buckets of time, taken out in order.

`MarketSim` makes events ahead of `advance`, instrument by instrument (each instrument's in
order, the instruments in no particular order), and `advance` must return them in time order.
They wait here: an event at float time t (ns since the market's start) is in bucket
int((t - origin) * scale) - base, so a bucket's index grows with its events' times, and the
buckets before the one a time falls in hold only events before it. The bucket being taken from
is sorted once into a view; the buckets themselves keep their events in the order they came,
with their float times, so that more can come (a contract that runs later) and it is sorted
again.

A chunk made at once is one bucket, filled in instrument order (`put_in_order`): one sort. A
staggered chunk has buckets of about 16 events, kept from one chunk to the next (`place`).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from functools import partial
from operator import itemgetter

from mocks.sim.events import Event

_ts_ns = itemgetter(0)  # every event's first field
Rank = tuple[int, int | str]


def _sorted_by(items: list[Event], keys: list[float]) -> list[Event]:
    """`items` in the (stable) order of `keys`, its parallel list of sort keys.

    The sort asks for each item's key once, in list order, before it sorts, so the key function
    can simply hand out the next of `keys`. Sorting the events themselves (not their indices)
    leaves `take` a plain slice to return."""
    return sorted(items, key=partial(next, iter(keys)))


class Pending:
    """The buckets, and the sorted view of the one being taken from."""

    def __init__(self, rank: Callable[[Event], Rank], time_of: Callable[[Event], float]) -> None:
        self._rank = rank  # an instrument's place among the others at the same time
        self._time_of = time_of  # an event's float time, looked up in its instrument's lists
        self.events: list[list[Event]] = [[]]
        self.times: list[list[float]] = [[]]
        self.origin = 0.0
        self.scale = 0.0
        self.base = 0
        self.next = 0  # the buckets before this one are empty
        self.ordered = False  # each bucket holds its events in instrument order
        # The bucket in `view` (sorted; -1: none) and how much of it is returned: what is
        # before `returned_below` (float ns).
        self.sorted = -1
        self.view: list[Event] = []
        self.view_pos = 0
        self.returned_below = 0.0

    def place(self, start: int, reach: int, scale: float, keep: bool) -> None:
        """Buckets from `start` to `reach` (ns since the start): the ones holding events still
        to be returned are kept with `keep` (a staggered chunk), else they are cut anew, `scale`
        buckets per ns (when nothing is pending)."""
        self.drop_view()
        if keep and any(self.times[self.next :]):
            drop = self.next
            del self.events[:drop], self.times[:drop]
            self.base += drop
        else:
            self.scale, self.origin, self.base = scale, float(start), 0
            self.events, self.times = [], []
        self.next = 0
        count = int((reach - self.origin) * self.scale) - self.base
        while len(self.times) < count + 2:  # + 2: the reach's own, and rounding
            self.events.append([])
            self.times.append([])

    def clear(self) -> None:
        """Empty every bucket (all that was made goes back in: a rollback)."""
        count = len(self.times)
        self.events = [[] for _ in range(count)]
        self.times = [[] for _ in range(count)]
        self.sorted, self.view, self.view_pos = -1, [], 0

    def held(self) -> int:
        """How many events are waiting to be returned."""
        return sum(len(b) for b in self.times) - self.view_pos

    def put(self, events: list[Event], times: list[float]) -> None:
        """Events not yet returned, one instrument's, in order; any before the first bucket
        (watched inside a chunk `next_time` made ahead of `now`) go in the first, which `take`
        splits by time."""
        if not times:
            return
        origin, scale, base = self.origin, self.scale, self.base
        bucket_events, bucket_times = self.events, self.times
        first = max(0, int((times[0] - origin) * scale) - base)
        last = max(0, int((times[-1] - origin) * scale) - base)
        if first <= self.sorted <= last:  # it will need sorting again
            self.drop_view()
        self.ordered = False
        if first == last:  # all in one
            bucket_events[first] += events
            bucket_times[first] += times
            return
        for event, t in zip(events, times, strict=True):
            i = int((t - origin) * scale) - base
            if i < 0:
                i = 0
            bucket_events[i].append(event)
            bucket_times[i].append(t)

    def put_in_order(self, events: list[Event], times: list[float]) -> None:
        """A chunk made at once, in one bucket: the instruments' events one instrument after
        another, in instrument order (after the underlyings' reports, `put` before it)."""
        self.drop_view()
        self.events[0] += events
        self.times[0] += times
        self.ordered = True

    def take(self, until_rel: int, start_ns: int) -> list[Event]:
        """Every event due at or before `until_rel` (ns since the start), in time order: those
        at float times below `until_rel + 1` (ts_ns at most `start_ns + until_rel`)."""
        bound = until_rel + 1.0
        last_ns = start_ns + until_rel
        at = int((bound - self.origin) * self.scale) - self.base
        last = max(0, at, self.next)
        bucket_times = self.times
        if last == self.next == self.sorted:  # on in the bucket last split
            return self.take_sorted(last_ns, bound)
        count = len(bucket_times)
        out: list[Event] = []
        for i in range(self.next, min(last, count)):
            if bucket_times[i]:
                self._sort(i)
                out += self.view[self.view_pos :]
                self.view_pos = len(self.view)
                self.drop_view()
        if last >= count:
            self.next = count
            return out
        if bucket_times[last]:
            self._sort(last)
            out += self.take_sorted(last_ns, bound)
        self.next = last
        return out

    def take_sorted(self, last_ns: int, bound: float) -> list[Event]:
        """From the view, the events due up to `last_ns` (float times below `bound`)."""
        pos = self.view_pos
        k = bisect_right(self.view, last_ns, pos, key=_ts_ns)
        self.view_pos = k
        self.returned_below = bound
        return self.view[pos:k]

    def first_time(self) -> float:
        """The float time of the earliest event waiting (inf: none)."""
        times = self.times
        for i in range(self.next, len(times)):
            if times[i]:
                self._sort(i)
                if self.view_pos < len(self.view):
                    return self._time_of(self.view[self.view_pos])
        return float("inf")

    def drop_view(self) -> None:
        """Forget the view, first taking what was returned of it out of its bucket (what is
        before the bound of the last `take`)."""
        i = self.sorted
        if i < 0:
            return
        if self.view_pos == len(self.view):
            self.events[i], self.times[i] = [], []
        elif self.view_pos:
            bound = self.returned_below
            pairs = zip(self.events[i], self.times[i], strict=True)
            kept = [(e, t) for e, t in pairs if t >= bound]
            self.events[i] = [e for e, _ in kept]
            self.times[i] = [t for _, t in kept]
        self.sorted, self.view, self.view_pos = -1, [], 0

    def _sort(self, i: int) -> None:
        if self.sorted != i:
            self.drop_view()
            self.view = self._in_order(self.events[i], self.times[i])
            self.sorted = i

    def _in_order(self, events: list[Event], times: list[float]) -> list[Event]:
        """A bucket's events in time order; ties in instrument order (underlyings by root,
        then contracts by key order), which does not depend on when the instruments were
        watched or run, and each instrument's own events in the order it made them.

        The sort is a stable one on the events' float times: comparing floats is far cheaper
        than comparing tuples, and two instruments at the same float time are all but unheard
        of (but for indices, reported on the same grid). A bucket filled in instrument order
        needs no more than that."""
        if self.ordered:
            return _sorted_by(events, times)
        ordered_times = sorted(times)
        if len(set(ordered_times)) == len(ordered_times):
            return _sorted_by(events, times)
        ranks = [self._rank(event) for event in events]
        order = sorted(range(len(events)), key=lambda i: (times[i], ranks[i], i))
        return [events[i] for i in order]
