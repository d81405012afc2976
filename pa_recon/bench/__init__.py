"""Flow benchmarks (MNIST/CIFAR bits per dim, super-resolution): models, training runs and evaluation.

Sits on top of the layers like the CLI: it uses flows, train, data, metrics and the SR protocol.
"""
