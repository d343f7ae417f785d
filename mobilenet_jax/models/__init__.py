"""The network: `spec` (Table 1, no Flax), `layers` (conv formulations), `mobilenet` (modules),
`functional` (pure init/apply), `summary` (per-layer table), `memory` (a step's buffer)."""
