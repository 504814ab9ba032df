"""Model layer: Stable Diffusion loading, tiny offline models, the closed-form Gaussian model, denoiser adapters."""
