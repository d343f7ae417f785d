"""Achieved memory bandwidth of the depthwise 3x3 layers, per implementation, against a
streaming copy measured in the same process.

    python experiments/depthwise_cpu/depthwise_bandwidth.py --alpha 1.0 --batch-size 128 [--depthwise grouped,vjp] [--json F]

For each of the 13 depthwise layers of the network at --alpha (CIFAR shapes: 32x32 input,
stem stride 2), on whatever backend JAX has, times the layer's forward, and its forward plus
backward (`jax.vjp`: the output, and the input and kernel gradients for a given output
gradient). Each time is set against the least bytes the layer must move: the forward reads
its input and writes its output; forward plus backward also reads the output gradient and
writes the input gradient (2 x input + 2 x output; the 3x3xC kernel is negligible). The
reference is a jitted y = 2x + 1 over a 512 MiB float32 array (read once, written once).
On a GPU these layers are memory-bound; on the CPU it shows the same distance.
"""
import argparse
import json

import jax
import jax.numpy as jnp

from mobilenet_jax import process
from mobilenet_jax.benchmarks.timing import machine_info, time_steps
from mobilenet_jax.models.layers import DEPTHWISE_FORMS
from mobilenet_jax.models.spec import PAD1, PAPER_BLOCKS, STEM_CHANNELS, scaled_channels

TIMING = dict(warmup=3, min_steps=20, min_time_s=1.0, max_time_s=10.0)
COPY_BYTES = 512 << 20


def depthwise_layers(alpha, batch, resolution=32, stem_stride=2):
    """(input shape NHWC, stride) of the network's 13 depthwise convs."""
    size, channels, layers = resolution // stem_stride, scaled_channels(STEM_CHANNELS, alpha), []
    for out_channels, stride in PAPER_BLOCKS:
        layers.append(((batch, size, size, channels), stride))
        size, channels = -(-size // stride), scaled_channels(out_channels, alpha)
    return layers


def copy_bandwidth() -> float:
    """GB/s of y = 2x + 1 over COPY_BYTES of float32 (bytes read + written / time)."""
    x = jnp.ones((COPY_BYTES // 4,), jnp.float32)
    f = jax.jit(lambda x: 2 * x + 1)
    t = time_steps(lambda: f(x), jax.block_until_ready, **TIMING)["median_step_s"]
    return 2 * COPY_BYTES / t / 1e9


def time_layer(impl, shape, stride):
    channels = shape[-1]
    layer = DEPTHWISE_FORMS[impl](channels, (3, 3), strides=stride, padding=PAD1,
                                            feature_group_count=channels, use_bias=False)
    x = jax.random.normal(jax.random.key(0), shape)
    variables = layer.init(jax.random.key(1), x)
    forward = jax.jit(layer.apply)
    out = forward(variables, x)
    cotangent = jax.random.normal(jax.random.key(2), out.shape)

    @jax.jit
    def forward_backward(variables, x, cotangent):
        out, vjp = jax.vjp(layer.apply, variables, x)
        return out, vjp(cotangent)

    fwd = time_steps(lambda: forward(variables, x), jax.block_until_ready, **TIMING)
    both = time_steps(lambda: forward_backward(variables, x, cotangent), jax.block_until_ready,
                      **TIMING)
    in_bytes, out_bytes = x.size * 4, out.size * 4
    return {"forward_s": fwd["median_step_s"], "forward_bytes": in_bytes + out_bytes,
            "forward_backward_s": both["median_step_s"],
            "forward_backward_bytes": 2 * in_bytes + 2 * out_bytes}


MEASURES = ("forward_s", "forward_bytes", "forward_backward_s", "forward_backward_bytes")


def format_row(layer, shape, stride, impl, r, copy) -> str:
    """One table row: time, GB/s and % of the copy, forward and forward + backward."""
    cells = [f"{layer:>5} {shape:>20} {stride:>1} {impl:>6}"]
    for part in ("forward", "forward_backward"):
        seconds = r[f"{part}_s"]
        gbs = r[f"{part}_bytes"] / seconds / 1e9
        cells.append(f"{seconds * 1e6:8.1f} {gbs:8.1f} {100 * gbs / copy:6.1f}")
    return " ".join(cells)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--depthwise", default=",".join(DEPTHWISE_FORMS))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    impls = args.depthwise.split(",")
    # As the CLIs do (process.keep_freed_memory): else every output buffer is mapped and
    # page-faulted afresh on the CPU, the copy's 512 MiB above all (one arena: past a thread's heap).
    process.keep_freed_memory(2 * COPY_BYTES)
    info = machine_info()
    copy = copy_bandwidth()
    print(f"# {info['backend']} ({info['device_kind']}), jax {info['versions']['jax']}, "
          f"{info['date']}: y = 2x + 1 over {COPY_BYTES >> 20} MiB: {copy:.1f} GB/s")
    print(f"{'layer':>5} {'input NHWC':>20} {'s':>1} {'impl':>6} {'fwd us':>8} {'fwd GB/s':>8} "
          f"{'%copy':>6} {'f+b us':>8} {'f+b GB/s':>8} {'%copy':>6}")
    rows = []
    for n, (shape, stride) in enumerate(depthwise_layers(args.alpha, args.batch_size), 1):
        for impl in impls:
            r = time_layer(impl, shape, stride)
            rows.append({"layer": n, "input": shape, "stride": stride, "depthwise": impl, **r})
            print(format_row(n, str(shape), stride, impl, r, copy), flush=True)
    for impl in impls:
        total = {k: sum(r[k] for r in rows if r["depthwise"] == impl) for k in MEASURES}
        print(format_row("all", "", "", impl, total, copy))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "copy_gb_per_s": copy, "alpha": args.alpha,
                       "batch_size": args.batch_size, "layers": rows,
                       "command": "python experiments/depthwise_bandwidth.py " +
                                  " ".join(f"--{k.replace('_', '-')} {v}"
                                           for k, v in vars(args).items() if v is not None)},
                      f, indent=1)


if __name__ == "__main__":
    main()
