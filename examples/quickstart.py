"""Solve a batch of causal convolutions on built-in random data, check it, time it."""

import time

import numpy as np

import invconv_cupy as ic

rng = np.random.default_rng(0)
B, C, H, W, K = 8, 3, 256, 256, 3
w = rng.uniform(-1, 1, (C, C, K, K)) * 0.5 / (C * K * K)
w[:, :, -1, -1] = np.tril(w[:, :, -1, -1], -1) + np.diag(rng.uniform(1, 2, C))
x = rng.standard_normal((B, C, H, W))

y = ic.conv(x, w)
start = time.perf_counter()
x_back = ic.solve(y, w)
seconds = time.perf_counter() - start
g = rng.standard_normal(x.shape)
grad_y, grad_w = ic.solve_vjp(g, x_back, w)

print(f"solve of {B}x{C}x{H}x{W} (3x3 kernel) in {seconds * 1e3:.1f} ms, "
      f"max |solve(conv(x)) - x| = {np.abs(x_back - x).max():.2e}")
print(f"log|det T| per image = {ic.logdet(w, H, W):.4f}, |grad_w| = {np.linalg.norm(grad_w):.4f}")
