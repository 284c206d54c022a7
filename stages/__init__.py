"""Ray-free pipeline stages: each wraps a model for one step (tokenize, sample a window, decode,
encode); the batched ones run requests of many songs in one call (:mod:`stages.batching`). The
pipeline runs them inside Ray actors; nothing here knows of Ray, Hydra or storage."""
