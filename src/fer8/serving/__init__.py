"""Serving predictions: the HTTP API with its web page, and the LINE bot."""
