"""The book's chapter 6 optimizers, written against the Array API.

Rules of this module:

* ``update(params, grads)`` replaces ``params[key]`` by a new array (it never
  writes in place), so it works on immutable backends and honours the book's
  "update the params dict" contract.
* State (velocities, accumulators) lives on the parameters' device, created on
  the first update. ``state_dict()``/``load_state_dict()`` move it to and from
  host arrays for checkpoints.
* Defaults are the book's (``common/optimizer.py``).
"""

from __future__ import annotations

from array_api_compat import array_namespace

from .backend import to_numpy

__all__ = [
    "SGD",
    "Momentum",
    "Nesterov",
    "AdaGrad",
    "RMSprop",
    "Adam",
    "OPTIMIZERS",
    "make_optimizer",
]

_EPS = 1e-7


class Optimizer:
    """Base class: hyper-parameters as attributes, state as dicts of arrays."""

    #: names of the per-parameter state dicts
    slots: tuple[str, ...] = ()

    def __init__(self, lr):
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr!r}")
        self.lr = float(lr)
        self.iter = 0
        for slot in self.slots:
            setattr(self, slot, None)

    def _zeros(self, params):
        return {k: array_namespace(v).zeros_like(v) for k, v in params.items()}

    def update(self, params: dict, grads: dict) -> None:
        """Replace every ``params[key]`` by its updated value."""
        for slot in self.slots:
            if getattr(self, slot) is None:
                setattr(self, slot, self._zeros(params))
        self.iter += 1
        for key in params:
            params[key] = self._step(key, params[key], grads[key])

    def _step(self, key, param, grad):
        raise NotImplementedError

    def hyperparameters(self) -> dict:
        return {k: v for k, v in vars(self).items() if isinstance(v, float)}

    def state_dict(self) -> dict:
        """Host copy of the state: ``{"iter": int, "slot/key": ndarray, ...}``."""
        state = {"iter": self.iter}
        for slot in self.slots:
            for key, value in (getattr(self, slot) or {}).items():
                state[f"{slot}/{key}"] = to_numpy(value)
        return state

    def load_state_dict(self, state: dict, backend) -> None:
        """Restore :meth:`state_dict` output onto ``backend`` (a :class:`Backend`)."""
        self.iter = int(state["iter"])
        for slot in self.slots:
            values = {k.split("/", 1)[1]: v for k, v in state.items() if k.startswith(slot + "/")}
            setattr(
                self,
                slot,
                {k: backend.from_host(v, dtype=backend.dtype) for k, v in values.items()} or None,
            )

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """``W <- W - lr * dW``."""

    def __init__(self, lr=0.01):
        super().__init__(lr)

    def _step(self, key, param, grad):
        return param - self.lr * grad


class Momentum(Optimizer):
    """``v <- momentum * v - lr * dW``; ``W <- W + v``."""

    slots = ("v",)

    def __init__(self, lr=0.01, momentum=0.9):
        super().__init__(lr)
        self.momentum = float(momentum)

    def _step(self, key, param, grad):
        self.v[key] = self.momentum * self.v[key] - self.lr * grad
        return param + self.v[key]


class Nesterov(Optimizer):
    """Nesterov's accelerated gradient, in the book's form."""

    slots = ("v",)

    def __init__(self, lr=0.01, momentum=0.9):
        super().__init__(lr)
        self.momentum = float(momentum)

    def _step(self, key, param, grad):
        m = self.momentum
        self.v[key] = m * self.v[key] - self.lr * grad
        return param + m * m * self.v[key] - (1 + m) * self.lr * grad


class AdaGrad(Optimizer):
    """``h <- h + dW^2``; ``W <- W - lr * dW / (sqrt(h) + 1e-7)``."""

    slots = ("h",)

    def __init__(self, lr=0.01):
        super().__init__(lr)

    def _step(self, key, param, grad):
        xp = array_namespace(param)
        self.h[key] = self.h[key] + grad * grad
        return param - self.lr * grad / (xp.sqrt(self.h[key]) + _EPS)


class RMSprop(Optimizer):
    """``h <- decay * h + (1 - decay) * dW^2``; ``W <- W - lr * dW / (sqrt(h) + 1e-7)``."""

    slots = ("h",)

    def __init__(self, lr=0.01, decay_rate=0.99):
        super().__init__(lr)
        self.decay_rate = float(decay_rate)

    def _step(self, key, param, grad):
        xp = array_namespace(param)
        self.h[key] = self.decay_rate * self.h[key] + (1 - self.decay_rate) * grad * grad
        return param - self.lr * grad / (xp.sqrt(self.h[key]) + _EPS)


class Adam(Optimizer):
    """Adam (Kingma & Ba), with the book's bias-corrected step size."""

    slots = ("m", "v")

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        super().__init__(lr)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)

    def _step(self, key, param, grad):
        xp = array_namespace(param)
        lr_t = self.lr * (1.0 - self.beta2**self.iter) ** 0.5 / (1.0 - self.beta1**self.iter)
        self.m[key] = self.m[key] + (1 - self.beta1) * (grad - self.m[key])
        self.v[key] = self.v[key] + (1 - self.beta2) * (grad * grad - self.v[key])
        return param - lr_t * self.m[key] / (xp.sqrt(self.v[key]) + _EPS)


OPTIMIZERS = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSprop,
    "adam": Adam,
}


def make_optimizer(name: str, lr=None) -> Optimizer:
    """An optimizer by name (``sgd momentum nesterov adagrad rmsprop adam``);
    ``lr=None`` keeps the book's default for it."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer={name!r} is not known; expected one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name]() if lr is None else OPTIMIZERS[name](lr=lr)
