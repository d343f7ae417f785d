"""The network: `spec` (Table 1, no Flax), `layers` (conv formulations), `mobilenet` (modules)."""
