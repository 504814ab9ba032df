"""Every inversion method besides EasyInv (``easyinv/method.py``), one module per method class over the denoiser
protocol: DDIM (also Euler on flow models), ReNoise, fixed-point iteration, null-text, negative-prompt, EDICT, BDIA,
BELM, the midpoint solvers RF-Solver and FireFlow, RF-Inversion, Uni-Inv and the VAE-only ceiling. A method's name is
its ``configs/method/<name>.yaml``, whose ``_target_`` names the class here."""
