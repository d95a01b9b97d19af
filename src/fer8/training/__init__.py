"""Training and evaluation: the only subpackage that imports TensorFlow or Keras.

``backend``, ``backbones``, ``keras_models``, ``inference``, ``augment`` and ``loop``
need the ``train`` extra. ``datasets``, ``dataset_layouts``, ``archives``, ``crops``,
``evaluation``, ``plots``, ``new_class``, ``new_class_report``, ``new_columns`` and
``bank`` are TensorFlow-free: ``fer8 evaluate`` and ``fer8 train --keep-classes`` use them on the
plain install.

Importing this package registers the reader of format-1 model files with
:mod:`fer8.models.legacy`, which imports it when such a file is first opened.
"""

from fer8.models.legacy import register_legacy_reader


def _legacy_reader():
    """The reader of format-1 model files; imports Keras (ImportError without it)."""
    from fer8.training.keras_models import LEGACY_READER

    return LEGACY_READER


# fer8.models reads old Keras-format files through this, without importing training.
register_legacy_reader(_legacy_reader)
