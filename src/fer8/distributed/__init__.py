"""Prediction beyond one machine.

``fer8.distributed.ray_data`` runs :class:`fer8.Predictor` on a Ray cluster through Ray
Data (the ``ray`` extra). Nothing here is imported by ``import fer8``; Ray is imported
only by the module that needs it, and only when it is used.
"""
