"""Networks: the CVAA-GAN generator (+ fusion ablations), the conditional Patch-3D discriminator,
and the X2CT-GAN, 3DCNN and PSR baselines. All channels-last; volumes (B, X, Y, Z) in RAS."""

from cvaa_jax.models.generator import CVAAGenerator, GeneratorConfig
from cvaa_jax.models.registry import (GENERATORS, abstract, create, discriminator_ctor,
                                      generator_ctor, make_config, param_table, summary)
