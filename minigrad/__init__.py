"""minigrad: a small, fast deep-learning engine.

Reverse-mode autograd over float32 NumPy arrays, whose heavy ops run in OpenMP
C kernels, with a Keras-style layer on top.

>>> import minigrad as mg
>>> w = mg.Tensor([[1.0], [2.0]], requires_grad=True)
>>> loss = (mg.Tensor([[3.0, 4.0]]) @ w).sum()
>>> loss.backward()
>>> w.grad.ravel().tolist()
[3.0, 4.0]
"""
from . import kernels
from .function import Function, get_check_finite, is_grad_enabled, no_grad, set_check_finite
from .gradcheck import GradcheckError, gradcheck
from .kernels import (effective_num_threads, get_adaptive_threads, get_num_threads,
                      set_adaptive_threads, set_num_threads)
from .ops import dense, matmul, relu, softmax, softmax_cross_entropy
from .ops import (argmax, argmin, cat, clamp, clip, clone, concatenate, flatten, log_softmax,
                  maximum, minimum, permute, reshape, sigmoid, sqrt, squeeze, stack, tanh,
                  transpose, unsqueeze, view, where)
from .ops import (ceil, chunk, cos, cumsum, expm1, flip, floor, gather, index_select, log1p,
                  logsumexp, masked_fill, norm, prod, reciprocal, rsqrt, sign, sin, split, square,
                  std, var)
from .ops import pow  # noqa: A004  (mg.pow, as torch.pow)
from .ops.elementwise import abs, round  # noqa: A004  (mg.abs, mg.round, mg.max, mg.min as in torch)
from .ops.reduce import max, min  # noqa: A004
from .factories import arange, eye, full, ones, ones_like, rand, randn, tensor, zeros, zeros_like
from .tensor import Tensor, float32, int64
from .tensor import bool_ as bool  # noqa: A004  (mg.bool, as torch.bool)
long = int64
from .jit import jit
from . import (activations, callbacks, datasets, layers, losses, metrics,  # the Keras-style layer
               models, optimizers, utils)
from .models import Sequential

__version__ = "0.1.0"

__all__ = [
    "Tensor", "float32", "int64", "long", "bool", "Function", "jit", "no_grad", "is_grad_enabled", "gradcheck", "GradcheckError",
    "matmul", "relu", "dense", "softmax", "softmax_cross_entropy",
    "abs", "argmax", "argmin", "cat", "clamp", "clip", "clone", "concatenate", "flatten",
    "log_softmax", "max", "maximum", "min", "minimum", "permute", "reshape", "sigmoid", "sqrt",
    "squeeze", "stack", "tanh", "transpose", "unsqueeze", "view", "where",
    "ceil", "chunk", "cos", "cumsum", "expm1", "flip", "floor", "gather", "index_select", "log1p",
    "logsumexp", "masked_fill", "norm", "pow", "prod", "reciprocal", "round", "rsqrt", "sign",
    "sin", "split", "square", "std", "var",
    "arange", "eye", "full", "ones", "ones_like", "rand", "randn", "tensor", "zeros", "zeros_like",
    "set_num_threads", "get_num_threads", "set_adaptive_threads", "get_adaptive_threads",
    "effective_num_threads", "set_check_finite", "get_check_finite",
    "kernels",
    "Sequential", "models", "layers", "activations", "optimizers", "losses", "metrics", "callbacks", "utils",
    "datasets",
]
