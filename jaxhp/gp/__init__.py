"""Gaussian-process surrogate in JAX: kernels, fitting, posterior and acquisition."""

from jaxhp.gp.acquisition import log_ei, maximize, thompson, ucb
from jaxhp.gp.fit import GP, fit_kernel, posterior, predict, standardize, x64
from jaxhp.gp.kernels import Dims, KernelParams, dims_of, gram, kernel, matern52

__all__ = [
    "GP",
    "Dims",
    "KernelParams",
    "dims_of",
    "fit_kernel",
    "gram",
    "kernel",
    "log_ei",
    "matern52",
    "maximize",
    "posterior",
    "predict",
    "standardize",
    "thompson",
    "ucb",
    "x64",
]
