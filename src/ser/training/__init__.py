"""Training from the store: the one loop, models by name, data on the device, checkpoints, DDP."""
