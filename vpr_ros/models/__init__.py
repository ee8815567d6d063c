"""Pure torch modules for place recognition descriptors, one file per method with its presets."""
