"""Is the compiled step of two versions of the code the same program? Compares XLA's
optimised HLO of the train and eval steps from two dump directories, instruction by
instruction, after dropping source metadata and numbering every name by first appearance.

    XLA_FLAGS="--xla_dump_to=/tmp/hlo_a --xla_dump_hlo_as_text" python -m mobilenet_jax.benchmark \\
        --alphas 0.1 --mode both --steps 1 --no-pipeline       # in each checkout
    python experiments/cpu_throughput/compare_hlo.py /tmp/hlo_a /tmp/hlo_b
"""
import difflib
import pathlib
import re
import sys


def instructions(path) -> list:
    lines, body = [], False
    for line in open(path):
        body = body or line.startswith(("%", "ENTRY"))
        if body:  # past the module header and the tables of source files and stack frames
            line = re.sub(r", metadata=\{[^}]*\}", "", line)
            lines.append(re.sub(r", stack_frame_id=\d+", "", line).rstrip())
    names = {}

    def rename(m):
        return names.setdefault(m.group(0), f"%v{len(names)}")
    return [re.sub(r"%[\w.\-]+", rename, line) for line in lines]


def main(before, after):
    for step in ("jit_train_step", "jit_eval_step"):
        pattern = f"*{step}*after_optimizations.txt"
        a = sorted(pathlib.Path(before).glob(pattern))
        b = sorted(pathlib.Path(after).glob(pattern))
        if not (a and b):
            print(f"{step}: not in both dumps")
            continue
        x, y = instructions(a[0]), instructions(b[0])
        diff = [line for line in difflib.unified_diff(x, y, lineterm="", n=0)
                if line[:1] in "+-" and line[:3] not in ("+++", "---")]
        print(f"{step}: {len(x)} vs {len(y)} lines, {len(diff)} differ")
        for line in diff[:6]:
            print("   ", line[:200])


if __name__ == "__main__":
    main(*sys.argv[1:3])
