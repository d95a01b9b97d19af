"""Training and evaluation: datasets, crops, augmentation, the Keras backbones and the training loop."""
