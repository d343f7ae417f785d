"""Input: datasets as in-memory uint8 splits, their batches, and on-device augmentation."""
