"""Training: losses, the GAN step, checkpoints and the loop (`train_and_evaluate`)."""
