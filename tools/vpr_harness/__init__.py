"""
The harness of vpr_ros's tests, demo and benchmarks; not part of the installed package.

``replay``: bag player, match collector, loopback DDS environment, node processes, fault and fuzz
campaigns. ``demo``: the synthetic city, its two drives and ``make demo``.
"""
