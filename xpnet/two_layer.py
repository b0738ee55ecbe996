"""The book's chapter 4-5 network, ``TwoLayerNet``: :class:`xpnet.MultiLayerNet`
with one hidden layer, the softmax head and no decay, and the book's
constructor. Rules: those of :mod:`xpnet.network`; nothing here but the
constructor, a property and loading.
"""

from __future__ import annotations

from .checks import check_size
from .netfile import read_network_file
from .network import MultiLayerNet

__all__ = ["TwoLayerNet"]


class TwoLayerNet(MultiLayerNet):
    """The book's chapter 4-5 network: affine - activation - affine - softmax.

    ``MultiLayerNet`` with one hidden layer, the softmax head and no decay, with
    the book's constructor.

    Parameters
    ----------
    input_size, hidden_size, output_size : int
        Layer sizes (``D``, ``H``, ``C``), e.g. 784, 50, 10.
    weight_init_std : float
        Standard deviation of the initial weights (biases start at 0).
    activation : {"sigmoid", "relu"}
        Hidden activation (the book's chapter 4 uses sigmoid).
    backend, device, dtype, seed
        As for :class:`MultiLayerNet`.

    Attributes
    ----------
    params : dict
        ``W1 (D, H)``, ``b1 (H,)``, ``W2 (H, C)``, ``b2 (C,)`` backend arrays.
    """

    def __init__(
        self,
        input_size,
        hidden_size,
        output_size,
        weight_init_std=0.01,
        *,
        activation="sigmoid",
        backend="numpy",
        device=None,
        dtype="float64",
        seed=None,
    ):
        super().__init__(
            input_size,
            [check_size("hidden_size", hidden_size)],
            output_size,
            activation,
            weight_init_std,
            backend=backend,
            device=device,
            dtype=dtype,
            seed=seed,
        )

    @property
    def hidden_size(self) -> int:
        return self.sizes[1]

    def __repr__(self) -> str:
        return (
            f"TwoLayerNet(input_size={self.input_size}, hidden_size={self.hidden_size}, "
            f"output_size={self.output_size}, activation={self.activation!r}, "
            f"backend={self.backend.name!r}, device={self.device!r}, "
            f"dtype={self.backend.dtype_name!r})"
        )

    @classmethod
    def load(cls, path, *, backend="numpy", device=None, dtype="float64"):
        """Load a two-layer softmax network written by :meth:`save`."""
        arrays, spec = read_network_file(path)
        if len(spec.sizes) != 3 or spec.output != "softmax" or spec.weight_decay:
            raise ValueError(
                f"{path} holds a network of sizes {spec.sizes} with output {spec.output!r}; "
                "TwoLayerNet needs one hidden layer and softmax: use MultiLayerNet.load"
            )
        net = cls(
            *spec.sizes, activation=spec.activation, backend=backend, device=device, dtype=dtype
        )
        net.weight_init_std = None
        net.set_host_params(arrays)
        return net
