"""Markdown tables from one sitting's results (experiments/run_cpu_sitting.sh).

    .venv/bin/python experiments/make_tables.py experiments/results
"""
import json
import pathlib
import sys


def main(folder):
    folder = pathlib.Path(folder)
    peers = [json.loads(line) for line in (folder / "peers.jsonl").read_text().splitlines()
             if line.strip()]
    ours = []
    for name in ("ours_train.json", "ours_infer.json"):
        p = folder / name
        if p.exists():
            ours += json.loads(p.read_text())["results"]
    out = []
    peak = [p for p in peers if p.get("mode") == "gemm_peak"]
    out.append("### Ours vs best peer (images/s, median step)\n")
    out.append("| mode | batch | α | PyTorch eager+cl | PyTorch compile+cl | TF tffn | TF tob | "
               "best peer | ours (auto) | ours/best |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for mode, alphas in (("train", (0.1, 0.25, 1.0)), ("infer", (0.1, 1.0))):
        for a in alphas:
            cells = []
            best = 0.0
            for fw, v in (("torch", "eager+cl"), ("torch", "compile+cl"), ("tf", "tffn"),
                          ("tf", "tob")):
                r = [p for p in peers if p.get("framework") == fw and p.get("variant") == v
                     and p.get("mode") == mode and p.get("alpha") == a and "error" not in p]
                if r:
                    x = r[-1]["img_per_s_median"]
                    best = max(best, x)
                    cells.append(f"{x:,.0f}")
                else:
                    cells.append("–")
            o = [r for r in ours if r["mode"] == mode and r["alpha"] == a
                 and r["depthwise"] == "auto" and "error" not in r]
            mine = o[-1]["img_per_s"] if o else float("nan")
            batch = o[-1]["batch"] if o else ""
            out.append(f"| {mode} | {batch} | {a} | " + " | ".join(cells) +
                       f" | {best:,.0f} | {mine:,.0f} | {mine / best:.2f} |")
    if peak:
        out.append(f"\nPyTorch 2048³ float32 matmul in the same sitting: "
                   f"{peak[-1]['gflops_median']:.0f} GFLOP/s (median).")
    out.append("\n### Depthwise implementations (ours, images/s; ratio vs 'xla')\n")
    impls = sorted({r["depthwise"] for r in ours if r["depthwise"] != "auto"},
                   key=lambda s: (s != "xla", s))
    out.append("| mode | α | " + " | ".join(impls) + " | best/xla |")
    out.append("|---|---|" + "---|" * (len(impls) + 1))
    for mode in ("train", "infer"):
        for a in sorted({r["alpha"] for r in ours if r["mode"] == mode}):
            vals = {}
            for impl in impls:
                r = [x for x in ours if x["mode"] == mode and x["alpha"] == a
                     and x["depthwise"] == impl and "error" not in x]
                vals[impl] = r[-1]["img_per_s"] if r else float("nan")
            best = max(v for v in vals.values())
            out.append(f"| {mode} | {a} | " + " | ".join(f"{vals[i]:,.0f}" for i in impls) +
                       f" | {best / vals.get('xla', float('nan')):.1f}x |")
    out.append("\n### Ours in detail (auto)\n")
    out.append("| mode | α | img/s | step ms | GFLOP/s | % of jnp matmul peak | compile s | "
               "input pipeline % of step (device + host) |")
    out.append("|---|---|---|---|---|---|---|---|")
    for r in ours:
        if r["depthwise"] != "auto" or "error" in r:
            continue
        p = r.get("pipeline") or {}
        pipe = (f"{p['input_pct_of_step']:.1f} ({p['device_input_pct_of_step']:.1f} + "
                f"{p['host_batch_pct_of_step']:.1f})" if "input_pct_of_step" in p else "–")
        out.append(f"| {r['mode']} | {r['alpha']} | {r['img_per_s']:,.0f} | "
                   f"{1000 * r['median_step_s']:.1f} | {r['gflops']:.1f} | "
                   f"{r['pct_of_peak']:.1f} | {r['compile_s']:.1f} | {pipe} |")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "experiments/results")
