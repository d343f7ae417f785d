"""Summed metrics of a loop over batches, and their means."""
from typing import Optional


def add_sums(total: Optional[dict], new: dict) -> dict:
    new = {k: float(v) for k, v in new.items()}
    return new if total is None else {k: total[k] + new[k] for k in total}


def summarize_metrics(sums: dict, prefix: str) -> dict:
    n = max(float(sums["count"]), 1.0)
    return {f"{prefix}_{k}": float(sums[k]) / n for k in ("loss", "top1", "top5")}
