"""How far apart two train states are, collection by collection (params, BatchNorm statistics,
optimizer state): for checking that two ways of taking the same step agree up to rounding."""
import jax
import jax.numpy as jnp
import numpy as np

COLLECTIONS = ("params", "batch_stats", "opt_state")


def floating_leaves(state, collection: str) -> list:
    """A collection's floating-point leaves in float64 (not the optimizer's step counts)."""
    return [np.asarray(x, np.float64) for x in jax.tree.leaves(getattr(state, collection))
            if jnp.issubdtype(x.dtype, jnp.floating)]


def relative_difference(a, b, start) -> dict:
    """{collection: |a - b| / |b - start|}, global L2 norms: how much two results of the same
    step from `start` differ, as a fraction of what the step changed."""
    def norm(xs):
        return float(np.sqrt(sum(np.sum(np.square(x)) for x in xs)))
    out = {}
    for name in COLLECTIONS:
        a_, b_, s_ = (floating_leaves(s, name) for s in (a, b, start))
        out[name] = (norm([x - y for x, y in zip(a_, b_)])
                     / norm([y - s for y, s in zip(b_, s_)]))
    return out


def leaf_differences(a, b) -> dict:
    """{collection: [max |a - b| / max(1, max |b|) for each leaf]}: entry by entry."""
    return {name: [float(np.max(np.abs(x - y)) / max(1.0, float(np.max(np.abs(y)))))
                   for x, y in zip(floating_leaves(a, name), floating_leaves(b, name))]
            for name in COLLECTIONS}
