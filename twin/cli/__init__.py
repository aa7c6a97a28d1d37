"""The `twin` command: the one layer that imports every product, calibration and the report writers."""
