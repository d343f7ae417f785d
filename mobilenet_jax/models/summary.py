"""Per-layer table of a MobileNet v1: output shape, parameters, mult-adds.

Counted analytically from the layer shapes of the real module (traced with `jax.eval_shape`,
nothing is computed): a conv or dense layer costs (kernel size) x (output positions) mult-adds,
as in the paper's Table 6/7. Parameters are conv and dense weights (and the dense bias);
BatchNorm scale/offset are a column of their own.
"""
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import traverse_util

from mobilenet_jax.models.mobilenet import MobileNetV1


class Layer(NamedTuple):
    name: str
    output_shape: tuple
    params: int
    bn_params: int
    mult_adds: int


def summarize(model: MobileNetV1, resolution: int) -> list[Layer]:
    """One row per conv / dense layer, with its BatchNorm parameters on the same row."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be an integer >= 1, got {resolution!r}")
    x = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)

    def init(x):
        return model.init(jax.random.key(0), x, capture_intermediates=True)

    variables = jax.eval_shape(init, x)
    outputs = traverse_util.flatten_dict(variables["intermediates"], sep="/")
    params = traverse_util.flatten_dict(variables["params"], sep="/")
    rows = []
    for path, leaf in params.items():
        module, kind = path.rsplit("/", 1)
        if kind != "kernel":
            continue
        out_shape = outputs[module + "/__call__"][0].shape[1:]
        positions = math.prod(out_shape[:-1])  # spatial positions (1 for the dense layer)
        n = math.prod(leaf.shape)
        bias = params.get(module + "/bias")
        bn = params.get(module + "_bn/scale")
        rows.append(Layer(module, tuple(out_shape),
                          n + (math.prod(bias.shape) if bias is not None else 0),
                          2 * math.prod(bn.shape) if bn is not None else 0,
                          n * positions))
    return sorted(rows, key=_network_order)


def _network_order(row: Layer):
    """stem, block1 .. block13 (depthwise, pointwise_hidden, pointwise), classifier."""
    head, _, layer = row.name.partition("/")
    if head == "stem":
        return (0, 0, 0)
    if head.startswith("block"):
        return (1, int(head[len("block"):]),
                ["depthwise", "pointwise_hidden", "pointwise"].index(layer))
    return (2, 0, 0)


def totals(rows: list[Layer]) -> dict:
    return {"params": sum(r.params for r in rows), "bn_params": sum(r.bn_params for r in rows),
            "mult_adds": sum(r.mult_adds for r in rows)}


def format_table(rows: list[Layer]) -> str:
    lines = [f"{'layer':<28} {'output':>16} {'params':>12} {'bn params':>10} {'mult-adds':>14}"]
    for r in rows:
        shape = "x".join(map(str, r.output_shape))
        lines.append(f"{r.name:<28} {shape:>16} {r.params:>12,} {r.bn_params:>10,} "
                     f"{r.mult_adds:>14,}")
    t = totals(rows)
    lines.append(f"{'total':<28} {'':>16} {t['params']:>12,} {t['bn_params']:>10,} "
                 f"{t['mult_adds']:>14,}")
    lines.append(f"= {t['params']:,} conv+FC parameters ({t['params'] / 1e6:.1f}M), "
                 f"{t['mult_adds']:,} mult-adds per image ({t['mult_adds'] / 1e6:.0f}M)")
    return "\n".join(lines)
