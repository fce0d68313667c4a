#line 2 "cuda_shim.h"
// cuda_shim.h: CUDA built-ins for a host C++ compiler (the "emulate" backend).
//
// The emulator (invconv_cupy/emulator) compiles
//     cuda_shim.h + generated preamble + common.cuh + <family>.cu + generated launchers
// with g++ -std=c++20 and links it with the emulator's runtime (cuda_shim_runtime.cpp,
// compiled once per compiler and sanitizer, and cached) into one shared library per family,
// dtype and index type. This header is what kernel code sees: CUDA's names, their thin
// inline parts, and declarations of what the runtime implements (the fibers, the block
// scheduler, warps, barriers, fences, atomics, the watchdog), whose source starts with this
// header too. Kept small on purpose: it is compiled with every kernel library.
// (The #line above: file names end up in the library, in alignment checks and the call
// sites of built-ins, so a build must not depend on the folder it is compiled in.)
//
// How a launch runs
// - Blocks run concurrently: `concurrent_blocks` worker OS threads (the
//   launch's setting, at most the grid size) each take the next block of a
//   shuffled order until none is left (the first wave starts together), so
//   blocks may wait on each other's flags as long as the kernel guarantees
//   progress with any number of resident blocks (as CUDA requires). Static
//   __shared__ variables are per worker (thread_local), so per block; dynamic
//   shared memory is filled with 0xFF bytes (NaN in float and double) before
//   every block.
// - The threads of a block are fibers (user-level contexts) on their worker:
//   a thread runs until it calls a built-in that waits (__syncthreads, a warp
//   intrinsic, a spinning load) and the block's scheduler then resumes a
//   waiting-free thread picked at random (seeded: Launch::seed and the block
//   index fix every block's schedule). Threads 32w .. 32w+31 (linear index
//   x + y*Dx + z*Dx*Dy) form warp w.
// - Warp intrinsics follow CUDA's rules and report what a GPU leaves
//   undefined: the calling lane must be in its mask; the non-exited lanes a
//   mask names must call the same intrinsic with the same mask at the same
//   place (__syncwarp: the same mask anywhere, as on sm_70+); a lane a pending
//   warp intrinsic waits for that waits in __syncthreads instead is an error;
//   a block whose threads all wait is a deadlock. Reading a lane that does not
//   take part (outside the mask, exited) gives all-ones bits (NaN).
//   __activemask() returns the lanes of the warp that are at that call when
//   every other lane waits elsewhere or has exited.
// - Memory order as on a GPU: atomics are relaxed; __threadfence() is a
//   sequentially consistent fence; ic_load_acquire / ic_store_release (and
//   their relaxed forms) are the flag accesses (common.cuh defines them for
//   NVRTC). Load-like built-ins that keep reading without the thread writing
//   anything yield (a spin-wait lets the other threads run); a block whose
//   threads all spin lets its worker sleep, backing off up to 0.5 ms.
// - Errors (the checks above, a deadlock, a misaligned typed access when the
//   library is built with -fsanitize=alignment, a misaligned atomic or flag
//   access, __trap(), the watchdog) stop
//   the launch; the launcher returns the message and Python raises it.
// - The watchdog: when no block makes progress (a barrier or warp intrinsic
//   completes, a thread exits, a store or changing atomic) for
//   Launch::watchdog_ms while every worker waits or spins in built-ins, the
//   launch stops with a report of where each block's threads are.
// - Race mode (Launch::flags bit 0): every built-in call may also switch to
//   another thread of the block, yield the worker's core or sleep, at random,
//   so missing barriers, warp syncs and flag waits show up as wrong results.
// - Sanitizers: AddressSanitizer (-fsanitize=address) and ThreadSanitizer
//   (-fsanitize=thread) know about the fibers. Under ThreadSanitizer every
//   block runs on a fresh OS thread, each CUDA thread is a TSan fiber, and
//   the only happens-before edges between threads are barriers, warp
//   intrinsics, and fences with the flag accesses and atomics between them
//   as C++ defines them (FenceModel): a missing __syncthreads, __syncwarp,
//   fence or flag wait is a data race report, whatever the timing, when the
//   racing accesses both happen (use race mode, so that blocks interleave).
//
// Supported: threadIdx, blockIdx, blockDim, gridDim (x, y, z), warpSize;
// __global__, __device__, __host__, __forceinline__, __noinline__,
// __launch_bounds__, __align__, __restrict__; static __shared__ arrays;
// IC_DYNAMIC_SHARED; __syncthreads (and _count/_and/_or), __syncwarp,
// __shfl_sync, __shfl_up_sync, __shfl_down_sync, __shfl_xor_sync (4- and
// 8-byte types), __ballot_sync, __any_sync, __all_sync, __activemask;
// __threadfence, __threadfence_block, __threadfence_system; atomicAdd, atomicSub,
// atomicExch, atomicMin, atomicMax, atomicCAS, atomicAnd, atomicOr, atomicXor,
// atomicInc, atomicDec; ic_load_relaxed, ic_load_acquire, ic_store_relaxed,
// ic_store_release; __ldg, __ldcg, __ldca, __ldcs, __ldlu, __ldcv, __stcg,
// __stcs, __stwb, __stwt (plain accesses); __nanosleep; __trap; __popc,
// __popcll, __clz, __clzll, __ffs, __ffsll, __brev, __brevll; printf; the
// vector types float2/3/4, double2/3, int2/3/4, uint2/3/4, longlong2,
// ulonglong2 with CUDA's alignment and make_<type>(); min, max and the <cmath>
// functions.
// Atomics take int, unsigned, long, unsigned long, long long, unsigned long long, float
// and double; the flag accesses any 1-, 2-, 4- or 8-byte type.
// Not supported: cooperative groups, __match_*/__reduce_* warp intrinsics,
// cp.async, inline PTX, texture objects, `volatile` spin loops (spin through
// ic_load_* so the scheduler and the watchdog see it).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <source_location>
#include <type_traits>
#include <utility>

#define IC_EMULATOR 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// One worker OS thread runs one block at a time: thread_local storage is per block.
#define __shared__ static thread_local

inline constexpr int warpSize = 32;

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

// Vector types with CUDA's sizes and alignments, and their make_ functions.
#define IC_VECTOR2(T, name, align)                                                 \
    struct __align__(align) name##2 { T x, y; };                                 \
    inline name##2 make_##name##2(T x, T y) { return {x, y}; }
#define IC_VECTOR3(T, name)                                                        \
    struct name##3 { T x, y, z; };                                                \
    inline name##3 make_##name##3(T x, T y, T z) { return {x, y, z}; }
#define IC_VECTOR4(T, name, align)                                                 \
    struct __align__(align) name##4 { T x, y, z, w; };                           \
    inline name##4 make_##name##4(T x, T y, T z, T w) { return {x, y, z, w}; }
IC_VECTOR2(float, float, 8)
IC_VECTOR3(float, float)
IC_VECTOR4(float, float, 16)
IC_VECTOR2(double, double, 16)
IC_VECTOR3(double, double)
IC_VECTOR2(int, int, 8)
IC_VECTOR3(int, int)
IC_VECTOR4(int, int, 16)
IC_VECTOR2(unsigned, uint, 8)
IC_VECTOR3(unsigned, uint)
IC_VECTOR4(unsigned, uint, 16)
IC_VECTOR2(long long, longlong, 16)
IC_VECTOR2(unsigned long long, ulonglong, 16)
#undef IC_VECTOR2
#undef IC_VECTOR3
#undef IC_VECTOR4

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return {x, y, z}; }
};

// The runtime's names are hidden: each kernel library holds its own copy of the runtime,
// and its calls and thread-local accesses stay inside the library.
#pragma GCC visibility push(hidden)
// Set by the runtime for the running thread (a fiber) and its block.
extern thread_local uint3 threadIdx, blockIdx;
extern thread_local dim3 blockDim, gridDim;

namespace ic_emu {

// Launch geometry and settings as the Python side packs them (cuda_shim_runtime.cpp).
struct Launch;

enum class Op : unsigned char { syncwarp, shfl, shfl_up, shfl_down, shfl_xor, ballot, any, all };
enum class Reduce : unsigned char { none, count, all, any };
enum class Rmw : unsigned char { add, sub, exch, min, max, bit_and, bit_or, bit_xor, cas, inc, dec };

extern thread_local unsigned char* dynamic_shared;

// Run `body(arg)` as every thread of every block of launch L; 0, or 1 with the message in `error`.
int run_grid(const Launch& L, const char* kernel, void (*body)(void*), void* arg, char* error,
             std::size_t error_size);

// The built-ins (cuda_shim_runtime.cpp); `loc` is the kernel's call site.
std::uint64_t warp_call(Op op, const char* what, unsigned mask, std::uint64_t value, unsigned bytes,
                        std::uint64_t arg, int width, const std::source_location& loc);
int barrier(const char* what, Reduce reduce, int predicate, const std::source_location& loc);
unsigned activemask(const std::source_location& loc);
void fence(const char* what, bool device, const std::source_location& loc);
// Atomics: relaxed, device scope; instantiated for the types of is_atomic_type.
template <class T> T atomic(Rmw rmw, const char* what, T* p, T v, T compare, const std::source_location& loc);
// Flag accesses of `bytes` (1, 2, 4 or 8) bytes, bit for bit.
std::uint64_t load(const char* what, const void* p, unsigned bytes, bool acquire, const std::source_location& loc);
void store(const char* what, void* p, std::uint64_t bits, unsigned bytes, bool release,
           const std::source_location& loc);
void nanosleep(const std::source_location& loc);
[[noreturn]] void trap(const std::source_location& loc);

template <class T>
inline constexpr bool is_atomic_type =
    std::is_same_v<T, int> || std::is_same_v<T, unsigned> || std::is_same_v<T, long> ||
    std::is_same_v<T, unsigned long> || std::is_same_v<T, long long> || std::is_same_v<T, unsigned long long> ||
    std::is_same_v<T, float> || std::is_same_v<T, double>;

template <class T> inline std::uint64_t bits_of(T v)
{
    static_assert(std::is_trivially_copyable_v<T> && (sizeof(T) == 1 || sizeof(T) == 2 || sizeof(T) == 4 ||
                                                      sizeof(T) == 8),
                  "the emulator moves 1-, 2-, 4- or 8-byte values (warp shuffles: 4 or 8)");
    std::uint64_t out = 0;
    __builtin_memcpy(&out, &v, sizeof(T));
    return out;
}

template <class T> inline std::uint64_t shfl_bits(T v)
{
    static_assert(sizeof(T) == 4 || sizeof(T) == 8, "warp shuffles move 4- or 8-byte values");
    return bits_of(v);
}

template <class T> inline T from_bits(std::uint64_t bits)
{
    T v;
    __builtin_memcpy(&v, &bits, sizeof(T));
    return v;
}

template <class T>
inline T atomic_call(Rmw rmw, const char* what, T* p, T v, T compare, const std::source_location& loc)
{
    static_assert(is_atomic_type<T>, "the emulator's atomics take int, unsigned, long, unsigned long, long long, "
                                     "unsigned long long, float or double");
    return atomic<T>(rmw, what, p, v, compare, loc);
}

template <class Body> int run(const Launch& L, const char* kernel, Body body, char* error, std::size_t error_size)
{
    return run_grid(L, kernel, [](void* b) { (*static_cast<Body*>(b))(); }, &body, error, error_size);
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

// One argument's code and a comma: P<pointee size>, F<size> or I<size> (? for other types).
template <class T> inline int type_code(char* out, std::size_t size)
{
    if constexpr (std::is_pointer_v<T>)
        return std::snprintf(out, size, "P%zu,", sizeof(std::remove_pointer_t<T>));
    else if constexpr (std::is_floating_point_v<T>)
        return std::snprintf(out, size, "F%zu,", sizeof(T));
    else if constexpr (std::is_integral_v<T>)
        return std::snprintf(out, size, "I%zu,", sizeof(T));
    else
        return std::snprintf(out, size, "?,");
}

// "P8,I8,F4,...": one code per argument, checked by the Python launcher.
template <class... A> const char* signature(void (*)(A...))
{
    static char text[8 * sizeof...(A) + 1] = {};
    [[maybe_unused]] static const bool filled = [] {
        char* end = text;
        ((end += type_code<A>(end, std::size_t(text + sizeof text - end))), ...);
        if (end != text) end[-1] = '\0';   // the last comma
        return true;
    }();
    return text;
}

}  // namespace ic_emu
#pragma GCC visibility pop

#define IC_DYNAMIC_SHARED(type, name) type* name = reinterpret_cast<type*>(ic_emu::dynamic_shared)

using ic_emu_loc = std::source_location;
#define IC_EMU_HERE ic_emu_loc loc = ic_emu_loc::current()

// --- barriers and fences ---
inline void __syncthreads(IC_EMU_HERE) { ic_emu::barrier("__syncthreads", ic_emu::Reduce::none, 0, loc); }
inline int __syncthreads_count(int predicate, IC_EMU_HERE)
{
    return ic_emu::barrier("__syncthreads_count", ic_emu::Reduce::count, predicate, loc);
}
inline int __syncthreads_and(int predicate, IC_EMU_HERE)
{
    return ic_emu::barrier("__syncthreads_and", ic_emu::Reduce::all, predicate, loc);
}
inline int __syncthreads_or(int predicate, IC_EMU_HERE)
{
    return ic_emu::barrier("__syncthreads_or", ic_emu::Reduce::any, predicate, loc);
}
inline void __threadfence(IC_EMU_HERE) { ic_emu::fence("__threadfence", true, loc); }
inline void __threadfence_system(IC_EMU_HERE) { ic_emu::fence("__threadfence_system", true, loc); }
inline void __threadfence_block(IC_EMU_HERE) { ic_emu::fence("__threadfence_block", false, loc); }

// --- warp intrinsics ---
inline void __syncwarp(unsigned mask = 0xFFFFFFFFu, IC_EMU_HERE)
{
    ic_emu::warp_call(ic_emu::Op::syncwarp, "__syncwarp", mask, 0, 4, 0, 32, loc);
}
template <class T> inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize, IC_EMU_HERE)
{
    return ic_emu::from_bits<T>(ic_emu::warp_call(ic_emu::Op::shfl, "__shfl_sync", mask, ic_emu::shfl_bits(var),
                                                  sizeof(T), unsigned(srcLane), width, loc));
}
template <class T> inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize, IC_EMU_HERE)
{
    return ic_emu::from_bits<T>(ic_emu::warp_call(ic_emu::Op::shfl_up, "__shfl_up_sync", mask, ic_emu::shfl_bits(var),
                                                  sizeof(T), delta, width, loc));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize, IC_EMU_HERE)
{
    return ic_emu::from_bits<T>(ic_emu::warp_call(ic_emu::Op::shfl_down, "__shfl_down_sync", mask,
                                                  ic_emu::shfl_bits(var), sizeof(T), delta, width, loc));
}
template <class T> inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize, IC_EMU_HERE)
{
    return ic_emu::from_bits<T>(ic_emu::warp_call(ic_emu::Op::shfl_xor, "__shfl_xor_sync", mask,
                                                  ic_emu::shfl_bits(var), sizeof(T), unsigned(laneMask), width, loc));
}
inline unsigned __ballot_sync(unsigned mask, int predicate, IC_EMU_HERE)
{
    return unsigned(ic_emu::warp_call(ic_emu::Op::ballot, "__ballot_sync", mask, predicate != 0, 4, 0, 32, loc));
}
inline int __any_sync(unsigned mask, int predicate, IC_EMU_HERE)
{
    return int(ic_emu::warp_call(ic_emu::Op::any, "__any_sync", mask, predicate != 0, 4, 0, 32, loc));
}
inline int __all_sync(unsigned mask, int predicate, IC_EMU_HERE)
{
    return int(ic_emu::warp_call(ic_emu::Op::all, "__all_sync", mask, predicate != 0, 4, 0, 32, loc));
}
inline unsigned __activemask(IC_EMU_HERE) { return ic_emu::activemask(loc); }

// --- atomics (relaxed, as on a GPU); the value's type follows the pointer's ---
template <class T> using ic_value_t = std::type_identity_t<T>;
#define IC_EMU_ATOMIC(name, rmw)                                                          \
    template <class T> inline T name(T* p, ic_value_t<T> v, IC_EMU_HERE)                 \
    {                                                                                      \
        return ic_emu::atomic_call<T>(ic_emu::Rmw::rmw, #name, p, v, T(), loc);            \
    }
IC_EMU_ATOMIC(atomicAdd, add)
IC_EMU_ATOMIC(atomicSub, sub)
IC_EMU_ATOMIC(atomicExch, exch)
IC_EMU_ATOMIC(atomicMin, min)
IC_EMU_ATOMIC(atomicMax, max)
IC_EMU_ATOMIC(atomicAnd, bit_and)
IC_EMU_ATOMIC(atomicOr, bit_or)
IC_EMU_ATOMIC(atomicXor, bit_xor)
#undef IC_EMU_ATOMIC
template <class T> inline T atomicCAS(T* p, ic_value_t<T> compare, ic_value_t<T> v, IC_EMU_HERE)
{
    return ic_emu::atomic_call<T>(ic_emu::Rmw::cas, "atomicCAS", p, v, compare, loc);
}
inline unsigned atomicInc(unsigned* p, unsigned limit, IC_EMU_HERE)
{
    return ic_emu::atomic_call<unsigned>(ic_emu::Rmw::inc, "atomicInc", p, limit, 0u, loc);
}
inline unsigned atomicDec(unsigned* p, unsigned limit, IC_EMU_HERE)
{
    return ic_emu::atomic_call<unsigned>(ic_emu::Rmw::dec, "atomicDec", p, limit, 0u, loc);
}

// --- flag accesses (common.cuh defines the same names for NVRTC) ---
template <class T> inline T ic_load_relaxed(const T* p, IC_EMU_HERE)
{
    return ic_emu::from_bits<T>(ic_emu::load("ic_load_relaxed", p, sizeof(T), false, loc));
}
template <class T> inline T ic_load_acquire(const T* p, IC_EMU_HERE)
{
    return ic_emu::from_bits<T>(ic_emu::load("ic_load_acquire", p, sizeof(T), true, loc));
}
template <class T> inline void ic_store_relaxed(T* p, std::type_identity_t<T> v, IC_EMU_HERE)
{
    ic_emu::store("ic_store_relaxed", p, ic_emu::bits_of(v), sizeof(T), false, loc);
}
template <class T> inline void ic_store_release(T* p, std::type_identity_t<T> v, IC_EMU_HERE)
{
    ic_emu::store("ic_store_release", p, ic_emu::bits_of(v), sizeof(T), true, loc);
}

inline void __nanosleep(unsigned, IC_EMU_HERE) { ic_emu::nanosleep(loc); }

[[noreturn]] inline void __trap(IC_EMU_HERE) { ic_emu::trap(loc); }

// --- cache-hinted loads and stores: plain accesses on a CPU ---
template <class T> inline T __ldg(const T* p) { return *p; }
template <class T> inline T __ldcg(const T* p) { return *p; }
template <class T> inline T __ldca(const T* p) { return *p; }
template <class T> inline T __ldcs(const T* p) { return *p; }
template <class T> inline T __ldlu(const T* p) { return *p; }
template <class T> inline T __ldcv(const T* p) { return *p; }
template <class T> inline void __stcg(T* p, T v) { *p = v; }
template <class T> inline void __stcs(T* p, T v) { *p = v; }
template <class T> inline void __stwb(T* p, T v) { *p = v; }
template <class T> inline void __stwt(T* p, T v) { *p = v; }

// --- bit manipulation ---
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(unsigned(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x)
{
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
    return __builtin_bswap32(x);
}
inline unsigned long long __brevll(unsigned long long x)
{
    return (static_cast<unsigned long long>(__brev(unsigned(x))) << 32) | __brev(unsigned(x >> 32));
}

// Alignment checks: the library is built with -fsanitize=alignment

// The emulator appends IC_EMULATOR_ENTRY(NAME) per entry point, which defines
//     extern "C" int ic_launch_NAME(const ic_emu::Launch* L, void** params, char* error, size_t size);
//     extern "C" const char* ic_signature_NAME();
// ic_launch_NAME returns 0, or 1 with the error message in `error`. They are the library's
// interface: exported, although their parameter types are the runtime's hidden ones.
#define IC_EMU_EXPORT extern "C" __attribute__((visibility("default")))
#define IC_EMULATOR_ENTRY(name)                                                                              \
    IC_EMU_EXPORT int ic_launch_##name(const ic_emu::Launch* L, void** params, char* error, std::size_t size) \
    {                                                                                                        \
        return ic_emu::run(*L, #name, [params] { ic_emu::invoke(name, params); }, error, size);              \
    }                                                                                                        \
    IC_EMU_EXPORT const char* ic_signature_##name() { return ic_emu::signature(name); }
