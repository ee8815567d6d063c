"""
Offline training (`vpr-ros train`).

Datasets, samplers, losses, one trainer per method and the loop.
"""
