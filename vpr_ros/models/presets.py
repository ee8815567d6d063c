"""The named presets, in one place (hloc-style)."""

from vpr_ros.models.registry import ModelSpec, register

# Filled in as the model files land; see registry.ModelSpec for the contract.
