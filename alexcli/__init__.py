"""alexcli: Krizhevsky, Sutskever & Hinton (2012), "ImageNet Classification with Deep
Convolutional Neural Networks", as a command-line toolkit.

Importing the package is cheap: torch, h5py and PIL load only when a stage runs.
"""

__version__ = "0.1.0"
