"""Expert load balance: load models (load), placement and per-rank traffic (placement), the EPLB
replication algorithm (eplb), what balancing buys over a run (balance), and the MoE-layer
validation against real/ measurements (validate)."""
