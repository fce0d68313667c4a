"""Forward-mode AD and torch.func through invconv_cupy.torch.conv / solve.

Jacobians from ``jacfwd`` and ``jacrev`` against each other, against the dense
oracle's exact Jacobians and against central finite differences; ``jvp`` and
``torch.autograd.forward_ad`` (whose tangents used to come back exactly zero);
``grad``/``vjp``; ``vmap`` over images, over weights, and of per-sample
gradients. Both convolution routes: torch's ``conv2d`` (default) and our own
code (where the ops batch by their loop rule).
"""

import numpy as np
import pytest

from oracle import Dense
from torch_cases import ORIENTATIONS, randn, torch, weight  # skips the module without torch

import torch.autograd.forward_ad as fwAD  # noqa: E402  (after the skip)

import invconv_cupy.torch as ict
from invconv_cupy.torch import reference

OPS = {"conv": ict.conv, "solve": ict.solve}
ROUTES = ["torch", "invconv_cupy"]
B, C, H, W, KH, KW = 1, 2, 3, 3, 2, 2


def _exact_jacobians(op, x, w, orientation):
    """The dense oracle's Jacobians of ``op(x, w)`` (one image): in ``x`` and in ``w``, flattened."""
    dense = Dense(w.numpy(), H, W, orientation)
    image = x.numpy().reshape(-1)
    if op == "conv":
        jac_x = dense.T
        jac_w = np.einsum("rcp,c->rp", dense.E, image)
    else:
        jac_x = np.linalg.inv(dense.T)
        solution = np.linalg.solve(dense.T, image)
        jac_w = -jac_x @ np.einsum("rcp,c->rp", dense.E, solution)
    return torch.from_numpy(jac_x), torch.from_numpy(jac_w)


def _finite_differences(fn, x, w, eps=1e-6):
    """Central differences of ``fn(x, w)`` in every entry of ``x`` and of ``w``, flattened."""
    columns = []
    for arg in (0, 1):
        for index in range(x.numel() if arg == 0 else w.numel()):
            args = [x.clone(), w.clone()]
            args[arg].view(-1)[index] += eps
            plus = fn(*args)
            args[arg].view(-1)[index] -= 2 * eps
            columns.append((plus - fn(*args)).reshape(-1) / (2 * eps))
    jac = torch.stack(columns, dim=1)
    return jac[:, : x.numel()], jac[:, x.numel():]


# every orientation with the convolutions on torch; one with them on our code (the ops' loop rules)
JACOBIAN_CASES = [(o, "torch") for o in ORIENTATIONS] + [("BR", "invconv_cupy")]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("orientation, route", JACOBIAN_CASES)
def test_jacfwd_equals_jacrev_equals_oracle_and_finite_differences(rng, orientation, route, op):
    w = weight(rng, C, KH, KW, orientation)
    x = randn(rng, (B, C, H, W))

    def fn(x, w):
        return OPS[op](x, w, orientation)

    with ict.conv_route(route):
        forward = torch.func.jacfwd(fn, argnums=(0, 1))(x, w)
        reverse = torch.func.jacrev(fn, argnums=(0, 1))(x, w)
        numeric = _finite_differences(fn, x, w)
    exact = _exact_jacobians(op, x, w, orientation)
    n = B * C * H * W
    for fwd, rev, num, ex in zip(forward, reverse, numeric, exact):
        fwd, rev = fwd.reshape(n, -1), rev.reshape(n, -1)
        assert torch.count_nonzero(fwd) > 0
        torch.testing.assert_close(fwd, rev, rtol=0, atol=1e-12)
        torch.testing.assert_close(fwd, ex, rtol=0, atol=1e-10)
        torch.testing.assert_close(num, ex, rtol=0, atol=1e-6)


@pytest.mark.parametrize("op", OPS)
def test_jvp_tangents_are_exact_not_zero(rng, op):
    """Regression: torch.func.jvp and forward_ad used to return tangents that were exactly zero."""
    w = weight(rng, 3, 2, 3, "BL")
    x, dx = randn(rng, (2, 3, 4, 5)), randn(rng, (2, 3, 4, 5))
    dw = randn(rng, tuple(w.shape))
    fn = OPS[op]
    ref = {"conv": reference.conv, "solve": reference.solve}[op]
    for tangents, primals in (((dx, dw), (x, w)), ((dx,), (x,)), ((dw,), (w,))):
        if len(primals) == 2:
            ours, theirs = (lambda x, w, f=f: f(x, w, "BL") for f in (fn, ref))
        elif primals[0] is x:
            ours, theirs = (lambda x, f=f: f(x, w, "BL") for f in (fn, ref))
        else:
            ours, theirs = (lambda w, f=f: f(x, w, "BL") for f in (fn, ref))
        value, tangent = torch.func.jvp(ours, primals, tangents)
        expected_value, expected_tangent = torch.func.jvp(theirs, primals, tangents)
        assert torch.count_nonzero(tangent) == tangent.numel()
        torch.testing.assert_close(value, expected_value, rtol=0, atol=1e-10)
        torch.testing.assert_close(tangent, expected_tangent, rtol=0, atol=1e-10)

    with fwAD.dual_level():
        out = fn(fwAD.make_dual(x, dx), fwAD.make_dual(w, dw._neg_view()), "BL")
        tangent = fwAD.unpack_dual(out).tangent
    _, expected = torch.func.jvp(lambda x, w: ref(x, w, "BL"), (x, w), (dx, -dw))
    torch.testing.assert_close(tangent, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("op", OPS)
def test_grad_and_vjp_match_the_reference(rng, op):
    w = weight(rng, 3, 3, 2, "TR")
    x, g = randn(rng, (2, 3, 4, 4)), randn(rng, (2, 3, 4, 4))
    fn, ref = OPS[op], {"conv": reference.conv, "solve": reference.solve}[op]

    def loss(f):
        return lambda x, w: f(x, w, "TR").sin().sum()

    grads = torch.func.grad(loss(fn), argnums=(0, 1))(x, w)
    expected = torch.func.grad(loss(ref), argnums=(0, 1))(x, w)
    _, vjp_fn = torch.func.vjp(lambda x, w: fn(x, w, "TR"), x, w)
    _, ref_vjp_fn = torch.func.vjp(lambda x, w: ref(x, w, "TR"), x, w)
    for a, b in zip((*grads, *vjp_fn(g)), (*expected, *ref_vjp_fn(g))):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("op", OPS)
def test_vmap_over_images_weights_and_both(rng, op, route):
    ws = torch.stack([weight(rng, 2, 2, 3, "BR") for _ in range(3)])
    xs = randn(rng, (3, 2, 2, 4, 5))
    fn = OPS[op]
    dense = [Dense(w.numpy(), 4, 5, "BR") for w in ws]
    with ict.conv_route(route):
        over_images = torch.func.vmap(fn, in_dims=(0, None, None))(xs, ws[0], "BR")
        over_weights = torch.func.vmap(fn, in_dims=(None, 0, None))(xs[0], ws, "BR")
        over_both = torch.func.vmap(fn, in_dims=(0, 0, None))(xs, ws, "BR")
        nested = torch.func.vmap(torch.func.vmap(fn, in_dims=(0, None, None)), in_dims=(None, 0, None))(xs, ws, "BR")
    def expected(i, j):
        return torch.from_numpy(getattr(dense[i], op)(xs[j].numpy()))

    for i in range(3):
        torch.testing.assert_close(over_images[i], expected(0, i), rtol=0, atol=1e-10)
        torch.testing.assert_close(over_weights[i], expected(i, 0), rtol=0, atol=1e-10)
        torch.testing.assert_close(over_both[i], expected(i, i), rtol=0, atol=1e-10)
        for j in range(3):
            torch.testing.assert_close(nested[i, j], expected(i, j), rtol=0, atol=1e-10)


@pytest.mark.parametrize("op", OPS)
def test_per_sample_gradients(rng, op):
    """vmap(grad): the weight gradient of each image alone, against autograd on the reference."""
    w = weight(rng, 2, 2, 2, "TL")
    xs = randn(rng, (4, 1, 2, 3, 3))
    fn, ref = OPS[op], {"conv": reference.conv, "solve": reference.solve}[op]

    def loss(f):
        return lambda x, w: f(x, w, "TL").pow(2).sum()

    per_sample = torch.func.vmap(torch.func.grad(loss(fn), argnums=1), in_dims=(0, None))(xs, w)
    for x, got in zip(xs, per_sample):
        (expected,) = torch.autograd.grad(loss(ref)(x, w.requires_grad_()), w)
        w.requires_grad_(False)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)
