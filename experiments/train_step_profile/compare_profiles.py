"""Two `profile_train_step.py --per-op` outputs of the same step (e.g. on one core and on two),
their time summed per group of ops, and how the second compares with the first:

    taskset -c 0 python experiments/train_step_profile/profile_train_step.py --alpha 0.25 --stem-stride 1 --batch-size 64 --steps 10 --per-op --top 3000 > one.txt
    taskset -c 0,1 python experiments/train_step_profile/profile_train_step.py ... > two.txt
    python experiments/train_step_profile/compare_profiles.py one.txt two.txt

Groups: the channel sums YNNPACK computes (BatchNorm's statistics and gradients), the dots
(YNNPACK's pointwise convs; `dot`, XLA's own, the kernel gradients), and all other ops by the
size of their output. Times are the ops' own durations in the trace, so ops that ran at once
on different cores both count.
"""
import pathlib
import re
import sys
from collections import defaultdict

LINE = re.compile(r"\s*([\d.]+)\s+\d+\s+(\S+)\s+(\S*)\s*(\(.*\))?$")


def per_op(path):
    """{op name: (ms per step, output shape, ops inside)} from a --per-op profile."""
    ops = {}
    for line in pathlib.Path(path).read_text().splitlines()[2:]:
        m = LINE.match(line)
        if m:
            ops[m.group(2)] = (float(m.group(1)), m.group(3), m.group(4) or "")
    return ops


def elements(shape):
    dims = re.search(r"\[([\d,]*)\]", shape)
    n = 1
    for d in (dims.group(1).split(",") if dims and dims.group(1) else []):
        n *= int(d)
    return n


def group(name, shape, inside):
    if name.startswith("ynn_fusion") and "reduce" in inside:
        return "YNNPACK channel sums"
    if name.startswith("ynn_fusion") and "dot" in inside:
        return "YNNPACK dots (pointwise convs)"
    if re.fullmatch(r"dot(\.\d+)?", name):
        return "XLA dots (kernel gradients)"
    n = elements(shape)
    return ("other ops, output >= 512 Ki elements" if n >= 1 << 19 else
            "other ops, 64-512 Ki elements" if n >= 1 << 16 else
            "other ops, output < 64 Ki elements")


def main(first, second):
    a, b = per_op(first), per_op(second)
    sums = defaultdict(lambda: [0, 0.0, 0.0])
    for name in a.keys() & b.keys():
        g = sums[group(name, *a[name][1:])]
        g[0] += 1
        g[1] += a[name][0]
        g[2] += b[name][0]
    for path in (first, second):
        print(pathlib.Path(path).read_text().splitlines()[0])
    print("\n| ops | how many | first ms | second ms | first / second |")
    print("|---|---|---|---|---|")
    for name, (n, t1, t2) in sorted(sums.items(), key=lambda kv: -kv[1][2]):
        print(f"| {name} | {n} | {t1:.2f} | {t2:.2f} | {t1 / t2:.2f}x |")
    t1, t2 = sum(v[1] for v in sums.values()), sum(v[2] for v in sums.values())
    print(f"| all | {sum(v[0] for v in sums.values())} | {t1:.2f} | {t2:.2f} | {t1 / t2:.2f}x |")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} FIRST_PROFILE SECOND_PROFILE")
    main(*sys.argv[1:])
