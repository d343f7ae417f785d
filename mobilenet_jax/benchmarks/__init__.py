"""Timing the steps: the procedure and machine facts, and the throughput of train and infer."""
