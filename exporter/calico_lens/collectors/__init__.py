"""Node collectors: kernel counters read in rounds (per-pod procfs and sock_diag, conntrack), not sources."""
