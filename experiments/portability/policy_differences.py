"""How far the network under the `cpu` kernel policy is from the `reference` one, in float32
and in float64: logits and parameter gradients of one train-mode batch of 4 (the comparison
of tests/test_layers.py), as a fraction of each array's largest magnitude; and, for scale,
how far a wrong formulation is (every depthwise kernel transposed, in float64).

    XLA_FLAGS=--xla_cpu_max_isa=AVX2 python experiments/portability/policy_differences.py

(run once per instruction set: the machine's own, AVX2, SSE4_2).
"""
import os

import jax
import jax.numpy as jnp
import numpy as np

from mobilenet_jax.models.mobilenet import MobileNetV1


def logits_and_grads(kernels, dtype, variables, x):
    model = MobileNetV1(num_classes=10, width_multiplier=0.25, kernels=kernels, dtype=dtype)
    labels = jnp.arange(4) % 10

    def loss(params):
        logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                                train=True, mutable=["batch_stats"])
        return jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels]), logits

    with jax.default_matmul_precision("highest"):
        (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
    return [np.asarray(a) for a in [logits, *jax.tree.leaves(grads)]]


def worst(a, b):
    return max(float(np.max(np.abs(u - v)) / np.max(np.abs(v))) for u, v in zip(a, b))


def main():
    x = jax.random.normal(jax.random.key(0), (4, 32, 32, 3))
    variables = jax.jit(MobileNetV1(num_classes=10, width_multiplier=0.25).init)(
        jax.random.key(1), x)
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    cpu, reference = (logits_and_grads(k, jnp.float32, variables, x) for k in ("cpu", "reference"))
    print(f"float32: max |logit difference| {np.max(np.abs(cpu[0] - reference[0])):.3g}; "
          f"largest difference / scale over logits and gradients {worst(cpu, reference):.3g}")
    with jax.enable_x64(True):
        x, variables = jax.tree.map(lambda a: np.asarray(a, np.float64), (x, variables))
        cpu, reference = (logits_and_grads(k, jnp.float64, variables, x)
                          for k in ("cpu", "reference"))
        transposed = jax.tree_util.tree_map_with_path(
            lambda path, a: a.transpose(1, 0, 2, 3) if "depthwise" in str(path) and a.ndim == 4
            else a, variables)
        wrong = logits_and_grads("reference", jnp.float64, transposed, x)
    print(f"float64: largest difference / scale over logits and gradients "
          f"{worst(cpu, reference):.3g}; with the depthwise kernels transposed "
          f"{worst(wrong, reference):.3g}")

if __name__ == "__main__":
    main()
