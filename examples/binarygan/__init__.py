"""BinaryGAN (Dong & Yang, arXiv:1810.04714): a GAN whose generator ends in binary neurons.

The reference example of ``binary_neurons``; run ``python -m examples.binarygan --help``.
"""
