// solve.cu: the triangular solve x = T^-1 y, and the transposed solve T^-T g (v2).
//
// Arrays are C-contiguous: images (B, C, H, W), weight (C, C, KH, KW).
//
// The frame. Every solve runs in a frame whose starting corner is top-left:
// frame pixel (u, v) is the physical pixel (fh ? H-1-u : u, fw ? W-1-v : v) with
//     fh = flip_h ^ transpose,  fw = flip_w ^ transpose
// (the transposed solve starts from the opposite corner). Pixel (u, v) depends
// on the pixels (u-p, v-q), 0 <= p < PH, 0 <= q < PW, through the C x C matrix
//     F_t[o][c] = weight[o][c][a][e]   (forward)   or   weight[c][o][a][e]   (transpose)
// of frame tap t = p*PW + q, with the physical tap a = flip_h ? p : KH-1-p,
// e = flip_w ? q : KW-1-q. F_0 is the anchor matrix A (used lower-triangular:
// weight[o][c][anchor] with c > o is never read) or A^T. So
//     x(u, v) = z(u, v) + sum_{t != 0} M_t x(u-p, v-q),   z = F_0^-1 y,   M_t = -F_0^-1 F_t.
// PH = min(KH, H), PW = min(KW, W): further taps only ever meet zero padding.
//
// Two or three launches per solve (kernel_solve.py plans them):
//
// 0. solve_invert (only for many channels): A^-1 by columns in global memory,
//    a warp per column.
// 1. solve_prepare (many blocks): every block forms A^-1 in shared memory (or
//    reads solve_invert's), then the blocks share the rows of
//        zmat[o*C + c]     = F_0^-1[o][c]
//        mat[k*MS + o]     = M_t[o][c] for input k = (t-1)*C + c, t = 1..taps-1
//                            (zero for C <= o < MS; MS is a multiple of G)
//    in global memory, write each input's offset in the staged tile, and zero
//    the work counter and the tiles' progress counters.
// 2. solve_wavefront_g{G} (persistent): blocks claim work items (a tile of
//    TH x TW frame pixels of `slots` images) in dependency order from an atomic
//    counter (tile anti-diagonal, then tile row, then image group), stage them in
//    shared memory and run the tile's anti-diagonals with one __syncthreads()
//    per step. A step splits each pixel's dot products over a team of Gc x L
//    threads: Gc = ceil(C/G) groups of G outputs, and L lanes (a power of two)
//    that take every L-th of the K = (taps-1)*C inputs and are summed by warp
//    shuffles. The hot loop is two loads (the input's offset, then x), one
//    vector load of G matrix entries and G FMAs. Whole images that fit in shared
//    memory are one tile each.
//
// Tiles of one image that depend on each other ("linked" launches) hand over
// their border pixels diagonal by diagonal, so that a tile lags the tiles it
// reads by about one tile width, not a whole tile: the critical path is about
// H + W - 1 pixel steps. Such a block has one more warp, the communication warp.
// In the window of step d (between two __syncthreads()) it
//  - every `grain` diagonals, exports the tile's border pixels (the last PH-1
//    rows and PW-1 columns: all that other tiles read) of the diagonals finished
//    since its last release from shared memory to x, and publishes the tile's
//    progress counter (the diagonals in x);
//  - when the halo of step d+1 is not staged yet, waits for the counters of the
//    tiles it comes from and stages the halo of every step those counts cover.
// In other windows it is idle. The compute warps never touch global memory
// between the staging of the tile and its write-back.
//
// Memory order between blocks (common.cuh's flag helpers), per progress counter:
// release: the communication warp's lanes write border pixels to x,
// __syncwarp(), then lane 0 __threadfence() and a volatile store of the count
// (what ic_store_release does, written out so that the fence is a statement
// here). Acquire: the lanes spin with ic_load_acquire (a volatile load, then a
// fence) until the count covers what the next steps read (every lane for
// itself), and the halo is read with __ldcg (ld.global.cg: coherent in L2, never a stale L1
// line). x is never read through __ldg or a const __restrict__ pointer. A block
// waits only for tiles claimed before its own, so the wavefront progresses with
// any number of resident blocks.

// ---------------------------------------------------------------- preparation

// The anchor tap's entry A[r][c] of the forward weight (c <= r is all that is read).
__device__ __forceinline__ ic_real ic_solve_anchor(const ic_real* __restrict__ w, int C, int KH, int KW, int a0,
                                                   int e0, int r, int c)
{
    return __ldg(w + ((ic_index)(r * C + c) * KH + a0) * KW + e0);
}

// A^-1 in global memory when it does not fit in a block's shared memory (or when
// a warp per column is faster than a thread per column): at[k*C + r] = A^-1[r][k],
// column k by forward substitution in one warp,
//     at[k][r] = (delta_rk - sum_{k <= c < r} A[r][c] at[k][c]) / A[r][r].
// Lane l takes the c = l (mod 32) and stores the r = l (mod 32): it reads back
// only its own stores; the partial sums meet by __shfl_xor_sync. Entries r < k
// are never written or read.
extern "C" __global__ void solve_invert(const ic_real* __restrict__ w, ic_real* __restrict__ at, int C, int KH,
                                        int KW, int flip_h, int flip_w)
{
    const int a0 = flip_h ? 0 : KH - 1, e0 = flip_w ? 0 : KW - 1;
    const int lane = threadIdx.x & 31, warps = (blockDim.x >> 5) * gridDim.x;
    for (int k = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); k < C; k += warps) {
        ic_real* column = at + (ic_index)k * C;
        const int first = k + ((lane - k) & 31);   // this lane's first c >= k
        for (int r = k; r < C; ++r) {
            ic_real partial = 0;
            for (int c = first; c < r; c += 32) partial += ic_solve_anchor(w, C, KH, KW, a0, e0, r, c) * column[c];
            for (int s = 16; s > 0; s >>= 1) partial += __shfl_xor_sync(0xffffffffu, partial, s);
            if ((r & 31) == lane)
                column[r] = ((r == k ? (ic_real)1 : (ic_real)0) - partial) / ic_solve_anchor(w, C, KH, KW, a0, e0, r, r);
        }
    }
}

// The rows of zmat and mat from at[k*S + r] = A^-1[r][k] (shared or global).
// Rows R < C of the output are zmat's, the others mat's; a block per row, a
// thread per column (consecutive columns: coalesced stores; consecutive at
// entries: no bank conflicts, coalesced loads).
__device__ __forceinline__ void ic_solve_prepare_rows(const ic_real* __restrict__ w, const ic_real* at, int S,
                                                      ic_real* __restrict__ zmat, ic_real* __restrict__ mat, int C,
                                                      int MS, int KH, int KW, int PH, int PW, int flip_h, int flip_w,
                                                      int transpose)
{
    const int K = (PH * PW - 1) * C;
    for (int R = blockIdx.x; R < C + K; R += gridDim.x) {
        if (R < C) {
            const int o = R;
            for (int c = threadIdx.x; c < C; c += blockDim.x) {
                ic_real value = 0;
                if (!transpose && c <= o) value = at[(ic_index)c * S + o];   // A^-1[o][c]
                if (transpose && c >= o) value = at[(ic_index)o * S + c];    // A^-T[o][c] = A^-1[c][o]
                zmat[(ic_index)o * C + c] = value;
            }
            continue;
        }
        const int k = R - C;
        const int t = k / C + 1, c = k - (t - 1) * C;   // once per row
        const int p = t / PW, q = t - p * PW;
        const int a = flip_h ? p : KH - 1 - p, e = flip_w ? q : KW - 1 - q;
        for (int o = threadIdx.x; o < MS; o += blockDim.x) {
            // M_t[o][c] = -sum_kk F_0^-1[o][kk] F_t[kk][c]; the weight load is the same for all lanes
            ic_real value = 0;
            if (o < C && !transpose) {
                for (int kk = 0; kk <= o; ++kk)
                    value -= at[(ic_index)kk * S + o] * __ldg(w + ((ic_index)(kk * C + c) * KH + a) * KW + e);
            } else if (o < C) {
                for (int kk = o; kk < C; ++kk)
                    value -= at[(ic_index)o * S + kk] * __ldg(w + ((ic_index)(c * C + kk) * KH + a) * KW + e);
            }
            mat[(ic_index)k * MS + o] = value;
        }
    }
}

// Prepared matrices, the inputs' offsets in the staged tile (channel stride
// chan, row stride EW), zeroed counters. Without ainv_given, dynamic shared
// memory holds A^-1: C * S words, S = C | 1 (odd: a warp's strided accesses hit
// 32 different banks); with it, A^-1 is solve_invert's at (S = C).
extern "C" __global__ void solve_prepare(
    const ic_real* __restrict__ w, const ic_real* __restrict__ ainv, ic_real* __restrict__ zmat,
    ic_real* __restrict__ mat, int* __restrict__ work, int nwork, int* __restrict__ offsets, int C, int MS, int KH,
    int KW, int PH, int PW, int flip_h, int flip_w, int transpose, int chan, int EW, int ainv_given)
{
    const int K = (PH * PW - 1) * C;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < nwork; i += gridDim.x * blockDim.x) work[i] = 0;
    for (int k = blockIdx.x * blockDim.x + threadIdx.x; k < K; k += gridDim.x * blockDim.x) {
        const int t = k / C + 1, c = k - (t - 1) * C, p = t / PW;   // input k = (t-1)*C + c, tap t = p*PW + q
        offsets[k] = c * chan - p * EW - (t - p * PW);
    }
    if (ainv_given) {
        ic_solve_prepare_rows(w, ainv, C, zmat, mat, C, MS, KH, KW, PH, PW, flip_h, flip_w, transpose);
        return;
    }
    IC_DYNAMIC_SHARED(ic_real, at);   // at[k*S + r] = A^-1[r][k]: column k of A^-1
    const int S = C | 1;
    const int a0 = flip_h ? 0 : KH - 1, e0 = flip_w ? 0 : KW - 1;
    // Column k by forward substitution, one column per thread; lanes k read
    // at[k*S + c] (stride S, odd) and A[r][k + i] (consecutive): no conflicts.
    // A zero on A's diagonal gives inf/nan (the API checks it unless told not to).
    for (int k = threadIdx.x; k < C; k += blockDim.x) {
        ic_real* column = at + k * S;
        for (int r = k; r < C; ++r) {
            ic_real s = (r == k) ? (ic_real)1 : (ic_real)0;
            for (int c = k; c < r; ++c) s -= ic_solve_anchor(w, C, KH, KW, a0, e0, r, c) * column[c];
            column[r] = s / ic_solve_anchor(w, C, KH, KW, a0, e0, r, r);
        }
    }
    __syncthreads();   // A^-1 is formed
    ic_solve_prepare_rows(w, at, S, zmat, mat, C, MS, KH, KW, PH, PW, flip_h, flip_w, transpose);
}

// ---------------------------------------------------------------- the wavefront

// G consecutive ic_real words, loaded as one vector access (LDS.64/.128) where
// G * sizeof(ic_real) allows. mat rows are G-aligned (MS and g*G are multiples
// of G, and mat starts its buffer), so these loads are aligned.
template <int G>
struct alignas((G * sizeof(ic_real)) < 16 ? (G * sizeof(ic_real)) : 16) ic_solve_vec {
    ic_real v[G];
};

// Iterations of a step's input loop in flight: fewer for wide vectors, whose
// copies would otherwise exceed the registers (and spill).
template <int G>
__host__ __device__ constexpr int ic_solve_unroll()
{
    return G * sizeof(ic_real) <= 16 ? 4 : G * sizeof(ic_real) <= 64 ? 2 : 1;
}

// The scalars of a wavefront launch and what each thread derives from them once.
struct ic_solve_geometry {
    int B, C, H, W, PH, PW, fh, fw, transpose;
    int TH, TW, tiles_h, tiles_w, MS, chan;   // chan: channel stride of a staged tile (odd)
    int EH, EW, taps, tile_words;             // tile_words: one image's staged tile (C * chan)
    int K, L, team, teams;                    // inputs, lanes, threads per pixel, pixels per step
    int my_team, g, l;                        // this thread's place in a team
    int lane_inputs;                          // the inputs lane l takes: k = l, l + L, .. < K
    unsigned lane_mask;                       // the L lanes of this thread's (pixel, output group)
    int slots, linked, grain;                 // images per work item; tiles hand over; diagonals per release
    int reach_h, reach_w;                     // tiles (up, left) a tile's halo reaches into
    int compute_warps;                        // warps 0 .. compute_warps-1 compute; the next one communicates
};

// One work item: a tile of `slots` images (b0 ..), its extent and its counter.
struct ic_solve_item {
    int b0, slots, ti, tj, u0, v0, th, tw, diagonals;
    int* counter;   // its progress counter (linked launches)
};

// The staged tile's word of image slot `slot`, channel c, tile pixel (r, s)
// (-(PH-1) <= r < TH, -(PW-1) <= s < TW: the halo has negative coordinates).
__device__ __forceinline__ int ic_solve_word(const ic_solve_geometry& q, int slot, int c, int r, int s)
{
    return slot * q.tile_words + c * q.chan + (r + q.PH - 1) * q.EW + s + q.PW - 1;
}

// Offset in an image of channel c, frame pixel (u, v).
__device__ __forceinline__ ic_index ic_solve_at(const ic_solve_geometry& q, int c, int u, int v)
{
    return (ic_index)c * q.H * q.W + (ic_index)(q.fh ? q.H - 1 - u : u) * q.W + (q.fw ? q.W - 1 - v : v);
}

// Stage the item's tiles: y for its pixels, zero outside the image; the halo is
// zero when the launch is not linked (the tile is the whole image) and left to
// the communication warp when it is. Staged row R = c*EH + r of a tile, a warp
// per row, lanes along it (coalesced). No division: (c, r) advance by carrying.
__device__ void ic_solve_stage(const ic_solve_geometry& q, const ic_solve_item& it, const ic_real* __restrict__ y,
                               ic_real* img)
{
    const int warps = blockDim.x >> 5, lane = threadIdx.x & 31;
    for (int slot = 0; slot < it.slots; ++slot) {
        const ic_real* yb = y + (ic_index)(it.b0 + slot) * q.C * q.H * q.W;
        int c = 0, r = threadIdx.x >> 5;
        while (r >= q.EH) { r -= q.EH; ++c; }
        for (; c < q.C; r += warps) {
            while (r >= q.EH) { r -= q.EH; ++c; }   // carry (at most warps / EH + 1 times)
            if (c >= q.C) break;
            const int tr = r - (q.PH - 1), u = it.u0 + tr;
            for (int s = lane; s < q.EW; s += 32) {
                const int ts = s - (q.PW - 1), v = it.v0 + ts;
                const bool halo = tr < 0 || ts < 0;
                if (halo && q.linked) continue;
                ic_real value = 0;
                if (!halo && u < q.H && v < q.W) value = yb[ic_solve_at(q, c, u, v)];
                img[ic_solve_word(q, slot, c, tr, ts)] = value;
            }
        }
    }
}

// The item's solved pixels back to x, rows r < rows and columns s < cols of each
// tile (the rest, when linked, the communication warp has exported), by the
// compute warps in the staging's row order.
__device__ void ic_solve_write_back(const ic_solve_geometry& q, const ic_solve_item& it, ic_real* x,
                                    const ic_real* img, int rows, int cols)
{
    const int warps = q.compute_warps, lane = threadIdx.x & 31;
    if (rows <= 0 || cols <= 0) return;
    for (int slot = 0; slot < it.slots; ++slot) {
        ic_real* xb = x + (ic_index)(it.b0 + slot) * q.C * q.H * q.W;
        int c = 0, r = threadIdx.x >> 5;
        while (r >= rows) { r -= rows; ++c; }
        for (; c < q.C; r += warps) {
            while (r >= rows) { r -= rows; ++c; }
            if (c >= q.C) break;
            for (int s = lane; s < cols; s += 32)
                xb[ic_solve_at(q, c, it.u0 + r, it.v0 + s)] = img[ic_solve_word(q, slot, c, r, s)];
        }
    }
}

// z = F_0^-1 y in place for the tiles' pixels, a compute warp per row, a lane per
// pixel: descending o for the lower A^-1 (z[o] needs y[c <= o]), ascending for A^-T.
__device__ __forceinline__ void ic_solve_anchor_pass(const ic_solve_geometry& q, const ic_solve_item& it,
                                                     const ic_real* zmat, ic_real* img)
{
    const int warps = q.compute_warps, lane = threadIdx.x & 31;
    for (int slot = 0; slot < it.slots; ++slot) {
        for (int r = threadIdx.x >> 5; r < it.th; r += warps) {
            for (int s = lane; s < it.tw; s += 32) {
                ic_real* px = img + ic_solve_word(q, slot, 0, r, s);
                for (int step = 0; step < q.C; ++step) {
                    const int o = q.transpose ? step : q.C - 1 - step;
                    const int c0 = q.transpose ? o : 0, c1 = q.transpose ? q.C : o + 1;
                    ic_real acc = 0;
                    for (int c = c0; c < c1; ++c) acc += zmat[o * q.C + c] * px[c * q.chan];
                    px[o * q.chan] = acc;
                }
            }
        }
    }
}

// Step d of the wavefront over the item's staged tiles: x = z + sum_{t != 0} M_t
// x(neighbour t) for the pixels (r, d - r) of every slot. Team member (g, l)
// takes the inputs k = l (mod L), k = (t-1)*C + c: x at pix + input_offset[k]
// and the G entries mat[k*MS + g*G ..]. The L lanes of a (pixel, g) are
// consecutive threads, L-aligned in a warp; their partial sums meet by xor
// shuffles and lane 0 adds them to z. Teams take the (slot, pixel) items in turn.
template <int G>
__device__ __forceinline__ void ic_solve_step(const ic_solve_geometry& q, const ic_solve_item& it, const ic_real* mat,
                                              const int* input_offset, ic_real* img, int d)
{
    const int row_step = q.L * q.MS;   // mat words between a lane's successive inputs
    const int r0 = max(0, d - it.tw + 1), r1 = min(it.th - 1, d), length = r1 - r0 + 1;
    const int base = (q.PH - 1) * q.EW + d + q.PW - 1;   // pixel (r, d - r) sits at base + r * (EW - 1)
    int slot = 0, r = r0 + q.my_team;
    for (;;) {
        while (r > r1) { r -= length; ++slot; }   // carry into the next slot's diagonal
        if (slot >= it.slots) break;
        const int pix = slot * q.tile_words + base + r * (q.EW - 1);
        const ic_real* src = img + pix;
        const int* offset = input_offset + q.l;
        const ic_real* m = mat + q.l * q.MS + q.g * G;
        ic_real acc[G];
        for (int i = 0; i < G; ++i) acc[i] = 0;
#pragma unroll (ic_solve_unroll<G>())
        for (int k = 0; k < q.lane_inputs; ++k, offset += q.L, m += row_step) {
            const ic_real xv = src[*offset];
            const ic_solve_vec<G> mv = *reinterpret_cast<const ic_solve_vec<G>*>(m);
            for (int i = 0; i < G; ++i) acc[i] += mv.v[i] * xv;
        }
        for (int s = q.L >> 1; s > 0; s >>= 1)
            for (int i = 0; i < G; ++i) acc[i] += __shfl_xor_sync(q.lane_mask, acc[i], s);
        if (q.l == 0)
            for (int i = 0; i < G; ++i)
                if (q.g * G + i < q.C) img[(q.g * G + i) * q.chan + pix] += acc[i];
        r += q.teams;
    }
}

// The lanes of one warp over rows x cols cells x C channels x the item's slots,
// the column fastest (no division: the indices advance by carrying); f(slot, c, a, b)
// for the cell in row a, column b of the block.
template <class F>
__device__ __forceinline__ void ic_solve_each_cell(const ic_solve_geometry& q, const ic_solve_item& it, int rows,
                                                   int cols, F&& f)
{
    if (rows <= 0 || cols <= 0) return;
    int b = threadIdx.x & 31, a = 0, c = 0, slot = 0;
    for (;;) {
        while (b >= cols) {
            b -= cols;
            if (++a == rows) {
                a = 0;
                if (++c == q.C) { c = 0; ++slot; }
            }
        }
        if (slot >= it.slots) return;
        f(slot, c, a, b);
        b += 32;
    }
}

// The halo cells steps s0 .. s1 read first (step max(r, 0) + max(c, 0) reads halo
// cell (r, c) first), from x (pixels other tiles solved; coherent loads after
// the acquire) or zero outside the image. Step 0: the corner block with row 0
// and column 0 of the strips; step s > 0: row s of the left strip, column s of
// the top strip.
__device__ void ic_solve_stage_halo(const ic_solve_geometry& q, const ic_solve_item& it, const ic_real* x,
                                    ic_real* img, int s0, int s1)
{
    const auto load = [&](int slot, int c, int r, int col) {
        const int u = it.u0 + r, v = it.v0 + col;
        ic_real value = 0;
        if (u >= 0 && v >= 0) value = __ldcg(x + (ic_index)(it.b0 + slot) * q.C * q.H * q.W + ic_solve_at(q, c, u, v));
        img[ic_solve_word(q, slot, c, r, col)] = value;
    };
    if (s0 == 0) {
        ic_solve_each_cell(q, it, q.PH, q.PW, [&](int slot, int c, int a, int b) {
            if (a < q.PH - 1 || b < q.PW - 1) load(slot, c, a + 1 - q.PH, b + 1 - q.PW);   // (0, 0) is the tile's
        });
        s0 = 1;
    }
    ic_solve_each_cell(q, it, min(s1, it.th - 1) - s0 + 1, q.PW - 1, [&](int slot, int c, int a, int b) {
        load(slot, c, s0 + a, b + 1 - q.PW);
    });
    ic_solve_each_cell(q, it, q.PH - 1, min(s1, it.tw - 1) - s0 + 1, [&](int slot, int c, int a, int b) {
        load(slot, c, a + 1 - q.PH, s0 + b);
    });
}

// The border pixels of diagonal e (the last PH-1 rows and PW-1 columns of the
// tile: all that other tiles read) from shared memory to x: rows r0 .. a1 of the
// diagonal lie in the last columns, rows b0 .. r1 (after a1) in the last rows.
__device__ void ic_solve_export(const ic_solve_geometry& q, const ic_solve_item& it, ic_real* x, const ic_real* img,
                                int e)
{
    const int r0 = max(0, e - it.tw + 1), r1 = min(it.th - 1, e);
    const int a1 = min(r1, e - (it.tw - q.PW + 1)), b0 = max(max(r0, it.th - q.PH + 1), a1 + 1);
    const int n_a = max(0, a1 - r0 + 1), n_b = max(0, r1 - b0 + 1);
    ic_solve_each_cell(q, it, 1, n_a + n_b, [&](int slot, int c, int, int i) {
        const int r = i < n_a ? r0 + i : b0 + i - n_a;
        x[(ic_index)(it.b0 + slot) * q.C * q.H * q.W + ic_solve_at(q, c, it.u0 + r, it.v0 + e - r)] =
            img[ic_solve_word(q, slot, c, r, e - r)];
    });
}

// Export diagonals e0 .. count-1, then release: every diagonal of the tile below
// `count` is in x.
__device__ __forceinline__ void ic_solve_release(const ic_solve_geometry& q, const ic_solve_item& it, ic_real* x,
                                                 const ic_real* img, int e0, int count)
{
    for (int e = e0; e < count; ++e) ic_solve_export(q, it, x, img, e);
    __syncwarp();   // the warp's exports before the count
    if ((threadIdx.x & 31) == 0) {
        __threadfence();   // release: the exports before the count
        ic_store_relaxed(it.counter, count);
    }
}

// Acquire, then stage the halo of steps s .. last. The tiles the halo reads are dy
// tile rows up and dx tile columns left (up to reach_h, reach_w); step s' reads
// their diagonals below s' + dy*TH + dx*TW. They publish counts that are
// multiples of grain (or all their diagonals), so `last` is the last step the
// smallest such counts that cover step s also cover: the same for every lane,
// which waits for them itself (its acquire orders its own loads), and the warp
// stages those steps' halo. Returns last + 1.
__device__ __forceinline__ int ic_solve_acquire_halo(const ic_solve_geometry& q, const ic_solve_item& it,
                                                     const int* counters, const ic_real* x, ic_real* img, int s)
{
    int last = it.diagonals - 1;
    for (int dy = 0; dy <= q.reach_h && dy <= it.ti; ++dy)
        for (int dx = (dy == 0); dx <= q.reach_w && dx <= it.tj; ++dx) {
            const int base = dy * q.TH + dx * q.TW, diagonals = (dy ? q.TH : it.th) + (dx ? q.TW : it.tw) - 1;
            const int count = (s + base + q.grain - 1) / q.grain * q.grain;   // once per staging, not per cell
            if (count < diagonals) last = min(last, count - base);
        }
    for (int dy = 0; dy <= q.reach_h && dy <= it.ti; ++dy)
        for (int dx = (dy == 0); dx <= q.reach_w && dx <= it.tj; ++dx) {
            const int* counter = counters + (it.ti - dy) * q.tiles_w + (it.tj - dx);
            const int need = min((dy ? q.TH : it.th) + (dx ? q.TW : it.tw) - 1, last + dy * q.TH + dx * q.TW);
            while (ic_load_acquire(counter) < need) __nanosleep(64);   // acquire: those diagonals are in x
        }
    ic_solve_stage_halo(q, it, x, img, s, last);
    return last + 1;
}

// Which item the k-th claim is: tile anti-diagonal D, then tile row, then image group.
__device__ __forceinline__ void ic_solve_item_of(const ic_solve_geometry& q, int groups, int k, int& group, int& ti,
                                                 int& tj)
{
    int D = 0, start = 0;
    for (;;) {
        const int first = max(0, D - q.tiles_w + 1), last = min(q.tiles_h - 1, D);
        const int n = (last - first + 1) * groups;
        if (k < start + n) {
            const int rem = k - start;
            ti = first + rem / groups;
            group = rem - (ti - first) * groups;
            tj = D - ti;
            return;
        }
        start += n;
        ++D;
    }
}

// Dynamic shared memory, in this order:
//     mat (K*MS words) and zmat (C*C), only when mat_in_shared (else read from global)
//     the tiles: slots * C * chan words, chan >= (TH+PH-1)*(TW+PW-1)
//     K ints, the inputs' offsets, only when mat_in_shared (else read from global); one int, the claim
// work[0] is the claim counter, work[1 + (group*tiles_h + ti)*tiles_w + tj] an item's progress counter
// (the diagonals of its tiles in x), offsets[k] input k's offset (solve_prepare writes both).
template <int G>
__device__ __forceinline__ void ic_solve_wavefront(
    ic_real* shared, const ic_real* __restrict__ y, ic_real* x, const ic_real* __restrict__ gmat,
    const ic_real* __restrict__ gzmat, int* work, const int* __restrict__ goffsets, int B, int C, int H, int W,
    int PH, int PW, int flip_h, int flip_w, int transpose, int TH, int TW, int tiles_h, int tiles_w, int MS,
    int chan, int L, int mat_in_shared, int slots, int linked, int grain)
{
    ic_solve_geometry q;
    q.B = B; q.C = C; q.H = H; q.W = W; q.PH = PH; q.PW = PW;
    q.fh = flip_h ^ transpose; q.fw = flip_w ^ transpose; q.transpose = transpose;
    q.TH = TH; q.TW = TW; q.tiles_h = tiles_h; q.tiles_w = tiles_w; q.MS = MS; q.chan = chan;
    q.EH = TH + PH - 1; q.EW = TW + PW - 1; q.taps = PH * PW; q.tile_words = C * chan;
    q.K = (q.taps - 1) * C; q.L = L;
    q.slots = slots; q.linked = linked; q.grain = grain;
    q.reach_h = (PH - 2 + TH) / TH; q.reach_w = (PW - 2 + TW) / TW;
    q.compute_warps = (blockDim.x >> 5) - linked;
    q.team = ((C + G - 1) / G) * q.L;
    q.teams = (q.compute_warps * 32) / q.team;
    q.my_team = threadIdx.x / q.team;
    const int in_team = threadIdx.x - q.my_team * q.team;
    q.g = in_team / q.L; q.l = in_team - q.g * q.L;
    q.lane_inputs = (q.K - q.l + q.L - 1) / q.L;   // once per thread, not per step
    q.lane_mask = q.L == 32 ? 0xffffffffu : ((1u << q.L) - 1u) << ((threadIdx.x & 31) & ~(q.L - 1));
    const bool computing = q.my_team < q.teams;
    const bool communicating = linked && (threadIdx.x >> 5) == q.compute_warps;

    const int K = q.K;
    const int matrix_words = mat_in_shared ? K * MS + C * C : 0;
    ic_real* img = shared + matrix_words;
    int* input_offset = reinterpret_cast<int*>(img + slots * q.tile_words);
    int* claimed = input_offset + (mat_in_shared ? K : 0);
    if (mat_in_shared) {   // coalesced copies of the prepared matrices and offsets
        for (int i = threadIdx.x; i < K * MS; i += blockDim.x) shared[i] = gmat[i];
        for (int i = threadIdx.x; i < C * C; i += blockDim.x) shared[K * MS + i] = gzmat[i];
        for (int i = threadIdx.x; i < K; i += blockDim.x) input_offset[i] = goffsets[i];
    }

    const int groups = (B + slots - 1) / slots;
    const int total = groups * tiles_h * tiles_w;
    for (;;) {
        if (threadIdx.x == 0) *claimed = atomicAdd(work, 1);
        __syncthreads();   // the claim is shared; the previous item is no longer read
        const int k = *claimed;
        if (k >= total) return;
        ic_solve_item it;
        int group;
        ic_solve_item_of(q, groups, k, group, it.ti, it.tj);
        it.b0 = group * slots;
        it.slots = min(slots, B - it.b0);
        it.u0 = it.ti * TH; it.v0 = it.tj * TW;
        it.th = min(TH, H - it.u0); it.tw = min(TW, W - it.v0);
        it.diagonals = it.th + it.tw - 1;
        int* counters = work + 1 + (ic_index)group * tiles_h * tiles_w;
        it.counter = counters + it.ti * tiles_w + it.tj;

        ic_solve_stage(q, it, y, img);
        int staged = 0, exported = 0, release = grain;   // the communication warp's next step, diagonal, count
        if (communicating) staged = ic_solve_acquire_halo(q, it, counters, x, img, 0);   // while the tile is staged
        __syncthreads();   // the tiles are staged
        if (!communicating) {
            // The matrices' address space is known at each call, so their loads
            // compile to LDS or LDG rather than generic loads.
            if (mat_in_shared)
                ic_solve_anchor_pass(q, it, shared + K * MS, img);
            else
                ic_solve_anchor_pass(q, it, gzmat, img);
        }
        __syncthreads();   // z is formed
        for (int d = 0; q.taps > 1 && d < it.diagonals; ++d) {
            if (computing && mat_in_shared) ic_solve_step<G>(q, it, shared, input_offset, img, d);
            if (computing && !mat_in_shared) ic_solve_step<G>(q, it, gmat, goffsets, img, d);
            if (communicating) {   // the window of step d: diagonals below d are final
                if (d == release) {
                    ic_solve_release(q, it, x, img, exported, d);
                    exported = d;
                    release += grain;
                }
                if (staged == d + 1 && staged < it.diagonals) staged = ic_solve_acquire_halo(q, it, counters, x, img, staged);
            }
            __syncthreads();   // step d is written; the halo of step d + 1 is staged
        }
        if (communicating)
            ic_solve_release(q, it, x, img, exported, it.diagonals);
        else if (linked)
            ic_solve_write_back(q, it, x, img, it.th - (PH - 1), it.tw - (PW - 1));   // the rest is exported
        else
            ic_solve_write_back(q, it, x, img, it.th, it.tw);
    }
}

// The entry points, one per G (outputs per thread of a team). The bounds leave 80
// registers per thread (768 threads) or, for the G accumulators and matrix entries,
// 96 for G = 4 (640 threads: 80 spilled in the float32 build for sm_80) and 128 for
// G = 8 and 16 (512 threads), so nothing spills on sm_80 or sm_90
// (kernel_solve.MAX_THREADS_FOR_OUTPUTS mirrors them).

extern "C" __global__ void __launch_bounds__(768, 1) solve_wavefront_g1(
    const ic_real* __restrict__ y, ic_real* x, const ic_real* __restrict__ mat, const ic_real* __restrict__ zmat,
    int* work, const int* __restrict__ offsets, int B, int C, int H, int W, int PH, int PW, int flip_h, int flip_w,
    int transpose, int TH, int TW, int tiles_h, int tiles_w, int MS, int chan, int L, int mat_in_shared, int slots,
    int linked, int grain)
{
    IC_DYNAMIC_SHARED(ic_real, shared);
    ic_solve_wavefront<1>(shared, y, x, mat, zmat, work, offsets, B, C, H, W, PH, PW, flip_h, flip_w, transpose, TH,
                           TW, tiles_h, tiles_w, MS, chan, L, mat_in_shared, slots, linked, grain);
}

extern "C" __global__ void __launch_bounds__(768, 1) solve_wavefront_g2(
    const ic_real* __restrict__ y, ic_real* x, const ic_real* __restrict__ mat, const ic_real* __restrict__ zmat,
    int* work, const int* __restrict__ offsets, int B, int C, int H, int W, int PH, int PW, int flip_h, int flip_w,
    int transpose, int TH, int TW, int tiles_h, int tiles_w, int MS, int chan, int L, int mat_in_shared, int slots,
    int linked, int grain)
{
    IC_DYNAMIC_SHARED(ic_real, shared);
    ic_solve_wavefront<2>(shared, y, x, mat, zmat, work, offsets, B, C, H, W, PH, PW, flip_h, flip_w, transpose, TH,
                           TW, tiles_h, tiles_w, MS, chan, L, mat_in_shared, slots, linked, grain);
}

extern "C" __global__ void __launch_bounds__(640, 1) solve_wavefront_g4(
    const ic_real* __restrict__ y, ic_real* x, const ic_real* __restrict__ mat, const ic_real* __restrict__ zmat,
    int* work, const int* __restrict__ offsets, int B, int C, int H, int W, int PH, int PW, int flip_h, int flip_w,
    int transpose, int TH, int TW, int tiles_h, int tiles_w, int MS, int chan, int L, int mat_in_shared, int slots,
    int linked, int grain)
{
    IC_DYNAMIC_SHARED(ic_real, shared);
    ic_solve_wavefront<4>(shared, y, x, mat, zmat, work, offsets, B, C, H, W, PH, PW, flip_h, flip_w, transpose, TH,
                           TW, tiles_h, tiles_w, MS, chan, L, mat_in_shared, slots, linked, grain);
}

extern "C" __global__ void __launch_bounds__(512, 1) solve_wavefront_g8(
    const ic_real* __restrict__ y, ic_real* x, const ic_real* __restrict__ mat, const ic_real* __restrict__ zmat,
    int* work, const int* __restrict__ offsets, int B, int C, int H, int W, int PH, int PW, int flip_h, int flip_w,
    int transpose, int TH, int TW, int tiles_h, int tiles_w, int MS, int chan, int L, int mat_in_shared, int slots,
    int linked, int grain)
{
    IC_DYNAMIC_SHARED(ic_real, shared);
    ic_solve_wavefront<8>(shared, y, x, mat, zmat, work, offsets, B, C, H, W, PH, PW, flip_h, flip_w, transpose, TH,
                           TW, tiles_h, tiles_w, MS, chan, L, mat_in_shared, slots, linked, grain);
}

extern "C" __global__ void __launch_bounds__(512, 1) solve_wavefront_g16(
    const ic_real* __restrict__ y, ic_real* x, const ic_real* __restrict__ mat, const ic_real* __restrict__ zmat,
    int* work, const int* __restrict__ offsets, int B, int C, int H, int W, int PH, int PW, int flip_h, int flip_w,
    int transpose, int TH, int TW, int tiles_h, int tiles_w, int MS, int chan, int L, int mat_in_shared, int slots,
    int linked, int grain)
{
    IC_DYNAMIC_SHARED(ic_real, shared);
    ic_solve_wavefront<16>(shared, y, x, mat, zmat, work, offsets, B, C, H, W, PH, PW, flip_h, flip_w, transpose, TH,
                           TW, tiles_h, tiles_w, MS, chan, L, mat_in_shared, slots, linked, grain);
}
