// Test kernels for the emulator's warps, blocks, flags and checks (tests/test_emulator_*.py).
// Appended to a kernel family's source, so common.cuh is in scope; compiled by the
// emulator and by NVRTC alike. Each kernel writes every output it owns.

// Warp intrinsics on full warps (blockDim.x a multiple of 32). out[k * n + g] is result k
// of thread g (n threads in all); votes[k * n + g] likewise; dynamic shared memory:
// blockDim.x doubles.
extern "C" __global__ void emu_shuffles(const double* x, double* out, unsigned* votes, int* ints,
                                        unsigned long long* wide)
{
    IC_DYNAMIC_SHARED(double, s);
    const unsigned full = 0xFFFFFFFFu;
    const int t = threadIdx.x, lane = t % warpSize;
    const int n = blockDim.x * gridDim.x, g = blockIdx.x * blockDim.x + t;
    const double v = x[g];

    double sum = v;
    for (int o = 16; o > 0; o /= 2) sum += __shfl_xor_sync(full, sum, o);
    out[0 * n + g] = sum;

    double down = v;
    for (int o = 16; o > 0; o /= 2) down += __shfl_down_sync(full, down, o);
    out[1 * n + g] = down;

    double scan = v;
    for (int o = 1; o < 32; o *= 2) {
        const double up = __shfl_up_sync(full, scan, o);
        if (lane >= o) scan += up;
    }
    out[2 * n + g] = scan;

    out[3 * n + g] = __shfl_sync(full, v, 3, 8);
    out[4 * n + g] = __shfl_sync(full, v, lane + 37);
    out[5 * n + g] = __shfl_xor_sync(full, v, 9, 8);
    out[6 * n + g] = __shfl_up_sync(full, v, 3, 16);
    out[7 * n + g] = __shfl_down_sync(full, v, 5, 16);
    out[8 * n + g] = __shfl_down_sync(full, (float)v, 1);

    s[t] = v;
    __syncwarp();
    out[9 * n + g] = s[t ^ 1];

    votes[0 * n + g] = __ballot_sync(full, v > 0);
    votes[1 * n + g] = __any_sync(full, v > 2);
    votes[2 * n + g] = __all_sync(full, v > -5);
    votes[3 * n + g] = __syncthreads_count(v > 0);
    votes[4 * n + g] = __syncthreads_and(v > -5);
    votes[5 * n + g] = __syncthreads_or(v > 2);
    votes[6 * n + g] = __popc(__ballot_sync(full, v > 0));
    ints[g] = __shfl_xor_sync(full, g, 1);
    wide[g] = __shfl_sync(full, (unsigned long long)g << 33, 0);
}

// A partial warp (blockDim.x = 48: warp 1 has lanes 0-15). out[g] = the sum of the lanes
// present in its warp (lane 0 of each warp, from a reduction over __ballot_sync's mask),
// raw[g] = __shfl_down_sync(present, v, 16) (lanes past the end: undefined on a GPU),
// active[g] = __activemask() for lanes with lane % 3 == 0 (inside that branch), else 0.
extern "C" __global__ void emu_partial_warp(const double* x, double* out, double* raw, unsigned* active)
{
    const int t = threadIdx.x, lane = t % warpSize;
    const int g = blockIdx.x * blockDim.x + t;
    const double v = x[g];
    const unsigned present = __ballot_sync(0xFFFFFFFFu, 1);
    const int count = __popc(present);
    double sum = v;
    for (int o = 16; o > 0; o /= 2) {
        const double other = __shfl_down_sync(present, sum, o);
        if (lane + o < count) sum += other;
    }
    out[g] = lane == 0 ? sum : 0.0;
    raw[g] = __shfl_down_sync(present, v, 16);
    unsigned mask = 0;
    if (lane % 3 == 0) mask = __activemask();
    active[g] = mask;
}

// Tile (ti, tj) of k = 0, 1, ... in anti-diagonal order on a th x tw grid of tiles.
__device__ void emu_tile_of(int k, int th, int tw, int* ti, int* tj)
{
    int first = 0;
    for (int d = 0;; ++d) {
        const int lo = max(0, d - tw + 1), hi = min(th - 1, d);
        if (k < first + hi - lo + 1) {
            *ti = lo + (k - first);
            *tj = d - *ti;
            return;
        }
        first += hi - lo + 1;
    }
}

// A persistent wavefront, the pattern of a tiled solve: blocks claim tiles of side T in
// dependency order from `counter`, wait for the ready flags of the tiles above and to the
// left, and compute
//     out[i, j] = x[i, j] + 0.5 * out[i0 - 1, j] + 0.25 * out[i, j0 - 1]
// ((i0, j0) the tile's first pixel; terms outside the image are 0), then publish the tile.
extern "C" __global__ void emu_wavefront(const double* x, double* out, int* ready, unsigned* counter, int H, int W,
                                         int T)
{
    __shared__ int claimed;
    const int th = (H + T - 1) / T, tw = (W + T - 1) / T;
    for (;;) {
        if (threadIdx.x == 0) claimed = (int)atomicAdd(counter, 1u);
        __syncthreads();                                    // the claim is visible
        const int k = claimed;
        if (k >= th * tw) return;
        int ti, tj;
        emu_tile_of(k, th, tw, &ti, &tj);
        const int i0 = ti * T, j0 = tj * T;
        if (threadIdx.x == 0) {
            if (ti > 0)
                while (!ic_load_acquire(ready + (ti - 1) * tw + tj)) {}   // flag wait: above
            if (tj > 0)
                while (!ic_load_acquire(ready + ti * tw + tj - 1)) {}     // flag wait: left
        }
        __syncthreads();                                    // the neighbours are ready
        for (int e = threadIdx.x; e < T * T; e += blockDim.x) {
            const int i = i0 + e / T, j = j0 + e % T;
            if (i >= H || j >= W) continue;
            const double above = i0 > 0 ? __ldcg(out + (i0 - 1) * W + j) : 0.0;
            const double left = j0 > 0 ? __ldcg(out + i * W + j0 - 1) : 0.0;
            out[i * W + j] = x[i * W + j] + 0.5 * above + 0.25 * left;
        }
        __syncthreads();                                    // the tile is written
        if (threadIdx.x == 0) {
            __threadfence();                                // publish: the tile before its flag
            ic_store_relaxed(ready + ti * tw + tj, 1);
        }
    }
}

// Every block keeps its own static __shared__ array while all blocks of the grid are
// running (a grid-wide rendezvous: needs gridDim.x resident blocks), then
// out[g] = the value its neighbour thread stored: blockIdx.x * 1000 + (t + 1) % blockDim.x.
extern "C" __global__ void emu_static_shared(double* out, unsigned* arrived)
{
    __shared__ double values[64];
    const int t = threadIdx.x;
    values[t] = blockIdx.x * 1000.0 + t;
    __syncthreads();
    if (t == 0) {
        atomicAdd(arrived, 1u);
        while (ic_load_acquire(arrived) < gridDim.x) {}
    }
    __syncthreads();
    out[blockIdx.x * blockDim.x + t] = values[(t + 1) % blockDim.x];
}

// Thread 0 of every block waits for a flag that nobody sets.
extern "C" __global__ void emu_spin_forever(const int* flag, int* out)
{
    if (threadIdx.x == 0)
        while (!ic_load_acquire(flag)) {}
    __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = 1;
}

// outf[g] = the sum of the 4 floats at xf + float_offset + 4g, loaded as one float4;
// outd[g] = the sum of the 2 doubles at xd + double_offset + 2g, loaded as one double2.
extern "C" __global__ void emu_vector_loads(const float* xf, const double* xd, float* outf, double* outd,
                                            int float_offset, int double_offset)
{
    const int g = blockIdx.x * blockDim.x + threadIdx.x;
    const float4 f = reinterpret_cast<const float4*>(xf + float_offset)[g];
    outf[g] = f.x + f.y + f.z + f.w;
    const double2 d = reinterpret_cast<const double2*>(xd + double_offset)[g];
    outd[g] = d.x + d.y;
}

// order[k] = the k-th thread of the (single) block to get past the barrier.
extern "C" __global__ void emu_arrival_order(int* order, unsigned* counter)
{
    __syncthreads();
    order[atomicAdd(counter, 1u)] = threadIdx.x;
}

// Warp intrinsics used against their rules (`mode` picks the mistake); out[g] = the result.
extern "C" __global__ void emu_warp_misuse(double* out, int mode)
{
    const unsigned full = 0xFFFFFFFFu;
    const int t = threadIdx.x, lane = t % warpSize;
    double v = t;
    if (mode == 0) {            // the calling lane is not in its mask
        v = __shfl_sync(1u << ((lane + 1) % 32), v, 0);
    } else if (mode == 1) {     // the lanes of one mask call from two places
        if (lane < 16) v = __shfl_xor_sync(full, v, 1);
        else v = __shfl_xor_sync(full, v, 2);
    } else if (mode == 2) {     // a lane the mask names waits in __syncthreads
        if (lane == 5) __syncthreads();
        else v = __shfl_xor_sync(full, v, 1);
    } else if (mode == 3) {     // two masks that overlap
        v = __shfl_xor_sync(lane < 16 ? 0x0000FFFFu : full, v, 1);
    } else if (mode == 4) {     // a width that is not a power of two
        v = __shfl_sync(full, v, 0, 12);
    } else if (mode == 5) {
        if (t == 3) __trap();
    }
    out[blockIdx.x * blockDim.x + t] = v;
}

// atomicAnd/Or/Xor/Inc/Dec/Exch/CAS on int, unsigned and unsigned long long from every thread.
extern "C" __global__ void emu_atomics(unsigned* bits, int* ints, unsigned long long* wide, unsigned* wrap)
{
    const unsigned g = blockIdx.x * blockDim.x + threadIdx.x;
    atomicOr(bits + 0, 1u << (g % 32));
    atomicAnd(bits + 1, ~(1u << (g % 32)));
    atomicXor(bits + 2, 1u << (g % 8));
    atomicInc(wrap + 0, 9u);
    atomicDec(wrap + 1, 9u);
    atomicMax(ints + 0, (int)g);
    atomicMin(ints + 1, -(int)g);
    atomicAdd(wide, (unsigned long long)g << 32);
    atomicCAS(ints + 2, (int)g, (int)g + 1);    // 0 -> 1 -> 2 -> ... as far as the order allows
}

// One unsigned at `offset` bytes into words, by every thread: atomicAdd of 1 (mode 0),
// ic_store_release of 7 (mode 1), or ic_load_acquire into out[g] (mode 2).
extern "C" __global__ void emu_flag_alignment(unsigned* words, unsigned* out, int offset, int mode)
{
    unsigned* p = reinterpret_cast<unsigned*>(reinterpret_cast<char*>(words) + offset);
    const int g = blockIdx.x * blockDim.x + threadIdx.x;
    if (mode == 0) atomicAdd(p, 1u);
    else if (mode == 1) ic_store_release(p, 7u);
    else out[g] = ic_load_acquire(p);
}
