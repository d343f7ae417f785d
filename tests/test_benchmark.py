"""The benchmark CLI runs end to end in smoke mode and writes the expected JSON (no speed checks)."""
import json
import mmap
import time

import jax
import jax._src.monitoring

from mobilenet_jax.benchmarks.timing import counting_cache_hits, time_steps
from helpers import REPO, run


def test_benchmark_smoke_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = run(["mobilenet_jax.benchmark", "--smoke", "--kernels", "auto", "--json", str(out)],
               REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "img/s" in proc.stdout
    result = json.loads(out.read_text())
    assert {"machine", "matmul_peak", "settings", "results"} <= set(result)
    assert result["settings"]["command"] == \
        f"python -m mobilenet_jax.benchmark --smoke --kernels auto --json {out}"
    machine = result["machine"]
    assert {"cpu", "cpu_count", "backend", "device_kind", "versions"} <= set(machine)
    assert {"jax", "jaxlib", "flax", "optax", "python"} <= set(machine["versions"])
    assert result["matmul_peak"]["gflops_median"] > 0
    modes = sorted(r["mode"] for r in result["results"])
    assert modes == ["infer", "train"]
    for r in result["results"]:
        assert "error" not in r, r
        for key in ("alpha", "kernels", "resolved", "batch", "img_per_s", "median_step_s",
                    "compile_s", "steps", "gflops", "pct_of_peak", "memory",
                    "forward_mult_adds_per_image", "flops_per_image", "cores_busy",
                    "page_faults_per_step", "waits_per_step", "preemptions_per_step"):
            assert key in r, key
        assert r["img_per_s"] > 0 and r["memory"]["max_rss_mb"] > 0
        assert r["kernels"] == "auto" and r["resolved"] != "auto"
    train = next(r for r in result["results"] if r["mode"] == "train")
    assert train["flops_per_image"] == 6 * train["forward_mult_adds_per_image"]
    infer = next(r for r in result["results"] if r["mode"] == "infer")
    assert infer["eval_step"]["img_per_s"] > 0  # the forward alone, and the whole eval step
    assert "eval step" in proc.stdout
    assert isinstance(machine["single_arena"], bool)
    pipe = train["pipeline"]
    for key in ("device_input_s", "device_input_pct_of_step", "host_batch_s",
                "host_batch_pct_of_step", "input_pct_of_step"):
        assert key in pipe, key


def test_benchmark_rejects_unknown_implementation():
    proc = run(["mobilenet_jax.benchmark", "--smoke", "--kernels", "nope"], REPO)
    assert proc.returncode == 2 and "nope" in proc.stderr


def test_time_steps_counts_what_the_process_did_per_step():
    """A step that sleeps waits once and keeps no core busy; one that writes a fresh 16 MiB
    anonymous mapping page-faults every 4 KiB page of it in."""
    timing = dict(warmup=1, min_steps=5, min_time_s=0.0, max_time_s=5.0)
    sleeping = time_steps(lambda: time.sleep(0.02), lambda x: x, **timing)
    assert sleeping["waits_per_step"] >= 1
    assert sleeping["cores_busy"] < 0.5
    assert 0.015 < sleeping["median_step_s"] < 0.5

    def touch():
        with mmap.mmap(-1, 16 << 20) as buf:
            for offset in range(0, len(buf), 4096):
                buf[offset] = 1
    touching = time_steps(touch, lambda x: x, **timing)
    assert touching["page_faults_per_step"] >= (16 << 20) // 4096
    assert sleeping["page_faults_per_step"] < 100


def test_the_cache_hit_counter_counts_while_open_and_leaves_no_listener():
    before = list(jax._src.monitoring._event_listeners)
    with counting_cache_hits() as hits:
        jax.monitoring.record_event("/jax/compilation_cache/cache_hits")
        jax.monitoring.record_event("/jax/another_event")
        assert hits() == 1
    assert jax._src.monitoring._event_listeners == before


def test_data_mode_times_the_streaming_path_by_worker_count(folder, tmp_path):
    out = tmp_path / "data.json"
    proc = run(["mobilenet_jax.benchmark", "--mode", "data", "--image-folder", str(folder),
                "--resolution", "16", "--batch-size", "8", "--data-workers", "0,1",
                "--images", "48", "--json", str(out)], REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["results"]
    assert [r["workers"] for r in rows] == [0, 1]
    for r in rows:
        assert r["img_per_s"] > 0 and r["bare_img_per_s"] > 0 and r["images"] == 48
        per_worker = r["img_per_s"] / max(r["workers"], 1)
        assert r["per_worker_of_bare"] == per_worker / r["bare_img_per_s"]
    assert "per worker / bare" in proc.stdout
    proc = run(["mobilenet_jax.benchmark", "--mode", "data"], REPO)
    assert proc.returncode == 2 and "--image-folder" in proc.stderr
