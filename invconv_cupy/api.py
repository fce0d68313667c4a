"""The public functions: validate, import (DLPack), dispatch to a backend, export.

See ``SPEC.md`` for the operator. Every function accepts NumPy arrays, CuPy
arrays, torch tensors or any other DLPack array and returns the kind of array
its first argument is, on the same device, in the same dtype.
"""

from __future__ import annotations

import contextlib
import numbers

import numpy as np

from ._arrays import Device, device_of, export_array, import_array
from .backends import get_backend
from .orientation import parse_orientation

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _refuse_masked(name, obj):
    # A masked array is an ndarray whose mask every computation here would ignore.
    if isinstance(obj, np.ndarray) and type(obj) is not np.ndarray and isinstance(obj, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a NumPy masked array; its mask would be ignored. Pass {name}.filled(value) "
            "(masked entries replaced by a value you choose) or a plain array"
        )


def _import_operands(named, backend):
    """Check devices agree, pick the backend, import every operand zero-copy."""
    for name, obj in named:
        _refuse_masked(name, obj)
    devices = [(name, device_of(obj, name)) for name, obj in named]
    first_name, device = devices[0]
    for name, other in devices[1:]:
        if other != device:
            raise ValueError(f"{first_name} and {name} must be on the same device, got {device} and {other}")
    be = get_backend(backend, device)
    arrays = [import_array(obj, name, device) for name, obj in named]
    return be, device, arrays


def _check_dtypes(named_arrays):
    for name, a in named_arrays:
        if a.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name} must be float32 or float64, got {a.dtype}")
    (first, a0), *rest = named_arrays
    for name, a in rest:
        if a.dtype != a0.dtype:
            raise TypeError(f"{first} and {name} must share one dtype, got {a0.dtype} and {a.dtype}")


def _check_image(name, a):
    if a.ndim != 4:
        raise ValueError(f"{name} must have 4 dimensions (B, C, H, W), got shape {tuple(a.shape)}")
    if min(a.shape[1:]) < 1:
        raise ValueError(f"{name} must have at least one channel, row and column, got shape {tuple(a.shape)}")


def _check_weight(w, channels):
    if w.ndim != 4:
        raise ValueError(f"weight must have 4 dimensions (C, C, KH, KW), got shape {tuple(w.shape)}")
    if tuple(w.shape[:2]) != (channels, channels):
        raise ValueError(
            f"weight must have shape (C, C, KH, KW) with C = {channels} from the image, got {tuple(w.shape)}"
        )
    if min(w.shape[2:]) < 1:
        raise ValueError(f"weight's kernel height and width must be at least 1, got {tuple(w.shape)}")


def _check_same_shape(name, a, ref_name, ref):
    if tuple(a.shape) != tuple(ref.shape):
        raise ValueError(f"{name} must have the shape of {ref_name} {tuple(ref.shape)}, got {tuple(a.shape)}")


def _check_anchor(xp, w, orient):
    """Raise ``ValueError`` naming the first channel whose anchor diagonal entry is zero, NaN or infinite.

    On a GPU this reads one boolean back to the host (a synchronization).
    Subnormal entries pass (see ``solve``'s ``check``).
    """
    a_h, a_w = orient.anchor(*w.shape[2:])
    diagonal = xp.diagonal(w[:, :, a_h, a_w])
    if bool(((diagonal == 0) | ~xp.isfinite(diagonal)).any()):
        host = diagonal if xp is np else xp.asnumpy(diagonal)
        channel = int(np.flatnonzero((host == 0) | ~np.isfinite(host))[0])
        value = host[channel]
        where = f"at channel {channel} (weight[{channel}, {channel}, {a_h}, {a_w}] for orientation {orient.name!r})"
        if value == 0:
            raise ValueError(f"weight's anchor diagonal is zero {where}: the convolution is not invertible")
        raise ValueError(f"weight's anchor diagonal is {value} {where}: it must be finite and nonzero")


def _on_device(device: Device):
    if device.kind == "cuda":
        import cupy

        return cupy.cuda.Device(device.index)
    return contextlib.nullcontext()


def _prepare(named, weight, orientation, backend):
    """Shared front half of every function: returns (backend, device, orient, arrays, weight)."""
    orient = parse_orientation(orientation)
    be, device, arrays = _import_operands(list(named) + [("weight", weight)], backend)
    *images, w = arrays
    for (name, _), a in zip(named, images):
        _check_image(name, a)
    _check_dtypes([(name, a) for (name, _), a in zip(named, images)] + [("weight", w)])
    _check_weight(w, images[0].shape[1])
    for (name, _), a in zip(named[1:], images[1:]):
        _check_same_shape(name, a, named[0][0], images[0])
    return be, device, orient, images, w


def conv(x, weight, orientation="TL", *, backend=None):
    """Causal convolution ``y = T x``.

    Parameters
    ----------
    x : array, shape (B, C, H, W)
        Input images, float32 or float64, any DLPack array.
    weight : array, shape (C, C, KH, KW)
        Kernel in ``torch.nn.Conv2d`` layout; the anchor tap is used
        lower-triangular (entries with ``c > o`` are ignored).
    orientation : {"TL", "TR", "BL", "BR"}
        The corner the convolution looks towards.
    backend : {None, "numpy", "cupy", "emulate"}
        None picks from where the data lives.

    Returns
    -------
    y : array, shape (B, C, H, W), the kind of array ``x`` is.
    """
    be, device, orient, (xa,), w = _prepare([("x", x)], weight, orientation, backend)
    with _on_device(device):
        y = be.xp.zeros(xa.shape, xa.dtype) if xa.size == 0 else be.conv(xa, w, orient)
    return export_array(y, x)


def solve(y, weight, orientation="TL", *, backend=None, check=True, transpose=False):
    """Inverse of the causal convolution: ``x = T^-1 y``, so ``conv(x, weight) == y``.

    Parameters
    ----------
    y : array, shape (B, C, H, W)
    weight : array, shape (C, C, KH, KW)
    orientation : {"TL", "TR", "BL", "BR"}
    backend : {None, "numpy", "cupy", "emulate"}
    check : bool
        Raise ``ValueError`` when an anchor diagonal entry is zero, NaN or
        infinite. On a GPU this costs one small device-to-host read;
        ``check=False`` skips it (such an entry then gives inf/nan instead of an
        error). A subnormal entry (nonzero, below ``numpy.finfo(dtype).tiny``)
        passes the check. Where its reciprocal overflows (float32 entries below
        about 2.9e-39, float64 below about 5.6e-309), and for any float32
        subnormal on a GPU (CuPy compiles kernels with ``-ftz=true``, flushing
        it to zero), the result is NaN/inf. Keep ``|A[o, o]|`` well above
        ``numpy.finfo(dtype).tiny``.
    transpose : bool
        Solve the transposed system instead: ``x = T^-T y`` (from the opposite
        corner; the first half of :func:`solve_vjp`).

    Returns
    -------
    x : array, shape (B, C, H, W), the kind of array ``y`` is.
    """
    be, device, orient, (ya,), w = _prepare([("y", y)], weight, orientation, backend)
    with _on_device(device):
        if check:
            _check_anchor(be.xp, w, orient)
        x = be.xp.zeros(ya.shape, ya.dtype) if ya.size == 0 else be.solve(ya, w, orient, transpose=bool(transpose))
    return export_array(x, y)


def conv_vjp(grad_y, x, weight, orientation="TL", *, backend=None):
    """Vector-Jacobian product of :func:`conv`.

    Returns
    -------
    grad_x : array, shape (B, C, H, W)
        ``T^T grad_y``.
    grad_weight : array, shape (C, C, KH, KW)
        Gradient of ``<grad_y, conv(x, weight)>`` in ``weight``; the masked
        anchor entries get zero.
    """
    be, device, orient, (g, xa), w = _prepare([("grad_y", grad_y), ("x", x)], weight, orientation, backend)
    with _on_device(device):
        if g.size == 0:
            grad_x, grad_w = be.xp.zeros(g.shape, g.dtype), be.xp.zeros(w.shape, w.dtype)
        else:
            grad_x = be.conv(g, w, orient, transpose=True)
            grad_w = be.weight_grad(g, xa, tuple(w.shape[2:]), orient)
    return export_array(grad_x, grad_y), export_array(grad_w, grad_y)


def solve_vjp(grad_x, x, weight, orientation="TL", *, backend=None, check=True):
    """Vector-Jacobian product of :func:`solve`, given its OUTPUT ``x``.

    With ``x = solve(y, weight)``: ``grad_y = T^-T grad_x`` (the transposed
    solve, from the opposite corner) and ``grad_weight = -`` the weight
    gradient of ``conv`` at input ``x`` for output gradient ``grad_y``. No
    ``B*C*KH*KW*H*W`` buffer is built.

    Returns
    -------
    grad_y : array, shape (B, C, H, W)
    grad_weight : array, shape (C, C, KH, KW)
    """
    be, device, orient, (g, xa), w = _prepare([("grad_x", grad_x), ("x", x)], weight, orientation, backend)
    with _on_device(device):
        if check:
            _check_anchor(be.xp, w, orient)
        if g.size == 0:
            grad_y, grad_w = be.xp.zeros(g.shape, g.dtype), be.xp.zeros(w.shape, w.dtype)
        else:
            grad_y = be.solve(g, w, orient, transpose=True)
            grad_w = be.weight_grad(grad_y, xa, tuple(w.shape[2:]), orient, scale=-1.0)
    return export_array(grad_y, grad_x), export_array(grad_w, grad_x)


def _check_extent(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")


def logdet(weight, height, width, orientation="TL", *, backend=None, check=True):
    """``log|det T|`` for one ``height x width`` image: ``H * W * sum_o log|A[o, o]|``.

    Returns a Python float for NumPy weights, else a 0-d array of the weight's
    kind (no device synchronization unless ``check``).
    """
    orient = parse_orientation(orientation)
    _check_extent("height", height)
    _check_extent("width", width)
    be, device, (w,) = _import_operands([("weight", weight)], backend)
    _check_dtypes([("weight", w)])
    if w.ndim != 4:
        raise ValueError(f"weight must have 4 dimensions (C, C, KH, KW), got shape {tuple(w.shape)}")
    _check_weight(w, w.shape[0])
    with _on_device(device):
        if check:
            _check_anchor(be.xp, w, orient)
        a_h, a_w = orient.anchor(*w.shape[2:])
        diagonal = be.xp.diagonal(w[:, :, a_h, a_w])
        value = be.xp.log(be.xp.abs(diagonal)).sum() * (int(height) * int(width))
    if isinstance(weight, np.ndarray):
        return float(value)
    return export_array(be.xp.asarray(value), weight)
