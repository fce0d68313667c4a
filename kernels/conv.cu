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

// Weight gradient, stage 1 of 2: block k = p * chunks + q reduces the
// reduction index r = (b, i, j) in {q*blockDim + t + m*chunks*blockDim} for
// parameter p = (o, c, a, e):
//     partial[k] = sum_r g[b, o, i, j] * x[b, c, i + a - pt, j + e - pl]
// Fixed order (a per-thread loop, then a tree in shared memory): no atomics,
// bitwise reproducible. blockDim.x is a power of two; shared_mem is
// blockDim.x * sizeof(ic_real). Masked anchor entries get 0.
extern "C" __global__ void conv_weight_grad_partial(
    const ic_real* __restrict__ g, const ic_real* __restrict__ x, ic_real* __restrict__ partial,
    ic_index B, ic_index C, ic_index H, ic_index W, int KH, int KW,
    int flip_h, int flip_w, ic_index chunks)
{
    IC_DYNAMIC_SHARED(ic_real, sums);
    const int pt = flip_h ? 0 : KH - 1;
    const int pl = flip_w ? 0 : KW - 1;
    const ic_index p = blockIdx.x / chunks;
    const ic_index q = blockIdx.x % chunks;
    const int e = (int)(p % KW);
    const int a = (int)((p / KW) % KH);
    const ic_index c = (p / ((ic_index)KW * KH)) % C;
    const ic_index o = p / ((ic_index)KW * KH * C);
    const unsigned t = threadIdx.x;
    if (a == pt && e == pl && c > o) {          // uniform over the block
        if (t == 0) partial[blockIdx.x] = 0;
        return;
    }
    const ic_index hw = H * W;
    const ic_index n = B * hw;
    const ic_index di = a - pt, dj = e - pl;
    ic_real acc = 0;
    for (ic_index r = q * blockDim.x + t; r < n; r += chunks * blockDim.x) {
        const ic_index j = r % W;
        const ic_index i = (r / W) % H;
        const ic_index b = r / hw;
        const ic_index si = i + di, sj = j + dj;
        if (si < 0 || si >= H || sj < 0 || sj >= W) continue;
        acc += g[(b * C + o) * hw + i * W + j] * x[(b * C + c) * hw + si * W + sj];
    }
    sums[t] = acc;
    __syncthreads();
    for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {
        if (t < half) sums[t] += sums[t + half];
        __syncthreads();
    }
    if (t == 0) partial[blockIdx.x] = sums[0];
}

// Weight gradient, stage 2 of 2: grad_w[p] = scale * sum_q partial[p * chunks + q],
// summed in increasing q by one thread per parameter.
extern "C" __global__ void conv_weight_grad_finish(
    const ic_real* __restrict__ partial, ic_real* __restrict__ grad_w,
    ic_index params, ic_index chunks, ic_real scale)
{
    for (ic_index p = ic_thread_index(); p < params; p += ic_grid_stride()) {
        ic_real acc = 0;
        for (ic_index q = 0; q < chunks; ++q) acc += partial[p * chunks + q];
        grad_w[p] = scale * acc;
    }
}
