"""The streaming Ray pipeline: Hydra config in, songs (tokens, audio, manifest) out.

``python -m pipeline`` (or ``jukebox-pipeline``) composes ``conf/config.yaml`` and calls
:func:`pipeline.runner.run`. Modules: ``config`` (typed options), ``validate`` (checks before
any model loads), ``plan`` (a song as a DAG of window calls), ``pools``/``actors`` (one Ray actor
pool per stage), ``scheduler`` (admission and ObjectRef-chained submission), ``storage``/``finalize``
(Parquet parts, compaction, WAV, markers, manifest), ``progress`` (live progress and summary).
"""
