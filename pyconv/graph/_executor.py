"""The executor: a flat list of steps over integer value slots, with a liveness-based
memory plan per input signature.

The first run for a signature allocates every value and records shapes, dtypes and
which outputs are views of which inputs. From that, :class:`MemoryPlan` places each
float32 result of an operator that can write into a given buffer (``supports_out``)
at an offset of one arena (a Concat's inputs, where each is one contiguous block of its
output, inside the output's buffer at their blocks: their producers write there and the
concat copies nothing), reusing the bytes of values that are dead by then (greedy by
size, the intervals being [producing step, last step reading it or any view of it]; first
fit by time when a huge fan-in would make that quadratic). A Program keeps the plans of
its ``max_plans`` most recently used signatures. Later runs take an arena from a pool
(one per concurrent run, so runs from several threads never share a buffer) and hand
each operator its planned ``out``. Each arena also
holds the steps bound to its buffers (:meth:`pyconv.ops.Op.bind`): the kernels with their
geometry resolved for the planned shapes, so a run costs little Python beyond the kernels.
"""
from __future__ import annotations

import bisect
import functools
import heapq
import math
import threading
import time
from collections import OrderedDict, defaultdict

import numpy as np

from pyconv._gc import collection_paused
from pyconv.arithmetic import ALLOCATION_BUDGET, AllocationBudget
from pyconv.errors import InvalidArgument, MemoryLimitExceeded, PyconvError, RunFailed

ALIGN = 64


class Step:
    __slots__ = ("op", "node", "ins", "outs")

    def __init__(self, op, node, ins, outs):
        self.op, self.node, self.ins, self.outs = op, node, ins, outs


class Arena:
    """One run's buffers: the bytes, the planned slots' views into them, and the steps
    bound to those views (built by the Program on first use): per step, (call, input
    slots, output slots, slots freed after it, Step)."""
    __slots__ = ("buf", "views", "steps")

    def __init__(self, buf, views):
        self.buf, self.views, self.steps = buf, views, None


class MemoryPlan:
    """Arena offsets of planned slots for one input signature.

    Attributes
    ----------
    arena_bytes : int
        Size of the arena one run needs.
    unplanned_bytes : int
        Bytes of intermediate values without a planned buffer (views excluded).
    naive_bytes : int
        What all intermediate values would take without reuse.
    peak_bytes : int
        The arena plus the most bytes of unplanned values alive at once, each counted
        through the value that owns its memory (as a run under a memory limit counts):
        what a run of this signature holds at its peak.
    in_place : dict
        Step index -> per input, whether the plan placed it in its block of the step's
        output (a Concat whose producers write straight into it; see ``_blocks``).

    ``const_slots`` maps the slots of constants to their values.
    """

    def __init__(self, nslots, steps, record, output_slots, const_slots, input_slots):
        shapes, aliases = record["shapes"], record["aliases"]
        #: (shape, dtype) of every value the recording run produced, by slot.
        self.shapes = dict(shapes)
        self.slot_info = {}
        parent = list(range(nslots))

        def find(a):
            while parent[a] != a:
                parent[a] = parent[parent[a]]
                a = parent[a]
            return a

        for out, ins in aliases:
            for i in ins:
                ra, rb = find(out), find(i)
                if ra != rb:
                    # The root is the older value (the one that owns the memory).
                    if ra < rb:
                        ra, rb = rb, ra
                    parent[ra] = rb
        define, last = {}, {}
        for t, s in enumerate(steps):
            for o in s.outs:
                if o >= 0:
                    define.setdefault(o, t)
            for i in s.ins:
                if i >= 0:
                    last[i] = t
        end = len(steps)
        group_end = {}
        pinned = set()
        for slot in range(nslots):
            r = find(slot)
            e = last.get(slot, define.get(slot, -1))
            if slot in output_slots:
                e = end + 1
                pinned.add(r)
            if slot in const_slots or slot in input_slots:
                pinned.add(r)
            group_end[r] = max(group_end.get(r, -1), e)

        def writable(o):
            """Whether slot ``o`` can have a planned buffer: a float32 output 0 of an op
            that writes into a given buffer, owning its memory, not pinned."""
            t = define.get(o)
            if t is None or steps[t].outs[0] != o or not steps[t].op.supports_out:
                return False
            shape, dtype = shapes.get(o, ((), None))
            return (find(o) == o and o not in pinned and dtype == np.float32
                    and math.prod(shape) > 0)

        def spec(i):
            const = const_slots.get(i)
            return (const.shape, const.dtype) if isinstance(const, np.ndarray) \
                else shapes.get(i)

        #: slot -> (slot of the buffer it lies in, byte offset): inputs written straight
        #: into their blocks of a Concat's output (and concats that are runs of another's).
        inside, self.in_place = _blocks(steps, spec, writable)
        start, group_stop = dict(define), dict(group_end)
        for slot, (root, _) in inside.items():
            start[root] = min(start[root], define[slot])
            group_stop[root] = max(group_stop[root], group_end[slot])
        candidates = []
        self.naive_bytes = 0
        for t, s in enumerate(steps):
            for k, o in enumerate(s.outs):
                if o < 0 or o not in shapes:
                    continue
                shape, dtype = shapes[o]
                nbytes = math.prod(shape) * np.dtype(dtype).itemsize
                if find(o) == o:
                    self.naive_bytes += nbytes
                if k == 0 and o not in inside and writable(o):
                    candidates.append((nbytes, start[o], group_stop[o], o, shape))
        self.offsets = {}
        placed = _place(candidates)
        for (offset, size), (_, _, _, slot, shape) in zip(placed, candidates):
            self.offsets[slot] = (offset, shape)
        for slot, (root, offset) in inside.items():
            self.offsets[slot] = (self.offsets[root][0] + offset, shapes[slot][0])
        self.arena_bytes = max((o + s for o, s in placed), default=0)
        planned = sum(c[0] for c in candidates) + sum(
            math.prod(shapes[slot][0]) * 4 for slot in inside)
        self.unplanned_bytes = self.naive_bytes - planned
        external = {find(s) for s in const_slots} | {find(s) for s in input_slots}
        changes = []        # (step, bytes) as unplanned owners appear and go
        for slot, (shape, dtype) in shapes.items():
            if find(slot) != slot or slot in external or slot in self.offsets:
                continue
            nbytes = math.prod(shape) * np.dtype(dtype).itemsize
            changes += [(define.get(slot, 0), nbytes), (group_end[slot] + 1, -nbytes)]
        held = unplanned_peak = 0
        for _, change in sorted(changes):       # at one step, what goes before what comes
            held += change
            unplanned_peak = max(unplanned_peak, held)
        self.peak_bytes = self.arena_bytes + unplanned_peak
        # Arenas between runs. list.pop / append are atomic (no lock: a lock pair cost
        # as much as a small model's glue step); the cap may be passed by a racing run.
        self._pool = []

    def acquire(self):
        try:
            return self._pool.pop()
        except IndexError:
            pass
        buf = np.empty(self.arena_bytes + ALIGN, np.uint8)
        base = (-buf.ctypes.data) % ALIGN
        views = {}
        for slot, (off, shape) in self.offsets.items():
            n = math.prod(shape) * 4
            views[slot] = buf[base + off:base + off + n].view(np.float32).reshape(shape)
        return Arena(buf, views)

    def release(self, arena):
        if len(self._pool) < 8:
            self._pool.append(arena)


def _blocks(steps, spec, writable):
    """Concat inputs placed in their blocks of the output (:meth:`Op.input_blocks`), so
    their producers write there and the concat copies nothing.

    Returns ``inside`` (slot -> (slot of the buffer, byte offset)) and ``in_place`` (step
    -> per input, whether it lies in its block of that step's output). Concats are taken
    largest first; one whose output is ``writable`` and not inside another's is a buffer,
    each writable input not yet placed goes into its block (a value is placed once: an
    input of two concats is copied by the second), and a concat whose inputs are a run of
    another's inputs at the same relative offsets (DenseNet's cat_k within cat_{k+1}) is a
    view of that run. Only float32 is placed (see ``writable``)."""
    blocks = {}
    by_first = defaultdict(list)            # first input slot -> concat steps
    for t, s in enumerate(steps):
        if s.outs and s.outs[0] >= 0 and all(i >= 0 for i in s.ins):
            specs = [spec(i) for i in s.ins]
            if all(sp is not None for sp in specs) and spec(s.outs[0]) is not None:
                offsets = s.op.input_blocks(specs)
                if offsets is not None:
                    blocks[t] = offsets
                    by_first[s.ins[0]].append(t)
    inside, in_place, buffers = {}, {}, set()
    order = sorted(blocks, key=lambda t: (-math.prod(spec(steps[t].outs[0])[0]), -t))
    for t in order:
        ins, out, offsets = steps[t].ins, steps[t].outs[0], blocks[t]
        if out in inside:
            root, base = inside[out]
        elif writable(out):
            root, base = out, 0
            buffers.add(out)
        else:
            continue
        flags = []
        for i, offset in zip(ins, offsets):
            at = (root, base + 4 * offset)
            if i not in inside and i not in buffers and i != out and writable(i):
                inside[i] = at
            flags.append(inside.get(i) == at)
        for j, first in enumerate(ins):
            for t2 in by_first.get(first, ()):
                run, out2 = steps[t2].ins, steps[t2].outs[0]
                if (t2 == t or out2 in inside or out2 in buffers or run != ins[j:j + len(run)]
                        or blocks[t2] != [o - offsets[j] for o in offsets[j:j + len(run)]]
                        or not writable(out2)):
                    continue
                inside[out2] = (root, base + 4 * offsets[j])
        if any(flags):
            in_place[t] = flags
    return inside, in_place


def _owner(a):
    """The array that owns the memory ``a`` sees (``a`` itself unless it is a view)."""
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


class _LiveBytes:
    """The activation bytes a run holds: each live value counted through the array that
    owns its memory, once per owner however many values view it, for as long as any
    does (a view keeps all of its base alive). Owners of feeds and constants are not
    activations and are not counted."""
    __slots__ = ("total", "_refs", "_slot_owner", "_exclude")

    def __init__(self, exclude):
        self.total = 0
        self._refs = {}          # id(owner) -> [owner, live values viewing it]
        self._slot_owner = {}
        self._exclude = exclude

    def add(self, slot, value):
        if not isinstance(value, np.ndarray):
            return
        owner = _owner(value)
        key = id(owner)
        if key in self._exclude:
            return
        ref = self._refs.get(key)
        if ref is None:
            self._refs[key] = [owner, 1]
            self.total += owner.nbytes
        else:
            ref[1] += 1
        self._slot_owner[slot] = key

    def drop(self, slot):
        key = self._slot_owner.pop(slot, None)
        if key is None:
            return
        ref = self._refs[key]
        ref[1] -= 1
        if not ref[1]:
            del self._refs[key]
            self.total -= ref[0].nbytes


#: Work (interval steps indexed) the size-ordered placement may do before the plan is
#: made by the time-ordered one instead (a huge fan-in: every buffer alive together).
PLACEMENT_WORK = 1 << 21


def _place(candidates):
    """(offset, size) in the arena per candidate (nbytes, first step, last step, ...).

    Greedy by size (each buffer, largest first, at the lowest offset free during its
    life): the tighter plan. A buffer alive during [a, b] meets those placed that are
    alive at step a or start within (a, b]: both are indexed by step, so a deep graph of
    short-lived values costs time linear in its length. When the work (steps indexed
    plus buffers compared) passes PLACEMENT_WORK, as with a huge fan-in where every
    buffer lives alongside every other, first fit in order of time instead: O(n log n)."""
    sizes = [(c[0] + ALIGN - 1) // ALIGN * ALIGN for c in candidates]
    alive_at = defaultdict(list)    # step -> (offset, size) of placed buffers alive then
    starting_at = defaultdict(list)     # step -> (offset, size) of those starting then
    placed = [None] * len(candidates)
    work = 0
    for k in sorted(range(len(candidates)), key=lambda k: -candidates[k][0]):
        _, start, stop = candidates[k][:3]
        size = sizes[k]
        busy = set(alive_at.get(start, ()))
        for t in range(start + 1, stop + 1):
            busy.update(starting_at.get(t, ()))
        work += 2 * (stop - start + 1) + len(busy)
        if work > PLACEMENT_WORK:
            return _place_by_time(candidates, sizes)
        offset = 0
        for off, sz in sorted(busy):
            if offset + size <= off:
                break
            offset = max(offset, off + sz)
        placed[k] = (offset, size)
        starting_at[start].append((offset, size))
        for t in range(start, stop + 1):
            alive_at[t].append((offset, size))
    return placed


def _place_by_time(candidates, sizes):
    """First fit in order of first step, freeing buffers past their last step."""
    placed = [None] * len(candidates)
    free = []           # (offset, size) free below the top, sorted, adjacent ones merged
    ending = []         # heap of (last step, offset, size) of the buffers in use
    top = 0
    for k in sorted(range(len(candidates)), key=lambda k: candidates[k][1]):
        _, start, stop = candidates[k][:3]
        while ending and ending[0][0] < start:
            _, off, sz = heapq.heappop(ending)
            i = bisect.bisect(free, (off, sz))
            free.insert(i, (off, sz))
            # merge with the next, then the previous block
            if i + 1 < len(free) and off + sz == free[i + 1][0]:
                free[i] = (off, sz + free.pop(i + 1)[1])
            if i > 0 and free[i - 1][0] + free[i - 1][1] == free[i][0]:
                free[i - 1] = (free[i - 1][0], free[i - 1][1] + free.pop(i)[1])
        size = sizes[k]
        for i, (off, sz) in enumerate(free):
            if sz >= size:
                free[i:i + 1] = [(off + size, sz - size)] if sz > size else []
                offset = off
                break
        else:
            if free and free[-1][0] + free[-1][1] == top:     # grow the last free block
                offset = free.pop()[0]
            else:
                offset = top
            top = max(top, offset + size)
        placed[k] = (offset, size)
        heapq.heappush(ending, (stop, offset, size))
    return placed


class Program:
    """Steps over slots; ``run`` is re-entrant (no state changes but caches)."""

    def __init__(self, graph, ops, plan_memory=True, memory_limit=0, max_plans=8):
        self.graph = graph
        #: Bytes of activations a run may hold at once (0: no limit).
        self.memory_limit = int(memory_limit or 0)
        #: Memory plans kept (least recently used dropped first), each with its arenas.
        self.max_plans = max(1, int(max_plans))
        names = {}

        def slot(name):
            if name not in names:
                names[name] = len(names)
            return names[name]

        self.input_names = [v.name for v in graph.inputs]
        self.input_slots = [slot(n) for n in self.input_names]
        self.const_slots = {}
        for name, value in graph.constants.items():
            self.const_slots[slot(name)] = value
        self.steps = []
        for node, op in zip(graph.nodes, ops):
            ins = [slot(x) if x else -1 for x in node.inputs]
            outs = [slot(o) if o else -1 for o in node.outputs]
            self.steps.append(Step(op, node, ins, outs))
        self.output_names = graph.output_names
        self.slots = names
        for o in self.output_names:
            slot(o)
        self.nslots = len(names)
        self.output_slot = {n: names[n] for n in self.output_names}
        # Two slots past the graph's: an absent input (-1) reads the first, always None;
        # an absent output writes the second. The bound loop then needs no tests.
        self._absent_in, self._absent_out = self.nslots, self.nslots + 1
        self._fast_ins = [[self._absent_in if i < 0 else i for i in s.ins] for s in self.steps]
        self._fast_outs = [[self._absent_out if o < 0 else o for o in s.outs]
                           for s in self.steps]
        template = [None] * (self.nslots + 2)
        for s, v in self.const_slots.items():
            template[s] = v
        self.template = template
        # Last step reading each slot: values are dropped after it (graph outputs kept).
        keep = set(self.output_slot.values())
        last = {}
        for t, s in enumerate(self.steps):
            for i in s.ins:
                if i >= 0 and i not in self.const_slots:
                    last[i] = t
        freed = defaultdict(list)
        for i, t in last.items():
            if i not in keep:
                freed[t].append(i)
        self.free_after = [()] * len(self.steps)     # most steps free nothing: one tuple
        for t, slots in freed.items():
            self.free_after[t] = tuple(slots)
        self.plan_memory = plan_memory
        # input signature -> MemoryPlan, least recently used first (self.max_plans kept).
        self.plans = OrderedDict()
        self._plan_lock = threading.Lock()
        # (signature, plan) of the last lookup, set under the lock: a repeated signature
        # (the usual run) is found without the lock and the reordering it needs.
        self._recent = None
        # Memory owners that a run's accounting does not count (constants).
        self._const_owners = {id(_owner(v)) for v in self.const_slots.values()
                              if isinstance(v, np.ndarray)}

    def _record(self, vals, step, outs, record):
        for o, v in zip(step.outs, outs):
            if o >= 0 and isinstance(v, np.ndarray):
                record["shapes"][o] = (v.shape, v.dtype)
                al = [i for i in step.ins if i >= 0 and vals[i] is not None
                      and isinstance(vals[i], np.ndarray) and np.may_share_memory(v, vals[i])]
                if al:
                    record["aliases"].append((o, al))

    def _check_limit(self, nbytes, where):
        if self.memory_limit and nbytes > self.memory_limit:
            raise MemoryLimitExceeded(
                f"{where} needs {nbytes:,} bytes of activations, above the session's "
                f"memory_limit_bytes={self.memory_limit:,}")

    def run(self, feeds, wanted, profile=None, stop=None, key=None):
        """Runs with ``feeds`` (slot order of the graph inputs); returns the values of the
        slots in ``wanted``. ``stop`` (a RunOptions) ends the run with RunFailed before the
        next node once its ``terminate`` is set, from any thread. ``key``: the feeds'
        signature (``signature(feeds)``) when the caller has it."""
        # ONNX arithmetic is plain IEEE: log(0) = -inf, sqrt(-1) = NaN, silently (as in
        # onnxruntime), so NumPy's floating-point warnings are off for the whole run.
        with np.errstate(all="ignore"):
            return self._run(feeds, wanted, profile, stop, key)

    def _failure(self, step, ins, exc):
        """The error for an operator that raised a non-pyconv exception."""
        shapes = ", ".join(f"{step.node.inputs[i]}: "
                           f"{getattr(v, 'shape', None)} {getattr(v, 'dtype', '')}"
                           for i, v in enumerate(ins) if v is not None)
        what = {IndexError: "an axis or index its inputs do not have",
                KeyError: "an entry its inputs or attributes do not have",
                MemoryError: "more memory than the system gives",
                RecursionError: "deeper recursion than Python allows"}.get(
            type(exc), "values it cannot compute with")
        return InvalidArgument(f"{step.node.label} cannot run on its inputs ({shapes}): the "
                               f"{step.node.op_type} operator met {what}, so these shapes, "
                               f"dtypes or values do not fit it (Python's "
                               f"{type(exc).__name__}: {exc})")

    def _bind(self, plan, views):
        """Per step, ``call(inputs) -> outputs``: the operator bound to the planned shapes
        and this arena's buffer (:meth:`pyconv.ops.Op.bind`), else its plain ``run``."""
        calls = []
        for t, step in enumerate(self.steps):
            out = views.get(step.outs[0])
            call = None
            specs = [self._spec(plan, i) for i in step.ins]
            flags = plan.in_place.get(t)
            if flags is not None and out is not None:
                call = step.op.bind_placed(specs, out, [views[i] if here else None
                                                        for i, here in zip(step.ins, flags)])
            elif all(sp is not None for sp, i in zip(specs, step.ins) if i >= 0):
                call = step.op.bind(specs, out)
            if call is None:
                call = _unbound(step.op, out)
            calls.append(call)
        return calls

    def _spec(self, plan, slot):
        """(shape, dtype) of a slot under a plan: recorded, or a constant's."""
        if slot < 0:
            return None
        const = self.const_slots.get(slot)
        if isinstance(const, np.ndarray):
            return const.shape, const.dtype
        return plan.shapes.get(slot)

    def _run(self, feeds, wanted, profile, stop, key=None):
        vals = list(self.template)
        for s, v in zip(self.input_slots, feeds):
            vals[s] = v
        if key is None:
            key = signature(feeds)
        plan = self._plan(key) if self.plan_memory else None
        if plan is not None and profile is None and not self.memory_limit:
            return self._run_bound(plan, vals, wanted, stop)
        record = None
        arena = None
        views = {}
        if plan is None and self.plan_memory:
            record = {"shapes": {s: (v.shape, v.dtype) for s, v in zip(self.input_slots, feeds)},
                      "aliases": []}
        elif plan is not None:
            self._check_limit(plan.peak_bytes, "the memory plan for "
                              f"inputs {[v.shape for v in feeds]}")
            arena = plan.acquire()
            views = arena.views
        # Under a limit the live bytes are counted as values appear, on every run (a plan
        # was made for other input values: shapes may depend on them), so the run stops
        # at the first node that takes the total over the limit.
        live = None
        if self.memory_limit:
            live = _LiveBytes(self._const_owners | {id(_owner(v)) for v in feeds})
            if arena is not None:
                live.add(-1, arena.buf)       # the arena is held for the whole run
        try:
            for t, step in enumerate(self.steps):
                if stop is not None and stop.terminate:
                    raise _terminated(step)
                ins = [vals[i] if i >= 0 else None for i in step.ins]
                out = views.get(step.outs[0]) if views else None
                if profile is not None:
                    t0 = time.perf_counter()
                # A node checks the sizes it allocates against what the limit leaves
                # before it allocates (arithmetic.check_tensor_size); one writing into its
                # planned buffer allocates nothing, but one whose output the plan did not
                # foresee (sizes from the feed's values) must still be checked.
                budget = None
                if live is not None:
                    budget = ALLOCATION_BUDGET.set(AllocationBudget(
                        self.memory_limit, live.total, step.node.label))
                try:
                    res = step.op.run(ins, out)
                except PyconvError:
                    raise
                except _OP_ERRORS as exc:
                    raise self._failure(step, ins, exc) from exc
                finally:
                    if budget is not None:
                        ALLOCATION_BUDGET.reset(budget)
                if profile is not None:
                    t1 = time.perf_counter()
                    profile.append((step.node, t0, t1, [getattr(r, "shape", None)
                                                         for r in res]))
                if record is not None:
                    self._record(vals, step, res, record)
                for o, v in zip(step.outs, res):
                    if o >= 0:
                        vals[o] = v
                        if live is not None:
                            live.add(o, v)
                if live is not None:
                    self._check_limit(live.total, f"{step.node.label} (output shapes "
                                      f"{[getattr(r, 'shape', None) for r in res]})")
                for i in self.free_after[t]:
                    vals[i] = None
                    if live is not None:
                        live.drop(i)
            result = [vals[s] for s in wanted]
        finally:
            if arena is not None:
                plan.release(arena)
        if record is not None:
            with collection_paused():
                plan = MemoryPlan(self.nslots, self.steps, record,
                                  set(self.output_slot.values()), self.const_slots,
                                  set(self.input_slots))
            with self._plan_lock:
                plan = self.plans.setdefault(key, plan)
                self.plans.move_to_end(key)
                while len(self.plans) > self.max_plans:
                    self.plans.popitem(last=False)
                self._recent = (key, plan)
        return result

    def _plan(self, key):
        """The plan of input signature ``key`` (now the most recently used), or None."""
        recent = self._recent
        if recent is not None and recent[0] == key:
            return recent[1]        # already the most recently used
        with self._plan_lock:
            plan = self.plans.get(key)
            if plan is not None:
                self.plans.move_to_end(key)
                self._recent = (key, plan)
            return plan

    def _run_bound(self, plan, vals, wanted, stop=None):
        """A planned run without profiling or limit accounting: the arena's bound steps."""
        arena = plan.acquire()
        try:
            if arena.steps is None:
                with collection_paused():
                    arena.steps = list(zip(self._bind(plan, arena.views), self._fast_ins,
                                           self._fast_outs, self.free_after, self.steps))
            for call, ins_at, outs_at, free, step in arena.steps:
                if stop is not None and stop.terminate:
                    raise _terminated(step)
                ins = [vals[i] for i in ins_at]
                try:
                    res = call(ins)
                except PyconvError:
                    raise
                except _OP_ERRORS as exc:
                    raise self._failure(step, ins, exc) from exc
                if len(outs_at) == 1:
                    vals[outs_at[0]] = res[0]
                else:
                    for o, v in zip(outs_at, res):
                        vals[o] = v
                for i in free:
                    vals[i] = None
            return [vals[s] for s in wanted]
        finally:
            plan.release(arena)


def signature(feeds):
    """The memory plans' key of a run: (shape, dtype) per feed."""
    return tuple([(v.shape, v.dtype) for v in feeds])


def _terminated(step):
    return RunFailed(f"Exiting due to terminate flag being set to true (RunOptions."
                     f"terminate), before {step.node.label}")


_OP_ERRORS = (ValueError, TypeError, IndexError, ArithmeticError, MemoryError, AttributeError,
              KeyError, RecursionError)


def _unbound(op, out):
    """``op.run`` with its planned ``out`` (or None), as a one-argument call."""
    return functools.partial(op.run, out=out)
