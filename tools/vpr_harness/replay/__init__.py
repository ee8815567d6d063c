"""
The replay and measurement harness: bag player, match collector, DDS environment, process helpers.

Shared by the demo, the tests and the benchmarks; not part of the node.
"""
