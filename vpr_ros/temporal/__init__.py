"""Temporal filters over a query sequence: the place HMM (hmm.py) and SeqSLAM (seqslam.py)."""

# The temporal filters the pipeline offers (names shared by the node's parameters and the CLI).
TEMPORAL_FILTERS = ("none", "hmm", "seqslam")  # not "off": YAML reads -p temporal:=off as false
