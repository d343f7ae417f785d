"""Images/s of the streaming input path alone (read, decode, random-resized crop, batch), by
worker count, against a bare loop doing the same per image in one thread: the decoder's
practical limit per core."""
import dataclasses
import time

import numpy as np

from mobilenet_jax.data import from_folder
from mobilenet_jax.data.images import random_resized_crop


def bare_images_per_s(split, resolution: int, count: int) -> float:
    """Read, decode and crop `count` images one after the other, in this thread."""
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for record in split.indices[:count]:
        image, _ = split.records[int(record)]
        random_resized_crop(image, resolution, rng)
    return count / (time.perf_counter() - start)


def streamed_images_per_s(split, batch_size: int, count: int) -> dict:
    """Images/s of training batches from the streaming path: over the first `count` images
    with the start (workers, first batch) included, and over their second half alone (by
    then the batches made ahead while the first one was awaited are used up)."""
    start = time.perf_counter()
    arrivals, images = [], 0
    batches = split.train_batches(batch_size, 0, 0, random_crops=True)
    for batch in batches:
        images += len(batch["image"])
        arrivals.append((images, time.perf_counter()))
        if images >= count:
            break
    batches.close()
    half = len(arrivals) // 2
    (first_images, first_time), (last_images, last_time) = arrivals[half], arrivals[-1]
    return {"img_per_s": (last_images - first_images) / (last_time - first_time),
            "img_per_s_with_start": images / (last_time - start)}


def bench_data(folder: str, resolution: int, batch_size: int, workers: list[int],
               count: int) -> list[dict]:
    """One row per worker count (0: threads of this process), each with the bare loop's
    images/s and the share of it each worker reaches."""
    split = from_folder.load(folder, "train", resolution, input="stream")
    count = min(count, len(split) - batch_size)
    bare = bare_images_per_s(split, resolution, min(count, 1000))
    rows = []
    for n in workers:
        streamed = streamed_images_per_s(dataclasses.replace(split, workers=n), batch_size,
                                         count)
        rows.append({"mode": "data", "workers": n, "images": count, "batch": batch_size,
                     "resolution": resolution, **streamed, "bare_img_per_s": bare,
                     "per_worker_of_bare": streamed["img_per_s"] / max(n, 1) / bare})
    return rows


def format_data_table(rows: list[dict]) -> str:
    lines = ["| workers | images/s | with the start | bare loop, one thread | per worker / bare |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['workers'] or '0 (threads)'} | {r['img_per_s']:.0f} | "
                     f"{r['img_per_s_with_start']:.0f} | {r['bare_img_per_s']:.0f} | "
                     f"{r['per_worker_of_bare']:.2f} |")
    return "\n".join(lines)
