"""cvaa_jax: biplanar X-ray to CT reconstruction (CVAA-GAN and baselines) in JAX/Flax."""

__version__ = "0.1.0"
