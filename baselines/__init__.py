"""Baseline inversion methods compared against EasyInv: DDIM, ReNoise and fixed-point iteration (Pan et al.)."""
