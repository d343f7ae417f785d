"""Float comparisons whose tolerances hold on every CPU, not only on the one a test ran on.

Two formulations of one computation (a conv and its hand-written form, the network under two
kernel policies, a step and the formula it implements) are compared in float64. They differ
only by rounding, which grows with the computation's condition number. float64's unit
roundoff is 2**-29 of float32's, so a difference of `RTOL` = 1e-8 of a result's scale in
float64 stands for 2**29 * 1e-8 ~ 5 times the scale in float32: beyond any rounding on any
instruction set, while a wrong formulation (a tap, a stride, a padding or a transpose off)
differs by a large fraction of the scale (both measured: experiments/portability).

A float32 (or bfloat16) result against a float64 reference is held to the rounding bound of
the sums it computes instead: a sum or dot product of n terms, in any order, errs by at most
gamma(n) * sum|terms|, gamma(n) = n*u / (1 - n*u), u the unit roundoff (Higham, Accuracy and
Stability of Numerical Algorithms, 2nd ed., section 3.1).
"""
import jax
import jax.numpy as jnp
import numpy as np

RTOL = 1e-8
U_FLOAT32 = 2.0 ** -24
U_BFLOAT16 = 2.0 ** -8


def float64():
    """JAX computes in float64 inside the with-block (new arrays default to it)."""
    return jax.enable_x64(True)


def as_float64(tree):
    """`tree` with every floating-point array as a float64 array (other leaves unchanged)."""
    return jax.tree.map(lambda a: np.asarray(a, np.float64)
                        if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a, tree)


def assert_same(actual, expected, rtol=RTOL):
    """Two float64 results of one computation (trees of one structure) are equal up to
    float64 rounding: each array within `rtol` of its largest |expected|."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        a, e = np.asarray(a), np.asarray(e)
        assert a.dtype == e.dtype == np.float64, (a.dtype, e.dtype)
        scale = float(np.max(np.abs(e))) if e.size else 0.0
        np.testing.assert_allclose(a, e, rtol=0, atol=rtol * max(scale, np.finfo(float).tiny))


def gamma(n: int, u: float = U_FLOAT32) -> float:
    """The relative bound of n roundings of unit roundoff u, as in a sum of n terms."""
    assert n * u < 1
    return n * u / (1 - n * u)


def assert_within(actual, reference, bound):
    """|actual - reference| <= bound elementwise (the reference and bound in float64)."""
    error = np.abs(np.asarray(actual, np.float64) - np.asarray(reference, np.float64))
    bound = np.broadcast_to(np.asarray(bound, np.float64), error.shape)
    worst = np.unravel_index(np.argmax(error - bound), error.shape) if error.size else ()
    assert np.all(error <= bound), (f"error {error[worst]:.3g} > bound {bound[worst]:.3g} at "
                                    f"{worst}")
