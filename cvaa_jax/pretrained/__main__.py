"""`python -m cvaa_jax.pretrained`: export a trained run as a model folder (see __init__.py)."""

import sys

from cvaa_jax.pretrained import main

main(sys.argv[1:])
