"""robustvision: a toolkit for trustworthy vision models.

Benchmark (RobustART), defend (Gated Batch Normalization), attack in the physical world (Dual Attention
Suppression), annotate (EdgeFlow) and adapt (CFContra), on one spine: data -> models -> noises -> runs ->
results -> reports. Importing the package does no I/O, seeds nothing and prints nothing.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "evaluate"]


def __getattr__(name: str):
    # ``robustvision.evaluate`` is imported on first use, so ``import robustvision`` stays light.
    if name == "evaluate":
        from robustvision.bench.api import evaluate

        return evaluate
    raise AttributeError(f"module 'robustvision' has no attribute {name!r}")
