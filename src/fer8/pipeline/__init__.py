"""The pipeline's stages, one module each: image in, faces and expressions out."""
