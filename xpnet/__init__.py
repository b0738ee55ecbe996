"""xpnet: the two-layer network of *Deep Learning from Scratch* with a fast
numerical gradient, written once against the Python Array API (NumPy, CuPy,
PyTorch, array-api-strict, JAX)."""

from .backend import Backend, resolve_backend, to_numpy
from .gradcheck import GradientCheck, gradient_check
from .gradient import default_step, numerical_gradient, numerical_gradient_batched
from .network import METHODS, TwoLayerNet

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "GradientCheck",
    "METHODS",
    "TwoLayerNet",
    "default_step",
    "gradient_check",
    "numerical_gradient",
    "numerical_gradient_batched",
    "resolve_backend",
    "to_numpy",
    "__version__",
]
