"""The pipeline's stages, each in its own module; :class:`engine.pipeline.Pipeline`
composes them."""
