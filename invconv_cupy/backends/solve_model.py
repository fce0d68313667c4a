"""The solve kernel's cost model: estimated cycles, used to rank plans (not a timing).

:mod:`~invconv_cupy.backends.kernel_solve` plans a solve by trying tiles,
images per block, teams and publishing grains, and keeps the cheapest by
:func:`estimate`. Everything here is an *estimate* in SM clock cycles, from
instruction counts (calibrated on the SASS counts of ``bench/solve_sass.py``)
and the latencies in :data:`ASSUMED`, which no GPU has confirmed: it ranks
choices, and the README's estimate table reports it as such.

The model, per step (one anti-diagonal of a tile):

- a thread of a team issues :func:`item_instructions` per (pixel, output group)
  it takes, ``ceil(items / teams)`` rounds of them;
- a scheduler (4 per SM) issues one instruction per cycle for all its warps, a
  lone warp about one per :data:`LATENCY_FACTOR` cycles (its loads and shuffles
  depend on each other), so a step costs ``rounds x instructions x
  max(LATENCY_FACTOR, warps per scheduler)`` plus a barrier;
- step matrices read from global memory (when they do not fit in shared
  memory) cost at least their bytes per item over the SM's L1 bandwidth, or its
  share of L2's when they do not fit in L1 (:data:`ASSUMED_BANDWIDTH`);
- linked tiles (an image split into tiles that hand over border pixels) also
  wait, every ``grain`` steps, for the communication warp's release (a fence)
  and its staging of the next halo (a counter's load, the acquire's fence, the
  halo's loads): :data:`PUBLISH_CYCLES`; the critical path is ``H + W - 1``
  steps plus, per tile hand-off, the steps a consumer waits for a count that is
  published every ``grain`` diagonals.
"""

from __future__ import annotations

from dataclasses import dataclass

#: a lone warp issues about one instruction per this many cycles (dependent loads and shuffles)
LATENCY_FACTOR = 2
#: a pixel item's own instructions (set-up, reduction, write; the SASS counts of bench/solve_sass.py)
ITEM_INSTRUCTIONS = 60
#: schedulers per SM (sm_70 and later)
SCHEDULERS = 4

#: latencies in cycles the model assumes (H100/H200-class; not measured here)
ASSUMED = {
    "barrier": 40,          # __syncthreads() and the step loop
    "l2_round_trip": 600,   # a load that misses L1 (the halo, a progress counter), under load
    "fence": 800,           # __threadfence(): waits for the thread's stores to reach L2
    "launch_gap": 3500,     # between two dependent launches on one stream (about 2 us)
    "shuffle": 30,          # one __shfl_xor_sync in a dependent chain
}
#: bytes per cycle an SM reads from its L1 (hits) and its share of L2 (H100: about 5.5 TB/s over 132 SMs
#: at 1.75 GHz), and the L1 it has besides shared memory: for step matrices read from global memory
ASSUMED_BANDWIDTH = {"l1_bytes_per_cycle": 64, "l2_bytes_per_cycle": 24, "l1_and_shared_bytes": 256 * 1024}
#: what the compute warps of a linked tile wait for every `grain` steps: a release window (the exports
#: reach L2, a fence) and a staging window (a counter's load and the acquire's fence, the halo's loads)
PUBLISH_CYCLES = 2 * ASSUMED["fence"] + 2 * ASSUMED["l2_round_trip"]
#: steps a consumer tile lags beyond the diagonals it reads: the producer exports a diagonal in the
#: window after it, and the consumer stages a step's halo in the window before it
HANDOFF_STEPS = 2
#: cycles per iteration of a thread's substitution chain when a block forms A^-1 in shared memory
FORM_CYCLES_PER_FMA = 6


def item_instructions(inputs, outputs_per_thread, lanes, itemsize):
    """Instructions one thread of a team issues for one (pixel, output group) item.

    Per input: an offset load, an x load, ``ceil(G * itemsize / 16)`` vector loads of
    matrix entries, G FMAs and about two loop instructions; then ``G log2(L)`` shuffles
    and as many adds, and :data:`ITEM_INSTRUCTIONS`.
    """
    G, L = outputs_per_thread, lanes
    per_input = 4 + G + -(-G * itemsize // 16)
    return -(-inputs // L) * per_input + 2 * G * (L.bit_length() - 1) + ITEM_INSTRUCTIONS


def step_cost(channels, inputs, outputs_per_thread, lanes, diagonal, max_threads, itemsize):
    """Estimated scheduler cycles of one step over ``diagonal`` items with teams of
    ``ceil(C/G)`` groups x ``lanes`` threads in one block (None when a team does not fit in
    ``max_threads``). Teams beyond the block's threads take further rounds. Ranks the teams
    (G, L) of a plan; :func:`estimate` prices whole plans.
    """
    G, L = outputs_per_thread, lanes
    team = -(-channels // G) * L
    if team > max_threads:
        return None
    teams = min(diagonal, max_threads // team)
    rounds = -(-diagonal // teams)
    warps_per_scheduler = -(-(-(-teams * team // 32)) // SCHEDULERS)
    return rounds * item_instructions(inputs, G, L, itemsize) * max(LATENCY_FACTOR, warps_per_scheduler)


def diagonal_lengths(th, tw):
    """Pixels on each anti-diagonal of a th x tw tile."""
    return [min(th - 1, d) - max(0, d - tw + 1) + 1 for d in range(th + tw - 1)]


def resident_blocks(threads, shared_bytes, register_bound_threads, *, sm_threads=2048, sm_shared=228 * 1024,
                    sm_blocks=32, sm_registers=65536, reserved_shared=1024):
    """Blocks of ``threads`` threads and ``shared_bytes`` dynamic shared memory one SM holds, with
    registers at the launch bound (``__launch_bounds__(register_bound_threads, 1)`` lets a thread
    use up to ``sm_registers / register_bound_threads`` of them)."""
    registers = threads * (sm_registers // register_bound_threads)
    return max(1, min(sm_blocks, sm_threads // threads, sm_shared // (shared_bytes + reserved_shared),
                      sm_registers // registers))


@dataclass(frozen=True)
class Estimate:
    """A plan's estimated cycles (see the module docstring; not a timing)."""

    cycles: float             # the wavefront launch, start to end
    critical_steps: float     # steps on the longest dependent chain (with hand-off waits)
    step_cycles: float        # mean cycles per step on that chain
    blocks_per_sm: int        # blocks sharing a busy SM's schedulers
    bound: str                # "steps" (the dependent chain), "waves" (more items than resident blocks)


@dataclass(frozen=True)
class Layout:
    """What :func:`estimate` needs to know of a plan."""

    images: int
    height: int
    width: int
    tile_h: int
    tile_w: int
    slots: int                # images per work item
    team: int                 # threads per pixel item
    teams: int                # items a block computes at once
    per_item: float           # instructions per item per thread (item_instructions, or SASS counts)
    matrix_bytes: int         # the step matrices, when read from global memory (else 0)
    shared_bytes: int         # per block
    resident: int             # blocks per SM
    grid: int
    linked: bool
    grain: int


def estimate(layout: Layout, sm_count: int) -> Estimate:
    """Estimated cycles of the wavefront launch of ``layout`` on ``sm_count`` SMs."""
    n = layout
    tiles_h, tiles_w = -(-n.height // n.tile_h), -(-n.width // n.tile_w)
    groups = -(-n.images // n.slots)
    items_total = groups * tiles_h * tiles_w
    runnable = groups * min(2 * min(tiles_h, tiles_w), tiles_h * tiles_w) if n.linked else items_total
    active = max(1, min(n.grid, runnable, sm_count * n.resident))
    per_sm = -(-active // sm_count)

    in_l1 = n.matrix_bytes + per_sm * n.shared_bytes <= ASSUMED_BANDWIDTH["l1_and_shared_bytes"]
    bandwidth = ASSUMED_BANDWIDTH["l1_bytes_per_cycle" if in_l1 else "l2_bytes_per_cycle"]

    def step(items):
        rounds = -(-items // n.teams)
        warps = -(-min(items, n.teams) * n.team // 32)
        issue = rounds * n.per_item * max(LATENCY_FACTOR, -(-per_sm * warps // SCHEDULERS))
        return max(issue, per_sm * items * n.matrix_bytes / bandwidth) + ASSUMED["barrier"]

    lengths = diagonal_lengths(n.tile_h, n.tile_w)
    tile_steps = sum(step(n.slots * length) for length in lengths)
    if not n.linked:
        waves = -(-items_total // active)
        return Estimate(waves * tile_steps, waves * len(lengths), tile_steps / len(lengths), per_sm,
                        "waves" if waves > 1 else "steps")
    step_cycles = tile_steps / len(lengths) + PUBLISH_CYCLES / n.grain
    handoffs = tiles_h + tiles_w - 2
    critical = n.height + n.width - 1 + handoffs * ((n.grain - 1) / 2 + HANDOFF_STEPS)
    queueing = max(1.0, runnable / active)
    return Estimate(critical * step_cycles * queueing, critical, step_cycles, per_sm,
                    "waves" if queueing > 1 else "steps")


def inverse_cycles(channels, in_blocks):
    """Estimated cycles to form A^-1: by each prepare block (a thread per column, a chain of
    about C^2/2 substitution steps) or by ``solve_invert`` (one more launch; a warp per
    column, C rows of C/64 FMAs and a shuffle reduction)."""
    C = channels
    if in_blocks:
        return FORM_CYCLES_PER_FMA * C * C / 2
    return ASSUMED["launch_gap"] + C * (5 * ASSUMED["shuffle"] + 20) + C * C / 16


def cycles_to_us(cycles, clock_ghz):
    """Microseconds of ``cycles`` at ``clock_ghz``."""
    return cycles / (clock_ghz * 1e3)
