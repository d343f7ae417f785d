"""A run's metrics as `metrics.jsonl` and TensorBoard events in its workdir."""
import json
import pathlib


class MetricsLog:
    """metrics.jsonl and TensorBoard events in the workdir (process 0 only)."""

    def __init__(self, workdir: pathlib.Path, enabled: bool):
        self.enabled = enabled
        if enabled:
            from tensorboardX import SummaryWriter  # only the process that writes needs it
            self.jsonl = open(workdir / "metrics.jsonl", "a")
            self.tb = SummaryWriter(str(workdir / "tensorboard"))

    def write(self, step: int, metrics: dict):
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self.jsonl.flush()
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and k != "epoch":
                self.tb.add_scalar(k, v, step)
        self.tb.flush()

    def close(self):
        if self.enabled:
            self.jsonl.close()
            self.tb.close()
