"""Input: TFDS datasets and image folders (`sources` picks), held in memory as uint8 splits
(`arrays`) or streamed with grain (`streaming`), their batches and prefetching, and
augmentation (`augment`, `mixing`)."""
