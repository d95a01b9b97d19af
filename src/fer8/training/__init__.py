"""Training and evaluation: the only subpackage that imports TensorFlow or Keras.

``backend``, ``backbones``, ``keras_models``, ``inference``, ``augment`` and ``loop``
need the ``train`` extra. ``datasets``, ``crops``, ``evaluation`` and ``plots`` are
TensorFlow-free: ``fer8 evaluate`` uses them on the plain install.
"""
