"""Training on Ray Train: ``python -m pipeline mode=train train.component=vqvae|top|middle|bottom``.

- :mod:`pipeline.train.config`: the typed ``train`` section;
- :mod:`pipeline.train.validate`: every check that needs no worker (data, labels, sizes);
- :mod:`pipeline.train.data`: the corpus read once on the driver and shared through Ray's object
  store (audio for the VQ-VAE, token windows with labels for the priors);
- :mod:`pipeline.train.worker`: the per-worker loop (DDP, checkpoints, resume, metrics);
- :mod:`pipeline.train.run`: the ``TorchTrainer`` and what a finished run publishes.

The objectives and the optimisation step are plain PyTorch in :mod:`models.training`.
"""
