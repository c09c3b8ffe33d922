"""`alexcli bench`: each stage's throughput measured beside this machine's limit, and the
plain alternatives (decode loop, h5py read, eager PyTorch step) it is compared with."""
