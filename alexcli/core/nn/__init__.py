"""The network and what runs it: the two-tower model and its LRN, the optimizer and
schedule, the train and evaluation loops, the trainer, checkpoints, devices and processes,
and the fc7 nearest-neighbour search."""
