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
// Two launches per solve (kernel_solve.py plans them):
//
// 1. solve_prepare (many blocks): every block forms A^-1 in shared memory, then
//    the blocks share the rows of
//        zmat[o*C + c]     = F_0^-1[o][c]
//        mat[k*MS + o]     = M_t[o][c] for input k = (t-1)*C + c, t = 1..taps-1
//                            (zero for C <= o < MS; MS is a multiple of G)
//    in global memory, and zero the work counter and the tiles' ready flags.
//
// 2. solve_wavefront_g{G} (persistent): blocks claim tiles of TH x TW frame
//    pixels in dependency order from an atomic counter (tile anti-diagonal,
//    then tile row, then image), wait for the ready flags of the tiles their
//    halo reads, stage the tile with its halo in shared memory, and run the
//    tile's anti-diagonals with one __syncthreads() per step. A step splits
//    each pixel's dot products over a team of Gc x L threads: Gc = ceil(C/G)
//    groups of G outputs, and L lanes (a power of two) that take every L-th of
//    the K = (taps-1)*C inputs and are summed by warp shuffles. The inputs'
//    offsets in the staged tile are a table in shared memory, so the hot loop
//    is two loads of x and its offset, one vector load of G matrix entries and
//    G FMAs. Whole images that fit in shared memory are one tile each.
//
// Memory order between blocks of one wavefront launch (common.cuh's flag
// helpers): a block writes its tile to x, __syncthreads(), then one thread
// releases it: __threadfence(), then the flag's volatile store (what
// ic_store_release does, written out so that the fence is a statement here).
// A waiting thread spins with ic_load_acquire (a volatile load, then a fence),
// then __syncthreads(), and the halo is read with __ldcg (ld.global.cg:
// coherent in L2, never a stale L1 line). x is never read through __ldg or a
// const __restrict__ pointer.

// ---------------------------------------------------------------- preparation

// The anchor tap's entry A[r][c] of the forward weight (c <= r is all that is read).
__device__ __forceinline__ ic_real ic_solve_anchor(const ic_real* __restrict__ w, int C, int KH, int KW, int a0,
                                                   int e0, int r, int c)
{
    return __ldg(w + ((r * C + c) * KH + a0) * KW + e0);
}

// Prepared matrices, zeroed flags. Dynamic shared memory: C * S words, S = C | 1
// (odd: a warp's strided accesses hit 32 different banks).
extern "C" __global__ void solve_prepare(
    const ic_real* __restrict__ w, ic_real* __restrict__ zmat, ic_real* __restrict__ mat, int* __restrict__ work,
    int nwork, int C, int MS, int KH, int KW, int PH, int PW, int flip_h, int flip_w, int transpose)
{
    IC_DYNAMIC_SHARED(ic_real, at);   // at[k*S + r] = A^-1[r][k]: column k of A^-1
    const int S = C | 1;
    const int a0 = flip_h ? 0 : KH - 1, e0 = flip_w ? 0 : KW - 1;

    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < nwork; i += gridDim.x * blockDim.x) work[i] = 0;

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

    // Rows R < C of the output are zmat's, the others mat's; a block per row,
    // a thread per column (consecutive columns: coalesced stores).
    const int K = (PH * PW - 1) * C;
    for (int R = blockIdx.x; R < C + K; R += gridDim.x) {
        if (R < C) {
            const int o = R;
            for (int c = threadIdx.x; c < C; c += blockDim.x) {
                ic_real value = 0;
                if (!transpose && c <= o) value = at[c * S + o];   // A^-1[o][c]
                if (transpose && c >= o) value = at[o * S + c];    // A^-T[o][c] = A^-1[c][o]
                zmat[o * C + c] = value;
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
                for (int kk = 0; kk <= o; ++kk) value -= at[kk * S + o] * __ldg(w + ((kk * C + c) * KH + a) * KW + e);
            } else if (o < C) {
                for (int kk = o; kk < C; ++kk) value -= at[o * S + kk] * __ldg(w + ((c * C + kk) * KH + a) * KW + e);
            }
            mat[k * MS + o] = value;
        }
    }
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
    int C, H, W, PH, PW, fh, fw, transpose;
    int TH, TW, tiles_h, tiles_w, MS, chan;   // chan: channel stride of the staged tile (odd)
    int EH, EW, taps;
    int K, L, team, teams;                    // inputs, lanes, threads per pixel, pixels per step
    int my_team, g, l;                        // this thread's place in a team
};

// Stage tile rows into shared memory: staged row R = c*EH + r of the extended
// tile (halo included), a warp per row, lanes along it (coalesced). Halo rows
// and columns come from x (solved tiles, coherent loads), the rest from y, zero
// outside the image. No division: (c, r) advance by carrying.
__device__ void ic_solve_stage(const ic_solve_geometry& q, const ic_real* __restrict__ yb, const ic_real* xb,
                               ic_real* img, int u0, int v0)
{
    const int warps = blockDim.x >> 5, lane = threadIdx.x & 31;
    const ic_index hw = (ic_index)q.H * q.W;
    int c = 0, r = threadIdx.x >> 5;
    while (r >= q.EH) { r -= q.EH; ++c; }
    for (; c < q.C; r += warps) {
        while (r >= q.EH) { r -= q.EH; ++c; }   // carry (at most warps / EH + 1 times)
        if (c >= q.C) break;
        const int u = u0 - (q.PH - 1) + r;
        const bool row_in = u >= 0 && u < q.H;
        const ic_index row = (ic_index)c * hw + (ic_index)(q.fh ? q.H - 1 - u : u) * q.W;
        ic_real* dst = img + c * q.chan + r * q.EW;
        for (int s = lane; s < q.EW; s += 32) {
            const int v = v0 - (q.PW - 1) + s;
            ic_real value = 0;
            if (row_in && v >= 0 && v < q.W) {
                const ic_index at = row + (q.fw ? q.W - 1 - v : v);
                value = (r >= q.PH - 1 && s >= q.PW - 1) ? yb[at] : __ldcg(xb + at);   // coherent: see the header
            }
            dst[s] = value;
        }
    }
}

// The tile's solved pixels back to x, in the same row order.
__device__ void ic_solve_write_back(const ic_solve_geometry& q, ic_real* xb, const ic_real* img, int u0, int v0,
                                    int th, int tw)
{
    const int warps = blockDim.x >> 5, lane = threadIdx.x & 31;
    const ic_index hw = (ic_index)q.H * q.W;
    int c = 0, r = threadIdx.x >> 5;
    while (r >= th) { r -= th; ++c; }
    for (; c < q.C; r += warps) {
        while (r >= th) { r -= th; ++c; }
        if (c >= q.C) break;
        const int u = u0 + r;
        const ic_index row = (ic_index)c * hw + (ic_index)(q.fh ? q.H - 1 - u : u) * q.W;
        const ic_real* src = img + c * q.chan + (r + q.PH - 1) * q.EW + q.PW - 1;
        for (int s = lane; s < tw; s += 32) {
            const int v = v0 + s;
            xb[row + (q.fw ? q.W - 1 - v : v)] = src[s];
        }
    }
}

// z = F_0^-1 y in place for the tile's pixels, a warp per row, a lane per pixel:
// descending o for the lower A^-1 (z[o] needs y[c <= o]), ascending for A^-T.
__device__ __forceinline__ void ic_solve_anchor_pass(const ic_solve_geometry& q, const ic_real* zmat, ic_real* img, int th, int tw)
{
    const int warps = blockDim.x >> 5, lane = threadIdx.x & 31;
    for (int r = threadIdx.x >> 5; r < th; r += warps) {
        for (int s = lane; s < tw; s += 32) {
            ic_real* px = img + (r + q.PH - 1) * q.EW + (s + q.PW - 1);
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

// The wavefront over one staged tile: x = z + sum_{t != 0} M_t x(neighbour t).
// Team member (g, l) takes the inputs k = l (mod L), k = (t-1)*C + c: x at
// pix + input_offset[k] and the G entries mat[k*MS + g*G ..]. The L lanes of a
// (pixel, g) are consecutive threads, L-aligned in a warp; their partial sums
// meet by xor shuffles and lane 0 adds them to z.
template <int G>
__device__ __forceinline__ void ic_solve_steps(const ic_solve_geometry& q, const ic_real* mat, const int* input_offset,
                                               ic_real* img, int th, int tw)
{
    const bool working = q.my_team < q.teams;
    const unsigned mask = q.L == 32 ? 0xffffffffu : ((1u << q.L) - 1u) << ((threadIdx.x & 31) & ~(q.L - 1));
    const int inputs = (q.K - q.l + q.L - 1) / q.L;   // this lane's share
    const int row_step = q.L * q.MS;                   // mat words between a lane's successive inputs
    for (int d = 0; d < th + tw - 1; ++d) {
        const int r0 = max(0, d - tw + 1), r1 = min(th - 1, d);
        const int base = (q.PH - 1) * q.EW + d + q.PW - 1;   // pixel (r, d - r) sits at base + r * (EW - 1)
        for (int r = r0 + q.my_team; working && r <= r1; r += q.teams) {
            const int pix = base + r * (q.EW - 1);
            const ic_real* src = img + pix;
            const int* offset = input_offset + q.l;
            const ic_real* m = mat + q.l * q.MS + q.g * G;
            ic_real acc[G];
            for (int i = 0; i < G; ++i) acc[i] = 0;
#pragma unroll (ic_solve_unroll<G>())
            for (int k = 0; k < inputs; ++k, offset += q.L, m += row_step) {
                const ic_real xv = src[*offset];
                const ic_solve_vec<G> mv = *reinterpret_cast<const ic_solve_vec<G>*>(m);
                for (int i = 0; i < G; ++i) acc[i] += mv.v[i] * xv;
            }
            for (int s = q.L >> 1; s > 0; s >>= 1)
                for (int i = 0; i < G; ++i) acc[i] += __shfl_xor_sync(mask, acc[i], s);
            if (q.l == 0)
                for (int i = 0; i < G; ++i)
                    if (q.g * G + i < q.C) img[(q.g * G + i) * q.chan + pix] += acc[i];
        }
        __syncthreads();   // the step's pixels are written
    }
}

// Which tile the k-th claim is: tile anti-diagonal D, then tile row, then image.
__device__ __forceinline__ void ic_solve_tile_of(const ic_solve_geometry& q, int B, int k, int& b, int& ti, int& tj)
{
    int D = 0, start = 0;
    for (;;) {
        const int first = max(0, D - q.tiles_w + 1), last = min(q.tiles_h - 1, D);
        const int n = (last - first + 1) * B;
        if (k < start + n) {
            const int rem = k - start;
            ti = first + rem / B;
            b = rem - (ti - first) * B;
            tj = D - ti;
            return;
        }
        start += n;
        ++D;
    }
}

// Dynamic shared memory, in this order:
//     mat (K*MS words) and zmat (C*C), only when mat_in_shared (else read from global)
//     the tile: C * chan words, chan >= (TH+PH-1)*(TW+PW-1)
//     K + 1 ints: the inputs' offsets, the claimed tile
// work[0] is the claim counter, work[1 + (b*tiles_h + ti)*tiles_w + tj] a tile's ready flag.
template <int G>
__device__ __forceinline__ void ic_solve_wavefront(
    ic_real* shared, const ic_real* __restrict__ y, ic_real* x, const ic_real* __restrict__ gmat, const ic_real* __restrict__ gzmat,
    int* work, int B, int C, int H, int W, int PH, int PW, int flip_h, int flip_w, int transpose, int TH, int TW,
    int tiles_h, int tiles_w, int MS, int chan, int L, int mat_in_shared)
{
    ic_solve_geometry q;
    q.C = C; q.H = H; q.W = W; q.PH = PH; q.PW = PW;
    q.fh = flip_h ^ transpose; q.fw = flip_w ^ transpose; q.transpose = transpose;
    q.TH = TH; q.TW = TW; q.tiles_h = tiles_h; q.tiles_w = tiles_w; q.MS = MS; q.chan = chan;
    q.EH = TH + PH - 1; q.EW = TW + PW - 1; q.taps = PH * PW;
    q.K = (q.taps - 1) * C; q.L = L;
    q.team = ((C + G - 1) / G) * q.L;
    q.teams = blockDim.x / q.team;
    q.my_team = threadIdx.x / q.team;
    const int in_team = threadIdx.x - q.my_team * q.team;
    q.g = in_team / q.L; q.l = in_team - q.g * q.L;

    const int K = q.K;
    const int matrix_words = mat_in_shared ? K * MS + C * C : 0;
    ic_real* img = shared + matrix_words;
    int* input_offset = reinterpret_cast<int*>(img + C * chan);
    int* claimed = input_offset + K;
    if (mat_in_shared) {   // coalesced copies of the prepared matrices
        for (int i = threadIdx.x; i < K * MS; i += blockDim.x) shared[i] = gmat[i];
        for (int i = threadIdx.x; i < C * C; i += blockDim.x) shared[K * MS + i] = gzmat[i];
    }
    for (int k = threadIdx.x; k < K; k += blockDim.x) {   // input k = (t-1)*C + c, tap t = p*PW + q
        const int t = k / C + 1, c = k - (t - 1) * C, p = t / PW;
        input_offset[k] = c * chan - p * q.EW - (t - p * PW);
    }

    const ic_index hw = (ic_index)H * W;
    const int total = B * tiles_h * tiles_w;
    const int reach_h = (PH - 2 + TH) / TH, reach_w = (PW - 2 + TW) / TW;   // tiles the halo reaches into
    for (;;) {
        if (threadIdx.x == 0) *claimed = atomicAdd(work, 1);
        __syncthreads();   // the claim is shared; the previous tile is no longer read
        const int k = *claimed;
        if (k >= total) return;
        int b, ti, tj;
        ic_solve_tile_of(q, B, k, b, ti, tj);
        int* flags = work + 1 + (ic_index)b * tiles_h * tiles_w;

        // Acquire: one thread per tile the halo reads.
        const int waits = (reach_h + 1) * (reach_w + 1) - 1;
        for (int f = threadIdx.x; f < waits; f += blockDim.x) {
            const int dy = (f + 1) / (reach_w + 1), dx = (f + 1) - dy * (reach_w + 1);
            if (ti - dy >= 0 && tj - dx >= 0) {
                const int* flag = flags + (ti - dy) * tiles_w + (tj - dx);
                while (!ic_load_acquire(flag)) __nanosleep(100);   // acquire: the tile is written
            }
        }
        __syncthreads();   // every tile the halo reads is ready

        const int u0 = ti * TH, v0 = tj * TW;
        const int th = min(TH, H - u0), tw = min(TW, W - v0);
        const ic_index image = (ic_index)b * C * hw;
        ic_solve_stage(q, y + image, x + image, img, u0, v0);
        __syncthreads();   // the tile is staged
        // The matrices' address space is known at each call, so their loads
        // compile to LDS or LDG rather than generic loads.
        if (mat_in_shared)
            ic_solve_anchor_pass(q, shared + K * MS, img, th, tw);
        else
            ic_solve_anchor_pass(q, gzmat, img, th, tw);
        __syncthreads();   // z is formed
        if (q.taps > 1 && mat_in_shared) ic_solve_steps<G>(q, shared, input_offset, img, th, tw);
        if (q.taps > 1 && !mat_in_shared) ic_solve_steps<G>(q, gmat, input_offset, img, th, tw);
        ic_solve_write_back(q, x + image, img, u0, v0, th, tw);

        __syncthreads();   // every pixel of the tile is written
        if (threadIdx.x == 0) {
            __threadfence();   // release: the tile before its flag
            ic_store_relaxed(flags + ti * tiles_w + tj, 1);
        }
    }
}

// The entry points, one per G (outputs per thread of a team). The bounds leave 80
// registers per thread (768 threads) or, for the G accumulators and matrix entries
// of G = 8 and 16, 128 (512 threads), so nothing spills on sm_80 or sm_90
// (kernel_solve.MAX_THREADS_FOR_OUTPUTS mirrors them).

extern "C" __global__ void __launch_bounds__(768, 1) solve_wavefront_g1(
    const ic_real* __restrict__ y, ic_real* x, const ic_real* __restrict__ mat, const ic_real* __restrict__ zmat,
    int* work, int B, int C, int H, int W, int PH, int PW, int flip_h, int flip_w, int transpose, int TH, int TW,
    int tiles_h, int tiles_w, int MS, int chan, int L, int mat_in_shared)
{
    IC_DYNAMIC_SHARED(ic_real, shared);
    ic_solve_wavefront<1>(shared, y, x, mat, zmat, work, B, C, H, W, PH, PW, flip_h, flip_w, transpose, TH, TW,
                           tiles_h, tiles_w, MS, chan, L, mat_in_shared);
}

extern "C" __global__ void __launch_bounds__(768, 1) solve_wavefront_g2(
    const ic_real* __restrict__ y, ic_real* x, const ic_real* __restrict__ mat, const ic_real* __restrict__ zmat,
    int* work, int B, int C, int H, int W, int PH, int PW, int flip_h, int flip_w, int transpose, int TH, int TW,
    int tiles_h, int tiles_w, int MS, int chan, int L, int mat_in_shared)
{
    IC_DYNAMIC_SHARED(ic_real, shared);
    ic_solve_wavefront<2>(shared, y, x, mat, zmat, work, B, C, H, W, PH, PW, flip_h, flip_w, transpose, TH, TW,
                           tiles_h, tiles_w, MS, chan, L, mat_in_shared);
}

extern "C" __global__ void __launch_bounds__(768, 1) solve_wavefront_g4(
    const ic_real* __restrict__ y, ic_real* x, const ic_real* __restrict__ mat, const ic_real* __restrict__ zmat,
    int* work, int B, int C, int H, int W, int PH, int PW, int flip_h, int flip_w, int transpose, int TH, int TW,
    int tiles_h, int tiles_w, int MS, int chan, int L, int mat_in_shared)
{
    IC_DYNAMIC_SHARED(ic_real, shared);
    ic_solve_wavefront<4>(shared, y, x, mat, zmat, work, B, C, H, W, PH, PW, flip_h, flip_w, transpose, TH, TW,
                           tiles_h, tiles_w, MS, chan, L, mat_in_shared);
}

extern "C" __global__ void __launch_bounds__(512, 1) solve_wavefront_g8(
    const ic_real* __restrict__ y, ic_real* x, const ic_real* __restrict__ mat, const ic_real* __restrict__ zmat,
    int* work, int B, int C, int H, int W, int PH, int PW, int flip_h, int flip_w, int transpose, int TH, int TW,
    int tiles_h, int tiles_w, int MS, int chan, int L, int mat_in_shared)
{
    IC_DYNAMIC_SHARED(ic_real, shared);
    ic_solve_wavefront<8>(shared, y, x, mat, zmat, work, B, C, H, W, PH, PW, flip_h, flip_w, transpose, TH, TW,
                           tiles_h, tiles_w, MS, chan, L, mat_in_shared);
}

extern "C" __global__ void __launch_bounds__(512, 1) solve_wavefront_g16(
    const ic_real* __restrict__ y, ic_real* x, const ic_real* __restrict__ mat, const ic_real* __restrict__ zmat,
    int* work, int B, int C, int H, int W, int PH, int PW, int flip_h, int flip_w, int transpose, int TH, int TW,
    int tiles_h, int tiles_w, int MS, int chan, int L, int mat_in_shared)
{
    IC_DYNAMIC_SHARED(ic_real, shared);
    ic_solve_wavefront<16>(shared, y, x, mat, zmat, work, B, C, H, W, PH, PW, flip_h, flip_w, transpose, TH, TW,
                           tiles_h, tiles_w, MS, chan, L, mat_in_shared);
}
