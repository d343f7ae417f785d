"""Markdown tables from one sitting's results (run_sitting.sh in this folder).

    python experiments/cpu_throughput/make_tables.py experiments/cpu_throughput/sittings/<sitting>
"""
import collections
import json
import pathlib
import re
import statistics
import sys


def rounds_of(folder, prefix="ours", peers_file="peers.jsonl"):
    """All peer records, and {round: (peer records, our records)} of a sitting, from
    `peers_file` (BENCH_REP) and <prefix>_<mode>_r<round>_a<alpha>.json."""
    path = folder / peers_file
    peers = [json.loads(line) for line in (path.read_text().splitlines() if path.exists() else [])
             if line.strip()]
    rounds = collections.defaultdict(lambda: ([], []))
    for p in peers:
        rounds[str(p.get("rep", ""))][0].append(p)
    for path in sorted(folder.glob(f"{prefix}_*.json")):  # ours_train.json: one round
        rep = re.search(r"_r(\d+)_a", path.name)
        rounds[rep.group(1) if rep else ""][1].extend(json.loads(path.read_text())["results"])
    return peers, dict(rounds)


def case(record):
    """(mode, alpha, stem stride, batch) of a peer's or our record (stride 2 in records
    written before the stem stride was recorded)."""
    return (record.get("mode"), record.get("alpha"), record.get("stem_stride", 2),
            record.get("batch"))


def head(at) -> str:
    """A `case` as the first cells of a table row."""
    return " | ".join(str(x) for x in at)


def best_peer(peers, at, key="img_per_s_median"):
    """{variant label: the record's `key`} of the peers at `at` (a `case`)."""
    found = {}
    for fw, v in PEERS:
        r = [p for p in peers if p.get("framework") == fw and p.get("variant") == v
             and case(p) == at and "error" not in p]
        if r:
            found[(fw, v)] = r[-1][key]
    return found


def policy(record):
    """The kernel policy of a record (`depthwise` in records written before `kernels`)."""
    return record.get("kernels", record.get("depthwise"))


def ours_at(ours, at, kernels="auto"):
    r = [x for x in ours if case(x) == at and policy(x) == kernels and "error" not in x]
    return r[-1] if r else None


def before_after(folder, reps, rounds):
    """Rows comparing the code in BEFORE (before_*.json) with ours, per round."""
    _, before = rounds_of(folder, "before")
    rows = []
    for at in sorted({case(r) for rep in reps for r in before.get(rep, ([], []))[1]},
                    key=str):
        pairs = [(ours_at(before[rep][1], at), ours_at(rounds[rep][1], at))
                 for rep in reps if rep in before]
        pairs = [(b, o) for b, o in pairs if b and o]
        if not pairs:
            continue
        rows.append(f"| {head(at)} | "
                    + " / ".join(f"{b['img_per_s']:,.0f}" for b, _ in pairs) + " | "
                    + " / ".join(f"{o['img_per_s']:,.0f}" for _, o in pairs) + " | "
                    + " / ".join(f"{o['img_per_s'] / b['img_per_s']:.2f}" for b, o in pairs)
                    + " | " + " / ".join(f"{b['min_step_s'] / o['min_step_s']:.2f}"
                                         for b, o in pairs) + " |")
    if not rows:
        return []
    return ["\n### Before / after (images/s per round, ours / before)\n",
            "| mode | α | stem | batch | before | after | after/before | "
            "fastest step: after/before |", "|---|---|---|---|---|---|---|---|", *rows]


PEERS = (("torch", "eager+cl"), ("torch", "compile+cl"), ("tf", "tffn"), ("tf", "tob"))


def versus_peers(all_peers, rounds, reps, ours, how):
    """The table of ours against each peer and the best, per round and over rounds."""
    out = []
    peak = [p for p in all_peers if p.get("mode") == "gemm_peak"]
    out.append(f"### Ours vs best peer, the peers {how} (images/s, median step; "
                "median over rounds)\n")
    out.append("| mode | α | stem | batch | PyTorch eager+cl | PyTorch compile+cl | TF tffn | "
               "TF tob | best peer | ours (auto) | ours/best | ours/best per round | "
               "fastest step: ours/best per round |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for at in sorted({case(r) for rep in reps for r in rounds[rep][1]}, key=str):
        per_variant = collections.defaultdict(list)
        mine, per_round, fastest = [], [], []
        for rep in reps:
            peers = best_peer(rounds[rep][0], at)
            for k, v in peers.items():
                per_variant[k].append(v)
            o = ours_at(rounds[rep][1], at)
            if o and peers:
                mine.append(o["img_per_s"])
                per_round.append(o["img_per_s"] / max(peers.values()))
                # The fastest step of each side: far steadier on this VM than the median.
                mins = best_peer(rounds[rep][0], at, "min_step_s")
                fastest.append(min(mins.values()) / o["min_step_s"])
        if not per_variant and not mine:
            continue  # a sitting of the other mode only
        cells = [f"{statistics.median(per_variant[k]):,.0f}" if k in per_variant else "–"
                 for k in PEERS]
        best = max((statistics.median(v) for v in per_variant.values()), default=float("nan"))
        me = statistics.median(mine) if mine else float("nan")
        out.append(f"| {head(at)} | " + " | ".join(cells) +
                   f" | {best:,.0f} | {me:,.0f} | {me / best:.2f} | "
                   + " / ".join(f"{x:.2f}" for x in per_round) + " | "
                   + " / ".join(f"{x:.2f}" for x in fastest) + " |")
    if peak:
        out.append(f"\nPyTorch 2048³ float32 matmul in the same sitting: "
                   f"{peak[-1]['gflops_median']:.0f} GFLOP/s (median).")
    return out


def main(folder):
    folder = pathlib.Path(folder)
    all_peers, rounds = rounds_of(folder)
    reps = sorted(r for r in rounds if rounds[r][1])
    ours = rounds[reps[0]][1]  # the round with every kernel policy
    out = versus_peers(all_peers, rounds, reps, ours, "as their users run them")
    alloc_peers, alloc_rounds = rounds_of(folder, peers_file="peers_alloc.jsonl")
    if alloc_peers:  # the peers again, with the allocator settings ours uses
        out += ["", *versus_peers(alloc_peers, {rep: (alloc_rounds.get(rep, ([], []))[0],
                                                      rounds[rep][1]) for rep in reps},
                                  reps, ours, "with ours' allocator settings (run_sitting.sh's ALLOC)")]
    # The reference formulation: 'xla' in records written before the kernel policies.
    impls = sorted({policy(r) for r in ours if policy(r) != "auto"},
                   key=lambda s: (s not in ("xla", "reference"), s))
    reference = impls[0] if impls else "reference"
    if impls:  # round 1 timed more policies than auto
        out.append(f"\n### Kernel policies (ours, round {reps[0]}, images/s; ratio vs "
                   f"'{reference}')\n")
        out.append("| mode | α | stem | batch | " + " | ".join(impls) + f" | best/{reference} |")
        out.append("|---|---|---|---|" + "---|" * (len(impls) + 1))
        for at in sorted({case(r) for r in ours}, key=str):
            vals = {impl: (ours_at(ours, at, impl) or {}).get("img_per_s", float("nan"))
                    for impl in impls}
            best = max(v for v in vals.values())
            out.append(f"| {head(at)} | "
                       + " | ".join(f"{vals[i]:,.0f}" for i in impls) +
                       f" | {best / vals.get(reference, float('nan')):.1f}x |")
    out.append(f"\n### Ours in detail (auto, round {reps[0]})\n")
    out.append("| mode | α | stem | batch | img/s | step ms | GFLOP/s | % of jnp matmul peak | "
               "compile s | input pipeline % of step (device + host) |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in ours:
        if policy(r) != "auto" or "error" in r:
            continue
        p = r.get("pipeline") or {}
        pipe = (f"{p['input_pct_of_step']:.1f} ({p['device_input_pct_of_step']:.1f} + "
                f"{p['host_batch_pct_of_step']:.1f})" if "input_pct_of_step" in p else "–")
        out.append(f"| {head(case(r))} | {r['img_per_s']:,.0f} | "
                   f"{1000 * r['median_step_s']:.1f} | {r['gflops']:.1f} | "
                   f"{r['pct_of_peak']:.1f} | {r['compile_s']:.1f} | {pipe} |")
    out.extend(before_after(folder, reps, rounds))
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
