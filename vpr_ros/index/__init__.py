"""Place search (faiss), re-rankers and temporal filters over a map's places."""

# The temporal filters the pipeline offers (names shared by the node's parameters and the CLI).
TEMPORAL_FILTERS = ("none", "hmm", "seqslam")  # not "off": YAML reads -p temporal:=off as false
