"""Generative models — lecture 6 / HW6: GANs (:mod:`.gan`, pieces in :mod:`.core`), DDPM/DDIM (:mod:`.diffusion`,
:mod:`.noising`, :mod:`.unet`), the VAE (:mod:`.vae`); metrics in :mod:`.metrics`, the shared shell in :mod:`.shell`."""
