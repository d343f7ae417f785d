"""Per layer: forward + backward of each conv with its BatchNorm and ReLU6, ours against PyTorch.

    .venv/bin/python experiments/cpu_layers/per_layer.py --alpha 1.0 --stem-stride 1 --out jax.jsonl
    OMP_NUM_THREADS=2 ~/venv-torch/bin/python experiments/cpu_layers/per_layer.py --torch ...
    python experiments/cpu_layers/per_layer.py --table jax.jsonl torch.jsonl

Each layer of the network (stem, then each block's depthwise and pointwise conv) alone, on a
random input of its shape: conv -> BatchNorm (training mode) -> ReLU6, then the gradients of
<output, random cotangent> with respect to the input and the conv's kernel. Ours is the
formulation `--kernels` names (models/layers.py) with the policy's BatchNorm, jitted; PyTorch is
nn.Conv2d + BatchNorm2d + ReLU6 in channels-last, eager (oneDNN). Median of >= 20 calls and
>= 1 s after 3 warm-up calls. FLOPs: 2 x 3 x the conv's mult-adds (forward, input and kernel
gradient; the first layer's input gradient is counted although a train step skips it).
"""
import argparse
import json
import pathlib
import statistics
import sys
import time

# The network as the peer benchmarks build it (framework-free, so both sides can import it).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "bench"))
import spec  # noqa: E402


def layers(alpha, stem_stride, resolution=32):
    """[(name, kind, in_hw, in_ch, out_ch, stride)] of the network's convs."""
    c = spec.ch(spec.STEM, alpha)
    out, hw = [("stem", "stem", resolution, 3, c, stem_stride)], -(-resolution // stem_stride)
    for i, (cin, cout, stride) in enumerate(spec.blocks(alpha)):
        out.append((f"block{i + 1}.dw", "dw", hw, cin, cin, stride))
        hw = -(-hw // stride)
        out.append((f"block{i + 1}.pw", "pw", hw, cin, cout, 1))
    return out


def mult_adds(kind, hw, cin, cout, stride):
    out_hw = -(-hw // stride)
    per_pixel = {"stem": 9 * cin * cout, "dw": 9 * cin, "pw": cin * cout}[kind]
    return out_hw * out_hw * per_pixel


def time_call(fn, sync, min_calls=20, min_s=1.0):
    for _ in range(3):
        sync(fn())
    times, start = [], time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < min_s:
        t = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def jax_layer_fn(kind, cin, cout, stride, kernels):
    import functools
    from flax import linen as nn
    from mobilenet_jax.models import layers as L

    policy = L.conv_kernels(kernels)
    module = {"stem": policy.stem, "dw": policy.depthwise, "pw": policy.pointwise}[kind]
    if kind == "pw":
        conv = functools.partial(module, cout, (1, 1), use_bias=False)
    else:
        conv = functools.partial(module, cout, (3, 3), strides=stride, padding=((1, 1), (1, 1)),
                                 use_bias=False,
                                 **({"feature_group_count": cin} if kind == "dw" else {}))

    class Layer(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = conv()(x)
            return nn.relu6(policy.norm(use_running_average=False, momentum=0.9,
                                        use_fast_variance=False)(x))

    return Layer()


def run_jax(args):
    from mobilenet_jax import process
    process.exec_with_tcmalloc()  # the CLIs' allocator, where the system has it (ours only)
    process.keep_freed_memory(1 << 40 if args.single_arena else 0)
    import jax
    import jax.numpy as jnp
    import numpy as np
    rows = []
    for name, kind, hw, cin, cout, stride in layers(args.alpha, args.stem_stride):
        model = jax_layer_fn(kind, cin, cout, stride, args.kernels)
        x = jnp.asarray(np.random.default_rng(0).standard_normal((args.batch, hw, hw, cin)),
                        jnp.float32)
        variables = model.init(jax.random.key(0), x)
        params, stats = variables["params"], variables["batch_stats"]

        def fwd_bwd(params, x, cot):
            def f(params, x):
                y, _ = model.apply({"params": params, "batch_stats": stats}, x,
                                   mutable=["batch_stats"])
                return jnp.vdot(y, cot)
            return jax.grad(f, argnums=(0, 1))(params, x)

        out_hw = -(-hw // stride)
        cot = jnp.asarray(np.random.default_rng(1).standard_normal(
            (args.batch, out_hw, out_hw, cout)), jnp.float32)
        step = jax.jit(fwd_bwd)
        t = time_call(lambda: step(params, x, cot), jax.block_until_ready)
        rows.append(record(args, "jax", name, kind, hw, cin, cout, stride, t))
    return rows


def run_torch(args):
    import torch
    import torch.nn as tnn
    torch.manual_seed(0)
    rows = []
    for name, kind, hw, cin, cout, stride in layers(args.alpha, args.stem_stride):
        k = 1 if kind == "pw" else 3
        layer = tnn.Sequential(
            tnn.Conv2d(cin, cout, k, stride, padding=k // 2, groups=cin if kind == "dw" else 1,
                       bias=False),
            tnn.BatchNorm2d(cout), tnn.ReLU6()).to(memory_format=torch.channels_last)
        layer.train()
        x = torch.randn(args.batch, cin, hw, hw).contiguous(memory_format=torch.channels_last)
        x.requires_grad_(True)
        out_hw = -(-hw // stride)
        cot = torch.randn(args.batch, cout, out_hw, out_hw).contiguous(
            memory_format=torch.channels_last)

        def fwd_bwd():
            y = layer(x)
            return torch.autograd.grad(y, (x, layer[0].weight), cot)

        t = time_call(fwd_bwd, lambda g: None)
        rows.append(record(args, "torch", name, kind, hw, cin, cout, stride, t))
    return rows


def record(args, framework, name, kind, hw, cin, cout, stride, seconds):
    flops = 6 * mult_adds(kind, hw, cin, cout, stride) * args.batch
    row = {"framework": framework, "alpha": args.alpha, "stem_stride": args.stem_stride,
           "batch": args.batch, "layer": name, "kind": kind, "in_hw": hw, "in_ch": cin,
           "out_ch": cout, "stride": stride, "ms": 1e3 * seconds, "gflops": flops / seconds / 1e9}
    if framework == "jax":
        row["kernels"] = args.kernels
    print(json.dumps(row), flush=True)
    return row


def table(paths):
    rows = [json.loads(line) for p in paths for line in open(p) if line.strip()]
    by = {}
    for r in rows:
        by.setdefault((r["alpha"], r["stem_stride"], r["batch"], r["layer"]), {})[
            r["framework"] + (":" + r["kernels"] if "kernels" in r else "")] = r
    names = sorted({f for v in by.values() for f in v})
    lines = [f"| α | stem | batch | layer | in | " + " | ".join(f"{n} ms" for n in names)
             + " | " + " | ".join(f"{n} GFLOP/s" for n in names) + " |",
             "|" + "---|" * (5 + 2 * len(names))]
    totals = {}
    for (a, s, b, layer), v in by.items():
        first = next(iter(v.values()))
        for n in names:
            if n in v:
                totals.setdefault((a, s, b, n), 0.0)
                totals[(a, s, b, n)] += v[n]["ms"]
        lines.append(f"| {a} | {s} | {b} | {layer} | {first['in_hw']}² x {first['in_ch']} "
                     f"-> {first['out_ch']} | "
                     + " | ".join(f"{v[n]['ms']:.2f}" if n in v else "–" for n in names) + " | "
                     + " | ".join(f"{v[n]['gflops']:.0f}" if n in v else "–" for n in names)
                     + " |")
    lines.append("")
    for (a, s, b, n), ms in sorted(totals.items()):
        lines.append(f"sum of layers, α {a} stem {s} batch {b}, {n}: {ms:.1f} ms")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--stem-stride", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--kernels", default="cpu")
    ap.add_argument("--single-arena", action="store_true")
    ap.add_argument("--torch", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--table", nargs="+")
    args = ap.parse_args()
    if args.table:
        print(table(args.table))
        return
    rows = run_torch(args) if args.torch else run_jax(args)
    if args.out:
        with open(args.out, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    sys.exit(main())
