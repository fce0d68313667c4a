// solve.cu: the triangular solve x = T^-1 y, and the transposed solve T^-T g.
//
// Arrays are C-contiguous: images (B, C, H, W), weight (C, C, KH, KW).
//
// The frame. Every solve runs in a frame whose starting corner is top-left:
// frame pixel (u, v) is the physical pixel (fh ? H-1-u : u, fw ? W-1-v : v) with
//     fh = flip_h ^ transpose,  fw = flip_w ^ transpose
// (the transposed solve starts from the opposite corner). Pixel (u, v) depends
// on the frame offsets (p, q), 0 <= p < PH, 0 <= q < PW, i.e. on the pixels
// (u-p, v-q), through the C x C matrix
//     F_pq[o][c] = weight[o][c][a][e]   (forward)   or   weight[c][o][a][e]   (transpose)
// with the physical tap a = flip_h ? p : KH-1-p, e = flip_w ? q : KW-1-q. F_00 is
// the anchor matrix A (lower-triangular: weight[o][c][anchor] with c > o is never
// read) or A^T. So
//     x(u, v) = F_00^-1 y(u, v) + sum_{(p,q) != 0} M_pq x(u-p, v-q),   M_pq = -F_00^-1 F_pq.
// PH = min(KH, H), PW = min(KW, W): further taps only ever meet zero padding.
//
// The matrices ("prepared" below) are stored as prepared[(t*C + c)*Cp + o] for
// tap t = p*PW + q: t = 0 holds F_00^-1, the others M_pq. The output index o is
// the fastest, padded with zeros to Cp = a multiple of IC_SOLVE_OUTPUTS, so the
// IC_SOLVE_OUTPUTS outputs a thread computes are consecutive words.
//
// A block solves one tile of TH x TW frame pixels (all channels) of one image,
// as a wavefront over the tile's anti-diagonals with one __syncthreads() per
// step, in shared memory. The tile carries a halo of PH-1 rows above and PW-1
// columns to its left, read from x (already solved tiles) or zero outside the
// image, so the inner loop has no bounds checks. A launch solves every tile of
// one tile anti-diagonal D of every image (blockIdx.x = k * B + b, tile row
// ti = ti0 + k, tile column D - ti). The single-launch path is the same kernel
// with one tile covering the whole image (D = 0, B blocks).

// Outputs per thread in a step (register blocking over output channels). The
// launcher (invconv_cupy/backends/kernel_solve.py) mirrors this value.
#define IC_SOLVE_OUTPUTS 2

// Column k of A^-1 (A = the anchor matrix, lower-triangular) by substitution,
// one column per thread: ainv[r*C + k]. A zero on A's diagonal gives inf/nan.
__device__ void ic_anchor_inverse(const ic_real* __restrict__ w, ic_real* ainv,
                                  int C, int KH, int KW, int a0, int e0)
{
    for (int k = threadIdx.x; k < C; k += blockDim.x) {
        for (int r = 0; r < C; ++r) {
            ic_real s = 0;
            if (r >= k) {
                s = (r == k) ? (ic_real)1 : (ic_real)0;
                for (int c = k; c < r; ++c)
                    s -= w[(((ic_index)r * C + c) * KH + a0) * KW + e0] * ainv[c * C + k];
                s /= w[(((ic_index)r * C + r) * KH + a0) * KW + e0];
            }
            ainv[r * C + k] = s;
        }
    }
}

// The prepared matrices (see the header) from ainv = A^-1, by all threads.
__device__ void ic_prepare_taps(const ic_real* __restrict__ w, const ic_real* ainv, ic_real* prepared,
                                int C, int Cp, int KH, int KW, int PH, int PW,
                                int flip_h, int flip_w, int transpose)
{
    const int n = PH * PW * C * Cp;
    for (int idx = threadIdx.x; idx < n; idx += blockDim.x) {
        const int o = idx % Cp;
        const int c = (idx / Cp) % C;
        const int t = idx / (Cp * C);
        ic_real value = 0;
        if (o < C && t == 0) {
            value = transpose ? ainv[c * C + o] : ainv[o * C + c];
        } else if (o < C) {
            const int p = t / PW, q = t % PW;
            const int a = flip_h ? p : KH - 1 - p;
            const int e = flip_w ? q : KW - 1 - q;
            // M[o][c] = -sum_k Finv[o][k] F[k][c]; Finv = A^-1 (k <= o) or A^-T (k >= o).
            const int k0 = transpose ? o : 0;
            const int k1 = transpose ? C : o + 1;
            for (int k = k0; k < k1; ++k) {
                const ic_real finv = transpose ? ainv[k * C + o] : ainv[o * C + k];
                const ic_index wo = transpose ? c : k;
                const ic_index wc = transpose ? k : c;
                value -= finv * w[((wo * C + wc) * KH + a) * KW + e];
            }
        }
        prepared[idx] = value;
    }
}

// Padded output-channel count of the prepared matrices.
__device__ __forceinline__ int ic_solve_padded(int C)
{
    return (C + IC_SOLVE_OUTPUTS - 1) / IC_SOLVE_OUTPUTS * IC_SOLVE_OUTPUTS;
}

// The prepared matrices into global memory, for solves whose matrices do not
// fit in shared memory next to a tile. One block; scratch holds C*C values.
extern "C" __global__ void solve_prepare(
    const ic_real* __restrict__ w, ic_real* __restrict__ scratch, ic_real* __restrict__ prepared,
    int C, int KH, int KW, int PH, int PW, int flip_h, int flip_w, int transpose)
{
    const int a0 = flip_h ? 0 : KH - 1;
    const int e0 = flip_w ? 0 : KW - 1;
    ic_anchor_inverse(w, scratch, C, KH, KW, a0, e0);
    __syncthreads();
    ic_prepare_taps(w, scratch, prepared, C, ic_solve_padded(C), KH, KW, PH, PW, flip_h, flip_w, transpose);
}

// One tile anti-diagonal D of the tiled wavefront (see the header).
// Dynamic shared memory, in ic_real words:
//     C*C + PH*PW*C*Cp   the anchor inverse and prepared matrices (unless use_given)
//     C*EH*EW            the tile with its halo, EH = TH+PH-1, EW = TW+PW-1
// With use_given, `given` holds the prepared matrices (from solve_prepare), the
// steps read them from global memory, and the first region is absent.
extern "C" __global__ void solve_tiles(
    const ic_real* __restrict__ y, const ic_real* __restrict__ w, const ic_real* __restrict__ given,
    ic_real* __restrict__ x,
    ic_index B, int C, int H, int W, int KH, int KW, int PH, int PW,
    int flip_h, int flip_w, int transpose, int use_given, int TH, int TW, int D, int ti0)
{
    IC_DYNAMIC_SHARED(ic_real, shared);
    const int G = IC_SOLVE_OUTPUTS;
    const int Cp = ic_solve_padded(C);
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

    const ic_real* mat = given;
    ic_real* img = shared;
    if (!use_given) {
        ic_real* ainv = shared;
        ic_real* prepared = shared + C * C;
        img = prepared + taps * C * Cp;
        ic_anchor_inverse(w, ainv, C, KH, KW, flip_h ? 0 : KH - 1, flip_w ? 0 : KW - 1);
        __syncthreads();
        ic_prepare_taps(w, ainv, prepared, C, Cp, KH, KW, PH, PW, flip_h, flip_w, transpose);
        mat = prepared;
    }

    // Stage the tile: y inside, solved x in the halo, zero outside the image.
    for (int idx = tid; idx < C * EHW; idx += nthreads) {
        const int s = idx % EW, r = (idx / EW) % EH, c = idx / EHW;
        const int u = u0 - (PH - 1) + r, v = v0 - (PW - 1) + s;
        ic_real value = 0;
        if (u >= 0 && v >= 0 && u < H && v < W) {
            const ic_index at = (ic_index)c * hw + (ic_index)(fh ? H - 1 - u : u) * W + (fw ? W - 1 - v : v);
            value = (r >= PH - 1 && s >= PW - 1) ? yb[at] : xb[at];
        }
        img[idx] = value;
    }
    __syncthreads();

    // z = F_00^-1 y in place, one pixel per thread: descending o for the lower
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
    // (pixel on the diagonal, group of G output channels); the diagonal's pixels
    // read only earlier diagonals, so one barrier per step.
    const int groups = Cp / G;
    for (int d = 0; d < th + tw - 1; ++d) {
        const int r0 = max(0, d - tw + 1), r1 = min(th - 1, d);
        const int items = (r1 - r0 + 1) * groups;
        for (int item = tid; item < items; item += nthreads) {
            const int o0 = (item % groups) * G;
            const int r = r0 + item / groups;
            const int pix = (r + PH - 1) * EW + (d - r + PW - 1);
            ic_real acc[G];
            for (int g = 0; g < G; ++g) acc[g] = (o0 + g < C) ? img[(o0 + g) * EHW + pix] : (ic_real)0;
            for (int t = 1; t < taps; ++t) {
                const int source = pix - (t / PW) * EW - (t % PW);
                const ic_real* m = mat + t * C * Cp + o0;
                for (int c = 0; c < C; ++c) {
                    const ic_real xv = img[c * EHW + source];
                    for (int g = 0; g < G; ++g) acc[g] += m[c * Cp + g] * xv;
                }
            }
            for (int g = 0; g < G; ++g)
                if (o0 + g < C) img[(o0 + g) * EHW + pix] = acc[g];
        }
        __syncthreads();
    }

    // Write the tile's pixels back.
    for (int idx = tid; idx < C * th * tw; idx += nthreads) {
        const int s = idx % tw, r = (idx / tw) % th, c = idx / (th * tw);
        const int u = u0 + r, v = v0 + s;
        const ic_index at = (ic_index)c * hw + (ic_index)(fh ? H - 1 - u : u) * W + (fw ? W - 1 - v : v);
        xb[at] = img[c * EHW + (r + PH - 1) * EW + (s + PW - 1)];
    }
}
