"""xpnet: the networks of *Deep Learning from Scratch* with a fast numerical
gradient, written once against the Python Array API (NumPy, CuPy, PyTorch,
array-api-strict, JAX), on one device or sharded over a Dask cluster."""

from . import datasets, optimizers
from .backend import Backend, resolve_backend, to_numpy
from .cluster import ClusterError
from .datasets import load_digits, load_fashion_mnist, load_mnist
from .gradcheck import GradientCheck, gradient_check
from .gradient import default_step, numerical_gradient, numerical_gradient_batched
from .history import History
from .network import METHODS, MultiLayerNet
from .plots import plot_history
from .sweep import SweepConfig, sweep
from .train import TrainConfig, Trained, TrainingDiverged, train
from .two_layer import TwoLayerNet

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "ClusterError",
    "GradientCheck",
    "History",
    "METHODS",
    "MultiLayerNet",
    "SweepConfig",
    "TrainConfig",
    "Trained",
    "TrainingDiverged",
    "TwoLayerNet",
    "datasets",
    "default_step",
    "gradient_check",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "numerical_gradient",
    "numerical_gradient_batched",
    "optimizers",
    "plot_history",
    "resolve_backend",
    "sweep",
    "to_numpy",
    "train",
    "__version__",
]
