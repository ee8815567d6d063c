"""Offline training (`vpr-ros train`): datasets, samplers, losses, one trainer per method and the loop."""
