"""What every command shares: the TrainState and its pure steps, devices, checkpoints."""
