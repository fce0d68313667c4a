#line 2 "cuda_shim_runtime.cpp"
// cuda_shim_runtime.cpp: the emulator's runtime, what cuda_shim.h declares: fibers, the
// block scheduler, warps, barriers, fences, atomics, the watchdog, the alignment handler.
//
// The emulator compiles cuda_shim.h + this file once per compiler, sanitizer and build
// settings into a cached object that every kernel library of those settings links, so a
// kernel library compiles only its kernels and the thin header (see cuda_shim.h for the
// execution model). Names are hidden (-fvisibility=hidden): each library has its own copy.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <numeric>
#include <source_location>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>
#include <sys/mman.h>
#include <unistd.h>
#if !defined(__x86_64__) || defined(IC_EMU_UCONTEXT)
#include <ucontext.h>
#define IC_EMU_USE_UCONTEXT 1
#endif
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef __SANITIZE_THREAD__
#include <sanitizer/tsan_interface.h>
#include <unordered_map>
// The runtime's annotations that <sanitizer/tsan_interface.h> does not declare.
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
extern "C" void AnnotateIgnoreSyncBegin(const char* file, int line);
extern "C" void AnnotateIgnoreSyncEnd(const char* file, int line);
#endif

thread_local uint3 threadIdx, blockIdx;
thread_local dim3 blockDim, gridDim;

namespace ic_emu {

constexpr unsigned kWarp = 32;
constexpr std::size_t kStackBytes = 256 * 1024;
// Load-like built-in calls in a row, without the thread writing anything, that make it a spinner.
constexpr unsigned kSpinLoads = 4;

// ---------------------------------------------------------------------------
// Where a thread is, for messages: the built-in and its call site.
struct Site {
    const char* what = "";
    const char* file = "";
    unsigned line = 0, column = 0;
};

inline Site site(const char* what, const std::source_location& loc)
{
    return {what, loc.file_name(), loc.line(), loc.column()};
}

inline bool same_place(const Site& a, const Site& b)
{
    return a.line == b.line && a.column == b.column && std::strcmp(a.file, b.file) == 0 &&
           std::strcmp(a.what, b.what) == 0;
}

inline std::string str(const Site& s)
{
    return std::string(s.what) + " at " + s.file + ":" + std::to_string(s.line) + ":" + std::to_string(s.column);
}

inline std::string str(const uint3& v)
{
    return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}

inline std::string hex(unsigned mask)
{
    char text[16];
    std::snprintf(text, sizeof text, "0x%08x", mask);
    return text;
}

inline std::string lanes(unsigned mask)
{
    std::string out;
    for (unsigned lane = 0; lane < kWarp; ++lane) {
        if (!(mask >> lane & 1u)) continue;
        unsigned last = lane;
        while (last + 1 < kWarp && (mask >> (last + 1) & 1u)) ++last;
        out += (out.empty() ? "" : ",") + std::to_string(lane) + (last > lane ? "-" + std::to_string(last) : "");
        lane = last;
    }
    return out.empty() ? "none" : out;
}

inline std::uint64_t splitmix(std::uint64_t& state)
{
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// ---------------------------------------------------------------------------
// Execution contexts: a hand-written switch on x86-64 (tens of ns), ucontext elsewhere.
#ifndef IC_EMU_USE_UCONTEXT
extern "C" void ic_emu_switch(void** save_sp, void* load_sp);
asm(R"(
    .text
    .p2align 4
    .globl ic_emu_switch
    .hidden ic_emu_switch
    .type ic_emu_switch, @function
ic_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size ic_emu_switch, .-ic_emu_switch
)");

struct Context {
    void* sp = nullptr;
};

inline void context_init(Context& c, unsigned char* stack, std::size_t size, void (*entry)())
{
    // The frame ic_emu_switch pops: six callee-saved registers, then `entry` as the
    // return address, which leaves the stack aligned as after a call.
    auto top = (reinterpret_cast<std::uintptr_t>(stack) + size) & ~std::uintptr_t(15);
    void** frame = reinterpret_cast<void**>(top - 16);
    frame[0] = reinterpret_cast<void*>(entry);
    frame[1] = nullptr;
    frame -= 6;
    for (int i = 0; i < 6; ++i) frame[i] = nullptr;
    c.sp = frame;
}

inline void context_swap(Context& from, Context& to) { ic_emu_switch(&from.sp, to.sp); }
#else
struct Context {
    ucontext_t uc;
};

inline void context_init(Context& c, unsigned char* stack, std::size_t size, void (*entry)())
{
    getcontext(&c.uc);
    c.uc.uc_stack.ss_sp = stack;
    c.uc.uc_stack.ss_size = size;
    c.uc.uc_link = nullptr;
    makecontext(&c.uc, entry, 0);
}

inline void context_swap(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }
#endif

// Happens-before edges for ThreadSanitizer (no-ops otherwise).
inline void hb_release(void* sync)
{
#ifdef __SANITIZE_THREAD__
    __tsan_release(sync);
#else
    (void)sync;
#endif
}

inline void hb_acquire(void* sync)
{
#ifdef __SANITIZE_THREAD__
    __tsan_acquire(sync);
#else
    (void)sync;
#endif
}


// Stacks for a block's fibers: one mapping, a guard page below each stack.
class Stacks {
  public:
    explicit Stacks(unsigned count) : count_(count)
    {
        page_ = std::size_t(sysconf(_SC_PAGESIZE));
        each_ = kStackBytes + page_;
        void* p = mmap(nullptr, each_ * count, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
        if (p == MAP_FAILED) {
            std::fprintf(stderr, "invconv_cupy emulator: cannot map %u fiber stacks\n", count);
            std::abort();
        }
        base_ = static_cast<unsigned char*>(p);
        for (unsigned i = 0; i < count; ++i) mprotect(base_ + i * each_, page_, PROT_NONE);
    }
    Stacks(const Stacks&) = delete;
    Stacks& operator=(const Stacks&) = delete;
    ~Stacks() { munmap(base_, each_ * count_); }

    unsigned count() const { return count_; }
    unsigned char* stack(unsigned i) const { return base_ + i * each_ + page_; }

  private:
    unsigned count_;
    std::size_t page_ = 0, each_ = 0;
    unsigned char* base_ = nullptr;
};

// Stacks are kept for the next launch (mapping and guarding them costs a system call per
// stack), except under ThreadSanitizer, where a reused stack would look like shared memory.
inline std::mutex stack_pool_mutex;
inline std::vector<std::unique_ptr<Stacks>> stack_pool;

inline std::unique_ptr<Stacks> take_stacks(unsigned count)
{
#ifndef __SANITIZE_THREAD__
    {
        std::lock_guard<std::mutex> lock(stack_pool_mutex);
        for (auto& s : stack_pool) {
            if (s->count() >= count) {
                std::unique_ptr<Stacks> found = std::move(s);
                s = std::move(stack_pool.back());
                stack_pool.pop_back();
                return found;
            }
        }
    }
#endif
    return std::make_unique<Stacks>(count);
}

inline void give_stacks(std::unique_ptr<Stacks> stacks)
{
#ifndef __SANITIZE_THREAD__
    std::lock_guard<std::mutex> lock(stack_pool_mutex);
    stack_pool.push_back(std::move(stacks));
#endif
}

// ---------------------------------------------------------------------------
// Launch geometry and settings as the Python side packs them (uint64 each).
struct Launch {
    std::uint64_t grid[3], block[3], shared_bytes, seed;
    std::uint64_t flags;              // bit 0: race mode
    std::uint64_t concurrent_blocks;  // worker threads (blocks running at once)
    std::uint64_t watchdog_ms;
};

constexpr std::uint64_t kRaceMode = 1;

enum class State : unsigned char { runnable, barrier, warp, activemask, exited };

#ifdef __SANITIZE_THREAD__
// ThreadSanitizer does not model fences; this does, as C++ defines them: a fence followed
// by a relaxed store (or read-modify-write) to an address synchronizes with a fence that
// follows a relaxed load reading it. A fence snapshots the thread's clock in a sync object;
// a store publishes the storing thread's latest snapshots at the address, a load collects
// them, and the loading thread's next fence acquires them. A __threadfence_block snapshot
// reaches only threads of the same block.
struct Snapshot {
    void* object = nullptr;
    bool published = false;  // then the next fence needs a new object
};
struct Published {
    void* object;
    std::uint64_t block;  // the publishing block (1 + its linear index)
    bool device;          // from a device-scope fence
};
struct FenceModel {
    std::mutex mutex;  // taken inside a Quiet scope: the model's own locking orders nothing
    std::unordered_map<const void*, std::vector<Published>> at;
    std::vector<std::unique_ptr<char>> objects;  // the snapshots' sync objects, until the launch ends
};

// Synchronization ThreadSanitizer does not see.
struct Quiet {
    Quiet() { AnnotateIgnoreSyncBegin(__FILE__, __LINE__); }
    ~Quiet() { AnnotateIgnoreSyncEnd(__FILE__, __LINE__); }
};
#endif

struct Fiber {
    Context ctx;
    unsigned char* stack = nullptr;
    uint3 idx{};
    unsigned tid = 0, warp = 0, lane = 0;
    State state = State::runnable;
    bool spinning = false;  // yielded from a spin-wait
    bool counted = false;   // counted in Block::ready (runnable and not spinning)
    Site site;              // where it waits or spins
    // the pending warp intrinsic or barrier
    Op op = Op::syncwarp;
    Reduce reduce = Reduce::none;
    unsigned mask = 0;
    int width = 32;
    std::uint64_t arg = 0, value = 0, result = 0;
    unsigned value_bytes = 4;
    unsigned loads = 0;  // load-like built-in calls since its last write
    unsigned unchecked = 0;  // open Unchecked scopes (a fiber must end them before it finishes)
#ifdef __SANITIZE_THREAD__
    Snapshot device_fence, block_fence;  // at its latest fences
    std::vector<Published> seen;         // read by its loads since, for its next fence
#endif
    void* asan_fake_stack = nullptr;
    void* tsan_fiber = nullptr;
};

struct Grid;

struct Worker {
    std::atomic<std::uint64_t> calls{0};     // built-in calls (a worker that makes none runs kernel code)
    std::atomic<std::uint64_t> progress{0};  // progress events of its blocks
    std::atomic<bool> in_kernel{false};      // a fiber is running
};

struct Grid {
    const char* kernel = "";
    dim3 grid, block;
    std::uint64_t nblocks = 0, nthreads = 0, shared_bytes = 0, seed = 0;
    bool race = false;
    unsigned workers = 1;
    void (*body)(void*) = nullptr;
    void* body_arg = nullptr;
    std::vector<std::uint64_t> order;
    std::atomic<std::uint64_t> next{0};
    std::atomic<bool> cancelled{false};
    std::atomic<bool> stalled{false};  // stopped by the watchdog
    std::atomic<std::uint64_t> started{0};  // blocks set up
    std::unique_ptr<Worker[]> status;
    std::mutex mutex;
    std::string error;
    std::vector<std::string> reports;  // each stopped block's state, after the watchdog
    int done_sync = 0;                 // ThreadSanitizer: every thread's work happens before the launch ends
#ifdef __SANITIZE_THREAD__
    FenceModel fences;
#endif

    void fail(const std::string& message)
    {
        {
            std::lock_guard<std::mutex> lock(mutex);
            if (error.empty()) error = message;
        }
        cancelled.store(true);
    }
};

inline dim3 unflatten(std::uint64_t k, const dim3& extent)
{
    return dim3(unsigned(k % extent.x), unsigned(k / extent.x % extent.y), unsigned(k / extent.x / extent.y));
}

struct Block;
inline thread_local Block* tl_block = nullptr;
inline thread_local Fiber* tl_fiber = nullptr;
thread_local unsigned char* dynamic_shared = nullptr;

// The emulator's own bookkeeping is not kernel memory: ThreadSanitizer ignores it.
struct Unchecked {
#ifdef __SANITIZE_THREAD__
    Fiber* f = tl_fiber;
    Unchecked()
    {
        __tsan_ignore_thread_begin();
        if (f) ++f->unchecked;
    }
    ~Unchecked()
    {
        if (f) --f->unchecked;
        __tsan_ignore_thread_end();
    }
#endif
};

[[noreturn]] inline void fiber_main();

// One block's threads and their scheduler; a worker reuses it for block after block.
struct Block {
    Grid* grid = nullptr;
    unsigned worker = 0;
    Worker* status = nullptr;
    uint3 idx{};
    unsigned n = 0, nwarps = 0;
    std::vector<Fiber> fibers;
    std::vector<unsigned> runnable;
    std::unique_ptr<Stacks> stacks;
    struct alignas(64) Chunk {
        unsigned char bytes[64];
    };
    std::unique_ptr<Chunk[]> shared;  // dynamic shared memory
    std::size_t shared_size = 0;
    unsigned live = 0, at_barrier = 0, barrier_true = 0;
    unsigned ready = 0;          // runnable threads that are not spinners
    unsigned ready_w[kWarp]{};   // ... per warp
    unsigned present[kWarp]{};   // lanes that exist
    unsigned exited[kWarp]{};
    unsigned pending[kWarp]{};   // lanes waiting in a warp intrinsic
    unsigned at_activemask[kWarp]{};
    bool any_activemask = false;
    std::uint64_t rng = 0, progress = 0;
    Context scheduler;
    const void* scheduler_stack = nullptr;
    std::size_t scheduler_stack_size = 0;
    void* scheduler_tsan = nullptr;
    // ThreadSanitizer sync objects
    std::uint64_t block_id = 0;  // 1 + linear index
    int barrier_sync = 0;
    int warp_sync[kWarp * kWarp]{};

    Block(Grid* g, unsigned w) : grid(g), worker(w), status(&g->status[w]) {}
    Block(const Block&) = delete;
    Block& operator=(const Block&) = delete;
    ~Block()
    {
        if (stacks) give_stacks(std::move(stacks));
    }

    void note_progress()
    {
        ++progress;
        status->progress.store(status->progress.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    }

    std::string where(const Fiber* f) const
    {
        return std::string("kernel ") + grid->kernel + ", block " + str(idx) + ", thread " + str(f->idx) +
               " (warp " + std::to_string(f->warp) + ", lane " + std::to_string(f->lane) + ")";
    }

    void make_runnable(Fiber* f, bool spinning)
    {
        f->state = State::runnable;
        f->spinning = spinning;
        f->counted = !spinning;
        if (f->counted) {
            ++ready;
            ++ready_w[f->warp];
        }
        runnable.push_back(f->tid);
    }

    // Switch from fiber f to the scheduler; returns when the scheduler resumes f.
    void suspend(Fiber* f)
    {
#ifdef __SANITIZE_ADDRESS__
        __sanitizer_start_switch_fiber(&f->asan_fake_stack, scheduler_stack, scheduler_stack_size);
#endif
#ifdef __SANITIZE_THREAD__
        __tsan_switch_to_fiber(scheduler_tsan, __tsan_switch_to_fiber_no_sync);
#endif
        context_swap(f->ctx, scheduler);
#ifdef __SANITIZE_ADDRESS__
        __sanitizer_finish_switch_fiber(f->asan_fake_stack, &scheduler_stack, &scheduler_stack_size);
#endif
    }

    // Leave fiber f for good (it exited, failed, or the launch stopped).
    [[noreturn]] void leave(Fiber* f)
    {
#ifdef __SANITIZE_THREAD__
        for (; f->unchecked > 0; --f->unchecked) __tsan_ignore_thread_end();
#endif
#ifdef __SANITIZE_ADDRESS__
        __sanitizer_start_switch_fiber(nullptr, scheduler_stack, scheduler_stack_size);
#endif
#ifdef __SANITIZE_THREAD__
        __tsan_switch_to_fiber(scheduler_tsan, __tsan_switch_to_fiber_no_sync);
#endif
        context_swap(f->ctx, scheduler);
        __builtin_unreachable();
    }

    [[noreturn]] void fail(Fiber* f, const std::string& message)
    {
        grid->fail(where(f) + ": " + message);
        leave(f);
    }

    // A built-in call: stop here if the launch was stopped; in race mode, maybe let another thread run.
    void enter(Fiber* f, const Site& s)
    {
        status->calls.store(status->calls.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        if (grid->cancelled.load(std::memory_order_relaxed)) leave(f);
        if (grid->race) {
            // Another thread of the block, another block (the worker yields its core), or a pause.
            const std::uint64_t r = splitmix(rng);
            if ((r & 3) == 0) {
                f->site = s;
                make_runnable(f, false);
                suspend(f);
            }
            if ((r >> 8 & 3) == 0) std::this_thread::yield();
            if ((r >> 16 & 63) == 0) std::this_thread::sleep_for(std::chrono::microseconds(r >> 24 & 63));
        }
    }

    // A built-in that reads memory others write: after kSpinLoads in a row, the thread spins.
    void note_load(Fiber* f, const Site& s)
    {
        if (++f->loads < kSpinLoads) return;
        f->loads = 0;
        f->site = s;
        make_runnable(f, true);
        suspend(f);
    }

    void note_write(Fiber* f)
    {
        f->loads = 0;
        f->spinning = false;
        note_progress();
    }

    // --- __syncthreads and its reductions ---
    int barrier(Fiber* f, const Site& s, Reduce reduce, int predicate)
    {
        const unsigned waiting = pending[f->warp];
        for (unsigned lane = 0; lane < kWarp; ++lane) {
            const Fiber& p = fibers[f->warp * kWarp + lane];
            if ((waiting >> lane & 1u) && (p.mask >> f->lane & 1u))
                fail(f, str(s) + " while lanes " + lanes(mask_of_group(f->warp, p)) + " of its warp wait for it in " +
                            str(p.site) + " (mask " + hex(p.mask) + ")");
        }
        f->state = State::barrier;
        f->site = s;
        f->reduce = reduce;
        f->loads = 0;
        f->spinning = false;
        barrier_true += predicate != 0;
        ++at_barrier;
        hb_release(&barrier_sync);
        if (at_barrier == live) release_barrier();
        suspend(f);
        hb_acquire(&barrier_sync);
        return int(f->result);
    }

    void release_barrier()
    {
        const unsigned arrived = at_barrier, yes = barrier_true;
        at_barrier = barrier_true = 0;
        for (unsigned t = 0; t < n; ++t) {
            Fiber& f = fibers[t];
            if (f.state != State::barrier) continue;
            f.result = f.reduce == Reduce::count ? yes
                     : f.reduce == Reduce::all  ? unsigned(yes == arrived)
                     : f.reduce == Reduce::any  ? unsigned(yes > 0)
                                                : 0u;
            make_runnable(&f, false);
        }
        note_progress();
    }

    // --- warp intrinsics ---
    unsigned mask_of_group(unsigned warp, const Fiber& member) const
    {
        unsigned group = 0;
        for (unsigned lane = 0; lane < kWarp; ++lane) {
            const Fiber& p = fibers[warp * kWarp + lane];
            if ((pending[warp] >> lane & 1u) && p.op == member.op && p.mask == member.mask &&
                (p.op == Op::syncwarp || same_place(p.site, member.site)))
                group |= 1u << lane;
        }
        return group;
    }

    std::uint64_t warp_op(Fiber* f, const Site& s, Op op, unsigned mask, std::uint64_t value, unsigned bytes,
                          std::uint64_t arg, int width)
    {
        const unsigned w = f->warp, me = 1u << f->lane;
        if (!(mask & me)) fail(f, str(s) + " with mask " + hex(mask) + ", which does not include the calling lane");
        if (width < 1 || width > int(kWarp) || (width & (width - 1)))
            fail(f, str(s) + " with width " + std::to_string(width) + " (a power of two from 1 to 32)");
        for (unsigned lane = 0; lane < kWarp; ++lane) {
            if (lane == f->lane || !(present[w] >> lane & 1u)) continue;
            const Fiber& p = fibers[w * kWarp + lane];
            const bool named = mask >> lane & 1u;
            if (named && p.state == State::barrier)
                fail(f, str(s) + " (mask " + hex(mask) + ") waits for lane " + std::to_string(lane) +
                            ", which waits in " + str(p.site));
            if (p.state != State::warp || !(named || (p.mask & me))) continue;
            const bool same = p.op == op && p.mask == mask && (op == Op::syncwarp || same_place(p.site, s));
            if (!same)
                fail(f, str(s) + " (mask " + hex(mask) + ") while lane " + std::to_string(lane) + " waits in " +
                            str(p.site) + " (mask " + hex(p.mask) +
                            "): the lanes of one mask must call the same intrinsic with the same mask at the "
                            "same place");
        }
        f->state = State::warp;
        f->site = s;
        f->op = op;
        f->mask = mask;
        f->value = value;
        f->value_bytes = bytes;
        f->arg = arg;
        f->width = width;
        f->loads = 0;
        f->spinning = false;
        pending[w] |= me;
        hb_release(&warp_sync[w * kWarp + __builtin_ctz(mask)]);
        complete_warp_op(w, mask);
        suspend(f);
        hb_acquire(&warp_sync[w * kWarp + __builtin_ctz(mask)]);
        return f->result;
    }

    // Finish the warp intrinsic of `mask` once every non-exited lane it names waits in it.
    void complete_warp_op(unsigned w, unsigned mask)
    {
        const unsigned group = mask & present[w] & ~exited[w];
        if ((pending[w] & group) != group || group == 0) return;
        const Fiber& first = fibers[w * kWarp + __builtin_ctz(group)];
        const Op op = first.op;
        unsigned votes = 0;
        for (unsigned lane = 0; lane < kWarp; ++lane)
            if ((group >> lane & 1u) && fibers[w * kWarp + lane].value != 0) votes |= 1u << lane;
        for (unsigned lane = 0; lane < kWarp; ++lane) {
            if (!(group >> lane & 1u)) continue;
            Fiber& f = fibers[w * kWarp + lane];
            switch (op) {
            case Op::syncwarp: f.result = 0; break;
            case Op::ballot: f.result = votes; break;
            case Op::any: f.result = votes != 0; break;
            case Op::all: f.result = votes == group; break;
            default: f.result = shuffled(w, f, group); break;
            }
            pending[w] &= ~(1u << lane);
            make_runnable(&f, false);
        }
        note_progress();
    }

    std::uint64_t shuffled(unsigned w, const Fiber& f, unsigned group) const
    {
        const std::uint64_t width = unsigned(f.width), lane = f.lane, start = lane & ~(width - 1);
        std::uint64_t source = lane;
        switch (f.op) {
        case Op::shfl: source = start + (f.arg & (width - 1)); break;
        case Op::shfl_up: source = (lane - start) >= f.arg ? lane - f.arg : lane; break;
        case Op::shfl_down: source = (lane - start) + f.arg < width ? lane + f.arg : lane; break;
        case Op::shfl_xor: source = lane ^ f.arg; if (source >= start + width) source = lane; break;
        default: break;
        }
        if (source == lane) return f.value;
        if (source < kWarp && (group >> source & 1u)) return fibers[w * kWarp + source].value;
        return f.value_bytes == 4 ? 0xFFFFFFFFull : ~0ull;  // undefined on a GPU: poison
    }

    unsigned activemask(Fiber* f, const Site& s)
    {
        f->state = State::activemask;
        f->site = s;
        at_activemask[f->warp] |= 1u << f->lane;
        any_activemask = true;
        suspend(f);
        return unsigned(f->result);
    }

    // Lanes at __activemask learn which lanes are there with them once no other lane of the
    // warp can still get there (all wait elsewhere, spin, or exited).
    bool resolve_activemask()
    {
        bool resolved = false;
        any_activemask = false;
        for (unsigned w = 0; w < nwarps; ++w) {
            if (!at_activemask[w]) continue;
            if (ready_w[w] != 0) {
                any_activemask = true;
                continue;
            }
            unsigned left = at_activemask[w];
            while (left) {
                const Fiber& first = fibers[w * kWarp + __builtin_ctz(left)];
                unsigned together = 0;
                for (unsigned lane = 0; lane < kWarp; ++lane)
                    if ((left >> lane & 1u) && same_place(fibers[w * kWarp + lane].site, first.site))
                        together |= 1u << lane;
                for (unsigned lane = 0; lane < kWarp; ++lane) {
                    if (!(together >> lane & 1u)) continue;
                    fibers[w * kWarp + lane].result = together;
                    make_runnable(&fibers[w * kWarp + lane], false);
                }
                left &= ~together;
            }
            at_activemask[w] = 0;
            resolved = true;
        }
        return resolved;
    }

    [[noreturn]] void exit_thread(Fiber* f)
    {
        const unsigned w = f->warp;
        f->state = State::exited;
        exited[w] |= 1u << f->lane;
        --live;
        hb_release(&grid->done_sync);
        if (at_barrier > 0 && at_barrier == live) release_barrier();
        for (unsigned lane = 0; lane < kWarp; ++lane) {
            const Fiber& p = fibers[w * kWarp + lane];
            if ((pending[w] >> lane & 1u) && (p.mask >> f->lane & 1u)) complete_warp_op(w, p.mask);
        }
        note_progress();
        leave(f);
    }

    // --- the scheduler ---
    std::string describe() const
    {
        struct Row {
            std::string place;
            unsigned count;
            uint3 first;
        };
        std::vector<Row> rows;
        unsigned gone = 0;
        for (unsigned t = 0; t < n; ++t) {
            const Fiber& f = fibers[t];
            std::string place;
            switch (f.state) {
            case State::exited: ++gone; continue;
            case State::runnable: place = f.spinning ? "spinning in " + str(f.site) : "ready to run"; break;
            case State::barrier: place = "waiting in " + str(f.site); break;
            case State::warp: place = "waiting in " + str(f.site) + " (mask " + hex(f.mask) + ")"; break;
            case State::activemask: place = "waiting in " + str(f.site); break;
            }
            auto row = std::find_if(rows.begin(), rows.end(), [&](const Row& r) { return r.place == place; });
            if (row == rows.end()) rows.push_back({place, 1, f.idx});
            else ++row->count;
        }
        std::string out = "block " + str(idx) + ":";
        for (const Row& r : rows)
            out += " " + std::to_string(r.count) + (r.count == 1 ? " thread " : " threads ") +
                   (r.count == 1 ? str(r.first) : "(first " + str(r.first) + ")") + " " + r.place + ";";
        if (gone) out += " " + std::to_string(gone) + " exited;";
        out.pop_back();
        return out;
    }

    void setup(std::uint64_t linear)
    {
        idx = unflatten(linear, grid->grid);
        block_id = linear + 1;
        blockIdx = idx;
        blockDim = grid->block;
        gridDim = grid->grid;
        n = unsigned(grid->nthreads);
        nwarps = (n + kWarp - 1) / kWarp;
        rng = grid->seed ^ (linear * 0xD1B54A32D192ED03ull);
        if (fibers.size() < n) fibers.resize(n);
        if (!stacks || stacks->count() < n) {
            if (stacks) give_stacks(std::move(stacks));
            stacks = take_stacks(n);
        }
        if (!shared || shared_size < grid->shared_bytes) {
            shared_size = std::max<std::size_t>(grid->shared_bytes, 1);
            shared.reset(new Chunk[(shared_size + 63) / 64]);
        }
        std::memset(shared.get(), 0xFF, shared_size);
        dynamic_shared = shared[0].bytes;
        runnable.clear();
        ready = live = n;
        at_barrier = barrier_true = 0;
        any_activemask = false;
        for (unsigned w = 0; w < kWarp; ++w) {
            const unsigned count = w < nwarps ? std::min(kWarp, n - w * kWarp) : 0;
            present[w] = count == kWarp ? ~0u : (1u << count) - 1;
            ready_w[w] = count;
            exited[w] = pending[w] = at_activemask[w] = 0;
        }
        for (unsigned t = 0; t < n; ++t) {
            Fiber& f = fibers[t];
            f = Fiber();
            f.tid = t;
            f.idx = unflatten(t, grid->block);
            f.warp = t / kWarp;
            f.lane = t % kWarp;
            f.counted = true;
            f.stack = stacks->stack(t);
#ifdef __SANITIZE_ADDRESS__
            ASAN_UNPOISON_MEMORY_REGION(f.stack, kStackBytes);  // an abandoned fiber leaves poisoned frames
#endif
#ifdef __SANITIZE_THREAD__
            f.tsan_fiber = __tsan_create_fiber(0);
#endif
            context_init(f.ctx, f.stack, kStackBytes, fiber_main);
            runnable.push_back(t);
        }
    }

    void teardown()
    {
#ifdef __SANITIZE_THREAD__
        for (unsigned t = 0; t < n; ++t) __tsan_destroy_fiber(fibers[t].tsan_fiber);
#endif
        tl_block = nullptr;
        dynamic_shared = nullptr;
    }

    void resume(Fiber* f)
    {
        tl_fiber = f;
        threadIdx = f->idx;
        status->in_kernel.store(true, std::memory_order_relaxed);
#ifdef __SANITIZE_ADDRESS__
        void* fake = nullptr;
        __sanitizer_start_switch_fiber(&fake, f->stack, kStackBytes);
#endif
#ifdef __SANITIZE_THREAD__
        __tsan_switch_to_fiber(f->tsan_fiber, __tsan_switch_to_fiber_no_sync);
#endif
        context_swap(scheduler, f->ctx);
#ifdef __SANITIZE_ADDRESS__
        __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
        status->in_kernel.store(false, std::memory_order_relaxed);
        tl_fiber = nullptr;
    }

    void run(std::uint64_t linear)
    {
        tl_block = this;
#ifdef __SANITIZE_THREAD__
        scheduler_tsan = __tsan_get_current_fiber();
#endif
        setup(linear);
        // The first wave of blocks starts together, as on a GPU (else the first worker could
        // run a persistent kernel's every tile before the other blocks exist).
        grid->started.fetch_add(1, std::memory_order_relaxed);
        while (grid->started.load(std::memory_order_relaxed) < grid->workers && !grid->cancelled.load())
            std::this_thread::yield();
        if (grid->race) std::this_thread::sleep_for(std::chrono::microseconds(splitmix(rng) % 200));
        note_progress();
        std::uint64_t seen = progress;
        unsigned backoff_us = 0;
        while (live > 0) {
            if (grid->cancelled.load(std::memory_order_relaxed)) {
                if (grid->stalled.load()) {
                    std::lock_guard<std::mutex> lock(grid->mutex);
                    grid->reports.push_back(describe());
                }
                break;
            }
            if (any_activemask) resolve_activemask();
            if (runnable.empty()) {
                if (resolve_activemask()) continue;
                grid->fail(std::string("kernel ") + grid->kernel + ": deadlock: every thread waits; " + describe());
                break;
            }
            if (ready == 0) {
                // Only spinners: they wait for other blocks; do not take their CPU.
                if (progress == seen) backoff_us = std::min(500u, backoff_us ? backoff_us * 2 : 10u);
                else backoff_us = 0;
                seen = progress;
                if (backoff_us) std::this_thread::sleep_for(std::chrono::microseconds(backoff_us));
            }
            const std::size_t pick = std::size_t(splitmix(rng) % runnable.size());
            Fiber* f = &fibers[runnable[pick]];
            runnable[pick] = runnable.back();
            runnable.pop_back();
            if (f->counted) {
                --ready;
                --ready_w[f->warp];
                f->counted = false;
            }
            resume(f);
        }
        teardown();
    }
};

[[noreturn]] inline void fiber_main()
{
    Block* b = tl_block;
#ifdef __SANITIZE_ADDRESS__
    __sanitizer_finish_switch_fiber(nullptr, &b->scheduler_stack, &b->scheduler_stack_size);
#endif
    b->grid->body(b->grid->body_arg);
    Unchecked unchecked;
    b->exit_thread(tl_fiber);
}

// The fiber and block of the calling kernel thread, for a built-in (kernel code only).
struct Call {
    Unchecked unchecked;
    Block* b;
    Fiber* f;
    explicit Call(const Site& s);
};

__attribute__((noinline)) inline Call::Call(const Site& s) : b(tl_block), f(tl_fiber)
{
    if (!f) {
        std::fprintf(stderr, "invconv_cupy emulator: %s called outside a kernel thread\n", str(s).c_str());
        std::abort();
    }
    b->enter(f, s);
}

// A worker: blocks of the shuffled order until none is left or the launch stopped.
inline void work(Grid* g, unsigned w)
{
    Unchecked unchecked;
#ifndef __SANITIZE_THREAD__
    Block block(g, w);
#endif
    for (;;) {
        if (g->cancelled.load()) break;
        const std::uint64_t k = g->next.fetch_add(1, std::memory_order_relaxed);
        if (k >= g->nblocks) break;
#ifdef __SANITIZE_THREAD__
        // A fresh OS thread per block: static __shared__, stacks and the scheduler's
        // history start clean, so consecutive blocks of a worker are not ordered.
        // The Block on the heap: freeing it drops its sync objects (a reused thread stack would not).
        std::thread t([g, w, k] {
            Unchecked inner;
            std::make_unique<Block>(g, w)->run(g->order[k]);
        });
        AnnotateIgnoreSyncBegin(__FILE__, __LINE__);
        t.join();
        AnnotateIgnoreSyncEnd(__FILE__, __LINE__);
#else
        block.run(g->order[k]);
#endif
    }
}

inline std::uint64_t total_progress(const Grid& g)
{
    std::uint64_t sum = 0;
    for (unsigned w = 0; w < g.workers; ++w) sum += g.status[w].progress.load(std::memory_order_relaxed);
    return sum;
}

// Wait for the workers; stop the launch when nothing progresses for watchdog_ms while
// every worker waits or spins in built-ins.
inline void watch(Grid& g, std::atomic<unsigned>& running, std::mutex& m, std::condition_variable& cv,
                  std::uint64_t watchdog_ms)
{
    using clock = std::chrono::steady_clock;
    std::vector<std::uint64_t> calls(g.workers);
    auto snapshot = [&] {
        for (unsigned w = 0; w < g.workers; ++w) calls[w] = g.status[w].calls.load(std::memory_order_relaxed);
    };
    std::uint64_t last = total_progress(g);
    auto since = clock::now();
    snapshot();
    bool warned = false;
    std::unique_lock<std::mutex> lock(m);
    while (running.load() > 0) {
        cv.wait_for(lock, std::chrono::milliseconds(20));
        const std::uint64_t now_progress = total_progress(g);
        if (now_progress != last || g.cancelled.load()) {
            last = now_progress;
            since = clock::now();
            snapshot();
            continue;
        }
        const auto quiet = std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - since).count();
        if (std::uint64_t(quiet) < watchdog_ms) continue;
        bool in_kernel_code = false;
        for (unsigned w = 0; w < g.workers; ++w)
            in_kernel_code |= g.status[w].in_kernel.load() &&
                              g.status[w].calls.load(std::memory_order_relaxed) == calls[w];
        if (!in_kernel_code) {
            g.stalled.store(true);
            g.fail(std::string("kernel ") + g.kernel + ": no block made progress for " + std::to_string(quiet) +
                   " ms (the watchdog): a spin-wait that never ends, or blocks waiting for each other");
        } else if (!warned && std::uint64_t(quiet) >= 3 * watchdog_ms) {
            warned = true;
            std::fprintf(stderr,
                         "invconv_cupy emulator: kernel %s: a thread has run for %lld ms without calling any "
                         "built-in while no block progresses (a `volatile` spin loop? spin with ic_load_acquire)\n",
                         g.kernel, static_cast<long long>(quiet));
        }
    }
}

int run_grid(const Launch& L, const char* kernel, void (*body)(void*), void* arg, char* error,
             std::size_t error_size)
{
    Grid g;
    g.kernel = kernel;
    g.grid = dim3(unsigned(L.grid[0]), unsigned(L.grid[1]), unsigned(L.grid[2]));
    g.block = dim3(unsigned(L.block[0]), unsigned(L.block[1]), unsigned(L.block[2]));
    g.nblocks = L.grid[0] * L.grid[1] * L.grid[2];
    g.nthreads = L.block[0] * L.block[1] * L.block[2];
    g.shared_bytes = L.shared_bytes;
    g.seed = L.seed;
    g.race = (L.flags & kRaceMode) != 0;
    g.body = body;
    g.body_arg = arg;
    g.order.resize(g.nblocks);
    std::iota(g.order.begin(), g.order.end(), std::uint64_t(0));
    std::uint64_t state = L.seed;  // Fisher-Yates
    for (std::size_t k = g.order.size(); k > 1; --k) std::swap(g.order[k - 1], g.order[splitmix(state) % k]);
    g.workers = unsigned(std::max<std::uint64_t>(1, std::min(L.concurrent_blocks, g.nblocks)));
    g.status.reset(new Worker[g.workers]);

    std::atomic<unsigned> running{g.workers};
    std::mutex m;
    std::condition_variable cv;
    std::vector<std::thread> threads;
    threads.reserve(g.workers);
    for (unsigned w = 0; w < g.workers; ++w)
        threads.emplace_back([&, w] {
            work(&g, w);
            std::lock_guard<std::mutex> lock(m);
            running.fetch_sub(1);
            cv.notify_all();
        });
    watch(g, running, m, cv, std::max<std::uint64_t>(L.watchdog_ms, 1));
    for (auto& t : threads) t.join();
    hb_acquire(&g.done_sync);

    if (g.error.empty()) return 0;
    std::string message = g.error;
    for (const std::string& r : g.reports) message += "\n  " + r;
    std::snprintf(error, error_size, "%s", message.c_str());
    return 1;
}

// ---------------------------------------------------------------------------
// The built-ins cuda_shim.h declares.
std::uint64_t warp_call(Op op, const char* what, unsigned mask, std::uint64_t value, unsigned bytes,
                        std::uint64_t arg, int width, const std::source_location& loc)
{
    const Site s = site(what, loc);
    Call c(s);
    return c.b->warp_op(c.f, s, op, mask, value, bytes, arg, width);
}

int barrier(const char* what, Reduce reduce, int predicate, const std::source_location& loc)
{
    const Site s = site(what, loc);
    Call c(s);
    return c.b->barrier(c.f, s, reduce, predicate);
}

unsigned activemask(const std::source_location& loc)
{
    const Site s = site("__activemask", loc);
    Call c(s);
    return c.b->activemask(c.f, s);
}

// A full hardware fence. ThreadSanitizer rejects atomic_thread_fence: a read-modify-write
// orders memory the same way on x86-64, and is kept out of TSan's view (FenceModel is
// what it sees of fences).
inline void hardware_fence()
{
#ifdef __SANITIZE_THREAD__
    static thread_local std::atomic<int> local{0};
    Quiet quiet;
    local.fetch_add(0, std::memory_order_seq_cst);
#else
    std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
}

// The fence model's three events (see FenceModel; nothing without ThreadSanitizer).
inline void model_fence(Block* b, Fiber* f, bool device)
{
#ifdef __SANITIZE_THREAD__
    FenceModel& m = b->grid->fences;
    std::vector<void*> acquired;
    Snapshot* const renewed[2] = {&f->block_fence, device ? &f->device_fence : nullptr};
    {
        Quiet quiet;
        std::lock_guard<std::mutex> lock(m.mutex);
        auto kept = f->seen.begin();
        for (const Published& p : f->seen) {
            if (p.block == b->block_id || (device && p.device)) acquired.push_back(p.object);
            else *kept++ = p;  // a later device-scope fence may still acquire it
        }
        f->seen.erase(kept, f->seen.end());
        for (Snapshot* snapshot : renewed) {
            if (snapshot && (!snapshot->object || snapshot->published)) {
                m.objects.push_back(std::make_unique<char>());
                *snapshot = {m.objects.back().get(), false};
            }
        }
    }
    for (void* object : acquired) __tsan_acquire(object);
    for (Snapshot* snapshot : renewed)
        if (snapshot) __tsan_release(snapshot->object);
#else
    (void)b, (void)f, (void)device;
#endif
}

// A load, store or read-modify-write and its model_load / model_store happen as one step in
// a ModelScope: a load that sees a store's value also sees what the store published.
struct ModelScope {
#ifdef __SANITIZE_THREAD__
    Quiet quiet;
    std::lock_guard<std::mutex> lock;
    explicit ModelScope(Block* b) : lock(b->grid->fences.mutex) {}
#else
    explicit ModelScope(Block*) {}
#endif
};

inline void model_load(Block* b, Fiber* f, const void* p)
{
#ifdef __SANITIZE_THREAD__
    FenceModel& m = b->grid->fences;
    const auto found = m.at.find(p);
    if (found == m.at.end()) return;
    for (const Published& q : found->second)
        if (std::none_of(f->seen.begin(), f->seen.end(), [&](const Published& r) { return r.object == q.object; }))
            f->seen.push_back(q);
#else
    (void)b, (void)f, (void)p;
#endif
}

// A store replaces what the address carries; a read-modify-write adds to it (a release sequence).
inline void model_store(Block* b, Fiber* f, const void* p, bool rmw)
{
#ifdef __SANITIZE_THREAD__
    FenceModel& m = b->grid->fences;
    std::vector<Published>& list = m.at[p];
    if (!rmw) list.clear();
    for (Snapshot* snapshot : {&f->block_fence, &f->device_fence}) {
        if (!snapshot->object) continue;
        list.push_back({snapshot->object, b->block_id, snapshot == &f->device_fence});
        snapshot->published = true;
    }
    constexpr std::size_t kKeep = 64;
    if (list.size() > kKeep) list.erase(list.begin(), list.end() - kKeep);
#else
    (void)b, (void)f, (void)p, (void)rmw;
#endif
}

// A misaligned atomic or flag access faults on a GPU. (These accesses happen here, outside
// the kernel code that -fsanitize=alignment instruments.)
inline void check_alignment(const Call& c, const Site& s, const void* p, std::size_t bytes)
{
    const auto address = reinterpret_cast<std::uintptr_t>(p);
    if (address % bytes == 0) return;
    char text[32];
    std::snprintf(text, sizeof text, "0x%llx", static_cast<unsigned long long>(address));
    c.b->fail(c.f, "misaligned " + str(s) + ": address " + text + " is not a multiple of " + std::to_string(bytes));
}

void fence(const char* what, bool device, const std::source_location& loc)
{
    Call c(site(what, loc));
    model_fence(c.b, c.f, device);
    hardware_fence();
}

// CUDA atomics: relaxed, device scope. An atomic that leaves memory unchanged counts as a load.
template <class T> T atomic(Rmw rmw, const char* what, T* p, T v, T compare, const std::source_location& loc)
{
    const Site s = site(what, loc);
    Call c(s);
    check_alignment(c, s, p, sizeof(T));
    auto update = [&](T old) -> T {
        switch (rmw) {
        case Rmw::add: return T(old + v);
        case Rmw::sub: return T(old - v);
        case Rmw::exch: return v;
        case Rmw::min: return v < old ? v : old;
        case Rmw::max: return v > old ? v : old;
        case Rmw::cas: return old == compare ? v : old;
        default: break;
        }
        if constexpr (std::is_integral_v<T>) {
            switch (rmw) {
            case Rmw::bit_and: return T(old & v);
            case Rmw::bit_or: return T(old | v);
            case Rmw::bit_xor: return T(old ^ v);
            case Rmw::inc: return old >= v ? T(0) : T(old + 1);
            case Rmw::dec: return (old == 0 || old > v) ? v : T(old - 1);
            default: break;
            }
        }
        return old;
    };
    std::atomic_ref<T> r(*p);
    T old, next;
    {
        ModelScope scope(c.b);
        model_load(c.b, c.f, p);
        old = r.load(std::memory_order_relaxed);
        next = update(old);
        while (!r.compare_exchange_weak(old, next, std::memory_order_relaxed)) next = update(old);
        model_store(c.b, c.f, p, true);
    }
    if (std::memcmp(&old, &next, sizeof(T)) != 0) c.b->note_write(c.f);
    else c.b->note_load(c.f, s);
    return old;
}

// An unsigned integer of `bytes` bytes at p, read or written as one relaxed atomic access.
template <class F> decltype(auto) with_unsigned(unsigned bytes, F f)
{
    switch (bytes) {
    case 1: return f(std::uint8_t());
    case 2: return f(std::uint16_t());
    case 4: return f(std::uint32_t());
    default: return f(std::uint64_t());
    }
}

std::uint64_t load(const char* what, const void* p, unsigned bytes, bool acquire, const std::source_location& loc)
{
    const Site s = site(what, loc);
    Call c(s);
    check_alignment(c, s, p, bytes);
    std::uint64_t v;
    {
        ModelScope scope(c.b);
        v = with_unsigned(bytes, [p](auto u) -> std::uint64_t {
            using U = decltype(u);
            return std::atomic_ref<U>(*static_cast<U*>(const_cast<void*>(p))).load(std::memory_order_relaxed);
        });
        model_load(c.b, c.f, p);
    }
    if (acquire) {
        model_fence(c.b, c.f, true);
        hardware_fence();
    }
    c.b->note_load(c.f, s);
    return v;
}

void store(const char* what, void* p, std::uint64_t bits, unsigned bytes, bool release,
           const std::source_location& loc)
{
    const Site s = site(what, loc);
    Call c(s);
    check_alignment(c, s, p, bytes);
    if (release) {
        model_fence(c.b, c.f, true);
        hardware_fence();
    }
    {
        ModelScope scope(c.b);
        with_unsigned(bytes, [p, bits](auto u) {
            using U = decltype(u);
            std::atomic_ref<U>(*static_cast<U*>(p)).store(U(bits), std::memory_order_relaxed);
        });
        model_store(c.b, c.f, p, false);
    }
    c.b->note_write(c.f);
}

void nanosleep(const std::source_location& loc)
{
    const Site s = site("__nanosleep", loc);
    Call c(s);
    c.f->loads = kSpinLoads - 1;
    c.b->note_load(c.f, s);
}

void trap(const std::source_location& loc)
{
    const Site s = site("__trap", loc);
    Call c(s);
    c.b->fail(c.f, str(s) + " was called");
}

template int atomic(Rmw, const char*, int*, int, int, const std::source_location&);
template unsigned atomic(Rmw, const char*, unsigned*, unsigned, unsigned, const std::source_location&);
template long atomic(Rmw, const char*, long*, long, long, const std::source_location&);
template unsigned long atomic(Rmw, const char*, unsigned long*, unsigned long, unsigned long,
                              const std::source_location&);
template long long atomic(Rmw, const char*, long long*, long long, long long, const std::source_location&);
template unsigned long long atomic(Rmw, const char*, unsigned long long*, unsigned long long, unsigned long long,
                                   const std::source_location&);
template float atomic(Rmw, const char*, float*, float, float, const std::source_location&);
template double atomic(Rmw, const char*, double*, double, double, const std::source_location&);

}  // namespace ic_emu

// Alignment checks: kernel libraries are built with -fsanitize=alignment
// -fno-sanitize-recover=alignment (a handler that does not return compiles to less code),
// and this handler (GCC's UBSan calling convention) turns a misaligned typed access into
// a launch error.
namespace ic_emu::ubsan {
struct SourceLocation {
    const char* file;
    unsigned line, column;
};
struct TypeDescriptor {
    unsigned short kind, info;
    char name[1];
};
struct TypeMismatchData {
    SourceLocation loc;
    const TypeDescriptor* type;
    unsigned char log_alignment, check_kind;
};
}  // namespace ic_emu::ubsan

// One definition per library: the runtime's object is linked into each library once.
extern "C" __attribute__((visibility("protected"), noreturn)) void __ubsan_handle_type_mismatch_v1_abort(
    ic_emu::ubsan::TypeMismatchData* data, std::uintptr_t pointer)
{
    static const char* const kinds[] = {"load", "store", "reference binding", "member access", "member call",
                                        "constructor call"};
    const char* kind = data->check_kind < 6 ? kinds[data->check_kind] : "access";
    char message[512];
    std::snprintf(message, sizeof message, "misaligned %s of %s at %s:%u:%u: address 0x%llx is not a multiple of %u",
                  kind, data->type->name, data->loc.file, data->loc.line, data->loc.column,
                  static_cast<unsigned long long>(pointer), 1u << data->log_alignment);
    ic_emu::Fiber* f = ic_emu::tl_fiber;
    if (!f) {
        std::fprintf(stderr, "invconv_cupy emulator: %s\n", message);
        std::abort();
    }
    ic_emu::Unchecked unchecked;
    ic_emu::tl_block->fail(f, message);
}
