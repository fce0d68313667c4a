// solve_v1.cu: the v1 solve kernel (the benchmark baseline solve_v1; launched by bench/solve_v1.py).
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
//     x(u, v) = F_0^-1 y(u, v) + sum_{t != 0} M_t x(u-p, v-q),   M_t = -F_0^-1 F_t.
// PH = min(KH, H), PW = min(KW, W): further taps only ever meet zero padding.
//
// Buffers (ic_real words; "taps" = PH*PW, Cp = C rounded up to the launcher's
// outputs per thread G):
//     wbuf[(t*C + o)*C + c] = weight of frame tap t (forward orientation, c > o of t = 0 zeroed)
//     ainv[r*C + k]         = A^-1 (lower-triangular)
//     prepared[(t*C + c)*Cp + o] = F_0^-1[o][c] for t = 0, M_t[o][c] otherwise,
//                           zero for o >= C: a thread's G outputs are consecutive words.
//
// A block solves one tile of TH x TW frame pixels (all channels) of one image,
// as a wavefront over the tile's anti-diagonals with one __syncthreads() per
// step, in shared memory. The tile carries a halo of PH-1 rows above and PW-1
// columns to its left, read from x (already solved tiles) or zero outside the
// image, so the inner loop has no bounds checks. A launch solves every tile of
// one tile anti-diagonal D of every image (blockIdx.x = k * B + b, tile row
// ti = ti0 + k, tile column D - ti). The single-launch path is the same kernel
// with one tile covering the whole image (D = 0, B blocks).

// wbuf from the weight, reading it in memory order (coalesced).
__device__ void ic_solve_stage_weights(const ic_real* __restrict__ w, ic_real* wbuf,
                                       int C, int KH, int KW, int PH, int PW, int flip_h, int flip_w)
{
    const int n = C * C * KH * KW;
    for (int idx = threadIdx.x; idx < n; idx += blockDim.x) {
        const int e = idx % KW, a = (idx / KW) % KH;
        const int c = (idx / (KW * KH)) % C, o = idx / (KW * KH * C);
        const int p = flip_h ? a : KH - 1 - a;
        const int q = flip_w ? e : KW - 1 - e;
        if (p < PH && q < PW) {
            const int t = p * PW + q;
            wbuf[(t * C + o) * C + c] = (t == 0 && c > o) ? (ic_real)0 : w[idx];
        }
    }
}

// Column k of A^-1 by substitution, one column per thread. A zero on A's
// diagonal gives inf/nan (the API checks it unless told not to).
__device__ void ic_solve_anchor_inverse(const ic_real* wbuf, ic_real* ainv, int C)
{
    for (int k = threadIdx.x; k < C; k += blockDim.x) {
        for (int r = 0; r < C; ++r) {
            ic_real s = 0;
            if (r >= k) {
                s = (r == k) ? (ic_real)1 : (ic_real)0;
                for (int c = k; c < r; ++c) s -= wbuf[r * C + c] * ainv[c * C + k];
                s /= wbuf[r * C + r];
            }
            ainv[r * C + k] = s;
        }
    }
}

// prepared from wbuf and ainv, by all threads.
__device__ void ic_solve_prepare_taps(const ic_real* wbuf, const ic_real* ainv, ic_real* prepared,
                                      int C, int Cp, int taps, int transpose)
{
    const int n = taps * C * Cp;
    for (int idx = threadIdx.x; idx < n; idx += blockDim.x) {
        const int o = idx % Cp, c = (idx / Cp) % C, t = idx / (Cp * C);
        ic_real value = 0;
        if (o < C && t == 0) {
            value = transpose ? ainv[c * C + o] : ainv[o * C + c];
        } else if (o < C) {
            // M_t[o][c] = -sum_k F_0^-1[o][k] F_t[k][c]; F_0^-1 = A^-1 (k <= o) or A^-T (k >= o).
            const ic_real* f = wbuf + t * C * C;
            if (transpose) {
                for (int k = o; k < C; ++k) value -= ainv[k * C + o] * f[c * C + k];
            } else {
                for (int k = 0; k <= o; ++k) value -= ainv[o * C + k] * f[k * C + c];
            }
        }
        prepared[idx] = value;
    }
}

// prepared in global memory, for solves whose matrices do not fit in shared
// memory next to a tile. One block; scratch holds C*C + PH*PW*C*C words.
extern "C" __global__ void solve_prepare(
    const ic_real* __restrict__ w, ic_real* __restrict__ scratch, ic_real* __restrict__ prepared,
    int C, int Cp, int KH, int KW, int PH, int PW, int flip_h, int flip_w, int transpose)
{
    ic_real* ainv = scratch;
    ic_real* wbuf = scratch + C * C;
    ic_solve_stage_weights(w, wbuf, C, KH, KW, PH, PW, flip_h, flip_w);
    __syncthreads();
    ic_solve_anchor_inverse(wbuf, ainv, C);
    __syncthreads();
    ic_solve_prepare_taps(wbuf, ainv, prepared, C, Cp, PH * PW, transpose);
}

// Global loads in flight per thread while staging a tile (solve_v1.py's
// STAGE_BATCH mirrors it to size blocks).
#define IC_SOLVE_BATCH 16

// G consecutive ic_real words, loaded as one vector access (LDS.64/.128) where
// G * sizeof(ic_real) allows. prepared rows are G-aligned (Cp and o0 are
// multiples of G, and prepared starts its buffer), so these loads are aligned.
template <int G>
struct alignas((G * sizeof(ic_real)) < 16 ? (G * sizeof(ic_real)) : 16) ic_solve_vec {
    ic_real v[G];
};

// The per-pixel transform and the wavefront over one staged tile `img` (EH x EW
// pixels per channel, with its halo), with the prepared matrices at `mat`.
// Ends with a barrier.
template <int G>
__device__ __forceinline__ void ic_solve_wavefront(const ic_real* __restrict__ mat, ic_real* img, int C, int Cp,
                                                   int PH, int PW, int EHW, int EW, int th, int tw, int transpose)
{
    const int taps = PH * PW;
    const int nthreads = blockDim.x, tid = threadIdx.x;

    // z = F_0^-1 y in place, one pixel per thread: descending o for the lower
    // A^-1 (z[o] needs y[c <= o]), ascending for the upper A^-T.
    for (int k = tid; k < th * tw; k += nthreads) {
        const int pix = (k / tw + PH - 1) * EW + (k % tw + PW - 1);
        for (int step = 0; step < C; ++step) {
            const int o = transpose ? step : C - 1 - step;
            const int c0 = transpose ? o : 0, c1 = transpose ? C : o + 1;
            ic_real acc = 0;
            for (int c = c0; c < c1; ++c) acc += mat[c * Cp + o] * img[c * EHW + pix];
            img[o * EHW + pix] = acc;
        }
    }
    __syncthreads();

    // The wavefront: x(u, v) = z(u, v) + sum_{t != 0} M_t x(u-p, v-q). Work item
    // (pixel on the diagonal, group of G output channels); a diagonal's pixels
    // read only earlier diagonals, so one barrier per step. Two accumulators per
    // output (even and odd input channels) halve the dependent FMA chain.
    const int groups = Cp / G;
    for (int d = 0; d < th + tw - 1; ++d) {
        const int r0 = max(0, d - tw + 1), r1 = min(th - 1, d);
        const int items = (r1 - r0 + 1) * groups;
        for (int item = tid; item < items; item += nthreads) {
            const int o0 = (item % groups) * G;
            const int r = r0 + item / groups;
            const int pix = (r + PH - 1) * EW + (d - r + PW - 1);
            ic_real even[G], odd[G];
            for (int g = 0; g < G; ++g) {
                even[g] = (o0 + g < C) ? img[(o0 + g) * EHW + pix] : (ic_real)0;
                odd[g] = 0;
            }
            for (int t = 1; t < taps; ++t) {
                const ic_real* src = img + pix - (t / PW) * EW - (t % PW);
                const ic_solve_vec<G>* m = reinterpret_cast<const ic_solve_vec<G>*>(mat + t * C * Cp + o0);
                const int row = Cp / G;   // one input channel's row of prepared, in vectors
                int c = 0;
                for (; c + 1 < C; c += 2) {
                    const ic_real x0 = src[c * EHW], x1 = src[(c + 1) * EHW];
                    const ic_solve_vec<G> m0 = m[c * row], m1 = m[(c + 1) * row];
                    for (int g = 0; g < G; ++g) {
                        even[g] += m0.v[g] * x0;
                        odd[g] += m1.v[g] * x1;
                    }
                }
                if (c < C) {
                    const ic_real x0 = src[c * EHW];
                    const ic_solve_vec<G> m0 = m[c * row];
                    for (int g = 0; g < G; ++g) even[g] += m0.v[g] * x0;
                }
            }
            for (int g = 0; g < G; ++g)
                if (o0 + g < C) img[(o0 + g) * EHW + pix] = even[g] + odd[g];
        }
        __syncthreads();
    }

}

// One tile anti-diagonal D of the wavefront (see the header), G output
// channels per thread in a step. Dynamic shared memory, in ic_real words:
//     unless use_given:  PH*PW*C*Cp (prepared) + C*C (ainv)
//     always:            max(C*EH*EW, PH*PW*C*C), EH = TH+PH-1, EW = TW+PW-1: the tile
//                        with its halo (first wbuf, when the block prepares its matrices)
// With use_given, `given` holds prepared (from solve_prepare) and the steps
// read it from global memory.
template <int G>
__device__ void ic_solve_tiles(
    const ic_real* __restrict__ y, const ic_real* __restrict__ w, const ic_real* __restrict__ given,
    ic_real* __restrict__ x, ic_index B, int C, int Cp, int H, int W, int KH, int KW, int PH, int PW,
    int flip_h, int flip_w, int transpose, int use_given, int TH, int TW, int D, int ti0)
{
    IC_DYNAMIC_SHARED(ic_real, shared);
    const int taps = PH * PW;
    const int EH = TH + PH - 1, EW = TW + PW - 1, EHW = EH * EW;
    const int fh = flip_h ^ transpose, fw = flip_w ^ transpose;
    const int nthreads = blockDim.x, tid = threadIdx.x;

    const ic_index b = blockIdx.x % B;
    const int ti = ti0 + (int)(blockIdx.x / B);
    const int u0 = ti * TH, v0 = (D - ti) * TW;      // the tile's first frame pixel
    const int th = min(TH, H - u0), tw = min(TW, W - v0);
    const ic_index hw = (ic_index)H * W;
    const ic_real* yb = y + b * C * hw;
    ic_real* xb = x + b * C * hw;

    ic_real* img = shared;
    if (!use_given) {
        ic_real* prepared = shared;
        ic_real* ainv = prepared + taps * C * Cp;
        img = ainv + C * C;
        ic_solve_stage_weights(w, img, C, KH, KW, PH, PW, flip_h, flip_w);
        __syncthreads();
        ic_solve_anchor_inverse(img, ainv, C);
        __syncthreads();
        ic_solve_prepare_taps(img, ainv, prepared, C, Cp, taps, transpose);
        __syncthreads();
    }

    // Stage the tile: y inside, solved x in the halo, zero outside the image,
    // IC_SOLVE_BATCH loads in flight per thread before their stores.
    const int staged = C * EHW;
    for (int base = tid; base < staged; base += nthreads * IC_SOLVE_BATCH) {
        ic_real value[IC_SOLVE_BATCH];
        for (int k = 0; k < IC_SOLVE_BATCH; ++k) {
            const int idx = base + k * nthreads;
            const int s = idx % EW, r = (idx / EW) % EH, c = idx / EHW;
            const int u = u0 - (PH - 1) + r, v = v0 - (PW - 1) + s;
            value[k] = 0;
            if (idx < staged && u >= 0 && v >= 0 && u < H && v < W) {
                const ic_index at = (ic_index)c * hw + (ic_index)(fh ? H - 1 - u : u) * W + (fw ? W - 1 - v : v);
                value[k] = (r >= PH - 1 && s >= PW - 1) ? yb[at] : xb[at];
            }
        }
        for (int k = 0; k < IC_SOLVE_BATCH; ++k)
            if (base + k * nthreads < staged) img[base + k * nthreads] = value[k];
    }
    __syncthreads();

    // The matrices' address space is known at each call (shared or global), so
    // the loads compile to ld.shared / ld.global rather than generic loads.
    if (use_given)
        ic_solve_wavefront<G>(given, img, C, Cp, PH, PW, EHW, EW, th, tw, transpose);
    else
        ic_solve_wavefront<G>(shared, img, C, Cp, PH, PW, EHW, EW, th, tw, transpose);

    // Write the tile's pixels back.
    for (int idx = tid; idx < C * th * tw; idx += nthreads) {
        const int s = idx % tw, r = (idx / tw) % th, c = idx / (th * tw);
        const int u = u0 + r, v = v0 + s;
        const ic_index at = (ic_index)c * hw + (ic_index)(fh ? H - 1 - u : u) * W + (fw ? W - 1 - v : v);
        xb[at] = img[c * EHW + (r + PH - 1) * EW + (s + PW - 1)];
    }
}

// The entry points, one per G (output channels per thread); Cp is a multiple of G.

extern "C" __global__ void solve_tiles_g1(
    const ic_real* __restrict__ y, const ic_real* __restrict__ w, const ic_real* __restrict__ given,
    ic_real* __restrict__ x, ic_index B, int C, int Cp, int H, int W, int KH, int KW, int PH, int PW,
    int flip_h, int flip_w, int transpose, int use_given, int TH, int TW, int D, int ti0)
{
    ic_solve_tiles<1>(y, w, given, x, B, C, Cp, H, W, KH, KW, PH, PW, flip_h, flip_w, transpose,
                       use_given, TH, TW, D, ti0);
}

extern "C" __global__ void solve_tiles_g2(
    const ic_real* __restrict__ y, const ic_real* __restrict__ w, const ic_real* __restrict__ given,
    ic_real* __restrict__ x, ic_index B, int C, int Cp, int H, int W, int KH, int KW, int PH, int PW,
    int flip_h, int flip_w, int transpose, int use_given, int TH, int TW, int D, int ti0)
{
    ic_solve_tiles<2>(y, w, given, x, B, C, Cp, H, W, KH, KW, PH, PW, flip_h, flip_w, transpose,
                       use_given, TH, TW, D, ti0);
}

extern "C" __global__ void solve_tiles_g4(
    const ic_real* __restrict__ y, const ic_real* __restrict__ w, const ic_real* __restrict__ given,
    ic_real* __restrict__ x, ic_index B, int C, int Cp, int H, int W, int KH, int KW, int PH, int PW,
    int flip_h, int flip_w, int transpose, int use_given, int TH, int TW, int D, int ti0)
{
    ic_solve_tiles<4>(y, w, given, x, B, C, Cp, H, W, KH, KW, PH, PW, flip_h, flip_w, transpose,
                       use_given, TH, TW, D, ti0);
}
