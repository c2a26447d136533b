"""The one rule every script uses to compare distill's outputs with a peer's (onnxruntime, PyTorch).

Two float32 programs that sum in different orders (another onnxruntime version, another CPU's
kernels, another thread count) differ by a few units in the last place of the *largest* values they
sum, not of each element: an element that nearly cancels to zero can be off by far more than its
own size. So floats are compared against the scale of the whole output:

    |a - b| <= atol + rtol * max|b|      for every element, per output

with NaN equal to NaN and infinities equal in sign. Everything else is exact: shapes, dtypes and
every non-float output (indices, labels, counts).

The defaults (rtol 1e-3, atol 1e-5) sit in the middle, on a log scale, between the summation noise
of the models checked here (at most 1.5e-5 of max|b|, on tiny_fpn's export check) and the effect of
real bugs (a weight not written back, a transposed kernel, a stale BatchNormalization statistic
move outputs by 5e-2 of their scale or more); `check_export.py --self-test` shows such bugs fail.
"""
import numpy as np

RTOL = 1e-3
ATOL = 1e-5


def mismatch(actual, expected, rtol=RTOL, atol=ATOL, scale=None):
    """None when `actual` matches `expected` under the rule above, else a sentence saying how not.
    `scale` replaces max|expected| when a part of an output is compared (a row of detections)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        return f"shape {actual.shape}, expected {expected.shape}"
    if actual.dtype != expected.dtype:
        return f"dtype {actual.dtype}, expected {expected.dtype}"
    if not np.issubdtype(expected.dtype, np.floating):
        if np.array_equal(actual, expected):
            return None
        differing = actual != expected
        first = tuple(np.argwhere(differing)[0])
        return f"{differing.sum()} of {differing.size} elements differ, first at {first}: {actual[first]} vs {expected[first]}"
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    finite = np.isfinite(e)
    if scale is None:
        scale = float(np.abs(e[finite]).max()) if finite.any() else 0.0
    bound = atol + rtol * scale
    with np.errstate(invalid="ignore"):
        close = np.abs(a - e) <= bound
    same_special = (np.isnan(a) & np.isnan(e)) | (np.isinf(e) & (a == e))
    bad = ~(close | same_special)
    if not bad.any():
        return None
    first = tuple(np.argwhere(bad)[0])
    with np.errstate(invalid="ignore"):
        worst = float(np.nanmax(np.abs(a - e)[bad])) if np.isfinite(a[bad]).any() else float("nan")
    return (f"{bad.sum()} of {bad.size} elements differ by more than {bound:.3g} (atol {atol:g} + rtol {rtol:g} * max|b| "
            f"{scale:.4g}), largest difference {worst:.4g}, first at {first}: {a[first]} vs {e[first]}")


def close(actual, expected, rtol=RTOL, atol=ATOL, scale=None):
    return mismatch(actual, expected, rtol, atol, scale) is None


def float_scale(expected):
    """max|expected| over the finite elements of a float array (0 for others)."""
    expected = np.asarray(expected)
    if not np.issubdtype(expected.dtype, np.floating):
        return None
    finite = expected[np.isfinite(expected)]
    return float(np.abs(finite.astype(np.float64)).max()) if finite.size else 0.0
