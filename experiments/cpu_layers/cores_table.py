"""The tables of a `cores.sh` output folder: the train step on one core and on two (img/s per
round, ours against the best PyTorch variant), and each layer's time on one and two cores.

    python experiments/cpu_layers/cores_table.py OUT
"""
import collections
import json
import pathlib
import sys


def main(out):
    out = pathlib.Path(out)
    print("| cores | ours img/s | best PyTorch img/s (variant) | ours / best |")
    print("|---|---|---|---|")
    for cores in (1, 2):
        ours = {int(p.stem.split("_r")[1]): json.loads(p.read_text())["results"][0]["img_per_s"]
                for p in sorted(out.glob(f"ours_{cores}_r*.json"))}
        peers = collections.defaultdict(dict)  # round -> {variant: img/s}
        for line in (out / f"steps_{cores}.jsonl").read_text().splitlines():
            row = json.loads(line)
            if "error" not in row:
                peers[int(row["rep"])][row["variant"]] = row["img_per_s_median"]
        best = {r: max(v.items(), key=lambda kv: kv[1]) for r, v in peers.items()}
        rounds = sorted(ours)
        print(f"| {cores} | " + " / ".join(f"{ours[r]:,.0f}" for r in rounds) + " | "
              + " / ".join(f"{best[r][1]:,.0f} ({best[r][0]})" for r in rounds) + " | "
              + " / ".join(f"{ours[r] / best[r][1]:.2f}" for r in rounds) + " |")
    layers = {}
    for framework in ("jax", "torch"):
        for cores in (1, 2):
            for line in (out / f"layers_{framework}_{cores}.jsonl").read_text().splitlines():
                row = json.loads(line)
                layers.setdefault(row["layer"], {})[framework, cores] = row["ms"]
    print()
    print("| layer | ours 1 core ms | ours 2 cores ms | ours speed-up | PyTorch 1 core ms "
          "| PyTorch 2 cores ms | PyTorch speed-up |")
    print("|---|---|---|---|---|---|---|")
    sums = collections.Counter()
    for layer, ms in layers.items():
        sums.update(ms)
        print(f"| {layer} | {ms['jax', 1]:.2f} | {ms['jax', 2]:.2f} | "
              f"{ms['jax', 1] / ms['jax', 2]:.2f}x | {ms['torch', 1]:.2f} | {ms['torch', 2]:.2f} | "
              f"{ms['torch', 1] / ms['torch', 2]:.2f}x |")
    print(f"| all layers | {sums['jax', 1]:.1f} | {sums['jax', 2]:.1f} | "
          f"{sums['jax', 1] / sums['jax', 2]:.2f}x | {sums['torch', 1]:.1f} | "
          f"{sums['torch', 2]:.1f} | {sums['torch', 1] / sums['torch', 2]:.2f}x |")


if __name__ == "__main__":
    main(sys.argv[1])
