"""What a MobileNet v1 is, without building one: the paper's Table 1 widths and strides, the
width rule, argument checks and the kernel-policy names. No Flax here, so the run Config can
use it without pulling in the network."""
import math
from typing import Optional, Tuple

import jax

# (output channels, stride) of the 13 depthwise-separable blocks at width multiplier 1 (Table 1).
PAPER_BLOCKS: Tuple[Tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
STEM_CHANNELS = 32
HEAD = "classifier"  # the one layer after the pooled features; the rest is the backbone
BLOCK_TYPES = ("paper", "seed")
# The Julia seed project's hidden pointwise width: round(in * 0.9997).
SEED_HIDDEN_RATIO = 0.9997
# Symmetric padding of 1 for every 3x3 conv, as the reference and PyTorch do. 'SAME' would pad
# stride-2 convs asymmetrically (0 before, 1 after) and change which pixels each output sees.
PAD1 = ((1, 1), (1, 1))


def scaled_channels(channels: int, width_multiplier: float) -> int:
    """The reference's width rule: max(1, round(alpha * c)), round half to even."""
    return max(1, round(width_multiplier * channels))


def check_model_args(width_multiplier, num_classes, block, stem_stride=2) -> None:
    """Raise ValueError naming the bad value; shared by the module and the run config."""
    if (isinstance(width_multiplier, bool) or not isinstance(width_multiplier, (int, float))
            or not math.isfinite(width_multiplier) or width_multiplier <= 0):
        raise ValueError(f"width_multiplier (alpha) must be a finite number > 0, got {width_multiplier!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if block not in BLOCK_TYPES:
        raise ValueError(f"block must be one of {BLOCK_TYPES}, got {block!r}")
    if stem_stride not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride!r}")


# The conv formulations of models/layers.py: 'reference' (nn.Conv everywhere) and 'cpu'.
KERNEL_POLICIES = ("reference", "cpu")
KERNEL_CHOICES = ("auto", *KERNEL_POLICIES)


def resolve_kernels(kernels: str, backend: Optional[str] = None) -> str:
    """'auto' -> the policy measured fastest on the backend; other names unchanged."""
    if kernels != "auto":
        return kernels
    if backend is None:
        backend = jax.default_backend()
    # cpu: several times the reference's training images/s on CPUs (experiments/cpu_throughput);
    # elsewhere the reference, until measured (experiments/gpu).
    return "cpu" if backend == "cpu" else "reference"
