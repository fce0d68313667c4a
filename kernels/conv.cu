// conv.cu: the causal convolution T x, its transpose T^T g, and the weight gradient.
//
// Arrays are C-contiguous: images (B, C, H, W), weight (C, C, KH, KW).
// Orientation by index mapping, never flipped copies: (pt, pl) is the anchor
// tap, (KH-1 or 0, KW-1 or 0) as flip_h / flip_w are 0 or 1, and tap (a, e) of
// output pixel (i, j) reads source pixel (i + s*(a - pt), j + s*(e - pl)) with
// s = +1 for T and s = -1 for T^T. The anchor's channel matrix is used
// lower-triangular: weight[o, c, pt, pl] with c > o is never read.

// y = T x, or y = T^T x when transpose (the correlation towards the opposite
// corner with channel-transposed taps). One thread per output element.
extern "C" __global__ void conv_apply(
    const ic_real* __restrict__ x, const ic_real* __restrict__ w, ic_real* __restrict__ y,
    ic_index B, ic_index C, ic_index H, ic_index W, int KH, int KW,
    int flip_h, int flip_w, int transpose)
{
    const int pt = flip_h ? 0 : KH - 1;
    const int pl = flip_w ? 0 : KW - 1;
    const int s = transpose ? -1 : 1;
    const ic_index hw = H * W;
    const ic_index n = B * C * hw;
    for (ic_index idx = ic_thread_index(); idx < n; idx += ic_grid_stride()) {
        const ic_index j = idx % W;
        const ic_index i = (idx / W) % H;
        const ic_index u = (idx / hw) % C;      // output channel
        const ic_real* xb = x + (idx / (hw * C)) * C * hw;
        ic_real acc = 0;
        for (int a = 0; a < KH; ++a) {
            const ic_index si = i + s * (a - pt);
            if (si < 0 || si >= H) continue;
            for (int e = 0; e < KW; ++e) {
                const ic_index sj = j + s * (e - pl);
                if (sj < 0 || sj >= W) continue;
                const bool anchor = a == pt && e == pl;
                const ic_real* xs = xb + si * W + sj;
                for (ic_index v = 0; v < C; ++v) {    // input channel
                    const ic_index o = transpose ? v : u;
                    const ic_index c = transpose ? u : v;
                    if (anchor && c > o) continue;
                    acc += w[((o * C + c) * KH + a) * KW + e] * xs[v * hw];
                }
            }
        }
        y[idx] = acc;
    }
}

// y = T x, or y = T^T x when transpose, tiled: block k is pixel tile
// k % (tiles_h*tiles_w) of image k / (tiles_h*tiles_w), a tile_h x tile_w tile in
// the orientation's frame (as in conv_weight_grad_partial). The block stages
//     sw[(u*C + v)*KH*KW + hr*KW + hc]: the weight output channel u takes from input
//         channel v at halo tap (hr, hc) (channel-transposed when transpose; masked
//         anchor entries 0)
//     sx: x of all C channels over the tile plus its halo ((tile_h+KH-1) x
//         (tile_w+KW-1), 0 outside the image): KH-1 rows / KW-1 columns towards the
//         orientation's corner for T, towards the opposite corner for T^T
// and each thread computes all C output channels of its pixels:
//     y[b, u, pixel] = sum_v sum_(hr, hc) sw[u, v, hr, hc] * sx[v, pixel + (hr, hc)]
// shared_mem = (C*C*KH*KW + C*(tile_h+KH-1)*(tile_w+KW-1)) * sizeof(ic_real).
// Stage channels [0, nc) of the frame window whose top-left pixel is (hi0, hj0),
// halo_px pixels in rows of halo_w, into sx; zero outside the image. Frame pixel
// (fi, fj) is the physical pixel (flip_h ? H-1-fi : fi, flip_w ? W-1-fj : fj).
__device__ void ic_conv_stage_halo(const ic_real* __restrict__ xb, ic_real* sx, int nc,
                                   ic_index hi0, ic_index hj0, int halo_w, int halo_px,
                                   ic_index H, ic_index W, int flip_h, int flip_w)
{
    const ic_index hw = H * W;
    for (int s = threadIdx.x; s < nc * halo_px; s += blockDim.x) {
        const int ch = s / halo_px, r = s % halo_px;
        const ic_index fi = hi0 + r / halo_w, fj = hj0 + r % halo_w;
        ic_real v = 0;
        if (fi >= 0 && fi < H && fj >= 0 && fj < W) {
            const ic_index i = flip_h ? H - 1 - fi : fi, j = flip_w ? W - 1 - fj : fj;
            v = xb[ch * hw + i * W + j];
        }
        sx[s] = v;
    }
}

extern "C" __global__ void conv_apply_tiled(
    const ic_real* __restrict__ x, const ic_real* __restrict__ w, ic_real* __restrict__ y,
    ic_index B, ic_index C, ic_index H, ic_index W, int KH, int KW,
    int flip_h, int flip_w, int transpose, int tile_h, int tile_w, ic_index tiles_h, ic_index tiles_w)
{
    IC_DYNAMIC_SHARED(ic_real, smem);
    const int nc = (int)C;
    const int taps = KH * KW;
    const int halo_h = tile_h + KH - 1, halo_w = tile_w + KW - 1;
    const int tile_px = tile_h * tile_w, halo_px = halo_h * halo_w;
    ic_real* sx = smem;
    ic_real* sw = smem + nc * halo_px;
    const int pt = flip_h ? 0 : KH - 1, pl = flip_w ? 0 : KW - 1;      // the anchor tap
    const bool rev_h = (flip_h != 0) != (transpose != 0), rev_w = (flip_w != 0) != (transpose != 0);

    for (int s = threadIdx.x; s < nc * nc * taps; s += blockDim.x) {
        const int hc = s % KW, hr = (s / KW) % KH, v = (s / taps) % nc, u = s / (taps * nc);
        const int a = rev_h ? KH - 1 - hr : hr, e = rev_w ? KW - 1 - hc : hc;
        const int o = transpose ? v : u, c = transpose ? u : v;
        sw[s] = (a == pt && e == pl && c > o) ? (ic_real)0 : w[(((ic_index)o * nc + c) * KH + a) * KW + e];
    }
    const ic_index per_image = tiles_h * tiles_w;
    const ic_index b = blockIdx.x / per_image;
    const ic_index tile = blockIdx.x % per_image;
    const ic_index fi0 = (tile / tiles_w) * tile_h, fj0 = (tile % tiles_w) * tile_w;
    const ic_index hi0 = transpose ? fi0 : fi0 - (KH - 1), hj0 = transpose ? fj0 : fj0 - (KW - 1);
    const ic_index hw = H * W;
    const ic_real* xb = x + b * C * hw;
    ic_conv_stage_halo(xb, sx, nc, hi0, hj0, halo_w, halo_px, H, W, flip_h, flip_w);
    __syncthreads();                              // weights and tile staged
    ic_real* yb = y + b * C * hw;
    for (int px = threadIdx.x; px < tile_px; px += blockDim.x) {
        const int li = px / tile_w, lj = px % tile_w;
        const ic_index fi = fi0 + li, fj = fj0 + lj;
        if (fi >= H || fj >= W) continue;
        const ic_index out = (flip_h ? H - 1 - fi : fi) * W + (flip_w ? W - 1 - fj : fj);
        const ic_real* xp = sx + li * halo_w + lj;
        for (int u = 0; u < nc; ++u) {
            const ic_real* wu = sw + u * nc * taps;
            ic_real acc = 0;
            for (int v = 0; v < nc; ++v)
                for (int hr = 0; hr < KH; ++hr)
                    for (int hc = 0; hc < KW; ++hc)
                        acc += wu[(v * KH + hr) * KW + hc] * xp[v * halo_px + hr * halo_w + hc];
            yb[u * hw + out] = acc;
        }
    }
}

// Weight gradient: two launches, a deterministic two-stage reduction (no float
// atomics, bitwise reproducible run to run). invconv_cupy/backends/kernel_conv.py
// (weight_grad_plan) picks the tile, block and grid and documents the traffic.
//
// The parameters p = (o, c, a, e) of one output channel o form a row of
// L = C*KH*KW entries q = (c, a, e); a row is cut into row_slots = ceil(L/R)
// slots of R = IC_WG_PER_THREAD consecutive q, and a thread owns one slot: R
// accumulators in registers, one g value and R x values read from shared memory
// per pixel. Slots are numbered o * row_slots + s; block (bx, gy) owns slots
// [gy*blockDim.x, (gy+1)*blockDim.x) (a parameter group; one group holds every
// parameter when C*row_slots <= blockDim.x).
#define IC_WG_PER_THREAD 4

// Weight gradient, stage 1 of 2. Work items are (image b, pixel tile) in the
// frame where the orientation's corner is top-left (frame row fi is image row
// H-1-fi when flip_h, likewise columns): item = (b * tiles_h + ti) * tiles_w + tj
// covers frame rows [ti*tile_h, ti*tile_h + tile_h) and columns likewise. Block
// bx takes items bx, bx + gridDim.x, ... in increasing order. Per item the
// block stages in dynamic shared memory
//     sg: g of its g_channels output channels o_lo.. (tile_h x tile_w, 0 outside the image)
//     sx: x of all C channels over the tile plus its halo, KH-1 rows above and
//         KW-1 columns left of it in the frame ((tile_h+KH-1) x (tile_w+KW-1), 0 outside)
// and every thread adds, pixel by pixel in row-major order over the tile's
// pixels inside the image,
//     acc[k] += g[o, pixel] * x[c, pixel + (a' - (KH-1), e' - (KW-1))]
// with (a', e') the frame tap of (a, e) (a' = KH-1-a when flip_h). Then
//     partial[bx * params + p] = acc   (params = C*C*KH*KW)
// for every parameter of the block's group (masked anchor entries included:
// stage 2 zeroes them). shared_mem = (g_channels*tile_h*tile_w +
// C*(tile_h+KH-1)*(tile_w+KW-1)) * sizeof(ic_real).
extern "C" __global__ void conv_weight_grad_partial(
    const ic_real* __restrict__ g, const ic_real* __restrict__ x, ic_real* __restrict__ partial,
    ic_index B, ic_index C, ic_index H, ic_index W, int KH, int KW,
    int flip_h, int flip_w, int tile_h, int tile_w, ic_index tiles_h, ic_index tiles_w,
    int g_channels, int row_slots)
{
    IC_DYNAMIC_SHARED(ic_real, smem);
    const int nc = (int)C;
    const int taps = KH * KW;
    const int L = nc * taps;                      // parameters per output channel
    const int halo_h = tile_h + KH - 1, halo_w = tile_w + KW - 1;
    const int tile_px = tile_h * tile_w, halo_px = halo_h * halo_w;
    ic_real* sg = smem;
    ic_real* sx = smem + g_channels * tile_px;

    // this block's parameter group and this thread's slot
    const int slot0 = (int)blockIdx.y * (int)blockDim.x;
    const int o_lo = slot0 / row_slots;
    const int n_g = min(nc - 1, (slot0 + (int)blockDim.x - 1) / row_slots) - o_lo + 1;   // <= g_channels
    const int slot = slot0 + (int)threadIdx.x;
    const int o = slot / row_slots;
    const bool active = o < nc;
    const int q0 = (slot % row_slots) * IC_WG_PER_THREAD;
    int xoff[IC_WG_PER_THREAD];                   // offset of tap (a', e') of channel c in sx
    ic_real acc[IC_WG_PER_THREAD];
    for (int k = 0; k < IC_WG_PER_THREAD; ++k) {
        const int q = q0 + k;
        const int c = q / taps, a = (q / KW) % KH, e = q % KW;
        const int af = flip_h ? KH - 1 - a : a, ef = flip_w ? KW - 1 - e : e;
        xoff[k] = (active && q < L) ? c * halo_px + af * halo_w + ef : 0;   // unused slots read a valid address
        acc[k] = 0;
    }
    const int goff = active ? (o - o_lo) * tile_px : 0;

    const ic_index hw = H * W;
    const ic_index per_image = tiles_h * tiles_w;
    const ic_index items = B * per_image;
    for (ic_index item = blockIdx.x; item < items; item += gridDim.x) {   // uniform over the block
        const ic_index b = item / per_image;
        const ic_index tile = item % per_image;
        const ic_index fi0 = (tile / tiles_w) * tile_h, fj0 = (tile % tiles_w) * tile_w;
        __syncthreads();                          // every thread is done with the previous item
        const ic_real* gb = g + (b * C + o_lo) * hw;
        for (int s = threadIdx.x; s < n_g * tile_px; s += blockDim.x) {
            const int ch = s / tile_px, r = s % tile_px;
            const ic_index fi = fi0 + r / tile_w, fj = fj0 + r % tile_w;
            ic_real v = 0;
            if (fi < H && fj < W) {
                const ic_index i = flip_h ? H - 1 - fi : fi, j = flip_w ? W - 1 - fj : fj;
                v = gb[ch * hw + i * W + j];
            }
            sg[s] = v;
        }
        const ic_real* xb = x + b * C * hw;
        ic_conv_stage_halo(xb, sx, nc, fi0 - (KH - 1), fj0 - (KW - 1), halo_w, halo_px, H, W, flip_h, flip_w);
        __syncthreads();                          // the item is staged
        if (active) {
            const int rows = (int)min((ic_index)tile_h, H - fi0);   // pixels of the tile inside the image
            const int cols = (int)min((ic_index)tile_w, W - fj0);
            for (int li = 0; li < rows; ++li) {
                const ic_real* gr = sg + goff + li * tile_w;
                const ic_real* xr = sx + li * halo_w;
                for (int lj = 0; lj < cols; ++lj) {
                    const ic_real gv = gr[lj];
                    for (int k = 0; k < IC_WG_PER_THREAD; ++k) acc[k] += gv * xr[xoff[k] + lj];
                }
            }
        }
    }
    if (active) {
        ic_real* out = partial + (ic_index)blockIdx.x * ((ic_index)nc * L) + (ic_index)o * L;
        for (int k = 0; k < IC_WG_PER_THREAD; ++k)
            if (q0 + k < L) out[q0 + k] = acc[k];
    }
}

// Weight gradient, stage 2 of 2: for parameter p = blockIdx.x * blockDim.x + threadIdx.x,
//     grad_w[p] = scale * sum over stage-1 blocks q of partial[q * params + p]
// in a fixed order: lane threadIdx.y sums q = threadIdx.y, + blockDim.y, ... in
// increasing q, then a tree over the lanes in shared memory (blockDim.y a power
// of two; shared_mem = blockDim.x * blockDim.y * sizeof(ic_real)). Masked anchor
// entries (c > o at the anchor tap) get 0.
extern "C" __global__ void conv_weight_grad_finish(
    const ic_real* __restrict__ partial, ic_real* __restrict__ grad_w,
    ic_index params, ic_index blocks, ic_index C, int KH, int KW, int flip_h, int flip_w, ic_real scale)
{
    IC_DYNAMIC_SHARED(ic_real, sums);
    const ic_index p = (ic_index)blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned t = threadIdx.y * blockDim.x + threadIdx.x;
    ic_real acc = 0;
    if (p < params)
        for (ic_index q = threadIdx.y; q < blocks; q += blockDim.y) acc += partial[q * params + p];
    sums[t] = acc;
    __syncthreads();
    for (unsigned half = blockDim.y / 2; half > 0; half /= 2) {
        if (threadIdx.y < half) sums[t] += sums[t + half * blockDim.x];
        __syncthreads();
    }
    if (threadIdx.y == 0 && p < params) {
        const int e = (int)(p % KW);
        const int a = (int)((p / KW) % KH);
        const ic_index c = (p / ((ic_index)KW * KH)) % C;
        const ic_index o = p / ((ic_index)KW * KH * C);
        const bool masked = a == (flip_h ? 0 : KH - 1) && e == (flip_w ? 0 : KW - 1) && c > o;
        grad_w[p] = masked ? (ic_real)0 : scale * sums[threadIdx.x];
    }
}
