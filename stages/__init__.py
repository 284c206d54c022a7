"""Ray-free pipeline stages: each wraps a model for one step (tokenize, sample a window, decode)
and batches requests of many songs; the pipeline runs them inside Ray actors."""
