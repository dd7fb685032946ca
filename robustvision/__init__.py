"""robustvision: a toolkit for trustworthy vision models.

Benchmark (RobustART), defend (Gated Batch Normalization), attack in the physical world (Dual Attention
Suppression), annotate (EdgeFlow) and adapt (CFContra), on one spine: data -> models -> noises -> runs ->
results -> reports. Importing the package does no I/O, seeds nothing and prints nothing.
"""

__version__ = "0.1.0"
