"""Pure torch modules for place recognition descriptors, one file per method, each with its presets."""
