// cuda_shim.h: CUDA built-ins for a host C++ compiler (the "emulate" backend).
//
// The emulator (invconv_cupy/emulator) compiles
//     cuda_shim.h + generated preamble + common.cuh + <family>.cu + generated launchers
// with g++ -std=c++20. A launch runs the blocks of the grid one at a time, in a
// shuffled order; the threads of a block are real OS threads running
// concurrently, and __syncthreads() is a real barrier among them (a thread that
// returns leaves the barrier, as on the GPU). Dynamic shared memory is poisoned
// with 0xFF bytes (NaN in float and double) before every block.
//
// Supported: threadIdx, blockIdx, blockDim, gridDim (x, y, z); __global__,
// __device__, __host__, __forceinline__, __noinline__, __launch_bounds__,
// __align__, __restrict__; static __shared__ arrays in a kernel body;
// IC_DYNAMIC_SHARED; __syncthreads, __threadfence, __threadfence_block;
// atomicAdd, atomicSub, atomicExch, atomicMin, atomicMax, atomicCAS on int,
// unsigned, unsigned long long (atomicAdd also on float and double); __ldg;
// min, max and the <cmath> functions (sqrt, exp, log, fabs, fma, ...);
// __shfl_xor_sync (the lanes of its mask exchange values; a lane outside its
// own mask aborts).
// Not supported: other warp intrinsics (__shfl_sync, __ballot*, ...), cooperative
// groups, inline PTX, texture objects.
#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#define IC_EMULATOR 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
// Blocks run one at a time, so a function-local static is per-block storage.
#define __shared__ static

// CUDA's min/max accept mixed argument types (usual arithmetic conversions).
template <class A, class B> inline std::common_type_t<A, B> min(A a, B b)
{
    const std::common_type_t<A, B> x = a, y = b;
    return y < x ? y : x;
}
template <class A, class B> inline std::common_type_t<A, B> max(A a, B b)
{
    const std::common_type_t<A, B> x = a, y = b;
    return x < y ? y : x;
}

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
using uint3 = dim3;

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace ic_emu {
inline thread_local unsigned char* dynamic_shared = nullptr;
inline thread_local std::barrier<>* block_barrier = nullptr;

// Warp shuffles between OS threads: each thread of the block has a slot; the
// n-th shuffle of a lane posts its value as round n, reads its source lane's
// round-n value, then marks round n consumed. A lane overwrites its slot only
// once every lane of the mask has consumed the previous round.
struct WarpLane {
    std::atomic<std::uint64_t> posted{0}, consumed{0};
    std::uint64_t bits = 0;
};
inline thread_local WarpLane* warp_lanes = nullptr;   // the block's slots
inline thread_local std::uint64_t warp_rounds = 0;    // this thread's shuffles so far in the block

inline void wait_at_least(const std::atomic<std::uint64_t>& counter, std::uint64_t value)
{
    while (counter.load(std::memory_order_acquire) < value) std::this_thread::yield();
}

template <class T> T shuffle(unsigned mask, T value, unsigned source_lane)
{
    static_assert(sizeof(T) <= sizeof(std::uint64_t) && std::is_trivially_copyable_v<T>);
    const unsigned me = (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x;
    const unsigned base = me & ~31u, lane = me & 31u;
    if (!(mask >> lane & 1u) || !(mask >> (source_lane & 31u) & 1u)) {
        std::fprintf(stderr, "emulated warp shuffle: lane %u with mask 0x%08x reads lane %u outside the mask\n", lane,
                     mask, source_lane & 31u);
        std::abort();
    }
    const std::uint64_t round = ++warp_rounds;
    for (unsigned j = 0; j < 32; ++j)
        if (mask >> j & 1u) wait_at_least(warp_lanes[base + j].consumed, round - 1);
    WarpLane& mine = warp_lanes[me];
    mine.bits = 0;
    std::memcpy(&mine.bits, &value, sizeof(T));
    mine.posted.store(round, std::memory_order_release);
    const WarpLane& source = warp_lanes[base + (source_lane & 31u)];
    wait_at_least(source.posted, round);
    T out;
    std::memcpy(&out, &source.bits, sizeof(T));
    mine.consumed.store(round, std::memory_order_release);
    return out;
}
}  // namespace ic_emu

template <class T> inline T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32)
{
    const unsigned lane = ((threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x) & 31u;
    const unsigned segment = lane & ~unsigned(width - 1);
    return ic_emu::shuffle(mask, value, segment | ((lane ^ unsigned(lane_mask)) & unsigned(width - 1)));
}

#define IC_DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(ic_emu::dynamic_shared)

inline void __syncthreads() { ic_emu::block_barrier->arrive_and_wait(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

template <class T> inline T __ldg(const T* p) { return *p; }

// The value's type follows the pointer's, as with CUDA's overloads (atomicMax(int*, 0u) is fine).
template <class T> using ic_value_t = std::type_identity_t<T>;
template <class T> inline T atomicAdd(T* p, ic_value_t<T> v) { return std::atomic_ref<T>(*p).fetch_add(v); }
template <class T> inline T atomicSub(T* p, ic_value_t<T> v) { return std::atomic_ref<T>(*p).fetch_sub(v); }
template <class T> inline T atomicExch(T* p, ic_value_t<T> v) { return std::atomic_ref<T>(*p).exchange(v); }
template <class T> inline T atomicCAS(T* p, ic_value_t<T> expected, ic_value_t<T> desired)
{
    std::atomic_ref<T>(*p).compare_exchange_strong(expected, desired);
    return expected;
}
template <class T> inline T atomicMin(T* p, ic_value_t<T> v)
{
    std::atomic_ref<T> r(*p);
    T old = r.load();
    while (v < old && !r.compare_exchange_weak(old, v)) {}
    return old;
}
template <class T> inline T atomicMax(T* p, ic_value_t<T> v)
{
    std::atomic_ref<T> r(*p);
    T old = r.load();
    while (v > old && !r.compare_exchange_weak(old, v)) {}
    return old;
}

namespace ic_emu {

// Launch geometry as the Python side packs it (uint64 each).
struct Launch {
    std::uint64_t grid[3], block[3], shared_bytes, seed;
};

inline dim3 unflatten(std::uint64_t k, const dim3& extent)
{
    dim3 d;
    d.x = unsigned(k % extent.x);
    d.y = unsigned(k / extent.x % extent.y);
    d.z = unsigned(k / extent.x / extent.y);
    return d;
}

// Run `body` (one kernel invocation) for every thread of every block.
template <class Body> void run(const Launch& L, Body body)
{
    const dim3 grid{unsigned(L.grid[0]), unsigned(L.grid[1]), unsigned(L.grid[2])};
    const dim3 block{unsigned(L.block[0]), unsigned(L.block[1]), unsigned(L.block[2])};
    const std::uint64_t nthreads = L.block[0] * L.block[1] * L.block[2];
    std::vector<std::uint64_t> order(L.grid[0] * L.grid[1] * L.grid[2]);
    std::iota(order.begin(), order.end(), std::uint64_t(0));
    std::uint64_t state = L.seed;  // Fisher-Yates with splitmix64
    for (std::size_t k = order.size(); k > 1; --k) {
        std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        std::swap(order[k - 1], order[(z ^ (z >> 31)) % k]);
    }

    const std::size_t shared_size = std::max<std::uint64_t>(L.shared_bytes, 1);
    std::unique_ptr<unsigned char, decltype(&std::free)> shared(
        static_cast<unsigned char*>(std::aligned_alloc(64, (shared_size + 63) / 64 * 64)), &std::free);
    std::barrier<> start(std::ptrdiff_t(nthreads + 1)), done(std::ptrdiff_t(nthreads + 1));
    std::unique_ptr<std::barrier<>> barrier;
    std::unique_ptr<WarpLane[]> lanes;
    dim3 current;
    bool quit = false;

    std::vector<std::thread> workers;
    workers.reserve(nthreads);
    for (std::uint64_t t = 0; t < nthreads; ++t) {
        workers.emplace_back([&, t] {
            threadIdx = unflatten(t, block);
            blockDim = block;
            gridDim = grid;
            dynamic_shared = shared.get();
            for (;;) {
                start.arrive_and_wait();
                if (quit) return;
                blockIdx = current;
                block_barrier = barrier.get();
                warp_lanes = lanes.get();
                warp_rounds = 0;
                body();
                block_barrier->arrive_and_drop();
                done.arrive_and_wait();
            }
        });
    }
    for (std::uint64_t k : order) {
        current = unflatten(k, grid);
        std::memset(shared.get(), 0xFF, shared_size);
        barrier = std::make_unique<std::barrier<>>(std::ptrdiff_t(nthreads));
        lanes = std::make_unique<WarpLane[]>((nthreads + 31) / 32 * 32);
        start.arrive_and_wait();
        done.arrive_and_wait();
    }
    quit = true;
    start.arrive_and_wait();
    for (auto& w : workers) w.join();
}

// Call kernel `k` with its arguments read from `params` (like cuLaunchKernel's
// kernelParams: params[i] points at the value of argument i).
template <class... A, std::size_t... I>
inline void invoke(void (*k)(A...), void** params, std::index_sequence<I...>)
{
    k(*static_cast<std::remove_cv_t<A>*>(params[I])...);
}

template <class... A> inline void invoke(void (*k)(A...), void** params)
{
    invoke(k, params, std::index_sequence_for<A...>{});
}

template <class T> std::string type_code()
{
    if constexpr (std::is_pointer_v<T>)
        return "P" + std::to_string(sizeof(std::remove_pointer_t<T>));
    else if constexpr (std::is_floating_point_v<T>)
        return "F" + std::to_string(sizeof(T));
    else if constexpr (std::is_integral_v<T>)
        return "I" + std::to_string(sizeof(T));
    else
        return "?";
}

// "P8,I8,F4,...": one code per argument, checked by the Python launcher.
template <class... A> const char* signature(void (*)(A...))
{
    static const std::string s = [] {
        std::string out;
        ((out += type_code<A>() + ","), ...);
        if (!out.empty()) out.pop_back();
        return out;
    }();
    return s.c_str();
}

}  // namespace ic_emu

// The emulator appends IC_EMULATOR_ENTRY(NAME) per entry point, which defines
//     extern "C" void ic_launch_NAME(const ic_emu::Launch* L, void** params);
//     extern "C" const char* ic_signature_NAME();
#define IC_EMULATOR_ENTRY(name)                                                       \
    extern "C" void ic_launch_##name(const ic_emu::Launch* L, void** params)          \
    {                                                                                 \
        ic_emu::run(*L, [params] { ic_emu::invoke(name, params); });                  \
    }                                                                                 \
    extern "C" const char* ic_signature_##name() { return ic_emu::signature(name); }
